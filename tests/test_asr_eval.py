"""The ASR benchmark: the Debian French corpus, custom corpora, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicebot.core.audio import read_wav, write_wav
from voicebot.core.config import Settings
from voicebot.core.errors import VoicebotError
from voicebot.tools.asr_eval import (
    Corpus,
    UtteranceResult,
    builtin_corpus,
    clean_reference,
    custom_corpus,
    debian_transcripts_file,
    evaluate,
    format_report,
    parse_transcripts,
    summarize,
)
from voicebot.tools.text_score import WordErrors

SOUNDS = Path("/usr/share/asterisk/sounds/fr")


def test_parse_transcripts_format() -> None:
    text = (
        "; Core Asterisk Sounds in French\n"
        "\n"
        "auth-thankyou: Merci.\n"
        "digits/7: sept\n"
        "dir-welcome:\n"
        "vm-record-prepend: appuyez sur dièse.vm-review-nonurgent: Pour enlever, faites 4.\n"
        "digits/7: Sept.\n"
    )
    assert parse_transcripts(text, "t.txt") == {
        "auth-thankyou": "Merci.",
        "digits/7": "Sept.",  # a later duplicate wins
        "dir-welcome": "",
        "vm-record-prepend": "appuyez sur dièse.",
        "vm-review-nonurgent": "Pour enlever, faites 4.",
    }


def test_parse_transcripts_names_the_bad_line() -> None:
    with pytest.raises(VoicebotError, match=r"t\.txt, ligne 2"):
        parse_transcripts("bonjour: Bonjour\nceci n'est pas une entrée\n", "t.txt")


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("[ascending tones]", None),
        ("(ahooga)", None),
        ("[Son de singes qui crient]", None),
        ("", None),
        ("Pour (emphase)", "Pour"),
        (
            "au menu poli (ne m'appelez plus, jamais), 4.",
            "au menu poli (ne m'appelez plus, jamais), 4.",
        ),
        ('"eeks"', '"eeks"'),
    ],
)
def test_clean_reference_drops_stage_directions(raw: str, spoken: str | None) -> None:
    assert clean_reference(raw) == spoken


def test_builtin_corpus_is_the_debian_french_prompts() -> None:
    assert debian_transcripts_file().name == "core-sounds-fr.txt.gz"
    corpus = builtin_corpus()
    assert len(corpus.entries) > 400
    references = {entry.key: entry.reference for entry in corpus.entries}
    assert references["vm-goodbye"] == "Au revoir."
    assert references["digits/7"] == "sept"
    assert references["vm-review-nonurgent"].startswith("Pour enlever le status urgent")
    assert {"tt-monkeys", "ascending-2tone", "beeperr", "confbridge-join"} <= set(
        corpus.sound_effects
    )
    assert "silence/1" in corpus.without_transcript
    assert not set(corpus.sound_effects) & set(references)
    for entry in corpus.entries:
        assert entry.wav.is_file() and entry.wav.suffix == ".wav"


def _custom_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    # A 16 kHz copy: custom recordings need not be telephone-rate.
    write_wav(folder / "fin" / "revoir.wav", read_wav(SOUNDS / "vm-goodbye.wav", 16000), 16000)
    write_wav(folder / "merci.wav", read_wav(SOUNDS / "queue-thankyou.wav"))
    write_wav(folder / "sans-texte.wav", read_wav(SOUNDS / "auth-thankyou.wav"))
    (folder / "transcripts.txt").write_text(
        "; mon corpus\nfin/revoir: Au revoir\nmerci: Merci de votre patience\nabsent: Bonjour\n",
        encoding="utf-8",
    )
    return folder


def test_custom_corpus_folder_or_file(tmp_path: Path) -> None:
    folder = _custom_folder(tmp_path)
    corpus = custom_corpus(folder)
    assert [(e.key, e.reference) for e in corpus.entries] == [
        ("fin/revoir", "Au revoir"),
        ("merci", "Merci de votre patience"),
    ]
    assert corpus.without_transcript == ("sans-texte",)
    assert corpus.without_audio == ("absent",)
    assert custom_corpus(folder / "transcripts.txt").entries == corpus.entries
    with pytest.raises(VoicebotError, match=r"transcripts\.txt"):
        custom_corpus(tmp_path)


def test_summarize_adds_errors_over_utterances() -> None:
    def result(key: str, errors: WordErrors, audio_s: float, confidence: float) -> UtteranceResult:
        return UtteranceResult(key, "réf", "hyp", errors, errors, audio_s, 0.5, 0.1, confidence)

    results = [
        result("a", WordErrors(1, 0, 0, 4), 2.0, 0.6),
        result("b", WordErrors(0, 0, 0, 6), 3.0, 0.9),
        result("c", WordErrors(0, 2, 1, 5), 1.0, 0.2),
    ]
    report = summarize(results, Corpus("test", ()), "whisper", "Whisper base")
    assert report["wer"] == pytest.approx(4 / 15)
    assert report["rtf"] == pytest.approx(1.5 / 6.0)
    assert report["reference_words"] == 15 and report["utterances"] == 3
    assert [item["key"] for item in report["worst"]] == ["c", "a", "b"]
    assert [item["key"] for item in report["results"]] == ["a", "b", "c"]
    assert report["confidence"]["mean_when_exact"] == pytest.approx(0.9)
    assert report["confidence"]["mean_when_wer_over_half"] == pytest.approx(0.2)
    assert report["confidence"]["below_threshold"] == 1
    text = format_report(report)
    assert "WER : 26,7 %" in text
    assert "moyenne 0,90 sur les énoncés exacts, 0,20 sur ceux à WER ≥ 50 %" in text


def test_evaluate_json_on_a_few_builtin_utterances(capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate(Settings(), engine="whisper", corpus=None, limit=2, as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engine"] == "whisper"
    assert report["corpus"] == "asterisk-core-sounds-fr"
    assert report["utterances"] == 2
    assert report["reference_words"] >= 2
    assert 0.0 <= report["wer"] <= 2.0
    assert report["rtf"] > 0.0 and report["audio_s"] > 0.0
    assert len(report["worst"]) == 2 and len(report["results"]) == 2
    assert report["confidence"]["threshold"] == Settings().policy.min_asr_confidence
    assert all({"reference", "hypothesis", "wer"} <= set(item) for item in report["worst"])


def test_evaluate_text_report_on_a_custom_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _custom_folder(tmp_path)
    # A damaged recording is reported and skipped; the others are still scored.
    (folder / "casse.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEpas du tout")
    with (folder / "transcripts.txt").open("a", encoding="utf-8") as transcripts:
        transcripts.write("casse: Bonjour\n")
    assert evaluate(Settings(), engine="whisper", corpus=folder, limit=None, as_json=False) == 0
    out = capsys.readouterr().out
    assert "Corpus : corpus — 2 énoncés, 6 mots de référence" in out
    assert "1 enregistrements illisibles" in out
    assert "WER : " in out and "RTF : " in out
    assert "référence : Au revoir" in out

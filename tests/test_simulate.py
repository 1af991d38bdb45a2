"""`voicebot call`: a whole call on a recording, offline, through the real engines."""

from __future__ import annotations

import json
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.speech_helpers import french_prompt
from tests.test_asr_whisper import (
    MAX_COST_RATIO,
    CountingDecoder,
    looping_call_wav,
    plain_decode_s,
    vad_cut,
)
from voicebot.cli import main
from voicebot.core.audio import SAMPLE_RATE, SAMPLE_WIDTH, read_wav
from voicebot.core.config import AsrSettings, PolicySettings
from voicebot.core.errors import ModelError
from voicebot.speech import asr_whisper, standins
from voicebot.speech.asr_whisper import WhisperAsr, token_budget
from voicebot.tools.text_score import normalize


def _bad_wavs(folder: Path) -> dict[str, Path]:
    good = french_prompt("vm-goodbye").read_bytes()
    cases = {
        "not_a_wav": b"ceci n'est pas un fichier audio",
        "truncated_header": good[:30],
        "zero_seconds": good[:44],
    }
    paths = {}
    for name, data in cases.items():
        path = folder / f"{name}.wav"
        path.write_bytes(data)
        paths[name] = path
    paths["folder"] = folder
    paths["missing"] = folder / "absent.wav"
    return paths


@pytest.mark.parametrize(
    "case", ["not_a_wav", "truncated_header", "zero_seconds", "folder", "missing"]
)
def test_unusable_recordings_get_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    wav = _bad_wavs(tmp_path)[case]
    code = main(["call", "--wav", str(wav), "--out", str(tmp_path / "out.wav")])
    assert code == 2
    error = capsys.readouterr().err
    assert "voicebot: error:" in error and str(wav) in error
    assert not (tmp_path / "out.wav").exists()


def _voiced_seconds(pcm: np.ndarray, rate: int, threshold: int = 300) -> list[bool]:
    frames = pcm[: len(pcm) // (rate // 50) * (rate // 50)].reshape(-1, rate // 50)
    return [bool(np.abs(f.astype(np.int32)).max() > threshold) for f in frames]


def test_call_on_a_french_prompt_with_the_stand_in_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's command: Korean Vosk model, Joe Piper voice, a real French prompt."""
    monkeypatch.setenv("VOICEBOT_ASR_MODEL", str(standins.vosk_ko_model_dir()))
    monkeypatch.setenv("VOICEBOT_TTS_VOICE", str(standins.joe_voice_path()))
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out.wav"
    wav = french_prompt("queue-thankyou")
    code = main(["call", "--wav", str(wav), "--out", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engines"]["asr"].lower().startswith("vosk")
    heard = [t for t in report["turns"] if t["speaker"] == "caller"]
    assert heard and heard[0]["text"].strip()
    assert 0.0 < heard[0]["asr_confidence"] <= 1.0
    assert report["timings"], f"no timed turn: {report['turns']} {report['decisions']}"
    timing = report["timings"][0]
    assert timing["asr_ms"] >= 0 and timing["response_ms"] > 0 and timing["endpoint_wait_ms"] > 0
    with wave.open(str(out), "rb") as bot_side:
        assert bot_side.getframerate() == 8000 and bot_side.getnchannels() == 1
        pcm = np.frombuffer(bot_side.readframes(bot_side.getnframes()), dtype="<i2")
    voiced = _voiced_seconds(pcm, 8000)
    assert any(voiced[:25]), "the bot's side does not start with the greeting"


def test_call_with_no_models_at_all_speaks_with_espeak_and_says_how_to_fix(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_standin(assemble: bool = True) -> Path:
        raise ModelError("the Whisper base stand-in is not installed: run `make setup`")

    monkeypatch.setattr(standins, "whisper_base_dir", no_standin)
    monkeypatch.setenv("VOICEBOT_PATHS_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VOICEBOT_ASR_MODEL", raising=False)
    monkeypatch.delenv("VOICEBOT_TTS_VOICE", raising=False)
    (tmp_path / "no-models").mkdir()
    out = tmp_path / "out.wav"
    if True:
        code = main(
            [
                "call",
                "--wav",
                str(french_prompt("vm-goodbye")),
                "--out",
                str(out),
                "--json",
                "--say",
                "au revoir",
            ]
        )
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "espeak" in report["engines"]["tts"]
    assert report["turns"][-1]["intent"] == "au_revoir"
    logs = captured.err  # the CLI installs its own log handler on standard error
    assert "no ASR model installed" in logs and "voicebot models pull" in logs
    assert out.stat().st_size > 44


@pytest.mark.slow
def test_a_looping_utterance_in_a_call_costs_one_decode_and_is_not_heard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: the caller's words send Whisper into a loop ("Oui, pépé, pépé, …"); the
    call still answers in about the time of one decode, and says it did not hear."""
    monkeypatch.setenv("VOICEBOT_ASR_ENGINE", "whisper")
    monkeypatch.setenv("VOICEBOT_ASR_MODEL", str(standins.whisper_base_dir()))
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path / "data"))
    decoders: list[CountingDecoder] = []
    whisper_model = asr_whisper.WhisperModel

    def counting_model(*args: Any, **kwargs: Any) -> Any:
        model = whisper_model(*args, **kwargs)
        model.model = decoder = CountingDecoder(model.model)
        decoders.append(decoder)
        return model

    monkeypatch.setattr(asr_whisper, "WhisperModel", counting_model)
    wav = looping_call_wav(tmp_path)
    seconds = len(vad_cut(read_wav(wav))) / (SAMPLE_RATE * SAMPLE_WIDTH)
    code = main(["call", "--wav", str(wav), "--out", str(tmp_path / "out.wav"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engines"]["asr"].lower().startswith("whisper")
    heard = [t for t in report["turns"] if t["speaker"] == "caller"]
    assert len(heard) == 1, report["turns"]
    assert normalize(heard[0]["text"]).count("pepe") <= 1, heard  # the loop was cut
    assert heard[0]["asr_confidence"] < PolicySettings().min_asr_confidence
    assert any(t.get("prompt") == "not_heard" for t in report["turns"]), report["turns"]
    assert len(report["timings"]) == 1, report["timings"]
    # One decode pass for the one utterance, within its token budget.
    assert len(decoders) == 1 and len(decoders[0].emitted) == 1, decoders
    # (The call's VAD cut may end a frame or a few later than ours: its Silero windows fall
    # elsewhere in the audio, after the greeting.)
    assert decoders[0].emitted[0] <= token_budget(seconds + 0.2)
    asr_s = report["timings"][0]["asr_ms"] / 1000.0
    # The reference: plain decodes of ordinary speech as long as the VAD's cut, in this
    # process, right after the call (the median of three, against a burst of load).
    with ThreadPoolExecutor(max_workers=1) as executor:
        asr = WhisperAsr.load(standins.whisper_base_dir(), AsrSettings(engine="whisper"), executor)
        reference_s = sorted(plain_decode_s(asr, seconds) for _ in range(3))[1]
    assert asr_s <= MAX_COST_RATIO * reference_s, (asr_s, reference_s)

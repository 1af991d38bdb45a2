"""`voicebot call`: a whole call session on a WAV file of caller audio, offline.

The caller's audio is fed to the real session (VAD, ASR, Rasa, TTS, barge-in) and the bot's
side is written as an 8 kHz WAV, aligned frame by frame with the caller's audio. By default
the call runs in lockstep, faster than real time: the bot sends one frame per caller frame,
and the caller's audio waits while the bot computes, so the output timeline shows the
conversation as if computing cost nothing, while the report gives the real per-stage
timings. ``--realtime`` paces everything on the wall clock instead, as on a phone line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from voicebot.call.runtime import load_runtime
from voicebot.call.session import FRAME_S, CallReport, CallSession, State
from voicebot.core.audio import (
    FRAME_BYTES,
    SILENCE_FRAME,
    AudioFrame,
    read_wav,
    to_frames,
    write_wav,
)
from voicebot.core.config import Settings
from voicebot.core.interfaces import AudioIn, CallerHungUp, CallStarted, TextIn, TransportEvent

log = logging.getLogger(__name__)

# After the caller's audio, keep the line open until the bot has been quiet this long.
QUIET_TAIL_S = 2.0
GREETING_GAP_S = 0.4  # how long the simulated caller waits after the greeting
MAX_TAIL_S = 60.0


class WavCallerTransport:
    """A MediaTransport whose caller is a recording (and optional typed turns)."""

    name = "simulation"
    dialplan_continues = False

    def __init__(
        self,
        caller_pcm: bytes,
        texts: list[str] | None = None,
        realtime: bool = False,
        after_greeting: bool = True,
    ) -> None:
        self.caller_frames = to_frames(caller_pcm)
        self.texts = list(texts or [])
        self.realtime = realtime
        # A caller who waits for the greeting to end before speaking; False plays the
        # recording from the first frame (a caller who talks over the greeting: barge-in).
        self.after_greeting = after_greeting
        self.bot_pcm = bytearray()
        self.ended = asyncio.Event()
        self.session: CallSession | None = None

    async def _step(self) -> None:
        if self.realtime:
            await asyncio.sleep(FRAME_S)
        elif self.session is not None:
            # Lockstep: the caller's time stands still while the bot computes a reply.
            await self.session.lockstep_ready()

    def _bot_quiet(self) -> bool:
        session = self.session
        return (
            session is not None
            and session.state in (State.LISTENING, State.GREETING)
            and not session.bot_speaking
        )

    async def events(self) -> AsyncIterator[TransportEvent]:
        yield CallStarted(call_id=f"sim-{uuid.uuid4().hex[:8]}")
        quiet_frames = 0
        while self.after_greeting and quiet_frames * FRAME_S < GREETING_GAP_S:
            if self.ended.is_set():
                return
            await self._step()
            yield AudioIn(SILENCE_FRAME)
            quiet_frames = quiet_frames + 1 if self._bot_quiet() else 0
        for frame in self.caller_frames:
            if self.ended.is_set():
                return
            await self._step()
            yield AudioIn(frame)
        pending_texts = list(self.texts)
        quiet_frames = 0
        tail_frames = 0
        while not self.ended.is_set() and tail_frames < MAX_TAIL_S / FRAME_S:
            await self._step()
            yield AudioIn(SILENCE_FRAME)
            tail_frames += 1
            quiet_frames = quiet_frames + 1 if self._bot_quiet() else 0
            if quiet_frames * FRAME_S >= QUIET_TAIL_S:
                if not pending_texts:
                    break
                yield TextIn(pending_texts.pop(0))
                quiet_frames = 0
        if not self.ended.is_set():
            yield CallerHungUp("fin de l'enregistrement")

    async def send(self, frame: AudioFrame) -> None:
        self.bot_pcm += frame.pcm

    async def flush(self) -> None:
        return None

    async def end(self) -> None:
        self.ended.set()


def simulate_call(
    settings: Settings,
    wav: Path,
    out: Path,
    as_json: bool = False,
    realtime: bool = False,
    texts: list[str] | None = None,
    after_greeting: bool = True,
) -> int:
    caller_pcm = read_wav(wav)
    report, bot_pcm, engines = run_simulation(
        settings, caller_pcm, texts or [], realtime, after_greeting
    )
    write_wav(out, bot_pcm)
    result = {
        "call_id": report.call_id,
        "engines": engines,
        "caller_audio_s": round(len(caller_pcm) / (FRAME_BYTES / FRAME_S), 2),
        "bot_audio_s": round(len(bot_pcm) / (FRAME_BYTES / FRAME_S), 2),
        "out": str(out),
        "outcome": report.outcome,
        "handoff": report.handoff.as_dict() if report.handoff else None,
        "turns": report.turns,
        "timings": report.timings,
        "decisions": report.decisions,
    }
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _print_report(result)
    return 0


def run_simulation(
    settings: Settings,
    caller_pcm: bytes,
    texts: list[str],
    realtime: bool = False,
    after_greeting: bool = True,
) -> tuple[CallReport, bytes, dict[str, str]]:
    """Load the engines, run one call, return its report, the bot's audio and engine names."""
    runtime = load_runtime(settings)
    if runtime.services.asr is None and not texts:
        log.warning(
            "no ASR model installed: the caller's audio will not be understood; "
            "get one with `voicebot models pull vosk-model-small-fr-0.22`"
        )
    transport = WavCallerTransport(caller_pcm, texts, realtime, after_greeting)

    async def main() -> CallReport:
        session = CallSession(runtime.services, transport, lockstep=not realtime)
        transport.session = session
        return await session.run()

    try:
        report = asyncio.run(main())
    finally:
        runtime.close()
    engines = {"asr": runtime.asr_description, "tts": runtime.tts_description}
    return report, bytes(transport.bot_pcm), engines


def _print_report(result: dict[str, Any]) -> None:
    print(f"Appel {result['call_id']} — issue : {result['outcome']}")
    print(f"ASR : {result['engines']['asr']} ; voix : {result['engines']['tts']}")
    for turn in result["turns"]:
        who = "Robot " if turn.get("speaker") == "bot" else "Appelant"
        text = turn.get("text") or f"[touche {turn.get('dtmf')}]"
        extra = ""
        if turn.get("intent"):
            extra = f"  ({turn['intent']}, {turn.get('confidence', 0):.2f})"
        elif turn.get("asr_confidence") is not None:
            extra = f"  (confiance ASR {turn['asr_confidence']:.2f})"
        print(f"  {who} : {text}{extra}")
    for timing in result["timings"]:
        print("  temps (ms) : " + ", ".join(f"{k}={v}" for k, v in timing.items()))
    for decision in result["decisions"]:
        print(f"  décision : {decision}")
    if result["handoff"]:
        print("  transfert : " + json.dumps(result["handoff"], ensure_ascii=False))
    print(f"Audio du robot : {result['out']} ({result['bot_audio_s']} s)")

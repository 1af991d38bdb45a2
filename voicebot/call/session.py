"""One phone call with the bot, from the greeting to the goodbye or the handoff.

States: GREETING → LISTENING → THINKING → SPEAKING → (LISTENING | HANDOFF | ENDING).

``CallSession`` starts and ends the call; each job is a part of its own:

- listening (``listener.py``): the receiver reads the transport; caller audio goes to the VAD
  always, and to the ASR only between speech start (with pre-roll) and speech end; DTMF and
  typed text become turns;
- audio out (``playout.py``): the pacer sends one 20 ms frame every 20 ms, the bot's speech or
  silence, whatever else happens (AudioSocket hangs up after 2 s without traffic; Asterisk
  does not re-time it);
- turn policy (``policy.py``): turns one at a time, ASR final → dialogue → speech → decision,
  and the silence and duration rules; the decisions that end the call (``decisions.py``) are
  carried out by Asterisk through ``CallControl``;
- bookkeeping (``report.py``): each turn is one record, written to the report, the hub and
  the call records from one place.

Any exception inside a call ends in a handoff with reason "erreur": the caller reaches a
person, and no other call is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from voicebot.call.context import (
    FRAME_S,
    TICK_FRAMES,
    CallContext,
    SessionServices,
    State,
)
from voicebot.call.decisions import Decisions
from voicebot.call.listener import Listener
from voicebot.call.playout import Playout
from voicebot.call.policy import TurnPolicy
from voicebot.call.report import CallReport, Recorder, TurnRecord, TurnTiming
from voicebot.core.interfaces import CallStarted, MediaTransport
from voicebot.core.logs import CallLogger

__all__ = [
    "FRAME_S",
    "TICK_FRAMES",
    "CallReport",
    "CallSession",
    "Recorder",
    "SessionRunner",
    "SessionServices",
    "State",
    "TurnRecord",
    "TurnTiming",
]


class CallSession:
    """Runs one call on one media transport. Create one per call; ``await run()``."""

    def __init__(
        self,
        services: SessionServices,
        transport: MediaTransport,
        *,
        lockstep: bool = False,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.transport = transport
        # lockstep: one bot frame per caller frame (offline simulation, faster than real time);
        # otherwise a real-time pacer sends a frame every 20 ms.
        self.lockstep = lockstep
        self._ctx = CallContext(services, transport, lockstep)
        self._playout = Playout(self._ctx)
        self._listener = Listener(self._ctx, self._playout)
        self._decisions = Decisions(self._ctx, self._playout)
        self._policy = TurnPolicy(self._ctx, self._listener, self._playout, self._decisions)
        self.tasks: list[asyncio.Task[None]] = []

    # ----- what the outside sees ---------------------------------------------------------

    @property
    def call_id(self) -> str:
        return self._ctx.call_id

    @property
    def channel(self) -> str | None:
        return self._ctx.channel

    @property
    def state(self) -> State:
        return self._ctx.state

    @property
    def report(self) -> CallReport:
        return self._ctx.report

    @property
    def log(self) -> CallLogger:
        return self._ctx.log

    @property
    def not_thinking(self) -> asyncio.Event:
        """Set while the bot is not computing a reply (lockstep)."""
        return self._ctx.not_thinking

    @property
    def bot_speaking(self) -> bool:
        return self._playout.active

    def clock(self) -> float:
        """Call time in seconds: frames sent × 20 ms (real time live, virtual in lockstep)."""
        return self._ctx.clock()

    async def lockstep_ready(self) -> None:
        """Lockstep only: wait until the bot has its next frame, so compute costs no call time."""
        await self.not_thinking.wait()
        await self._listener.drained()  # an engine slower than real time is not a silence
        await self.not_thinking.wait()
        await self._playout.next_ready()  # TTS is synthesising the next sentence
        await asyncio.sleep(0)  # let the other tasks of the call run

    def request_handoff(self, why: str) -> None:
        """From outside the call (server shutdown): hand the caller to an operator."""
        self._ctx.turns.put_nowait(("shutdown", why, time.perf_counter()))

    # ----- lifecycle ---------------------------------------------------------------------

    async def run(self) -> CallReport:
        ctx = self._ctx
        events = self.transport.events()
        try:
            first = await asyncio.wait_for(events.__anext__(), timeout=5.0)
        except (asyncio.TimeoutError, StopAsyncIteration):
            return self.report
        if not isinstance(first, CallStarted):
            self.log.warning("transport did not start with CallStarted: %r", type(first).__name__)
            return self.report
        ctx.start(first)
        self.log.info("call started on %s", self.transport.name)
        await ctx.book.call_started(self.transport.name, first.caller_number)
        learn_caller = first.caller_number is None and ctx.asterisk_control() is not None
        self._listener.open()

        call_id = ctx.call_id
        receiver = asyncio.create_task(self._listener.receive(events), name=f"recv-{call_id}")
        self.tasks = [receiver]
        if not self.lockstep:
            self.tasks.append(asyncio.create_task(self._playout.pace(), name=f"pace-{call_id}"))
        if self._listener.asr_stream is not None:
            self.tasks.append(asyncio.create_task(self._listener.feed_asr(), name=f"asr-{call_id}"))
        if learn_caller:  # AudioSocket carries no number: AMI knows it, off the greeting's path
            self.tasks.append(asyncio.create_task(self._decisions.learn_caller_number()))
        try:
            await self._policy.converse()
        except asyncio.CancelledError:
            self.report.decisions.append("annulé (arrêt du serveur)")
            raise
        except Exception as exc:
            self.log.exception("internal error: handing the call to a human")
            await self._decisions.fail_to_human(exc)
        finally:
            await self._finish(events)
        return self.report

    async def _finish(self, events: Any) -> None:
        producer = self._playout.producer
        tasks = [*self.tasks, *([producer] if producer else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await events.aclose()
        self._listener.close()
        with contextlib.suppress(Exception):
            await self.services.dialogue.end(self.call_id)
        self.report.duration_s = time.monotonic() - self.report.started_at
        await self._ctx.book.call_ended()
        self.log.info("call ended: %s after %.1f s", self.report.outcome, self.report.duration_s)
        # A finished task keeps its exception, whose traceback keeps the task's frame, which
        # keeps this session (and its recognizer, ~18 MB): a cycle only a full garbage
        # collection frees, and those are rare. Dropping the tasks frees it all at once.
        self.tasks = []
        self._playout.producer = None


SessionRunner = Callable[[MediaTransport], Awaitable[None]]

"""The traffic: N concurrent calls placed one every ``ramp_s`` and kept up until the end of the
run, each following the caller's script, spread round-robin over the targets (targets.py);
the bench's own event loop and the servers' CPU and RSS watched meanwhile (``CallRunner.run``
→ ``RunData``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebot.core.config import VadSettings
from voicebot.tools.bench.call import BenchCall, CallResult, Spoken
from voicebot.tools.bench.clips import Clip
from voicebot.tools.bench.lines import (
    LINE_NOISE_DBFS,
    WEBSOCKET_CODECS,
    AudioSocketLine,
    Line,
    WebSocketLine,
)
from voicebot.tools.bench.script import (
    BARGE_IN_AFTER_S,
    GREETING_TIMEOUT_S,
    LISTEN_MAX_S,
    PAUSE_S,
    QUIET_S,
    REPLY_TIMEOUT_S,
    Step,
    call_script,
)
from voicebot.tools.bench.targets import Target, assign, label
from voicebot.tools.bench.turn_ends import server_waits
from voicebot.tools.bench.turns import Turn, measure_turns
from voicebot.tools.bench.watch import ServerReading, Watch

CLIENT_STALL_S = 0.010  # the bench's own loop stalling longer than this is recorded
LAG_PROBE_S = 0.005
MIN_CALL_S = 4.0  # no new call is placed when less than this remains
SAMPLE_EVERY_S = 0.5


@dataclass
class Sample:
    t: float  # run clock
    calls: int
    cpu_percent: float | None  # the watched servers and their children, % of one core
    rss_mb: float | None  # the watched servers together
    system_percent: float  # the whole machine, % of all cores
    bench_percent: float  # this process, % of one core
    loop_percent: float | None = None  # the servers' event-loop threads, % of one core
    servers: list[ServerReading] = field(default_factory=list)  # each, as RunData.servers


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
    # each server (Watch.describe(): target, pid, visible, rss_idle_mb), or each target
    # without figures when nothing is watched
    servers: list[dict[str, Any]] = field(default_factory=list)


class CallRunner:
    """Places N calls (one every ``ramp_s``; line i on target i mod T), keeps them up until
    the end, then measures every turn from what was sent and received (measure_turns)."""

    def __init__(
        self,
        targets: Sequence[Target],
        transport: str,
        clips: dict[str, Clip],
        vad: VadSettings,
        watch: Watch | None,
        noise_dbfs: float = LINE_NOISE_DBFS,
        server_log: Path | None = None,
    ) -> None:
        self.server_log = server_log  # the server's end-of-turn waits (bench/turn_ends.py)
        self.targets = list(targets)
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
        data.servers = (
            self.watch.describe()
            if self.watch is not None
            else [{"target": label(t), "pid": None, "visible": False} for t in self.targets]
        )
        end_at = data.loop_t0 + (calls - 1) * ramp_s + duration_s
        probes = [
            asyncio.create_task(self._probe_lag(data)),
            asyncio.create_task(self._sample(data)),
        ]
        try:
            await asyncio.gather(
                *(
                    self._slot(data, slot, target, data.loop_t0 + slot * ramp_s, end_at)
                    for slot, target in enumerate(assign(calls, self.targets))
                )
            )
        finally:
            for probe in probes:
                probe.cancel()
            for probe in probes:
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
        # The VAD replay takes a few ms per second of call: off the event loop.
        waits = server_waits(self.server_log) if self.server_log is not None else None
        data.turns = await loop.run_in_executor(
            None, measure_turns, data.results, self.clips, self.vad, data.loop_t0, waits
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
            reading = self.watch.sample()
            data.samples.append(
                Sample(
                    loop.time() - data.loop_t0,
                    self.active,
                    reading.cpu_percent,
                    reading.rss_mb,
                    reading.system_percent,
                    reading.bench_percent,
                    reading.loop_percent,
                    reading.servers,
                )
            )

    async def _slot(
        self, data: RunData, slot: int, target: Target, start_at: float, end_at: float
    ) -> None:
        """One line of the switchboard, on one target: a call, and a new one whenever the bot
        ends it."""
        host, port = target
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start_at - loop.time()))
        failures = 0
        placed = 0
        while end_at - loop.time() > MIN_CALL_S:
            call = BenchCall(self._line(), slot, self.noise_dbfs)
            try:
                await asyncio.wait_for(call.place(host, port), 10.0)
            except (OSError, asyncio.TimeoutError) as exc:
                failures += 1
                data.errors.append(f"slot {slot}: cannot connect to {host}:{port} ({exc!r})")
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

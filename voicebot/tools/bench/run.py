"""The benchmark run: prepare the caller clips, start the server (or reach the ``--target``
servers), warm it up, run N calls or climb the capacity steps, then put the result together
(targets, machine, models, the command that reproduces it) and write the report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebot.core.config import SECRET_ENV, Settings
from voicebot.core.errors import VoicebotError
from voicebot.tools.bench.clips import Clip, audio_cache_dir, prepare_clips
from voicebot.tools.bench.lines import LINE_NOISE_DBFS, LINE_RATES, WEBSOCKET_CODECS
from voicebot.tools.bench.records import match_records, read_record_times
from voicebot.tools.bench.reload import ReloadRun, reload_during, reload_summary
from voicebot.tools.bench.report import write_report
from voicebot.tools.bench.server import BENCH_POLICY_ENV, ServerProcess
from voicebot.tools.bench.speed import speed_reference
from voicebot.tools.bench.summary import broken_reasons, summarize
from voicebot.tools.bench.targets import Target, label, parse_targets
from voicebot.tools.bench.traffic import CallRunner, RunData
from voicebot.tools.bench.turn_ends import end_of_turn_decisions
from voicebot.tools.bench.verdict import evaluate_targets, holds, rss_slope
from voicebot.tools.bench.watch import ServerWatch, Watch, listening_pid, wait_until_idle

log = logging.getLogger(__name__)

CAPACITY_STEPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
WARMUP_MIN_DURATION_S = 15.0  # shorter runs are smoke tests: no warm-up call
WARMUP_DURATION_S = 10.0
# The server warms its speech recognizers in the background after it listens (12 take
# ~50 s of one core on a fast machine of this kind): measuring starts once it is idle.
PREPARE_TIMEOUT_S = 300.0


@dataclass
class BenchContext:
    settings: Settings
    transport: str
    targets: list[Target]  # the calls go round-robin over them (targets.py)
    out_dir: Path
    started_server: ServerProcess | None
    watch: Watch | None
    clips: dict[str, Clip]
    records_url: str
    idle_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)
    noise_dbfs: float = LINE_NOISE_DBFS
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    speed_before: dict[str, Any] = field(default_factory=dict)  # voicebot.tools.bench.speed


async def measure(
    context: BenchContext,
    calls: int,
    duration_s: float,
    ramp_s: float,
    reload_at_s: float | None = None,
) -> tuple[RunData, dict[str, Any]]:
    """One run of ``calls`` concurrent calls, with the per-stage split from the records;
    with ``reload_at_s``, a SIGHUP to the server that far into the run (bench/reload.py)."""
    runner = CallRunner(
        context.targets,
        context.transport,
        context.clips,
        context.settings.vad,
        context.watch,
        context.noise_dbfs,
        server_log(context),
    )
    log.info(
        "bench: %d call(s), %.0f s at full load, a call every %.1f s", calls, duration_s, ramp_s
    )
    reload: asyncio.Task[ReloadRun] | None = None
    server = context.started_server
    if reload_at_s is not None and server is not None:
        reload = asyncio.create_task(reload_during(server.pid, server.log_path, reload_at_s))
    data = await runner.run(calls, duration_s, ramp_s)
    await asyncio.sleep(1.5)  # the server records the end of the last calls
    reloaded = await reload if reload is not None else None
    try:
        rows = await asyncio.get_running_loop().run_in_executor(
            None, read_record_times, context.records_url, [r.call_id for r in data.results]
        )
        matched = match_records(data.turns, rows)
        data.records_note = f"{matched} of {sum(t.answered for t in data.turns)} answered turns matched in the call records"
    except VoicebotError as exc:
        data.records_note = f"per-stage split unavailable: {exc}"
    summary = summarize(data, context.idle_rss_mb)
    if reloaded is not None:
        summary["reload"] = reload_summary(data, reloaded)
    return data, summary


def server_log(context: BenchContext) -> Path | None:
    """The log that holds the server's end-of-turn waits, if the bench started the server
    and its end-of-turn rule is on (without it every turn waits vad.end_silence_ms)."""
    server = context.started_server
    if server is None or not context.settings.turn.enabled:
        return None
    return server.log_path


async def warm_up(context: BenchContext) -> None:
    """One call per target before measuring: first decodes, caches and lazy allocations
    happen here, so the idle RSS and the first turns are not counted as load."""
    runner = CallRunner(
        context.targets,
        context.transport,
        context.clips,
        context.settings.vad,
        None,
        context.noise_dbfs,
    )
    log.info("bench: warm-up call")
    await runner.run(len(context.targets), WARMUP_DURATION_S, 0.0)
    if context.watch is not None:
        await wait_until_idle(context.watch, PREPARE_TIMEOUT_S)


@contextlib.asynccontextmanager
async def bench_context(
    settings: Settings,
    transport: str,
    targets: Sequence[str],
    out_dir: Path,
    noise_dbfs: float = LINE_NOISE_DBFS,
) -> AsyncIterator[BenchContext]:
    """Everything a run needs before its first call: SIGTERM and SIGINT cancel it, the
    caller clips are ready, the server is started (or the ``targets``, host:port each, are
    reached), every server visible from here is watched and settled. A server the bench
    started is stopped on the way out."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    if main is not None:  # SIGTERM (and SIGINT, even in a background job) stop the server
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(stop_signal, main.cancel)
    clips = await loop.run_in_executor(
        None, prepare_clips, settings.vad, audio_cache_dir(), LINE_RATES[transport]
    )
    speed_before = await loop.run_in_executor(None, speed_reference, settings)
    load_before = os.getloadavg()
    server: ServerProcess | None = None
    if not targets:
        server = ServerProcess(settings, out_dir)
        port = server.websocket_port if transport in WEBSOCKET_CODECS else server.audiosocket_port
        reached = [(server.host, port)]
        records_url = server.records_url
    else:
        from voicebot.records.store import database_url

        reached = parse_targets(targets)
        records_url = database_url(settings)
    try:
        if server is not None:
            await server.start(transport)
            pids = [server.pid]
        else:
            pids = [listening_pid(host, port) for host, port in reached]
        watch = Watch([ServerWatch(pid, label(t)) for pid, t in zip(pids, reached, strict=True)])
        context = BenchContext(
            settings, transport, reached, out_dir, server, watch, clips, records_url
        )
        context.noise_dbfs = noise_dbfs
        context.load_before = load_before
        context.speed_before = speed_before
        context.notes += watch_notes(watch)
        if len(reached) > 1:
            context.notes.append(
                f"{len(reached)} targets, the calls spread round-robin: the per-stage split "
                "reads the call records from these settings' records database "
                "(records.database_url), which holds every target's calls only when the "
                "hosts share it (one PostgreSQL)"
            )
        if watch.visible and not await wait_until_idle(watch):
            context.notes.append("the servers never settled below 20 % CPU before the run")
        yield context
    finally:
        if server is not None:
            await server.stop()


def watch_notes(watch: Watch) -> list[str]:
    """What the report says of the servers that cannot be watched from here."""
    hidden = [server.target for server in watch.servers if server.process is None]
    if not hidden:
        return []
    if len(hidden) == len(watch.servers) == 1:
        return ["server process not visible: no CPU/RSS figures"]
    return [
        f"server {target} not visible from here (another machine, or not ours to see): no "
        "CPU/RSS figures for it; the totals are the visible servers'"
        for target in hidden
    ]


async def run_async(
    settings: Settings,
    calls: int,
    duration_s: float,
    ramp_s: float,
    transport: str,
    find_capacity: bool,
    targets: Sequence[str],
    out_dir: Path,
    noise_dbfs: float = LINE_NOISE_DBFS,
    reload_at_s: float | None = None,
) -> dict[str, Any]:
    """Set up (or reach) the servers, run the benchmark, write the report. The JSON result."""
    async with bench_context(settings, transport, targets, out_dir, noise_dbfs) as context:
        if duration_s >= WARMUP_MIN_DURATION_S:
            await warm_up(context)
        else:
            context.notes.append("short run (smoke test): no warm-up call")
        context.idle_rss_mb = context.watch.mark_idle() if context.watch is not None else None
        if find_capacity:
            result, runs = await _capacity(context, duration_s, ramp_s)
        else:
            data, summary = await measure(context, calls, duration_s, ramp_s, reload_at_s)
            result, runs = {"mode": "run", "run": summary}, [(data, summary)]
        speed_after = await asyncio.get_running_loop().run_in_executor(
            None, speed_reference, settings
        )
        result["speed_reference"] = {"before": context.speed_before, "after": speed_after}
        _finish(
            context,
            result,
            runs,
            context.load_before,
            calls,
            duration_s,
            ramp_s,
            find_capacity,
            targets,
        )
        return result


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
            await wait_until_idle(context.watch, PREPARE_TIMEOUT_S)
    result: dict[str, Any] = {
        "mode": "capacity",
        "capacity_calls": capacity,
        "stopped_by": stopped_by,
        "steps": [summary for _, summary in runs],
    }
    return result, runs


def _finish(
    context: BenchContext,
    result: dict[str, Any],
    runs: list[tuple[RunData, dict[str, Any]]],
    load_before: tuple[float, float, float],
    calls: int,
    duration_s: float,
    ramp_s: float,
    find_capacity: bool,
    targets: Sequence[str],
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
        calls, duration_s, ramp_s, context.transport, find_capacity, targets
    )
    reload = summaries[0].get("reload") if not find_capacity else None
    if reload is not None:
        result["command"] += f" --reload-at {reload['at_s']:g}"
    result["machine"] = {
        **machine(),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    result["models"] = models_used(context.settings)
    result["server"] = {
        "started_by_bench": context.started_server is not None,
        # the first watched server's; each one's in the run's "servers" list
        "pid": next((w.pid for w in context.watch.visible), None) if context.watch else None,
        "targets": [label(t) for t in context.targets],
        "listening_after_s": round(context.started_server.ready_s, 1)
        if context.started_server
        else None,
        "policy_overrides": BENCH_POLICY_ENV if context.started_server else {},
        "vad_end_silence_ms": context.settings.vad.end_silence_ms,
        "vad_floor_dbfs": context.settings.vad.floor_dbfs,
    }
    result["line_noise_dbfs"] = context.noise_dbfs
    server = context.started_server
    if server is not None and context.settings.turn.enabled:
        result["server"]["end_of_turn"] = end_of_turn_decisions(server.log_path)
    elif context.settings.turn.enabled:
        context.notes.append(
            "running servers (--target): their end-of-turn waits are not known here, the "
            "replay takes vad.end_silence_ms for every turn (the endpoint, response and turn "
            "gap figures are then too long by what the rule saved)"
        )
    broken = [reason for summary in summaries for reason in broken_reasons(summary)]
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
    targets: Sequence[str],
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
    for target in targets:
        args += ["--target", target]
    return " ".join([*env, *args])

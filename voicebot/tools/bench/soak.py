"""The soak: N emulated calls kept up for a long time against one `voicebot serve`, to show
that nothing grows with the number of calls served: the server's memory and open file
descriptors are sampled, and their trend must be flat.

    .venv/bin/python scripts/soak.py --calls 8 --minutes 30 --out /tmp/soak

The calls are the bench's (``CallRunner``: real-time 20 ms audio, realistic French turns,
barge-ins, a key): every line of the switchboard places a new call as soon as its call ends,
so ``calls`` are up all the time. Calls end both ways a real call does: on odd-numbered
calls the caller hangs up by itself after ``CALLER_HANGS_UP_AFTER_S``; the others stay on
until the bot ends them (its ``policy.max_call_seconds``, set to ``max_call_seconds`` for the
soak, hands the caller over, and without AMI ends the call). Every call's set-up and
tear-down therefore runs hundreds of times in 30 minutes.

Every ``sample_every_s`` the soak records the server's resident memory (its child processes
included: espeak-ng), its open file descriptors, threads, the calls up and the load
average. The first ``warmup`` part of the run is not judged: allocator arenas, the TTS
cache and the engines' lazy allocations grow there to their working size. Over the rest,
the least-squares slope of each series must stay under its threshold:

* RSS: ``RSS_SLOPE_MAX_MB_PER_H`` (20 MB/h). The leaks that matter keep a call's state
  (a recognizer, a VAD, its audio buffers: hundreds of kB to tens of MB a call); at the
  ~200-400 calls an hour 8 lines serve here, they grow by hundreds of MB an hour or more.
  20 MB/h is half the bench's per-call budget (40 MB, ``verdict.TARGETS``) per hour, and over
  20 minutes a rise of 7 MB, about what one espeak-ng child or one recognizer's state moves
  the sampled RSS by, so a flat series does not fail on noise. The report gives the per-call
  leak this resolves (the threshold divided by the calls served an hour).
  A slope over 20 MB/h fails only if the memory is also unbounded (``rss_rises``): the
  judged part's peak more than ``RSS_RISE_MAX_MB`` (100 MB) above the warm-up's, or its low
  point risen by more than that from its first third to its last. Vosk recognizers grow by
  ~200 MB over their life, then are retired and freed: a bounded sawtooth of hundreds of MB
  whose teeth alone swing a 20-minute slope by hundreds of MB an hour. The price: in a
  30-minute soak a leak is caught from ~300 MB/h (about 1 MB a call here) when the slope
  alone would catch 20 MB/h; a longer soak (``--minutes 120``) catches smaller ones, as
  the rises accumulate.
* Open file descriptors: ``FD_SLOPE_MAX_PER_H`` (10 an hour): one descriptor kept every 20
  to 40 calls would exceed it; a call uses a socket and, while the bot speaks, the pipes of
  an espeak-ng child, so the count moves by a few with the calls up, and its slope over 20
  minutes stays within a few an hour when nothing leaks.

Late frames are the bench's underruns (``underruns.pacing``): a bot frame arriving more than
``UNDERRUN_TOLERANCE_S`` after the previous one ended, the bench's own stalls counted apart.
They are counted, per sample interval too, not judged: on a shared machine they measure the
contention as much as the server. So does the bot audio ratio: the seconds of bot audio the
callers received over the seconds their calls were up (the server's pacer sends speech or
silence for every 20 ms of a call: 1 when it keeps real time). A server starved of CPU falls
behind, and what it has not yet sent waits in memory: read an RSS slope with this ratio. A machine speed reference is timed before and after
(voicebot.tools.bench.speed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voicebot.core.config import Settings, load_settings
from voicebot.core.errors import VoicebotError
from voicebot.tools.bench.call import BenchCall
from voicebot.tools.bench.run import bench_context, machine, models_used, warm_up
from voicebot.tools.bench.script import Step
from voicebot.tools.bench.server import train_if_needed
from voicebot.tools.bench.speed import describe, speed_reference
from voicebot.tools.bench.summary import summarize
from voicebot.tools.bench.traffic import CallRunner, RunData
from voicebot.tools.bench.underruns import UNDERRUN_TOLERANCE_S, pacing
from voicebot.tools.bench.watch import wait_until_idle

log = logging.getLogger(__name__)

RSS_SLOPE_MAX_MB_PER_H = 20.0
# A bounded process may go above its warm-up peak, or its low point may rise, by this much;
# a leak of ~1 MB a call does more in 20 minutes at the 250 calls an hour 8 lines serve.
RSS_RISE_MAX_MB = 100.0
FD_SLOPE_MAX_PER_H = 10.0
WARMUP_MAX_MIN = 10.0  # the first third of the run, at most 10 minutes, is not judged
MIN_JUDGED_SAMPLES = 10
SAMPLE_EVERY_S = 5.0
RAMP_S = 1.0  # one call placed a second at the start
MAX_CALL_SECONDS = 120  # the bot ends a call after 2 minutes (the server's policy)
CALLER_HANGS_UP_AFTER_S = (45.0, 60.0, 75.0, 90.0)  # odd-numbered calls, in turn
PROGRESS_EVERY_S = 60.0


@dataclass
class SoakSample:
    t_s: float  # since the first call was placed
    rss_mb: float  # the server and its child processes
    server_rss_mb: float  # the server process alone
    children: int
    fds: int  # open file descriptors of the server process
    threads: int
    calls_up: int
    calls_ended: int
    load_1min: float
    # After the run, from what the callers heard in the interval ending here:
    late_frames: int = 0  # server-side late frames
    bot_audio_ratio: float | None = None  # bot audio received / time the calls were up


LIVE_FIELDS = [f.name for f in dataclasses.fields(SoakSample)][:-2]


class SampleLog:
    """samples.csv, a row as each sample is taken (an interrupted soak keeps them), rewritten
    at the end with the columns known only after the run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerow(LIVE_FIELDS)

    def append(self, sample: SoakSample) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as file:
            csv.writer(file).writerow([getattr(sample, name) for name in LIVE_FIELDS])

    def rewrite(self, samples: Sequence[SoakSample]) -> None:
        names = [f.name for f in dataclasses.fields(SoakSample)]
        with self.path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(names)
            for sample in samples:
                writer.writerow([getattr(sample, name) for name in names])


class SoakRunner(CallRunner):
    """The bench's calls, some ended by the caller after a while (``caller_hangs_up_after``)
    and the others by the bot; counts the calls that ended."""

    def __init__(self, *args: Any, caller_lengths: Sequence[float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.caller_lengths = tuple(caller_lengths)
        self.conversations = 0
        self.ended = 0

    def caller_hangs_up_after(self, number: int) -> float | None:
        """How long the ``number``-th call (from 0) lasts before its caller hangs up; None
        when the caller stays until the bot ends the call."""
        if number % 2 == 0 or not self.caller_lengths:
            return None
        return self.caller_lengths[(number // 2) % len(self.caller_lengths)]

    async def _converse(
        self, data: RunData, call: BenchCall, steps: Iterator[Step], end_at: float
    ) -> None:
        length = self.caller_hangs_up_after(self.conversations)
        self.conversations += 1
        if length is not None:
            end_at = min(end_at, asyncio.get_running_loop().time() + length)
        try:
            await super()._converse(data, call, steps, end_at)
        finally:
            self.ended += 1


def footprint(process: Any) -> tuple[float, float, int, int, int] | None:
    """(RSS of the process and its children in MB, RSS of the process alone in MB, number
    of children, open file descriptors, threads) of a psutil process; None once it is gone."""
    import psutil

    try:
        with process.oneshot():
            own = process.memory_info().rss
            fds = process.num_fds()
            threads = process.num_threads()
        children = process.children(recursive=True)
    except psutil.Error:
        return None
    total = own
    for child in children:
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total / 2**20, own / 2**20, len(children), fds, threads


def slope_per_hour(samples: Sequence[SoakSample], field: str) -> float | None:
    """Least-squares slope of one field over time, per hour."""
    if len(samples) < 2:
        return None
    hours = np.array([s.t_s / 3600 for s in samples])
    values = np.array([float(getattr(s, field)) for s in samples])
    if np.ptp(hours) == 0:
        return None
    return float(np.polyfit(hours, values, 1)[0])


async def sample_server(
    process: Any,
    runner: SoakRunner,
    t0: float,
    until: float,
    every_s: float,
    samples: list[SoakSample],
    sample_log: SampleLog,
) -> None:
    """Append a SoakSample every ``every_s`` (loop clock from ``t0``) until ``until``."""
    loop = asyncio.get_running_loop()
    next_at = t0
    next_note = t0 + PROGRESS_EVERY_S
    while loop.time() < until:
        now = loop.time()
        seen = footprint(process)
        if seen is None:
            log.error("soak: the server process is gone")
            return
        rss, own, children, fds, threads = seen
        sample = SoakSample(
            round(now - t0, 2),
            round(rss, 1),
            round(own, 1),
            children,
            fds,
            threads,
            runner.active,
            runner.ended,
            round(os.getloadavg()[0], 2),
        )
        samples.append(sample)
        sample_log.append(sample)
        if now >= next_note:
            next_note += PROGRESS_EVERY_S
            log.info(
                "soak: %.0f min, RSS %.0f MB, %d fds, %d calls up, %d ended, load %.2f",
                (now - t0) / 60,
                rss,
                fds,
                runner.active,
                runner.ended,
                os.getloadavg()[0],
            )
        next_at += every_s
        await asyncio.sleep(max(0.0, next_at - loop.time()))


def late_frame_times(data: RunData) -> tuple[list[float], int]:
    """When each server-side late frame was due (s since the first call) and how many late
    frames the bench's own stalls explain."""
    due_times: list[float] = []
    client = 0
    for result in data.results:
        stalls = [(s - result.t0, e - result.t0) for s, e in data.stalls]
        paced = pacing(result.arrivals, stalls)
        client += paced.client_underruns
        due_times += [result.t0 - data.loop_t0 + due for due, _ in paced.late]
    return sorted(due_times), client


def bot_audio_by_interval(data: RunData, edges: Sequence[float]) -> tuple[Any, Any]:
    """Per interval between ``edges`` (s since the first call): seconds of bot audio the
    callers received, and seconds the calls were up. The server's pacer sends audio (speech
    or silence) for every 20 ms of a call: the ratio is 1 when it keeps real time, and falls
    when it cannot (a starved server sends late and fewer frames)."""
    bins = np.asarray(edges, dtype=float)
    received = np.zeros(len(bins) - 1)
    up = np.zeros(len(bins) - 1)
    for result in data.results:
        start = result.t0 - data.loop_t0
        if result.times:
            counts, _ = np.histogram(
                np.asarray(result.times) + start, bins=bins, weights=result.durations
            )
            received += counts
        up += np.clip(
            np.minimum(bins[1:], start + result.duration_s) - np.maximum(bins[:-1], start), 0, None
        )
    return received, up


def soak_settings(settings: Settings, max_call_seconds: int) -> Settings:
    """The soak's server: Vosk (the settings' model, else the official one, else the
    stand-in: see ``speech.pick_vosk``), and calls the bot ends after ``max_call_seconds``."""
    from voicebot.tools.bench.speech import pick_vosk

    model, _ = pick_vosk(settings, None)
    settings = settings.replace("asr", engine="vosk", model=str(model))
    return settings.replace("policy", max_call_seconds=max_call_seconds)


def server_log_errors(path: Path) -> int:
    """Lines of the server's log that report an error or a traceback."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if " ERROR " in line or "Traceback" in line)


async def soak_async(
    settings: Settings,
    calls: int,
    minutes: float,
    out_dir: Path,
    warmup_minutes: float | None = None,
    sample_every_s: float = SAMPLE_EVERY_S,
    transport: str = "audiosocket",
    caller_lengths: Sequence[float] = CALLER_HANGS_UP_AFTER_S,
) -> dict[str, Any]:
    """Run the soak; write samples.csv and summary.json to ``out_dir``. The summary."""
    loop = asyncio.get_running_loop()
    total_s = minutes * 60
    warmup_s = (
        min(WARMUP_MAX_MIN * 60, total_s / 3) if warmup_minutes is None else warmup_minutes * 60
    )
    if not 0 <= warmup_s < total_s:
        raise VoicebotError("the warm-up must be shorter than the soak")
    samples: list[SoakSample] = []
    sample_log = SampleLog(out_dir / "samples.csv")
    problems: list[str] = []
    async with bench_context(settings, transport, (), out_dir) as context:
        watch = context.watch
        if watch is None or not watch.visible:
            raise VoicebotError("the server process is not visible: nothing to sample")
        server_process = watch.visible[0].process
        speed_before = context.speed_before  # timed before the server started
        await warm_up(context)
        idle_before = footprint(server_process)
        runner = SoakRunner(
            context.targets,
            transport,
            context.clips,
            settings.vad,
            watch,
            context.noise_dbfs,
            caller_lengths=caller_lengths,
        )
        ramp_s = min(RAMP_S, total_s / 10 / calls)
        t0 = loop.time()
        sampler = asyncio.create_task(
            sample_server(
                server_process, runner, t0, t0 + total_s, sample_every_s, samples, sample_log
            )
        )
        log.info("soak: %d calls for %.0f min", calls, minutes)
        try:
            data = await runner.run(calls, total_s - (calls - 1) * ramp_s, ramp_s)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await wait_until_idle(watch, 60.0)
        idle_after = footprint(server_process)
        summary = summarize(data, idle_before[0] if idle_before else None)
        server = context.started_server
        if server is not None and server.process is not None and server.process.poll() is not None:
            problems.append(f"the server exited with code {server.process.returncode}")
        log_errors = server_log_errors(server.log_path) if server is not None else 0
        models = models_used(settings)
    speed_after = await loop.run_in_executor(None, speed_reference, settings)
    late, client_late = late_frame_times(data)
    edges = [0.0] + [sample.t_s for sample in samples]
    received, up = bot_audio_by_interval(data, edges)
    for index, sample in enumerate(samples):
        sample.late_frames = sum(1 for due in late if edges[index] < due <= edges[index + 1])
        sample.bot_audio_ratio = round(received[index] / up[index], 3) if up[index] else None
    result = judge(samples, warmup_s, late)
    judged = np.array([sample.t_s >= warmup_s for sample in samples], dtype=bool)
    result["bot_audio_ratio_judged"] = (
        round(float(received[judged].sum() / up[judged].sum()), 3) if up[judged].sum() else None
    )
    result.update(
        {
            "calls": calls,
            "minutes": minutes,
            "transport": transport,
            "sample_every_s": sample_every_s,
            "models": models,
            "max_call_seconds": settings.policy.max_call_seconds,
            "caller_hangs_up_after_s": list(caller_lengths),
            "calls_placed": summary["calls_placed"],
            "calls_ended_during_run": len(data.results) - cut_at_end(data, total_s),
            "calls_ended_by": summary["calls_ended_by"],
            "turns": summary["turns"]["measured"] + summary["turns"]["during_ramp"],
            "turns_unanswered": summary["turns"]["unanswered"],
            "audio_frames": summary["audio"]["frames"],
            "late_frames_client": client_late,
            "late_frame_tolerance_ms": UNDERRUN_TOLERANCE_S * 1000,
            "errors": data.errors + problems,
            "server_log_errors": log_errors,
            "violations": summary["violations"],
            "idle": {
                "before": _idle(idle_before),
                "after": _idle(idle_after),
            },
            "speed_reference": {"before": speed_before, "after": speed_after},
            "machine": {
                **machine(),
                "nice": os.nice(0),
                "load_before": [round(v, 2) for v in context.load_before],
                "load_after": [round(v, 2) for v in os.getloadavg()],
            },
            "out_dir": str(out_dir),
        }
    )
    if problems or not summary["calls_placed"]:
        result["verdict"] = "FAIL"
        result["why"].extend(problems or ["no call could be placed"])
    sample_log.rewrite(samples)
    (out_dir / "summary.json").write_text(
        json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return result


def cut_at_end(data: RunData, total_s: float) -> int:
    """How many calls were still up when the run ended (the soak hung them up: the emulator
    then says the caller ended them, like a caller who hangs up by itself)."""
    return sum(
        1 for result in data.results if result.t0 - data.loop_t0 + result.duration_s >= total_s - 1
    )


def _idle(seen: tuple[float, float, int, int, int] | None) -> dict[str, Any] | None:
    if seen is None:
        return None
    return {"rss_mb": round(seen[0], 1), "fds": seen[3], "threads": seen[4]}


def rss_rises(warmup: Sequence[SoakSample], judged: Sequence[SoakSample]) -> tuple[float, float]:
    """(how far the judged part's peak RSS went above the warm-up's peak, how far the low
    point of its last third rose above the low point of its first third), in MB.

    A leak raises both, steadily. Memory that is bounded but comes and goes in large pieces
    (a Vosk recognizer grows by ~200 MB over its life, then is retired and freed: a
    sawtooth of hundreds of MB, see asr_vosk.RecognizerPool) raises neither, but it swings
    a 20-minute least-squares slope by hundreds of MB an hour either way, depending only on
    where the teeth fall in the window."""
    third = max(1, len(judged) // 3)
    peak_rise = max(s.rss_mb for s in judged) - max((s.rss_mb for s in warmup), default=0.0)
    floor_rise = min(s.rss_mb for s in judged[-third:]) - min(s.rss_mb for s in judged[:third])
    return peak_rise, floor_rise


def judge(samples: Sequence[SoakSample], warmup_s: float, late: Sequence[float]) -> dict[str, Any]:
    """The figures over the judged part (after the warm-up), and the verdict."""
    judged = [s for s in samples if s.t_s >= warmup_s]
    warmup = [s for s in samples if s.t_s < warmup_s]
    why: list[str] = []
    rss_slope = slope_per_hour(judged, "rss_mb")
    fd_slope = slope_per_hour(judged, "fds")
    peak_rise = floor_rise = None
    if len(judged) < MIN_JUDGED_SAMPLES or rss_slope is None or fd_slope is None:
        why.append(f"{len(judged)} sample(s) after the warm-up: too few to judge a trend")
    else:
        peak_rise, floor_rise = rss_rises(warmup, judged)
        if rss_slope > RSS_SLOPE_MAX_MB_PER_H and (
            peak_rise > RSS_RISE_MAX_MB or floor_rise > RSS_RISE_MAX_MB
        ):
            why.append(
                f"RSS grows by {rss_slope:.1f} MB/h > {RSS_SLOPE_MAX_MB_PER_H:g} MB/h, and it "
                f"is not bounded: peak {peak_rise:+.0f} MB above the warm-up's, low point "
                f"{floor_rise:+.0f} MB from the first third to the last "
                f"(> {RSS_RISE_MAX_MB:g} MB)"
            )
        if fd_slope > FD_SLOPE_MAX_PER_H:
            why.append(f"open fds grow by {fd_slope:.1f}/h > {FD_SLOPE_MAX_PER_H:g}/h")
    judged_hours = (judged[-1].t_s - judged[0].t_s) / 3600 if len(judged) > 1 else 0.0
    ended_judged = judged[-1].calls_ended - judged[0].calls_ended if len(judged) > 1 else 0
    calls_per_h = ended_judged / judged_hours if judged_hours else None
    return {
        "verdict": "FAIL" if why else "PASS",
        "why": why,
        "warmup_s": round(warmup_s, 1),
        "samples": len(samples),
        "judged_samples": len(judged),
        "judged_from_s": judged[0].t_s if judged else None,
        "judged_to_s": judged[-1].t_s if judged else None,
        "rss_mb": {
            "start": judged[0].rss_mb if judged else None,
            "end": judged[-1].rss_mb if judged else None,
            "min": min(s.rss_mb for s in judged) if judged else None,
            "max": max(s.rss_mb for s in judged) if judged else None,
            "first_sample": samples[0].rss_mb if samples else None,
            "slope_mb_per_h": _round(rss_slope, 2),
            "threshold_mb_per_h": RSS_SLOPE_MAX_MB_PER_H,
            "peak_rise_mb": _round(peak_rise, 1),
            "floor_rise_mb": _round(floor_rise, 1),
            "rise_threshold_mb": RSS_RISE_MAX_MB,
            "resolves_kb_per_call": round(RSS_SLOPE_MAX_MB_PER_H * 1024 / calls_per_h, 1)
            if calls_per_h
            else None,
        },
        "fds": {
            "start": judged[0].fds if judged else None,
            "end": judged[-1].fds if judged else None,
            "min": min(s.fds for s in judged) if judged else None,
            "max": max(s.fds for s in judged) if judged else None,
            "slope_per_h": _round(fd_slope, 2),
            "threshold_per_h": FD_SLOPE_MAX_PER_H,
        },
        "calls_ended_per_h_judged": _round(calls_per_h, 1),
        "late_frames": len(late),
        "late_frames_warmup": sum(1 for t in late if t < warmup_s),
        "late_frames_judged": sum(1 for t in late if t >= warmup_s),
        "load_1min": {
            "mean": round(float(np.mean([s.load_1min for s in samples])), 2) if samples else None,
            "max": max(s.load_1min for s in samples) if samples else None,
        },
    }


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.0f}"


def _round(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def report_lines(result: dict[str, Any]) -> list[str]:
    """The summary in words, as printed at the end."""
    rss, fds, machine_ = result["rss_mb"], result["fds"], result["machine"]
    before, after = result["speed_reference"]["before"], result["speed_reference"]["after"]

    def mark(value: float | None, limit: float) -> str:
        return "n/a" if value is None else "PASS" if value <= limit else "FAIL"

    load = ", ".join(f"{v:.2f}" for v in machine_["load_before"])
    load_after = ", ".join(f"{v:.2f}" for v in machine_["load_after"])
    resolves = rss["resolves_kb_per_call"]
    return [
        f"Soak: {result['calls']} calls for {result['minutes']:g} min over {result['transport']}, "
        f"judged after a {result['warmup_s'] / 60:.1f} min warm-up "
        f"({result['judged_samples']} of {result['samples']} samples, "
        f"one every {result['sample_every_s']:g} s)",
        f"Models: ASR {result['models']['asr']}; TTS {result['models']['tts']}",
        f"Machine: {machine_['cpu']}, {machine_['cores']} cores, nice {machine_['nice']}; "
        f"load average {load} before, {load_after} after "
        f"(1-min mean {result['load_1min']['mean']}, max {result['load_1min']['max']})",
        f"Speed reference before: {describe(before)}; after: {describe(after)}",
        f"RSS (server + children): {rss['start']} MB after the warm-up, {rss['end']} MB at the end "
        f"(judged range {rss['min']}-{rss['max']} MB; {rss['first_sample']} MB at the first "
        f"call); slope {rss['slope_mb_per_h']} MB/h, threshold <= {rss['threshold_mb_per_h']:g} "
        f"MB/h: {mark(rss['slope_mb_per_h'], rss['threshold_mb_per_h'])}"
        + (f" (resolves a leak of ~{resolves:.0f} kB per call)" if resolves else "")
        + f"; peak {_signed(rss['peak_rise_mb'])} MB above the warm-up's, low point "
        f"{_signed(rss['floor_rise_mb'])} MB first third to last, threshold <= "
        f"{rss['rise_threshold_mb']:g} MB: "
        f"{mark(max(rss['peak_rise_mb'] or 0, rss['floor_rise_mb'] or 0), rss['rise_threshold_mb'])}"
        " (a slope over its threshold fails only with a rise over this one)",
        f"Open fds (server): {fds['start']} after the warm-up, {fds['end']} at the end "
        f"(range {fds['min']}-{fds['max']}); slope {fds['slope_per_h']}/h, threshold <= "
        f"{fds['threshold_per_h']:g}/h: {mark(fds['slope_per_h'], fds['threshold_per_h'])}; "
        f"idle before {_get(result['idle']['before'], 'fds')}, "
        f"after {_get(result['idle']['after'], 'fds')}",
        f"Calls: {result['calls_placed']} placed, {result['calls_ended_during_run']} ended during "
        f"the run (ended by: {result['calls_ended_by']}; ~{result['calls_ended_per_h_judged']} "
        f"an hour), {result['turns']} caller turns ({result['turns_unanswered']} unanswered)",
        f"Late frames (> {result['late_frame_tolerance_ms']:g} ms late): {result['late_frames']} "
        f"server-side of {result['audio_frames']} frames ({result['late_frames_warmup']} in the "
        f"warm-up, {result['late_frames_judged']} after); {result['late_frames_client']} "
        "explained by the bench's own stalls",
        f"Bot audio after the warm-up: {_percent(result['bot_audio_ratio_judged'])} of real time "
        "(100 % when the server's pacer keeps up; less when the machine starves it)",
        f"Errors: {len(result['errors'])} bench-side, {result['server_log_errors']} "
        f"error line(s) in server.log, {len(result['violations'])} protocol violation(s)",
        f"Verdict: {result['verdict']}"
        + (f" ({'; '.join(result['why'])})" if result["why"] else ""),
        f"Samples and summary: {result['out_dir']}/samples.csv, summary.json",
    ]


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.0f} %"


def _get(values: dict[str, Any] | None, key: str) -> Any:
    return values[key] if values else None


def main(argv: Sequence[str] | None = None) -> int:
    """The soak's command line. 0 on PASS, 1 on FAIL, 2 on bad arguments, 130 interrupted."""
    parser = argparse.ArgumentParser(
        prog="scripts/soak.py", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--calls", type=int, default=8, help="calls kept up (default 8)")
    parser.add_argument("--minutes", type=float, default=30.0, help="length (default 30)")
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=None,
        help=f"not judged (default: a third of the run, at most {WARMUP_MAX_MIN:g})",
    )
    parser.add_argument("--sample-every", type=float, default=SAMPLE_EVERY_S, help="seconds")
    parser.add_argument(
        "--max-call-seconds",
        type=int,
        default=MAX_CALL_SECONDS,
        help=f"the bot ends a call after this (default {MAX_CALL_SECONDS})",
    )
    parser.add_argument("--transport", default="audiosocket")
    parser.add_argument("--out", type=Path, default=None, help="default /tmp/voicebot-soak/<time>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = args.out or Path(tempfile.gettempdir()) / "voicebot-soak" / time.strftime(
        "%Y%m%d-%H%M%S"
    )
    try:
        if args.calls < 1 or args.minutes <= 0 or args.sample_every <= 0:
            raise VoicebotError("--calls, --minutes and --sample-every must be positive")
        settings = soak_settings(load_settings(), args.max_call_seconds)
        out_dir.mkdir(parents=True, exist_ok=True)
        train_if_needed(settings, out_dir)
        result = asyncio.run(
            soak_async(
                settings,
                args.calls,
                args.minutes,
                out_dir,
                args.warmup_minutes,
                args.sample_every,
                args.transport,
            )
        )
    except VoicebotError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    print("\n".join(report_lines(result)))
    return 0 if result["verdict"] == "PASS" else 1

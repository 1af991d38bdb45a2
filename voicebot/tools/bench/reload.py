"""`voicebot bench --reload-at S`: the dialogue swapped during the run, and the calls' audio
pacing while it happens.

``S`` seconds into the run the bench sends SIGHUP to the server it started (what
``systemctl reload`` does): the server loads the current Rasa model, knowledge base and
prompts in a thread and swaps them in (voicebot.dialogue.live_reload). The bench reads the
server's log for the outcome ("model … in service", or "reload refused") and measures, at the
callers, the bot's frames that arrived in the reload window (from the signal to one second
after the swap) beside an equally long window just before it and the whole run: how many
frames, how many later than 40 ms, the server-side underruns (the bench's usual 20 ms
tolerance, its own stalls set apart) and the latest frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebot.tools.bench.traffic import RunData
from voicebot.tools.bench.underruns import pacing

log = logging.getLogger(__name__)

LATE_MS = 40.0  # the bound: no frame later than this during a swap
AFTER_SWAP_S = 1.0  # the reload window goes on this long after the swap
RELOAD_TIMEOUT_S = 300.0
SWAPPED = "in service ("
REFUSED = "reload refused"


@dataclass
class ReloadRun:
    """One reload during the run: wall-clock times (epoch seconds) and its outcome."""

    at_s: float  # run time at which it was asked for
    sent_at: float = 0.0
    done_at: float | None = None
    outcome: str = "not sent"  # "swapped", "refused", "no answer", "not sent"
    log_line: str = ""


async def reload_during(pid: int | None, log_path: Path, at_s: float) -> ReloadRun:
    """Wait ``at_s``, send SIGHUP to ``pid``, then follow its log until the reload's outcome."""
    run = ReloadRun(at_s)
    await asyncio.sleep(at_s)
    if pid is None:
        return run
    offset = log_path.stat().st_size if log_path.exists() else 0
    run.sent_at = time.time()
    os.kill(pid, signal.SIGHUP)
    log.info("bench: SIGHUP sent to the server (pid %d) at %.1f s", pid, at_s)
    run.outcome = "no answer"
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        line = _outcome_line(log_path, offset)
        if line is not None:
            run.done_at = time.time()
            run.outcome = "refused" if REFUSED in line else "swapped"
            run.log_line = line.strip()
            break
    return run


def _outcome_line(log_path: Path, offset: int) -> str | None:
    try:
        with log_path.open("rb") as file:
            file.seek(offset)
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return next((line for line in text.splitlines() if SWAPPED in line or REFUSED in line), None)


def window_pacing(data: RunData, start: float, end: float) -> dict[str, Any]:
    """The bot's frames that arrived between ``start`` and ``end`` (epoch seconds), every call."""
    frames = late = underruns = 0
    worst = 0.0
    for result in data.results:
        stalls = [(s - result.t0, e - result.t0) for s, e in data.stalls]
        paced = pacing(result.arrivals, stalls)
        # lateness_ms[i] is the lateness of arrival i + 1 (the first has no predecessor)
        for (arrived, _), lateness in zip(result.arrivals[1:], paced.lateness_ms, strict=True):
            if start <= result.wall0 + arrived < end:
                frames += 1
                late += lateness > LATE_MS
                worst = max(worst, lateness)
        underruns += sum(1 for _, arrived in paced.late if start <= result.wall0 + arrived < end)
    return {
        "frames": frames,
        "later_than_40ms": late,
        "underruns": underruns,
        "max_lateness_ms": round(worst, 1),
    }


def reload_summary(data: RunData, run: ReloadRun) -> dict[str, Any]:
    """The reload's outcome and the pacing in its window, before it and over the whole run."""
    summary: dict[str, Any] = {
        "at_s": run.at_s,
        "outcome": run.outcome,
        "log_line": run.log_line,
        "reload_s": round(run.done_at - run.sent_at, 1) if run.done_at else None,
    }
    if not run.sent_at:
        return summary
    end = (run.done_at or time.time()) + AFTER_SWAP_S
    length = end - run.sent_at
    summary["window_s"] = round(length, 1)
    summary["windows"] = {
        "before": window_pacing(data, run.sent_at - length, run.sent_at),
        "reload": window_pacing(data, run.sent_at, end),
        "whole_run": window_pacing(data, 0.0, float("inf")),
    }
    return summary


def report_lines(summary: dict[str, Any]) -> Sequence[str]:
    """The reload's part of the report (markdown)."""
    lines = [
        "## Live reload during the run (SIGHUP)",
        "",
        f"Sent at {summary['at_s']:g} s: {summary['outcome']}"
        + (f" in {summary['reload_s']:.1f} s" if summary.get("reload_s") is not None else "")
        + (f" — `{summary['log_line']}`" if summary.get("log_line") else ""),
        "",
    ]
    windows = summary.get("windows")
    if not windows:
        return lines
    lines += [
        f"Windows of {summary['window_s']:.1f} s (every call's bot frames):",
        "",
        "| window | bot frames | later than 40 ms | underruns (server) | max frame lateness |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "before": "just before",
        "reload": "reload (signal → swap + 1 s)",
        "whole_run": "whole run",
    }
    for key, name in names.items():
        w = windows[key]
        lines.append(
            f"| {name} | {w['frames']} | {w['later_than_40ms']} | {w['underruns']} "
            f"| {w['max_lateness_ms']:.1f} ms |"
        )
    lines.append("")
    return lines

"""`voicebot bench`, as voicebot/cli.py calls it: the arguments checked, the run, the report
printed, the exit code.

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
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from voicebot.core.config import LAYOUT, Settings
from voicebot.core.errors import VoicebotError
from voicebot.tools.bench.lines import LINE_NOISE_DBFS, LINE_RATES
from voicebot.tools.bench.run import run_async
from voicebot.tools.bench.server import train_if_needed
from voicebot.tools.bench.targets import as_target_list, parse_targets


def run_bench(
    settings: Settings,
    calls: int,
    duration_s: float,
    ramp_s: float,
    transport: str,
    find_capacity: bool,
    target: str | Sequence[str] | None,
    out_dir: Path | None,
    as_json: bool,
    noise_dbfs: float = LINE_NOISE_DBFS,
    reload_at_s: float | None = None,
) -> int:
    """`voicebot bench`. Prints the report (markdown, or JSON with ``as_json``). 0 when the
    run took place (slow answers and missed targets are in the report), 1 when it is broken
    (the reasons on stderr too); see this module's docstring for every exit code.
    ``target``: one running server's host:port, or several (the calls spread round-robin
    over them), or None to start one."""
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
    targets = as_target_list(target)
    parse_targets(targets)  # every one checked before anything starts
    if reload_at_s is not None:
        if targets or find_capacity:
            raise VoicebotError(
                "--reload-at needs the server the bench starts (no --target) and one run "
                "(no --find-capacity)"
            )
        if not 0 <= reload_at_s < duration_s:
            raise VoicebotError("--reload-at must fall within the run (0 to --duration seconds)")
    if out_dir is None:
        out_dir = LAYOUT.bench_out_dir / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not targets:
        train_if_needed(settings, out_dir)
    try:
        result = asyncio.run(
            run_async(
                settings,
                calls,
                duration_s,
                ramp_s,
                transport,
                find_capacity,
                targets,
                out_dir,
                noise_dbfs,
                reload_at_s,
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

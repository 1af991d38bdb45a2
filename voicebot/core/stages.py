"""How long each stage of a start took, for the one line a server logs when it is ready.

Issue 14 asks `voicebot serve` to be ready in 15 s from a cold start: the ready line says
where the time went (Python's start and imports, the dialogue, the ASR, the voice, the
records, the console), so that an operator sees which stage grew on their machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


class StageTimes:
    """Stages in the order they were timed, each with its seconds. Stages that ran at the
    same time as others (the dialogue while the speech models load) are listed like the
    others: their sum can exceed the total."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def merge(self, other: StageTimes) -> None:
        for stage, seconds in other.seconds.items():
            self.add(stage, seconds)

    def describe(self) -> str:
        """``dialogue 3.1, ASR 1.2, voice 0.1``: tenths of a second, in timing order."""
        return ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in self.seconds.items())


def process_age_s() -> float:
    """Seconds since this process was created (the interpreter's start included), to the
    clock tick: Linux's own start time of the process, on the clock it counts from (psutil's
    create_time adds a boot time rounded to the second)."""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii")
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the name
        started = start_ticks / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        return max(0.0, time.time() - psutil.Process().create_time())

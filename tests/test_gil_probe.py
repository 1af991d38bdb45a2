"""The GIL probe (voicebot/tools/gil_probe.py) sees a thread kept waiting."""

from __future__ import annotations

import time

from voicebot.tools.gil_probe import beside


def sum_to(n: int) -> int:
    # builtin sum over a range runs in C without ever letting another thread take the GIL
    return sum(range(n))


def test_a_call_that_holds_the_gil_shows_as_the_sleepers_longest_gap() -> None:
    n = 1_000_000
    started = time.thread_time()
    sum_to(n)
    per_million_s = max(time.thread_time() - started, 1e-4)
    n = int(n * 0.05 / per_million_s)  # about 50 ms of CPU with the GIL held
    started = time.thread_time()
    sum_to(n)
    held_ms = (time.thread_time() - started) * 1000.0
    seen = beside(lambda: sum_to(n), 0.3)
    # the sleeper wakes every millisecond unless it waits for the GIL: its longest gap
    # covers at least one whole call, however busy the machine (a busy one only adds)
    assert seen.longest_gap_ms >= 0.8 * held_ms
    assert seen.wake_ups_per_s > 0

"""What other threads get while some work runs: a probe for the GIL.

A second thread sleeps 1 ms in a loop and notes how often it wakes and the longest gap
between two wake-ups. Beside an idle thread it wakes ~700-900 times a second with gaps of
1-3 ms. Work that releases the GIL while it computes (Vosk, onnxruntime) leaves it about
that; work that holds the GIL cuts the wake-ups down, and its longest gap is the longest
the work kept every other thread of the process waiting — the calls' event loop included,
which must send each call's next 20 ms frame on time (docs/benchmarks.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Beside:
    """What the sleeping thread saw while the work ran."""

    wake_ups_per_s: float
    longest_gap_ms: float


class WakeUps:
    """A thread that sleeps 1 ms in a loop, counting its wake-ups and its longest gap."""

    def __init__(self) -> None:
        self.count = 0
        self.longest_gap_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gil-probe", daemon=True)

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.longest_gap_s = max(self.longest_gap_s, now - last)
            self.count += 1
            last = now

    def __enter__(self) -> WakeUps:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def beside(work: Callable[[], object], seconds: float) -> Beside:
    """Run ``work`` again and again for ``seconds`` with the sleeper beside it."""
    with WakeUps() as sleeper:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            work()
        elapsed = time.monotonic() - started
    return Beside(sleeper.count / elapsed, sleeper.longest_gap_s * 1000.0)

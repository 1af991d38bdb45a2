"""The audio pacing thread's real-time priority (voicebot.core.realtime): only that thread,
never what it starts afterwards."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from voicebot.core.realtime import raise_to_realtime


def in_thread(job: Any) -> Any:
    """Run ``job`` in a thread of its own (the test's own thread keeps its priority)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(job()))
    thread.start()
    thread.join(60)
    return result[0]


def policy_of_this_thread() -> int:
    return os.sched_getscheduler(threading.get_native_id()) & ~os.SCHED_RESET_ON_FORK


def test_the_pacing_thread_is_real_time_and_what_it_starts_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def job() -> tuple[bool, int, int, int]:
        raised = raise_to_realtime(10)
        own = policy_of_this_thread()
        started = in_thread(policy_of_this_thread)
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return raised, own, started, int(child.stdout)

    with caplog.at_level(logging.INFO, logger="voicebot.core.realtime"):
        raised, own, started, child = in_thread(job)
    if raised:
        assert own == os.SCHED_RR
        assert "real-time priority 10" in caplog.text
    else:  # a machine that does not permit it: normal priority, and the log says how to allow it
        assert own == os.SCHED_OTHER
        assert "LimitRTPRIO=10" in caplog.text
    assert started == os.SCHED_OTHER  # the engines' threads compete as usual
    assert child == os.SCHED_OTHER  # and so do espeak-ng and any other child process


def test_priority_zero_leaves_the_thread_alone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="voicebot.core.realtime"):
        raised, own = in_thread(lambda: (raise_to_realtime(0), policy_of_this_thread()))
    assert raised is False
    assert own == os.SCHED_OTHER
    assert "normal priority" in caplog.text

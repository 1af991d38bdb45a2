"""The engine threads take the job a caller waits for first (voicebot.core.engine_pool)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from voicebot.core.engine_pool import EnginePool, Priority, submit_at


def blocked_pool() -> tuple[EnginePool, threading.Event]:
    """One thread, held by a job until the returned event is set."""
    pool = EnginePool(max_workers=1)
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    pool.submit(hold)
    assert started.wait(10)
    return pool, release


def test_waiting_jobs_run_most_urgent_first_then_in_order() -> None:
    pool, release = blocked_pool()
    ran: list[str] = []
    futures = [
        pool.submit_at(Priority.STREAM, ran.append, "feed call 1"),
        pool.submit_at(Priority.BACKGROUND, ran.append, "warm a recognizer"),
        pool.submit_at(Priority.REPLY, ran.append, "final call 2"),
        pool.submit_at(Priority.STREAM, ran.append, "feed call 3"),
        pool.submit(ran.append, "reply audio call 4"),  # plain submit: a caller waits
    ]
    release.set()
    for future in futures:
        future.result(10)
    pool.shutdown()
    assert ran == [
        "final call 2",
        "reply audio call 4",
        "feed call 1",
        "feed call 3",
        "warm a recognizer",
    ]


def test_results_keyword_arguments_and_errors_reach_the_caller() -> None:
    pool = EnginePool(max_workers=2)
    assert pool.submit(int, "ff", base=16).result(10) == 255
    failed = pool.submit_at(Priority.STREAM, int, "not a number")
    with pytest.raises(ValueError, match="not a number"):
        failed.result(10)
    pool.shutdown()


def test_a_job_cancelled_while_it_waits_never_runs() -> None:
    pool, release = blocked_pool()
    ran: list[str] = []
    cancelled = pool.submit_at(Priority.STREAM, ran.append, "hung up")
    kept = pool.submit_at(Priority.STREAM, ran.append, "still here")
    assert cancelled.cancel()
    release.set()
    kept.result(10)
    pool.shutdown()
    assert ran == ["still here"]


def test_shutdown_cancelling_leaves_no_waiter_hanging() -> None:
    pool, release = blocked_pool()
    waiting = [pool.submit_at(Priority.STREAM, lambda: None) for _ in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    for future in waiting:
        with pytest.raises(Exception) as raised:  # CancelledError, never a timeout
            future.result(10)
        assert not isinstance(raised.value, FutureTimeout)
        assert future.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    pool.shutdown()


def test_a_plain_executor_takes_prioritised_jobs_in_its_own_order() -> None:
    with ThreadPoolExecutor(max_workers=1) as plain:
        assert submit_at(plain, Priority.BACKGROUND, max, 3, 7).result(10) == 7

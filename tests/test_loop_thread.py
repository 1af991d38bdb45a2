"""voicebot.core.loop_thread: coroutines that never wait run off the calls' event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from voicebot.core.loop_thread import LoopThread


def busy(seconds: float) -> None:
    """CPU with the interpreter held, as Rasa's pure-Python parts do."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_the_callers_loop_runs_while_a_coroutine_computes_on_the_thread() -> None:
    worker = LoopThread("test-worker")
    passes = 0
    done = False

    async def compute() -> str:
        busy(0.3)
        return threading.current_thread().name

    async def ticker() -> None:
        nonlocal passes
        while not done:
            passes += 1
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    try:
        assert await worker.run(compute()) == "test-worker"
    finally:
        done = True
        await ticking
        worker.close()
    # on the caller's own loop, the ticker would not have run at all during compute()
    assert passes > 10


async def test_coroutines_share_one_loop_one_after_the_other() -> None:
    worker = LoopThread("test-worker")
    loops: set[int] = set()
    order: list[int] = []

    async def step(n: int) -> int:
        loops.add(id(asyncio.get_running_loop()))
        order.append(n)
        return n * n

    try:
        results = await asyncio.gather(*(worker.run(step(n)) for n in range(5)))
    finally:
        worker.close()
    assert results == [0, 1, 4, 9, 16]
    assert len(loops) == 1 and id(asyncio.get_running_loop()) not in loops
    assert sorted(order) == list(range(5))


async def test_errors_come_back_and_a_closed_thread_refuses_work() -> None:
    worker = LoopThread("test-worker")

    async def fails() -> None:
        raise ValueError("mauvais")

    with pytest.raises(ValueError, match="mauvais"):
        await worker.run(fails())
    worker.close()

    async def never_run() -> None:  # pragma: no cover - refused before it starts
        raise AssertionError

    with pytest.raises(RuntimeError, match="closed"):
        await worker.run(never_run())


async def test_cancelling_the_caller_cancels_the_coroutine_on_the_thread() -> None:
    worker = LoopThread("test-worker")
    started = threading.Event()
    cancelled = threading.Event()

    async def waits() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.ensure_future(worker.run(waits()))
    try:
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(cancelled.wait, 10)
    finally:
        worker.close()

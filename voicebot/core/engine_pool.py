"""The engine threads of a process, which take the jobs a caller is waiting for first.

With twelve calls on two cores, every speaking caller's recognizer is fed 100 ms of audio
at a time while others have stopped speaking and wait for their answer. In a plain thread
pool the end of an utterance (Vosk's final result) and the reply's audio queue behind the
other calls' feeds. Here every job has a priority: a job someone waits for (``REPLY``, the
default of ``submit``) runs before streaming work (``STREAM``: audio fed as it comes, whose
result nothing waits for yet) and before background work (``BACKGROUND``: warming
recognizers). Jobs of one priority run in the order given.

Each submitted job queues one runner on a standard ThreadPoolExecutor; a runner, when a
thread takes it, runs the most urgent job waiting at that moment. The pool keeps the
standard executor's threads, shutdown and exit handling; only the order changes.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

_T = TypeVar("_T")


class Priority(enum.IntEnum):
    REPLY = 0  # a caller waits for the result: an utterance's end, the reply's audio
    STREAM = 1  # audio fed as it comes: whatever needs it next waits for it anyway
    BACKGROUND = 2  # work no call waits for: warming recognizers


class EnginePool(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose threads take the most urgent waiting job first."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "engine") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._waiting: list[tuple[int, int, Future[Any], Callable[[], Any]]] = []
        self._order = itertools.count()
        self._waiting_lock = threading.Lock()

    def submit_at(self, priority: Priority, fn: Callable[..., _T], /, *args: Any) -> Future[_T]:
        future: Future[_T] = Future()
        with self._waiting_lock:
            # the runner first: after shutdown it raises, and no job is left waiting
            super().submit(self._run_most_urgent)
            heapq.heappush(self._waiting, (priority, next(self._order), future, lambda: fn(*args)))
        return future

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        return self.submit_at(Priority.REPLY, lambda: fn(*args, **kwargs))

    def _run_most_urgent(self) -> None:
        with self._waiting_lock:
            if not self._waiting:  # shutdown(cancel_futures=True) cancelled them
                return
            _, _, future, job = heapq.heappop(self._waiting)
        if not future.set_running_or_notify_cancel():
            return  # cancelled while it waited (its caller hung up)
        try:
            result = job()
        except BaseException as exc:  # handed to whoever waits, as every executor does
            future.set_exception(exc)
        else:
            future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=cancel_futures)  # from now on submit raises
        if cancel_futures:
            with self._waiting_lock:
                waiting, self._waiting = self._waiting, []
            for _, _, future, _ in waiting:
                future.cancel()
        if wait:
            super().shutdown(wait=True)


def submit_at(
    executor: Executor, priority: Priority, fn: Callable[..., _T], /, *args: Any
) -> Future[_T]:
    """``executor.submit`` with a priority when the executor has them (tools that decode
    one file at a time use a plain pool)."""
    if isinstance(executor, EnginePool):
        return executor.submit_at(priority, fn, *args)
    return executor.submit(fn, *args)

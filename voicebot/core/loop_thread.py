"""An event loop of its own, in its own thread, for coroutines that compute without waiting.

Rasa's ``parse_message`` and ``handle_message`` are coroutines, but with the in-memory
tracker store and in-process actions they never wait: a turn is 20–100 ms of CPU in one
piece. On the calls' event loop that is 20–100 ms in which no call's pacer sends a frame,
and every call's audio arrives late. On a loop of their own, in a thread, the calls' loop
keeps running: Python hands the interpreter to the other thread every 5 ms
(``sys.getswitchinterval``), and TensorFlow's kernels run without it.

All the coroutines given to one ``LoopThread`` run on its single loop, one after the other
when they never wait, so the state they share (Rasa's trackers and locks) sees one loop only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Runs coroutines on a private event loop in a daemon thread."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on the private loop. Cancelling the caller cancels it there."""
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError(f"{self._thread.name} is closed")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def close(self) -> None:
        """Stop the loop once the coroutine in progress gives it back; wait for the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

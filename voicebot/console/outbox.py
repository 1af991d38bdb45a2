"""The outgoing side of one browser: a bounded queue that never makes a call or another
browser wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from voicebot.core.logs import call_logger

log = logging.getLogger(__name__)


class _Resync:
    """In an outbox's queue: a snapshot of the board goes here, taken when it is sent."""


_RESYNC = _Resync()


@dataclass(frozen=True)
class _Update:
    """In an outbox's queue: a change of the board (JSON), that a snapshot can stand for."""

    text: str


_Item = str | bytes | _Update | _Resync | None  # None: close the socket


class Outbox:
    """A bounded queue of messages to one browser, drained by its own task.

    Nothing here ever waits for the browser: ``offer``, ``update`` and ``resync`` return at
    once, so a browser cannot slow a call or another browser.

    - ``offer`` queues a message that must arrive as it is (a softphone's audio and events,
      replies). When the queue is full the browser is not reading: its connection is cut
      and ``on_drop`` runs.
    - ``update`` queues a change of the console board. A console that falls behind loses
      nothing and is not cut: its pending changes are replaced by one snapshot of the board,
      taken when it is sent, so it says all they said (``snapshot`` gives it, as JSON).

    One send that takes longer than ``send_timeout_s`` cuts the browser (it is stuck), and
    so does needing ``max_resyncs`` snapshots in a row without once keeping up with the
    changes in between; a console page reconnects by itself and starts from a snapshot.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        size: int,
        send_timeout_s: float,
        on_drop: Callable[[str], None] | None = None,
        call_id: str | None = None,
        snapshot: Callable[[], str] | None = None,
        max_resyncs: int = 3,
    ) -> None:
        self._ws = ws
        self._log: logging.Logger | logging.LoggerAdapter[logging.Logger] = (
            call_logger(__name__, call_id) if call_id else log
        )
        self._request = request
        self._size = size
        self._pending: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._send_timeout_s = send_timeout_s
        self._on_drop = on_drop
        self._snapshot = snapshot
        self._max_resyncs = max_resyncs
        self._resync_pending = False
        self._resyncs_in_a_row = 0
        self.resyncs = 0  # snapshots sent because the browser fell behind (or connected)
        self.dropped = False
        self.closing = False
        self._task = asyncio.create_task(self._drain())

    @property
    def pending(self) -> int:
        """Messages waiting to be sent (bounded by ``size``, plus one snapshot marker)."""
        return len(self._pending)

    def _put(self, item: _Item) -> None:
        self._pending.append(item)
        self._wake.set()

    def offer(self, message: dict[str, Any] | bytes | str) -> bool:
        """Queue one message (a ``str`` is JSON text already); False if it will not go."""
        if self.dropped or self.closing:
            return False
        if len(self._pending) >= self._size:
            self.drop("send queue full")
            return False
        item = message if isinstance(message, (bytes, str)) else to_json(message)
        self._put(item)
        return True

    def update(self, text: str) -> bool:
        """Queue a change of the board (JSON text); coalesced into a snapshot when behind."""
        if self._snapshot is None:
            return self.offer(text)
        if self.dropped or self.closing:
            return False
        if self._resync_pending:
            return True  # the snapshot waiting in the queue will be taken after this change
        if len(self._pending) >= self._size:
            self._log.info("console behind by %d updates: a snapshot replaces them", self._size)
            self.resync()
        else:
            self._put(_Update(text))
        return True

    def resync(self) -> None:
        """Replace the pending board changes by one snapshot, taken when it is sent.

        The other messages (replies to the browser) keep their place.
        """
        if self._snapshot is None or self.dropped or self.closing or self._resync_pending:
            return
        self._resyncs_in_a_row += 1
        if self._resyncs_in_a_row > self._max_resyncs:
            self.drop(f"{self._max_resyncs} snapshots in a row without keeping up")
            return
        kept = [item for item in self._pending if not isinstance(item, _Update)]
        self._pending.clear()
        self._pending.extend(kept)
        self._resync_pending = True
        self._put(_RESYNC)

    def drop_audio(self) -> int:
        """Forget the audio not sent yet (barge-in); keep the other messages in order."""
        kept = [item for item in self._pending if not isinstance(item, bytes)]
        dropped = len(self._pending) - len(kept)
        self._pending.clear()
        self._pending.extend(kept)
        return dropped

    def close_after_sending(self) -> None:
        """Send what is queued, then close the WebSocket."""
        if self.dropped or self.closing:
            return
        self.closing = True
        if len(self._pending) >= self._size:
            self.drop("send queue full")
            return
        self._put(None)

    def drop(self, why: str) -> None:
        if self.dropped:
            return
        self.dropped = True
        self._pending.clear()
        self._log.warning("browser disconnected: %s", why)
        transport = self._request.transport
        if transport is not None:
            transport.abort()  # a close frame could not get through either
        if self._task is not asyncio.current_task():
            self._task.cancel()
        if self._on_drop is not None:
            self._on_drop(why)

    def _take_batch(self) -> list[str | bytes | None]:
        """Everything waiting, with the snapshot marker turned into the board as it is now."""
        batch: list[str | bytes | None] = []
        kept_up = False
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, _Resync):
                assert self._snapshot is not None  # noqa: S101 — a resync is queued only with a snapshot; narrows the type
                # Taken now, after every change queued so far: the changes it replaced, and
                # those dropped while it waited, are all in it.
                self._resync_pending = False
                self.resyncs += 1
                batch.append(self._snapshot())
            elif isinstance(item, _Update):
                kept_up = True
                batch.append(item.text)
            else:
                batch.append(item)
        if kept_up:
            self._resyncs_in_a_row = 0
        return batch

    async def _drain(self) -> None:
        try:
            while True:
                # Everything waiting goes out in one batch under one timeout: the sender
                # keeps up with any producer that the event loop itself keeps up with.
                await self._wake.wait()
                self._wake.clear()
                batch = self._take_batch()
                if batch and not await asyncio.wait_for(self._send(batch), self._send_timeout_s):
                    return
        except asyncio.TimeoutError:
            self.drop("the browser stopped reading")
        except (ConnectionError, RuntimeError):
            self.dropped = True  # the connection is gone already

    async def _send(self, batch: list[str | bytes | None]) -> bool:
        """Send a batch; False once the socket is closed (the ``None`` marker)."""
        for item in batch:
            if item is None:
                await self._ws.close()
                return False
            if isinstance(item, bytes):
                await self._ws.send_bytes(item)
            else:
                await self._ws.send_str(item)
        return True

    async def finish(self, timeout_s: float) -> None:
        """Send what is queued and close (unless dropped); give up after ``timeout_s``."""
        if not self.dropped:
            self.close_after_sending()
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


def to_json(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)

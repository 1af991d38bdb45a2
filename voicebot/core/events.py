"""A small in-process publish/subscribe hub for live call events (console, softphone, bench).

Publishing never blocks a call. Two ways to follow the calls:

- a *listener* is called synchronously by ``publish``, for every event, and is never
  dropped: for consumers that must not lose an event (the console's board) and whose work
  per event is a few dict updates that never wait;
- a *subscription* is a bounded queue read at the subscriber's pace; one that is full (a
  reader that stopped reading) loses its subscription instead of slowing the audio path,
  so it may miss events under a burst.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[["CallEvent"], None]


@dataclass(frozen=True)
class CallEvent:
    call_id: str
    # kind and its data (what the session publishes):
    #   "started"  {transport}        "state"   {state}
    #   "partial"  {text}                          "caller"  {text, asr_confidence}
    #   "bot"      {text, intent, confidence, entities}
    #   "handoff"  {reason, intent, entities, summary, last_utterances, context_delivered}
    #   "timing"   {stage timings of one turn, ms}  "ended"   {outcome, duration_s, handoff_reason}
    #   "underrun" {late_ms}: a bot frame the pacer sent over 40 ms after its due time
    #   "taken"    {}: an operator took the transferred call from the console's queue
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "kind": self.kind, "at": self.at, **self.data}


class CallHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[CallEvent]] = set()
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` inside every ``publish``; returns what stops it.

        It runs on the publishing call's path: it must be quick and must never wait.
        """
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def subscribe(self) -> asyncio.Queue[CallEvent]:
        queue: asyncio.Queue[CallEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[CallEvent]) -> None:
        self._subscribers.discard(queue)

    def publish(self, event: CallEvent) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                # A listener's bug must not break the call that published.
                log.exception("call event listener failed on %r", event.kind)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

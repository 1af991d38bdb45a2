"""A small in-process publish/subscribe hub for live call events (console, softphone, bench).

Publishing never blocks a call: a subscriber whose queue is full (a client that never
reads) loses its subscription instead of slowing the audio path.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CallEvent:
    call_id: str
    # kind and its data (what the session publishes):
    #   "started"  {transport}        "state"   {state}
    #   "partial"  {text}                          "caller"  {text, asr_confidence}
    #   "bot"      {text, intent, confidence, entities}
    #   "handoff"  {reason, intent, entities, summary, last_utterances, context_delivered}
    #   "timing"   {stage timings of one turn, ms}  "ended"   {outcome, duration_s, handoff_reason}
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "kind": self.kind, "at": self.at, **self.data}


class CallHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[CallEvent]] = set()

    def subscribe(self) -> asyncio.Queue[CallEvent]:
        queue: asyncio.Queue[CallEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[CallEvent]) -> None:
        self._subscribers.discard(queue)

    def publish(self, event: CallEvent) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

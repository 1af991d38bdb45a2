"""The console's live board: the live calls and the queue of transferred calls, kept up to
date from the call hub and pushed to every console through its ``Outbox``."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from voicebot.console.context import WebLimits
from voicebot.console.outbox import Outbox, to_json
from voicebot.core.events import CallEvent, CallHub
from voicebot.core.logs import redact_numbers_in

log = logging.getLogger(__name__)

REASON_LABELS = {
    "demande": "Demande de l'appelant",
    "dtmf": "Touche du clavier",
    "urgence": "Urgence",
    "incompréhension": "Incompréhension répétée",
    "confiance_asr": "Reconnaissance vocale incertaine",
    "durée": "Durée maximale atteinte",
    "erreur": "Incident technique",
    "arrêt": "Arrêt du service",
}


class LiveBoard:
    """What every console shows, kept up to date from the call hub, pushed to each console.

    The hub calls ``apply`` inside every ``publish`` (a listener, never dropped): the board
    cannot fall behind the calls, whatever the burst (a task reading a bounded subscription
    could, and then lost events). It costs the publishing call a few dict updates, the
    redaction of the turn's text and one JSON encoding: well under a millisecond for a
    usual turn, and nothing that waits. Each console then gets the change through its own
    ``Outbox``, which never waits either and turns a backlog into one fresh snapshot.
    """

    def __init__(self, hub: CallHub, limits: WebLimits, publish: CallHub | None = None) -> None:
        """``hub``: what the board follows; ``publish``: where it says that an operator took
        a call (this process's own hub, whose events the live relay shares with the other
        hosts' consoles when there is one; ``hub`` when not given)."""
        self.hub = hub
        self.publish = publish or hub
        self.limits = limits
        self.live: dict[str, dict[str, Any]] = {}
        self.transcripts: dict[str, list[dict[str, Any]]] = {}
        self.queue: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.consoles: set[Outbox] = set()
        self._stop_listening: Callable[[], None] | None = None
        self._version = 0  # moves with every change of what the consoles show
        self._snapshot_text: tuple[int, str] | None = None

    def start(self) -> None:
        if self._stop_listening is None:
            self._stop_listening = self.hub.listen(self._on_event)

    def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None

    def _on_event(self, event: CallEvent) -> None:
        try:
            self.apply(event)
        except Exception:
            log.exception("console board: bad event %r", event.kind)

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "live": list(self.live.values()),
            "queue": list(self.queue.values()),
        }

    def snapshot_text(self) -> str:
        """The snapshot as JSON, encoded once per state of the board.

        A burst puts every console behind at once: they all get the same snapshot, and the
        event loop (which paces the calls' audio) encodes it only once.
        """
        if self._snapshot_text is None or self._snapshot_text[0] != self._version:
            self._snapshot_text = (self._version, to_json(self.snapshot()))
        return self._snapshot_text[1]

    def broadcast(self, message: dict[str, Any]) -> None:
        if not self.consoles:
            return
        text = to_json(message)  # once, whatever the number of consoles
        for outbox in list(self.consoles):
            outbox.update(text)

    def take(self, call_id: str) -> bool:
        """An operator took a transferred call: it leaves every console's queue."""
        if not self._remove_from_queue(call_id):
            return False
        # The other hosts' consoles too (through the live relay); back here it finds
        # nothing left to remove.
        self.publish.publish(CallEvent(call_id, "taken"))
        return True

    def _remove_from_queue(self, call_id: str) -> bool:
        if self.queue.pop(call_id, None) is None:
            return False
        self._version += 1
        self.broadcast({"type": "queue_remove", "call_id": call_id})
        return True

    def _call(self, event: CallEvent) -> dict[str, Any]:
        call = self.live.get(event.call_id)
        if call is None:
            call = {
                "call_id": event.call_id,
                "transport": None,
                "host": None,  # the bot host that holds the call (several hosts)
                "started_at": event.at,
                "state": "accueil",
                "last_caller": None,
                "last_bot": None,
                "intent": None,
                "confidence": None,
                "asr_confidence": None,
            }
            self.live[event.call_id] = call
            self.transcripts[event.call_id] = []
            while len(self.live) > self.limits.live_calls:
                oldest = next(iter(self.live))
                self.live.pop(oldest)
                self.transcripts.pop(oldest, None)
                # Its end was never seen: the consoles drop its row all the same.
                self.broadcast({"type": "call_ended", "call_id": oldest, "outcome": None})
        return call

    def _add_turn(self, event: CallEvent, speaker: str) -> str:
        """Add the turn to the call's transcript; returns its text, numbers redacted."""
        transcript = self.transcripts.setdefault(event.call_id, [])
        # Redacted once per turn: this runs inside the publishing call (see the class).
        text = redact_numbers_in(str(event.data.get("text") or ""))
        turn = {
            "at": event.at,
            "speaker": speaker,
            "text": text,
            "intent": event.data.get("intent"),
            "confidence": event.data.get("confidence"),
            "asr_confidence": event.data.get("asr_confidence"),
        }
        transcript.append(turn)
        del transcript[: -self.limits.transcript_turns]
        return text

    def apply(self, event: CallEvent) -> None:
        kind, data = event.kind, event.data
        if kind == "taken":  # by an operator, on this console or another host's
            self._remove_from_queue(event.call_id)
            return
        if kind not in ("started", "state", "caller", "bot", "handoff", "ended"):
            # "partial", "timing": too fine-grained for the operators. Any other kind is
            # not shown: it must not create a live row that no console is told about.
            return
        self._version += 1
        if kind == "ended":
            self.live.pop(event.call_id, None)
            self.transcripts.pop(event.call_id, None)
            entry = self.queue.get(event.call_id)
            if entry is not None:
                entry["ended"] = True
            self.broadcast(
                {
                    "type": "call_ended",
                    "call_id": event.call_id,
                    "outcome": data.get("outcome"),
                    "channel_end": data.get("channel_end"),
                    "duration_s": data.get("duration_s"),
                }
            )
            return
        call = self._call(event)
        if kind == "started":
            call["transport"] = data.get("transport")
            call["host"] = data.get("host")
            call["started_at"] = event.at
        elif kind == "state":
            call["state"] = str(data.get("state") or "")
        elif kind == "caller":
            call["last_caller"] = self._add_turn(event, "caller")
            call["asr_confidence"] = data.get("asr_confidence")
        elif kind == "bot":
            call["last_bot"] = self._add_turn(event, "bot")
            if data.get("intent") is not None:
                call["intent"] = data.get("intent")
                call["confidence"] = data.get("confidence")
        else:  # handoff
            self._on_handoff(event, call)
            return
        self.broadcast({"type": "call", "call": call})

    def _on_handoff(self, event: CallEvent, call: dict[str, Any]) -> None:
        data = event.data
        transcript = list(self.transcripts.get(event.call_id, []))
        reason = str(data.get("reason") or "")
        entry = {
            "call_id": event.call_id,
            "at": event.at,
            "transport": call.get("transport"),
            "started_at": call.get("started_at"),
            "reason": reason,
            "reason_label": REASON_LABELS.get(reason, reason),
            "intent": data.get("intent"),
            "entities": redact_numbers_in(dict(data.get("entities") or {})),
            "summary": redact_numbers_in(str(data.get("summary") or "")),
            "last_utterances": redact_numbers_in(list(data.get("last_utterances") or [])),
            "context_delivered": data.get("context_delivered"),
            "bot_answers": [t["text"] for t in transcript if t["speaker"] == "bot" and t["text"]],
            "transcript": transcript,
            "ended": False,
        }
        call["state"] = "transfert"
        self.queue[event.call_id] = entry
        self.queue.move_to_end(event.call_id)
        while len(self.queue) > self.limits.queue_entries:
            oldest, _ = self.queue.popitem(last=False)
            # The consoles drop it too, or a page open all day would keep every one.
            self.broadcast({"type": "queue_remove", "call_id": oldest})
        self.broadcast({"type": "handoff", "entry": entry})
        self.broadcast({"type": "call", "call": call})

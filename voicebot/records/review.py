"""The console's « Améliorer le robot »: what callers said that the bot missed, and what
trainers decided about it (a part of ``voicebot.records.store.CallRecords``).

A caller turn is *missed* when the bot's answer to it (the next turn, when it is the bot's:
the intent and confidence are recorded on the reply) is the NLU fallback, or an intent
below ``cutoff`` (the fallback threshold plus a margin: the console passes it), or when the
call ended transferred because the bot could not understand the caller
(``MISSED_HANDOFF_REASONS``) and the turn was not confidently understood (a sentence the
speech recogniser was unsure of never reaches the NLU: its answer has no intent). Text only:
the records hold no audio.

Missed sentences are grouped by ``sentence_key`` (case, accents, punctuation, spacing
ignored); a group a trainer decided on (``relabels``) leaves the queue. The ``relabels``
table names no caller and no number: the purge of old calls leaves it alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from voicebot.core.french import sentence_key
from voicebot.core.logs import redact_numbers
from voicebot.records.database import (
    RELABEL_DECISIONS,
    RecordsDatabase,
    calls_table,
    relabels_table,
    turns_table,
)

FALLBACK_INTENT = "nlu_fallback"
# Handoff reasons that mean "the bot did not understand": the dialogue's repeated fallback
# (voicebot.dialogue.actions.not_understood) and the speech recogniser's repeated doubt
# (voicebot.call.policy.TurnPolicy._not_heard).
MISSED_HANDOFF_REASONS = ("incompréhension", "confiance_asr")
# The newest missed turns read for one queue: enough for weeks of a busy line, and a page
# that answers in well under a second whatever the size of the records.
MAX_SCANNED_TURNS = 20_000
MAX_QUEUE_LIMIT = 500
MAX_KEY_CHARS = 500  # relabels.text_key
KEY_TEXT = "[touche"  # a key pressed on the keypad, recorded as "[touche 0]": not a sentence


def review_key(text: str) -> str:
    """The key a sentence is grouped and relabelled under."""
    return sentence_key(text)[:MAX_KEY_CHARS]


@dataclass
class ReviewGroup:
    """Callers' sentences that share one key, with what the bot made of them."""

    key: str
    text: str  # the most frequent spelling
    count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    spellings: Counter[str] = field(default_factory=Counter)
    intents: Counter[str] = field(default_factory=Counter)
    confidences: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # why each turn is in the queue
    call_ids: set[str] = field(default_factory=set)

    def add(self, row: Any, why: str) -> None:
        self.count += 1
        self.first_seen = min(self.first_seen or row.at, row.at)
        self.last_seen = max(self.last_seen, row.at)
        self.spellings[row.text.strip()] += 1
        self.intents[row.answer_intent or "aucune"] += 1
        if row.answer_confidence is not None:
            self.confidences.append(float(row.answer_confidence))
        if row.answer_text:
            self.answers[row.answer_text] += 1
        self.reasons[why] += 1
        if row.call_id not in self.call_ids:  # one outcome per call, however many turns
            self.call_ids.add(row.call_id)
            self.outcomes[row.outcome or "in_progress"] += 1

    def as_dict(self) -> dict[str, Any]:
        confidences = self.confidences
        return {
            "key": self.key,
            "text": self.spellings.most_common(1)[0][0],
            "spellings": [text for text, _ in self.spellings.most_common(5)],
            "count": self.count,
            "calls": len(self.call_ids),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "intent": self.intents.most_common(1)[0][0],
            "intents": dict(self.intents.most_common()),
            "confidence_min": round(min(confidences), 3) if confidences else None,
            "confidence_mean": (
                round(sum(confidences) / len(confidences), 3) if confidences else None
            ),
            "bot_answer": self.answers.most_common(1)[0][0] if self.answers else None,
            "outcomes": dict(self.outcomes.most_common()),
            "reasons": dict(self.reasons.most_common()),
        }


def why_missed(row: Any, cutoff: float) -> str | None:
    """ "fallback", "low_confidence", "transferred" or None (understood: not in the queue)."""
    if row.answer_intent == FALLBACK_INTENT:
        return "fallback"
    if row.answer_intent and row.answer_confidence is not None:
        if float(row.answer_confidence) < cutoff:
            return "low_confidence"
        return None
    transferred = row.outcome == "transferred" and row.handoff_reason in MISSED_HANDOFF_REASONS
    return "transferred" if transferred else None


class ReviewQueries(RecordsDatabase):
    """The review queue and the trainers' decisions (a part of ``CallRecords``)."""

    async def review_queue(
        self, cutoff: float, limit: int = 100, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Groups of missed caller sentences, most frequent first, then most recent.
        ``cutoff``: an answer's confidence below it counts as missed."""
        limit = max(1, min(int(limit), MAX_QUEUE_LIMIT))

        def work(conn: Connection) -> list[dict[str, Any]]:
            decided = {key for (key,) in conn.execute(sa.select(relabels_table.c.text_key))}
            groups: dict[str, ReviewGroup] = {}
            for row in conn.execute(_missed_turns(cutoff, since)):
                why = why_missed(row, cutoff)
                text = row.text.strip()
                if why is None or not text or text.startswith(KEY_TEXT):
                    continue
                key = review_key(text)
                if not key or key in decided:
                    continue
                group = groups.setdefault(key, ReviewGroup(key, text))
                group.add(row, why)
            ranked = sorted(groups.values(), key=lambda g: (g.count, g.last_seen), reverse=True)
            return [group.as_dict() for group in ranked[:limit]]

        return await self._run(work)

    async def add_relabel(
        self,
        who: str,
        text: str,
        decision: str,
        intent: str | None = None,
        entity: str | None = None,
        value: str | None = None,
    ) -> None:
        """A trainer's decision on a sentence: its group leaves the review queue."""
        if decision not in RELABEL_DECISIONS:
            raise ValueError(f"decision must be one of {RELABEL_DECISIONS}, not {decision!r}")
        # As every text of the records: no phone number in clear, whoever typed it.
        text, who = redact_numbers(text), redact_numbers(who)
        key = review_key(text)
        if not key or not who.strip():
            raise ValueError("a relabel needs a sentence and the trainer's name")
        now = self._clock()

        def work(conn: Connection) -> None:
            conn.execute(
                relabels_table.insert().values(
                    at=now,
                    who=who.strip()[:100],
                    text=text,
                    text_key=key,
                    decision=decision,
                    intent=intent[:100] if intent else None,
                    entity=entity[:100] if entity else None,
                    value=value[:200] if value else None,
                )
            )

        await self._run(work)

    async def relabels(self, limit: int = 100) -> list[dict[str, Any]]:
        """The trainers' latest decisions, newest first."""
        limit = max(1, min(int(limit), MAX_QUEUE_LIMIT))

        def work(conn: Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                sa.select(relabels_table).order_by(relabels_table.c.id.desc()).limit(limit)
            )
            return [dict(row._mapping) for row in rows]

        return await self._run(work)


def _missed_turns(cutoff: float, since: float | None) -> sa.Select[Any]:
    """Caller turns with their answer (the call's next turn, when it is the bot's) and their
    call's ending, newest first, narrowed in SQL to those ``why_missed`` may keep."""
    caller = turns_table.alias("caller")
    answer = turns_table.alias("answer")
    next_id = (
        sa.select(sa.func.min(turns_table.c.id))
        .where(turns_table.c.call_id == caller.c.call_id, turns_table.c.id > caller.c.id)
        .scalar_subquery()
    )
    understood_badly = sa.or_(
        answer.c.intent == FALLBACK_INTENT,
        sa.and_(answer.c.intent.is_not(None), answer.c.confidence < cutoff),
    )
    not_understood_then_transferred = sa.and_(
        sa.or_(answer.c.intent.is_(None), answer.c.confidence.is_(None)),
        calls_table.c.outcome == "transferred",
        calls_table.c.handoff_reason.in_(MISSED_HANDOFF_REASONS),
    )
    statement = (
        sa.select(
            caller.c.call_id,
            caller.c.at,
            caller.c.text,
            answer.c.text.label("answer_text"),
            answer.c.intent.label("answer_intent"),
            answer.c.confidence.label("answer_confidence"),
            calls_table.c.outcome,
            calls_table.c.handoff_reason,
        )
        .select_from(caller)
        .join(calls_table, calls_table.c.call_id == caller.c.call_id)
        .outerjoin(answer, sa.and_(answer.c.id == next_id, answer.c.speaker == "bot"))
        .where(caller.c.speaker == "caller")
        .where(sa.or_(understood_badly, not_understood_then_transferred))
    )
    if since is not None:
        statement = statement.where(caller.c.at >= since)
    return statement.order_by(caller.c.id.desc()).limit(MAX_SCANNED_TURNS)

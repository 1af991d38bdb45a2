"""What the console and the city read from the call records: search, one call, statistics."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from voicebot.records.database import (
    OUTCOMES,
    RecordsDatabase,
    calls_table,
    search_form,
    turns_table,
)

MAX_SEARCH_LIMIT = 500


class RecordsQueries(RecordsDatabase):
    """The reads of the call records (a part of ``voicebot.records.store.CallRecords``)."""

    async def search(
        self, query: str = "", limit: int = 50, outcome: str | None = None
    ) -> list[dict[str, Any]]:
        """Past calls, newest first: ``query`` matches a call id (prefix), a reason, an intent
        or any word said in the call (case and accents ignored)."""
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        limit = max(1, min(int(limit), MAX_SEARCH_LIMIT))
        needle = search_form(query.strip())[:200]

        def work(conn: Connection) -> list[dict[str, Any]]:
            statement = sa.select(calls_table)
            if outcome is not None:
                statement = statement.where(calls_table.c.outcome == outcome)
            if needle:
                pattern = "%" + _escape_like(needle) + "%"
                said = sa.select(turns_table.c.id).where(
                    turns_table.c.call_id == calls_table.c.call_id,
                    turns_table.c.text_search.like(pattern, escape="\\"),
                )
                statement = statement.where(
                    sa.or_(
                        calls_table.c.call_id.like(_escape_like(query.strip()) + "%", escape="\\"),
                        calls_table.c.handoff_search.like(pattern, escape="\\"),
                        said.exists(),
                    )
                )
            statement = statement.order_by(calls_table.c.started_at.desc()).limit(limit)
            return [_call_summary(row._mapping) for row in conn.execute(statement)]

        return await self._run(work)

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """One call with its handoff and every turn, or None."""

        def work(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(
                sa.select(calls_table).where(calls_table.c.call_id == call_id)
            ).first()
            if row is None:
                return None
            call = _call_summary(row._mapping)
            call["handoff"] = json.loads(row.handoff) if row.handoff else None
            turns = conn.execute(
                sa.select(turns_table)
                .where(turns_table.c.call_id == call_id)
                .order_by(turns_table.c.id)
            )
            call["turns"] = [
                {
                    "at": t.at,
                    "speaker": t.speaker,
                    "text": t.text,
                    "intent": t.intent,
                    "confidence": t.confidence,
                    "asr_confidence": t.asr_confidence,
                    "latency_ms": t.latency_ms,
                    "model_version": t.model_version,
                }
                for t in turns
            ]
            return call

        return await self._run(work)

    async def stats(self, since: float | None = None) -> dict[str, Any]:
        """Calls per outcome and mean time with the bot (all records, or since a time)."""

        def work(conn: Connection) -> dict[str, Any]:
            where = [calls_table.c.started_at >= since] if since is not None else []
            by_outcome = dict.fromkeys(OUTCOMES, 0)
            in_progress = 0
            rows = conn.execute(
                sa.select(calls_table.c.outcome, sa.func.count())
                .where(*where)
                .group_by(calls_table.c.outcome)
            )
            for outcome, count in rows:
                if outcome is None:
                    in_progress += int(count)
                else:
                    by_outcome[str(outcome)] = by_outcome.get(str(outcome), 0) + int(count)
            mean = conn.execute(
                sa.select(sa.func.avg(calls_table.c.duration_s)).where(
                    *where, calls_table.c.duration_s.is_not(None)
                )
            ).scalar()
            reasons = conn.execute(
                sa.select(calls_table.c.handoff_reason, sa.func.count())
                .where(*where, calls_table.c.handoff_reason.is_not(None))
                .group_by(calls_table.c.handoff_reason)
            )
            return {
                "calls": sum(by_outcome.values()) + in_progress,
                "in_progress": in_progress,
                **by_outcome,
                "mean_duration_s": round(float(mean), 1) if mean is not None else None,
                "handoff_reasons": {str(r): int(n) for r, n in reasons},
            }

        return await self._run(work)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _call_summary(row: Any) -> dict[str, Any]:
    return {
        "call_id": row["call_id"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "transport": row["transport"],
        "outcome": row["outcome"],
        "handoff_reason": row["handoff_reason"],
        "context_delivered": row["context_delivered"],
        "channel_end": row["channel_end"],
        "duration_s": round(row["duration_s"], 1) if row["duration_s"] is not None else None,
        "intent": row["last_intent"],
        "turn_count": row["turn_count"],
        "excerpt": row["first_caller_text"],
        "caller_known": row["caller_hash"] is not None,
        "model_version": row["model_version"],
    }

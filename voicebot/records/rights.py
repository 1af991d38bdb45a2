"""Citizens' data rights on the call records: what is kept about a number, and its erasure.

The records never hold a number, only its keyed hash (``CallRecords.caller_hash``). A
number is found by hashing it again with the same key, in each usual way of writing it
(``number_forms``: 02 40…, +33 2 40…, 0033 2 40…, 33 2 40… are the same French line, and
Asterisk passes whichever the operator's trunk gives). Only the calls whose hash is one of
these are read or erased: never another caller's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from voicebot.records.database import RecordsDatabase, calls_table, turns_table

# French numbers: 0 + 9 digits nationally, +33 / 0033 / 33 + the same 9 digits internationally.
_FRENCH = re.compile(r"^(?:0|\+33|0033|33)([1-9][0-9]{8})$")
# What an export shows of a call and of a turn: every column but the search helpers
# (lower-case copies of the same texts) and the turn's row number.
_CALL_COLUMNS = (
    "call_id",
    "started_at",
    "ended_at",
    "transport",
    "caller_hash",
    "outcome",
    "channel_end",
    "handoff_reason",
    "handoff",
    "context_delivered",
    "duration_s",
    "last_intent",
    "turn_count",
    "first_caller_text",
)
_TURN_COLUMNS = ("at", "speaker", "text", "intent", "confidence", "asr_confidence", "latency_ms")


def normalize_number(number: str) -> str:
    """Digits and a leading + only (how ``CallRecords.caller_hash`` normalises)."""
    return re.sub(r"[^0-9+]", "", number)


def number_forms(number: str) -> tuple[str, ...]:
    """The normalised spellings of one number: a French number in its national and
    international forms, any other number as given. Raises ValueError if it has no digit."""
    normalized = normalize_number(number)
    if not any(ch.isdigit() for ch in normalized):
        raise ValueError(f"not a phone number: {number!r}")
    french = _FRENCH.match(normalized)
    if french is None:
        return (normalized,)
    rest = french.group(1)
    forms = (f"0{rest}", f"+33{rest}", f"0033{rest}", f"33{rest}")
    return (normalized, *(form for form in forms if form != normalized))


class CallerRights(RecordsDatabase):
    """Reading and erasing the calls of hashed numbers (a part of ``CallRecords``, which
    hashes the number)."""

    async def calls_with_hashes(
        self, hashes: Sequence[str], timezone: str = "Europe/Paris"
    ) -> list[dict[str, Any]]:
        """Every call kept with one of these caller hashes, oldest first, with its turns;
        times in ISO 8601 in ``timezone``."""
        wanted = sorted(set(hashes))
        if not wanted:
            return []
        zone = ZoneInfo(timezone)

        def when(value: float | None) -> str | None:
            if value is None:
                return None
            return dt.datetime.fromtimestamp(value, zone).isoformat(timespec="seconds")

        def work(conn: Connection) -> list[dict[str, Any]]:
            calls: list[dict[str, Any]] = []
            rows = conn.execute(
                sa.select(*(calls_table.c[name] for name in _CALL_COLUMNS))
                .where(calls_table.c.caller_hash.in_(wanted))
                .order_by(calls_table.c.started_at, calls_table.c.call_id)
            )
            for row in rows:
                call = dict(row._mapping)
                call["started_at"], call["ended_at"] = when(row.started_at), when(row.ended_at)
                call["handoff"] = json.loads(row.handoff) if row.handoff else None
                turns = conn.execute(
                    sa.select(*(turns_table.c[name] for name in _TURN_COLUMNS))
                    .where(turns_table.c.call_id == row.call_id)
                    .order_by(turns_table.c.id)
                )
                call["turns"] = [{**t._mapping, "at": when(t.at)} for t in turns]
                calls.append(call)
            return calls

        return await self._run(work)

    async def count_with_hashes(self, hashes: Sequence[str]) -> tuple[int, int]:
        """(calls, turns) kept with one of these caller hashes."""
        wanted = sorted(set(hashes))

        def work(conn: Connection) -> tuple[int, int]:
            ids = sa.select(calls_table.c.call_id).where(calls_table.c.caller_hash.in_(wanted))
            calls = conn.execute(sa.select(sa.func.count()).select_from(ids.subquery())).scalar()
            turns = conn.execute(
                sa.select(sa.func.count())
                .select_from(turns_table)
                .where(turns_table.c.call_id.in_(ids))
            ).scalar()
            return int(calls or 0), int(turns or 0)

        return await self._run(work) if wanted else (0, 0)

    async def erase_hashes(self, hashes: Sequence[str]) -> tuple[int, int]:
        """Delete the calls kept with one of these caller hashes and their turns, in one
        transaction. Returns (calls, turns) deleted."""
        wanted = sorted(set(hashes))
        if not wanted:
            return 0, 0

        def work(conn: Connection) -> tuple[int, int]:
            ids = sa.select(calls_table.c.call_id).where(calls_table.c.caller_hash.in_(wanted))
            turns = conn.execute(turns_table.delete().where(turns_table.c.call_id.in_(ids)))
            calls = conn.execute(calls_table.delete().where(calls_table.c.caller_hash.in_(wanted)))
            return int(calls.rowcount or 0), int(turns.rowcount or 0)

        return await self._run(work)

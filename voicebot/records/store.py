"""Call records: what the bot did on each call, in a real database, with no audio.

SQLite (a WAL file under the data directory) by default; PostgreSQL when
``records.database_url`` is set. Every write is its own committed transaction, so a crash
of the server loses nothing that was already said. The caller's number is stored only as a
keyed hash (HMAC-SHA256, key from ``VOICEBOT_CALLER_HASH_KEY`` or the key file `make setup`
creates: config.with_caller_hash_key), and every text goes through
``redact_numbers`` first: no phone number is ever stored in clear.

All database work runs on one dedicated thread, so the event loop (and the calls' audio)
never waits on the disk; the single thread also serialises the writes.

This module holds what the call session writes; ``database`` the tables, the engine and the
records thread; ``queries`` what the console reads; ``purge`` the deletion of old records;
``report_queries`` what the ROI report reads (its figures: ``report``); ``rights`` a caller's
calls found and erased through the keyed hash (``voicebot records export / delete``:
``rights_commands``); ``review`` the console's review queue of missed sentences and the
trainers' relabelling decisions; ``live_relay`` the live calls of several bot hosts on one
PostgreSQL (its tables and the hosts' heartbeats: ``live_hosts``). ``CallRecords`` gathers
them all (but the relay, which the phone server runs); the names of the other modules that
callers use are importable from here too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from voicebot.core.config import Settings
from voicebot.core.logs import call_logger, redact_numbers, redact_numbers_in
from voicebot.records.database import (
    CHANNEL_ENDS,
    OUTCOMES,
    SPEAKERS,
    calls_table,
    database_url,
    open_engine,
    search_form,
    turns_table,
)
from voicebot.records.purge import RecordsPurge, parse_duration, purge_command
from voicebot.records.queries import RecordsQueries
from voicebot.records.report_queries import ReportQueries
from voicebot.records.review import ReviewQueries
from voicebot.records.rights import CallerRights, number_forms

__all__ = [
    "CHANNEL_ENDS",
    "MAX_TEXT_CHARS",
    "OUTCOMES",
    "SPEAKERS",
    "CallRecords",
    "calls_table",
    "database_url",
    "parse_duration",
    "purge_command",
    "search_form",
    "turns_table",
]

MAX_TEXT_CHARS = 4000  # one turn; longer texts are cut (a transcript, not a document)


class CallRecords(RecordsQueries, RecordsPurge, ReportQueries, CallerRights, ReviewQueries):
    """The call records store. Open once per process; every method is safe to await."""

    def __init__(
        self, engine: Engine, caller_hash_key: str, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(engine, clock)
        self._key = caller_hash_key.encode("utf-8")
        self._warned_no_key = False
        # The bot host that takes this process's calls (several hosts share a PostgreSQL).
        self.host_id: str | None = None

    @classmethod
    def open(cls, settings: Settings, clock: Callable[[], float] = time.time) -> CallRecords:
        """Open (and create if needed) the records database. Raises VoicebotError."""
        return cls(open_engine(settings), settings.records.caller_hash_key, clock)

    def caller_hash(self, caller_number: str | None) -> str | None:
        """The keyed hash of a number (digits and a leading + only), or None without a key."""
        if not caller_number or not self._key:
            return None
        normalized = re.sub(r"[^0-9+]", "", caller_number)
        if not normalized:
            return None
        return hmac.new(self._key, normalized.encode("ascii"), hashlib.sha256).hexdigest()

    # ----- citizens' data rights (voicebot records export / delete) ----------------------

    def caller_hashes(self, caller_number: str) -> tuple[str, ...]:
        """The keyed hashes of every usual spelling of one number (``rights.number_forms``).
        Raises ValueError without a key or without a number."""
        if not self._key:
            raise ValueError("no caller hash key: a number cannot be looked up")
        hashes = (self.caller_hash(form) for form in number_forms(caller_number))
        return tuple(dict.fromkeys(h for h in hashes if h is not None))

    async def export_caller(
        self, caller_number: str, timezone: str = "Europe/Paris"
    ) -> list[dict[str, Any]]:
        """Every call kept for this number, with its turns (no other caller's)."""
        return await self.calls_with_hashes(self.caller_hashes(caller_number), timezone)

    async def count_caller(self, caller_number: str) -> tuple[int, int]:
        """(calls, turns) kept for this number."""
        return await self.count_with_hashes(self.caller_hashes(caller_number))

    async def delete_caller(self, caller_number: str) -> tuple[int, int]:
        """Erase this number's calls and their turns; returns (calls, turns) deleted."""
        return await self.erase_hashes(self.caller_hashes(caller_number))

    # ----- what the call session writes --------------------------------------------------

    async def start_call(self, call_id: str, transport: str, caller_number: str | None) -> None:
        caller_hash = self.caller_hash(caller_number)
        if caller_number and caller_hash is None and not self._warned_no_key:
            self._warned_no_key = True
            call_logger(__name__, call_id).warning(
                "no caller hash key (VOICEBOT_CALLER_HASH_KEY, or its key file for voicebot "
                "serve): caller numbers are not recorded at all"
            )
        now = self._clock()

        def work(conn: Connection) -> None:
            exists = conn.execute(
                sa.select(calls_table.c.call_id).where(calls_table.c.call_id == call_id)
            ).first()
            if exists is not None:
                # The same call id again (a reconnection): its turns go on in one record.
                call_logger(__name__, call_id).warning("call already recorded: continuing it")
                return
            conn.execute(
                calls_table.insert().values(
                    call_id=call_id,
                    started_at=now,
                    transport=transport[:32],
                    caller_hash=caller_hash,
                    turn_count=0,
                    host_id=self.host_id,
                )
            )

        await self._run(work)

    async def set_caller(self, call_id: str, caller_number: str | None) -> None:
        """The caller's number learnt after the start (AMI, for AudioSocket): its hash only."""
        caller_hash = self.caller_hash(caller_number)
        if caller_hash is None:
            return

        def work(conn: Connection) -> None:
            conn.execute(
                calls_table.update()
                .where(calls_table.c.call_id == call_id)
                .values(caller_hash=caller_hash)
            )

        await self._run(work)

    async def add_turn(
        self,
        call_id: str,
        speaker: str,
        text: str,
        intent: str | None = None,
        confidence: float | None = None,
        asr_confidence: float | None = None,
        latency_ms: float | None = None,
        model_version: str | None = None,
    ) -> None:
        if speaker not in SPEAKERS:
            raise ValueError(f"speaker must be one of {SPEAKERS}, not {speaker!r}")
        clean = redact_numbers(text)[:MAX_TEXT_CHARS]
        now = self._clock()

        def work(conn: Connection) -> None:
            _ensure_call(conn, call_id, now)
            conn.execute(
                turns_table.insert().values(
                    call_id=call_id,
                    at=now,
                    speaker=speaker,
                    text=clean,
                    text_search=search_form(f"{clean}\n{intent or ''}"),
                    intent=intent,
                    confidence=_number(confidence),
                    asr_confidence=_number(asr_confidence),
                    latency_ms=_number(latency_ms),
                    model_version=model_version[:64] if model_version else None,
                )
            )
            changes: dict[str, Any] = {"turn_count": calls_table.c.turn_count + 1}
            if intent:
                changes["last_intent"] = intent[:100]
            if model_version:
                changes["model_version"] = model_version[:64]
            conn.execute(
                calls_table.update().where(calls_table.c.call_id == call_id).values(**changes)
            )
            if speaker == "caller" and clean.strip():
                conn.execute(
                    calls_table.update()
                    .where(calls_table.c.call_id == call_id)
                    .where(calls_table.c.first_caller_text.is_(None))
                    .values(first_caller_text=clean[:300])
                )

        await self._run(work)

    async def end_call(
        self,
        call_id: str,
        outcome: str,
        handoff_reason: str | None = None,
        handoff: dict[str, Any] | None = None,
        context_delivered: bool | None = None,
        channel_end: str | None = None,
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        if channel_end is not None and channel_end not in CHANNEL_ENDS:
            raise ValueError(f"channel_end must be one of {CHANNEL_ENDS}, not {channel_end!r}")
        handoff_json = (
            json.dumps(redact_numbers_in(handoff), ensure_ascii=False)
            if handoff is not None
            else None
        )
        now = self._clock()

        def work(conn: Connection) -> None:
            started = _ensure_call(conn, call_id, now)
            values: dict[str, Any] = {
                "ended_at": now,
                "outcome": outcome,
                "handoff_reason": handoff_reason[:32] if handoff_reason else None,
                "handoff": handoff_json,
                "context_delivered": context_delivered,
                "channel_end": channel_end,
                "duration_s": max(0.0, now - started),
            }
            if handoff and handoff.get("intent"):
                values["last_intent"] = str(handoff["intent"])[:100]
            if handoff is not None or handoff_reason:
                values["handoff_search"] = search_form(
                    f"{handoff_reason or ''}\n{handoff_json or ''}"
                )
            conn.execute(
                calls_table.update().where(calls_table.c.call_id == call_id).values(**values)
            )

        await self._run(work)


def _ensure_call(conn: Connection, call_id: str, now: float) -> float:
    """The call's start time; a turn for a call never started still gets recorded."""
    started = conn.execute(
        sa.select(calls_table.c.started_at).where(calls_table.c.call_id == call_id)
    ).scalar()
    if started is None:
        conn.execute(
            calls_table.insert().values(
                call_id=call_id, started_at=now, transport="inconnu", turn_count=0
            )
        )
        return now
    return float(started)


def _number(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if number == number else None  # NaN is not a measure

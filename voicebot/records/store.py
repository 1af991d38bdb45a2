"""Call records: what the bot did on each call, in a real database, with no audio.

SQLite (a WAL file under the data directory) by default; PostgreSQL when
``records.database_url`` is set. Every write is its own committed transaction, so a crash
of the server loses nothing that was already said. The caller's number is stored only as a
keyed hash (HMAC-SHA256, key from ``VOICEBOT_CALLER_HASH_KEY`` or the key file `make setup`
creates: config.with_caller_hash_key), and every text goes through
``redact_numbers`` first: no phone number is ever stored in clear.

All database work runs on one dedicated thread, so the event loop (and the calls' audio)
never waits on the disk; the single thread also serialises the writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from voicebot.core.config import Settings
from voicebot.core.errors import ConfigError, VoicebotError
from voicebot.core.logs import call_logger, redact_numbers

log = logging.getLogger(__name__)

SPEAKERS = ("caller", "bot")
OUTCOMES = ("resolved", "transferred", "abandoned", "error")
# What really happened to the caller's line when the bot let go of it: Asterisk hung it up on
# the bot's decision, it went to the operators' queue (a transfer, or the fail-safe when AMI
# could not carry the decision), or the caller hung up first.
CHANNEL_ENDS = ("hung_up_by_bot", "queued", "caller_hung_up")
MAX_TEXT_CHARS = 4000  # one turn; longer texts are cut (a transcript, not a document)
MAX_SEARCH_LIMIT = 500

T = TypeVar("T")

metadata = sa.MetaData()

# Times are seconds since 1970 (UTC), the same on SQLite and PostgreSQL.
calls_table = sa.Table(
    "calls",
    metadata,
    sa.Column("call_id", sa.String(128), primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False, index=True),
    sa.Column("ended_at", sa.Float),
    sa.Column("transport", sa.String(32), nullable=False),
    sa.Column("caller_hash", sa.String(64)),  # HMAC-SHA256 hex, never the number
    sa.Column("outcome", sa.String(16)),  # NULL while the call is in progress
    sa.Column("handoff_reason", sa.String(32)),
    sa.Column("handoff", sa.Text),  # JSON: reason, intent, entities, summary, last utterances
    sa.Column("context_delivered", sa.Boolean),
    sa.Column("channel_end", sa.String(16)),  # one of CHANNEL_ENDS; NULL while in progress
    sa.Column("duration_s", sa.Float),  # time with the bot
    sa.Column("last_intent", sa.String(100)),
    sa.Column("turn_count", sa.Integer, nullable=False, default=0),
    sa.Column("first_caller_text", sa.Text),
    sa.Column("handoff_search", sa.Text),  # search form of the handoff's reason and summary
)

turns_table = sa.Table(
    "turns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "call_id",
        sa.String(128),
        sa.ForeignKey("calls.call_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("speaker", sa.String(8), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("text_search", sa.Text, nullable=False),  # text and intent in search form
    sa.Column("intent", sa.String(100)),
    sa.Column("confidence", sa.Float),
    sa.Column("asr_confidence", sa.Float),
    sa.Column("latency_ms", sa.Float),
)


def search_form(text: str) -> str:
    """Lower case without accents, so that "etat civil" finds "État civil"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _redact_value(value: Any) -> Any:
    """Redact phone numbers in every string of a JSON-like value."""
    if isinstance(value, str):
        return redact_numbers(value)
    if isinstance(value, dict):
        return {str(k): _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhms]|j)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400.0, "j": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """ "30d", "12h", "90m", "45s" (also "30j") → seconds. Raises ConfigError."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: use a number and a unit, e.g. 30d, 12h, 90m")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise ConfigError(f"invalid duration {text!r}: it must be more than zero")
    return seconds


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL of the records database (SQLite under data_dir by default)."""
    if settings.records.database_url:
        return settings.records.database_url
    return f"sqlite:///{Path(settings.paths.data_dir) / 'records.sqlite3'}"


def _display_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid URL>"


def _make_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        raise ConfigError(
            "records.database_url is not a database URL "
            "(e.g. postgresql://user@127.0.0.1:5432/voicebot, or empty for SQLite)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection, used only by the records thread.
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool,
            future=True,
        )
        sa.event.listen(engine, "connect", _configure_sqlite)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            f"records.database_url: unsupported database {parsed.get_backend_name()!r} "
            "(use postgresql://… or leave it empty for SQLite)"
        )
    return sa.create_engine(parsed, pool_size=1, max_overflow=0, pool_pre_ping=True, future=True)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: each commit is on disk before the call goes on (a power cut loses nothing said).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class CallRecords:
    """The call records store. Open once per process; every method is safe to await."""

    def __init__(
        self, engine: Engine, caller_hash_key: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._clock = clock  # wall clock, seconds since 1970
        self._key = caller_hash_key.encode("utf-8")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records")
        self._warned_no_key = False
        self._closed = False

    @classmethod
    def open(cls, settings: Settings, clock: Callable[[], float] = time.time) -> CallRecords:
        """Open (and create if needed) the records database. Raises VoicebotError."""
        url = database_url(settings)
        engine = _make_engine(url)
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
        except SQLAlchemyError as exc:
            engine.dispose()
            cause = getattr(exc, "orig", None) or exc
            first_line = (str(cause).strip().splitlines() or [""])[0]
            raise VoicebotError(
                f"cannot open the call records database {_display_url(url)}: {first_line}"
            ) from None
        log.info("call records in %s", _display_url(url))
        return cls(engine, settings.records.caller_hash_key, clock)

    # ----- plumbing ---------------------------------------------------------------------

    async def _run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one committed transaction on the records thread."""
        if self._closed:
            raise VoicebotError("the call records store is closed")

        def in_transaction() -> T:
            with self._engine.begin() as conn:
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._executor, in_transaction)

    def caller_hash(self, caller_number: str | None) -> str | None:
        """The keyed hash of a number (digits and a leading + only), or None without a key."""
        if not caller_number or not self._key:
            return None
        normalized = re.sub(r"[^0-9+]", "", caller_number)
        if not normalized:
            return None
        return hmac.new(self._key, normalized.encode("ascii"), hashlib.sha256).hexdigest()

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
                )
            )
            changes: dict[str, Any] = {"turn_count": calls_table.c.turn_count + 1}
            if intent:
                changes["last_intent"] = intent[:100]
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
            json.dumps(_redact_value(handoff), ensure_ascii=False) if handoff is not None else None
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

    # ----- what the console and the city read --------------------------------------------

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

    async def purge(self, older_than_s: float) -> int:
        """Delete the calls (and their turns) started more than ``older_than_s`` ago."""
        if older_than_s <= 0:
            raise ValueError("older_than_s must be positive")
        cutoff = self._clock() - older_than_s

        def work(conn: Connection) -> int:
            old = sa.select(calls_table.c.call_id).where(calls_table.c.started_at < cutoff)
            conn.execute(turns_table.delete().where(turns_table.c.call_id.in_(old)))
            deleted = conn.execute(calls_table.delete().where(calls_table.c.started_at < cutoff))
            return int(deleted.rowcount or 0)

        return await self._run(work)

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._engine.dispose)
        self._closed = True
        self._executor.shutdown(wait=True)


def _add_missing_columns(engine: Engine) -> None:
    """Columns added since a database was created (all nullable): added in place, so an
    existing records database keeps its calls when the bot is upgraded."""
    with engine.begin() as conn:  # one connection: PostgreSQL's pool here holds just one
        inspector = sa.inspect(conn)
        for table in metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present or not column.nullable:
                    continue
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                log.info("records: column %s.%s added", table.name, column.name)


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
    }


def purge_command(settings: Settings, older_than: str | None) -> int:
    """``voicebot records purge --older-than 30d`` (default: the retention setting)."""
    if older_than is None:
        days = settings.records.retention_days
        if days <= 0:
            raise ConfigError("records.retention_days must be positive to purge by default")
        seconds = days * 86400.0
        label = f"{days}d"
    else:
        seconds = parse_duration(older_than)
        label = older_than.strip()

    async def run() -> int:
        records = CallRecords.open(settings)
        try:
            return await records.purge(seconds)
        finally:
            await records.close()

    deleted = asyncio.run(run())
    print(f"{deleted} appel(s) de plus de {label} supprimé(s) des enregistrements.")
    return 0

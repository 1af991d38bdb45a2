"""The call records database: its tables, its engine, and the one thread that does its work.

SQLite (a WAL file under the data directory) by default; PostgreSQL when
``records.database_url`` is set. Every write is its own committed transaction, so a crash
of the server loses nothing that was already said. All database work runs on one dedicated
thread, so the event loop (and the calls' audio) never waits on the disk; the single thread
also serialises the writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
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

# Re-exported: the records' search columns use the one text normalisation of the bot.
from voicebot.core.french import search_form as search_form

log = logging.getLogger(__name__)

SPEAKERS = ("caller", "bot")
# "interrupted": the host that held the call died (SIGKILL, crash, lost machine); another host
# found its heartbeat stale and closed the record (``live_relay``). The caller went on in the
# dialplan's fallback (the operators' queue), which the dead host could not record.
OUTCOMES = ("resolved", "transferred", "abandoned", "error", "interrupted")
# What really happened to the caller's line when the bot let go of it: Asterisk hung it up on
# the bot's decision, it went to the operators' queue (a transfer, or the fail-safe when AMI
# could not carry the decision), or the caller hung up first.
CHANNEL_ENDS = ("hung_up_by_bot", "queued", "caller_hung_up")
# A trainer's decision on a sentence: taught under an intent, already known under it, or set
# aside (never trained). Each takes the sentence out of the review queue.
RELABEL_DECISIONS = ("trained", "known", "ignored")

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
    sa.Column("host_id", sa.String(64)),  # the bot host that took the call (records.host_id)
    # the dialogue model of the call's latest turn (a live swap may change it mid-call)
    sa.Column("model_version", sa.String(64)),
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
    # the dialogue model that read a caller's turn or wrote the bot's (model_store's version)
    sa.Column("model_version", sa.String(64)),
)

# What trainers decided about callers' sentences in the console's « Améliorer le robot »
# (voicebot.records.review). No phone number, no caller: kept when old calls are purged.
relabels_table = sa.Table(
    "relabels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("who", sa.String(100), nullable=False),  # the name the trainer typed
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("text_key", sa.String(500), nullable=False, index=True),  # french.sentence_key
    sa.Column("decision", sa.String(16), nullable=False),  # one of RELABEL_DECISIONS
    sa.Column("intent", sa.String(100)),
    sa.Column("entity", sa.String(100)),
    sa.Column("value", sa.String(200)),
)


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL of the records database (SQLite under data_dir by default)."""
    if settings.records.database_url:
        return settings.records.database_url
    return f"sqlite:///{Path(settings.paths.data_dir) / 'records.sqlite3'}"


def resolve_host_id(settings: Settings) -> str:
    """This process's name among the bot hosts: records.host_id, else machine name and pid."""
    return settings.records.host_id or f"{socket.gethostname()}-{os.getpid()}"[:64]


def is_postgresql(settings: Settings) -> bool:
    return database_url(settings).startswith(("postgresql:", "postgresql+"))


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


# Any fixed number: the PostgreSQL advisory lock that hosts take to create the records'
# tables one at a time.
SCHEMA_LOCK_KEY = 0x616C6C6F  # "allo"


def _create_schema(engine: Engine) -> None:
    """The tables created, and the columns added since a database was created (all
    nullable) added in place, so an existing records database keeps its calls when the bot
    is upgraded. One transaction, one connection (PostgreSQL's pool here holds just one).

    Hosts started together on a new PostgreSQL database would each create the tables at the
    same moment, and ``CREATE TABLE`` is not safe against a concurrent one: the second fails
    on PostgreSQL's own catalogue ("duplicate key value violates unique constraint
    pg_type_typname_nsp_index"). They take a lock for it, one after the other; the lock
    goes with the transaction."""
    with engine.begin() as conn:
        create_tables(conn, metadata)
        inspector = sa.inspect(conn)
        for table in metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present or not column.nullable:
                    continue
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                log.info("records: column %s.%s added", table.name, column.name)


def create_tables(conn: Connection, tables: sa.MetaData) -> None:
    """``tables`` created where missing, by one host at a time on PostgreSQL (a lock held to
    the end of ``conn``'s transaction; see _create_schema)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    tables.create_all(conn)


def open_engine(settings: Settings) -> Engine:
    """The records database's engine, its tables created or completed. Raises VoicebotError."""
    url = database_url(settings)
    engine = _make_engine(url)
    try:
        _create_schema(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [""])[0]
        raise VoicebotError(
            f"cannot open the call records database {_display_url(url)}: {first_line}"
        ) from None
    log.info("call records in %s", _display_url(url))
    return engine


class RecordsDatabase:
    """The engine and the records thread; every database call goes through ``_run``."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock  # wall clock, seconds since 1970
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records")
        self._closed = False

    async def _run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one committed transaction on the records thread."""
        if self._closed:
            raise VoicebotError("the call records store is closed")

        def in_transaction() -> T:
            with self._engine.begin() as conn:
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._executor, in_transaction)

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._engine.dispose)
        self._closed = True
        self._executor.shutdown(wait=True)

"""Every bot host's live calls on every host's console, through PostgreSQL (LISTEN/NOTIFY).

Several ``voicebot serve`` processes (on one machine or several) share one PostgreSQL records
database. Each runs a ``LiveRelay``:

- **out**: what the local console's board follows (``self.out``, a ``CallHub``): the local
  events that the board shows (started, state, caller, bot, handoff, ended), published there
  at once, synchronously, and every other host's, as they arrive;
- **publish**: each local event of those kinds is appended to the ``live_events`` table under
  this host's id with the next sequence number of this host (``hosts.last_seq``), and a
  ``NOTIFY voicebot_live, '<host> <seq>'`` goes out in the same transaction. The payload is a
  few bytes whatever the event (NOTIFY's limit is 8,000 bytes): receivers read the rows.
  Every text is stored with its phone numbers masked, as in the call records. "taken" (an
  operator took a transferred call, on any console) goes the same way;
- **receive**: a dedicated connection LISTENs (its socket on the event loop, ``add_reader``);
  a notification wakes one fetcher, which reads every host's rows past the last sequence it
  applied (per host: a host's own writes commit in sequence order, so there is no gap) and
  publishes them on ``out``. Events of this host are never read back: no loops. A lost
  notification costs nothing: each heartbeat compares every host's ``last_seq`` too;
- **a late console**: at start the relay replays the rows of the other hosts (kept
  ``RETENTION_S``), so a board that starts after the others has the live calls and the queue;
- **heartbeat** (``records.heartbeat_s``): this host's ``hosts.last_seen`` is moved to the
  database's clock (the same for every host); a host whose last_seen is older than
  ``records.dead_after_s`` is declared dead by the first survivor to see it (one atomic
  UPDATE: only one wins), which in the same transaction marks its unfinished call records
  ``interrupted`` and appends an ``ended`` event (outcome ``interrupted``) for each of its
  live calls under the dead host's id: every console drops them through the usual path;
- **leave** (SIGTERM, after the calls were handed to operators): the host appends the end of
  any call still shown, marks itself ``left`` and closes: nothing is marked interrupted.

All database work runs on the relay's own thread (never on the event loop, which paces the
calls' audio), separate from the records thread. A database that goes away is logged once
and retried; the calls never wait for it (pending events are kept, up to ``MAX_PENDING``).
With SQLite (one host) there is no relay and the board follows the process's own hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from voicebot.core.config import RecordsSettings
from voicebot.core.events import CallEvent, CallHub
from voicebot.core.logs import redact_numbers_in
from voicebot.records.database import calls_table

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "voicebot_live"
# What the consoles show; "taken": an operator took a transferred call from the queue (on any
# host's console, for a call of any host): it leaves every console's queue.
RELAYED_KINDS = frozenset({"started", "state", "caller", "bot", "handoff", "ended", "taken"})
RETENTION_S = 3 * 3600.0  # events (and gone hosts) older than this are deleted
MAX_PENDING = 50_000  # local events waiting for the database; past it new ones are dropped
BATCH = 200
FETCH_LIMIT = 2000
# A database that stops answering is noticed in seconds, not after the system's TCP timeout
# (the relay's thread would wait meanwhile: no heartbeat, no events).
CONNECT_ARGS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}

# The database's clock, seconds since 1970: every host compares heartbeats on the same clock.
DB_NOW = sa.literal_column("extract(epoch from clock_timestamp())::float8")

live_metadata = sa.MetaData()

hosts_table = sa.Table(
    "hosts",
    live_metadata,
    sa.Column("host_id", sa.String(64), primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),  # the database's clock
    sa.Column("state", sa.String(8), nullable=False),  # alive | left | dead
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)

live_events_table = sa.Table(
    "live_events",
    live_metadata,
    sa.Column("host_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("call_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("data", sa.Text, nullable=False),  # JSON
)


@dataclass(frozen=True)
class HostRow:
    host_id: str
    state: str
    last_seq: int


class LiveRelay:
    """One per process when the records are on PostgreSQL; see the module's docstring."""

    def __init__(
        self,
        url: str,
        host_id: str,
        local: CallHub,
        settings: RecordsSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host_id = host_id
        self.local = local
        self.out = CallHub()
        self.heartbeat_s = settings.heartbeat_s
        self.dead_after_s = settings.dead_after_s
        self._clock = clock
        self._url = sa.engine.make_url(url)
        self._engine = sa.create_engine(
            self._url,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            future=True,
            connect_args=CONNECT_ARGS,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-relay")
        self._pending: deque[CallEvent] = deque()
        self._dropped = 0
        self._last_seq: dict[str, int] = {}  # per other host: the last event applied
        self._gone: set[str] = set()  # hosts seen left or dead
        self._write_wake = asyncio.Event()
        self._fetch_wake = asyncio.Event()
        self._written = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_conn: Any = None
        self._stop_local: Callable[[], None] | None = None
        self._db_down_logged = False
        self._closed = False
        self._receiving = False

    # ----- life ------------------------------------------------------------------------------

    async def start(self, receive: bool = True) -> None:
        """Create the tables, register this host, publish its calls and keep its heartbeat;
        with ``receive``, ``start_receiving`` too. Raises if the database cannot be reached
        at start (as the records do)."""
        await self._run(self._register)
        self._stop_local = self.local.listen(self._on_local)
        for coro in (self._writer(), self._heartbeat()):
            self._tasks.append(asyncio.create_task(coro))
        log.info(
            "live relay: host %s on PostgreSQL (heartbeat %.1f s, dead after %.1f s)",
            self.host_id,
            self.heartbeat_s,
            self.dead_after_s,
        )
        if receive:
            await self.start_receiving()

    async def start_receiving(self) -> None:
        """Replay the other hosts' events on ``out`` (their live calls and queue, for a board
        that starts after them), then relay theirs as they come. Call it once what follows
        ``out`` listens (the console's board); a host without a console need not."""
        if self._receiving:
            return
        self._receiving = True
        await self._connect_listener()
        await self._fetch_once()
        self._tasks.append(asyncio.create_task(self._fetcher()))

    async def leave(self, timeout_s: float = 10.0) -> None:
        """A clean stop: the pending events written, the host marked ``left``, the end of any
        call still shown published (records left open: ``transferred``), then closed."""
        if self._closed:
            return
        if self._stop_local is not None:
            self._stop_local()
            self._stop_local = None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._flush(), timeout_s)
        try:
            await asyncio.wait_for(self._run(self._leave), timeout_s)
            log.info("live relay: host %s left the hosts table", self.host_id)
        except Exception as exc:
            log.warning("live relay: could not mark host %s as left: %s", self.host_id, exc)
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stop_local is not None:
            self._stop_local()
            self._stop_local = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._drop_listener()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self._executor, self._engine.dispose)
        self._executor.shutdown(wait=False)

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _db_error(self, what: str, exc: BaseException) -> None:
        """A database error, logged once per outage (the relay retries by itself)."""
        if not self._db_down_logged:
            self._db_down_logged = True
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("live relay: %s failed (%s); retrying, calls go on", what, first)

    def _db_ok(self) -> None:
        if self._db_down_logged:
            self._db_down_logged = False
            log.info("live relay: the database answers again")

    # ----- local events → out and the database ------------------------------------------

    def _on_local(self, event: CallEvent) -> None:
        """The hub's listener: on the publishing call's path, so a few appends, no waiting."""
        if event.kind not in RELAYED_KINDS:
            return
        if event.kind == "started":
            event = CallEvent(
                event.call_id, event.kind, {**event.data, "host": self.host_id}, event.at
            )
        self.out.publish(event)
        if len(self._pending) >= MAX_PENDING:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("live relay: too many events waiting for the database; dropping")
            return
        self._pending.append(event)
        self._write_wake.set()

    async def _writer(self) -> None:
        while True:
            await self._write_wake.wait()
            self._write_wake.clear()
            while self._pending:
                batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
                try:
                    await self._run(functools.partial(self._append, batch))
                except Exception as exc:
                    self._db_error("writing live events", exc)
                    await asyncio.sleep(1.0)
                    continue
                self._db_ok()
                for _ in batch:
                    self._pending.popleft()
            self._written.set()

    async def _flush(self) -> None:
        while self._pending:
            self._written.clear()
            self._write_wake.set()
            await self._written.wait()

    def _append(self, batch: list[CallEvent]) -> None:
        with self._engine.begin() as conn:
            _append_events(conn, self.host_id, ((e.call_id, e.kind, e.at, e.data) for e in batch))

    # ----- receiving ---------------------------------------------------------------------

    async def _connect_listener(self) -> None:
        import psycopg2
        import psycopg2.extensions

        url = self._url

        def connect() -> Any:
            args = url.translate_connect_args(username="user", database="dbname")
            conn = psycopg2.connect(**{**args, **dict(url.query), **CONNECT_ARGS})
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            return conn

        conn = await self._run(connect)
        self._listen_conn = conn
        asyncio.get_running_loop().add_reader(conn.fileno(), self._on_readable)

    def _drop_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(conn.fileno())
        with contextlib.suppress(Exception):
            conn.close()

    def _on_readable(self) -> None:
        conn = self._listen_conn
        if conn is None:
            return
        try:
            conn.poll()  # reads what arrived; never waits
        except Exception as exc:
            self._db_error("listening", exc)
            self._drop_listener()
            if not self._closed:
                self._tasks = [t for t in self._tasks if not t.done()]
                self._tasks.append(asyncio.create_task(self._relisten()))
            return
        notes = list(conn.notifies)
        del conn.notifies[:]
        for note in notes:
            host, _, seq = str(note.payload).partition(" ")
            if host != self.host_id and seq.isdigit() and int(seq) > self._last_seq.get(host, 0):
                self._fetch_wake.set()
                return

    async def _relisten(self) -> None:
        delay = 1.0
        while not self._closed and self._listen_conn is None:
            await asyncio.sleep(delay)
            try:
                await self._connect_listener()
            except Exception as exc:
                self._db_error("listening", exc)
                delay = min(delay * 2, 10.0)
                continue
            self._db_ok()
            log.info("live relay: listening again")
            self._fetch_wake.set()  # what was said meanwhile

    async def _fetcher(self) -> None:
        while True:
            await self._fetch_wake.wait()
            self._fetch_wake.clear()
            try:
                more = await self._fetch_once()
            except Exception as exc:
                self._db_error("reading live events", exc)
                await asyncio.sleep(1.0)
                self._fetch_wake.set()
                continue
            self._db_ok()
            if more:
                self._fetch_wake.set()

    async def _fetch_once(self) -> bool:
        """Apply the other hosts' events past those applied; True if there may be more."""
        since = dict(self._last_seq)
        rows = await self._run(lambda: self._fetch(since))
        for count, row in enumerate(rows, 1):
            self._apply(row)
            if count % 100 == 0:
                await asyncio.sleep(0)  # a long replay leaves the calls' audio its turns
        return len(rows) >= FETCH_LIMIT

    def _fetch(self, since: dict[str, int]) -> list[Any]:
        table = live_events_table
        others = table.c.host_id != self.host_id
        known = [sa.and_(table.c.host_id == h, table.c.seq > s) for h, s in since.items()]
        new = table.c.host_id.notin_(list(since)) if since else sa.true()
        query = (
            sa.select(table.c.host_id, table.c.seq, table.c.call_id, table.c.kind, table.c.at)
            .add_columns(table.c.data)
            .where(others, sa.or_(new, *known))
            .order_by(table.c.host_id, table.c.seq)
            .limit(FETCH_LIMIT)
        )
        with self._engine.begin() as conn:
            return list(conn.execute(query).all())

    def _apply(self, row: Any) -> None:
        host = str(row.host_id)
        seq = int(row.seq)
        if seq <= self._last_seq.get(host, 0):
            return  # already applied
        self._last_seq[host] = seq
        try:
            data = json.loads(row.data)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        call_id = str(row.call_id)
        self.out.publish(CallEvent(call_id, str(row.kind), data, float(row.at)))

    # ----- heartbeat, dead hosts -----------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                hosts = await self._run(self._beat)
            except Exception as exc:
                self._db_error("heartbeat", exc)
                continue
            self._db_ok()
            self._follow(hosts)

    def _follow(self, hosts: list[HostRow]) -> None:
        """What the hosts table says of the other hosts: events to read, hosts gone."""
        listed = {host.host_id for host in hosts}
        for gone in set(self._last_seq) - listed:
            # Its row and its events went with the retention: forget its sequence, so that
            # a host of that name registered afresh (sequences from 1 again) is read.
            del self._last_seq[gone]
        for host in hosts:
            if host.host_id == self.host_id:
                continue
            applied = self._last_seq.get(host.host_id, 0)
            if host.last_seq < applied:  # registered afresh meanwhile: read it from the start
                self._last_seq[host.host_id] = applied = 0
            if host.last_seq > applied:
                self._fetch_wake.set()  # a missed notification, or one being written
            if host.state == "alive":
                self._gone.discard(host.host_id)
            elif host.host_id not in self._gone:
                self._gone.add(host.host_id)
                log.info(
                    "live relay: host %s is %s",
                    host.host_id,
                    _STATE_WORDS.get(host.state, host.state),
                )

    def _register(self) -> None:
        live_metadata.create_all(self._engine)
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(hosts_table.c.state)
                .where(hosts_table.c.host_id == self.host_id)
                .with_for_update()
            ).first()
            if row is None:
                _insert_host(conn, self.host_id)
                return
            # The same name as an earlier life of this host (records.host_id set): the calls
            # that life left open ended with it.
            _close_host_calls(conn, self.host_id, "interrupted", self._previous_last_seen(conn))
            shown = _shown_calls(conn, self.host_id)
            ended = {"outcome": "interrupted"}
            _append_events(conn, self.host_id, ((c, "ended", self._clock(), ended) for c in shown))
            conn.execute(
                hosts_table.update()
                .where(hosts_table.c.host_id == self.host_id)
                .values(started_at=DB_NOW, last_seen=DB_NOW, state="alive")
            )

    def _previous_last_seen(self, conn: Connection) -> float:
        value = conn.execute(
            sa.select(hosts_table.c.last_seen).where(hosts_table.c.host_id == self.host_id)
        ).scalar()
        return float(value or 0.0)

    def _beat(self) -> list[HostRow]:
        with self._engine.begin() as conn:
            state = conn.execute(
                sa.select(hosts_table.c.state)
                .where(hosts_table.c.host_id == self.host_id)
                .with_for_update()
            ).first()
            if state is None:  # deleted meanwhile: register again
                _insert_host(conn, self.host_id)
            else:
                if state[0] == "dead":
                    log.warning(
                        "live relay: the other hosts had declared this host (%s) dead; it is "
                        "back, its calls show again at their next turn",
                        self.host_id,
                    )
                conn.execute(
                    hosts_table.update()
                    .where(hosts_table.c.host_id == self.host_id)
                    .values(last_seen=DB_NOW, state="alive")
                )
            stale = conn.execute(
                sa.select(hosts_table.c.host_id).where(
                    hosts_table.c.state == "alive",
                    hosts_table.c.host_id != self.host_id,
                    hosts_table.c.last_seen < DB_NOW - self.dead_after_s,
                )
            ).all()
        for (host_id,) in stale:
            self._declare_dead(str(host_id))
        with self._engine.begin() as conn:
            cutoff = self._clock() - RETENTION_S
            conn.execute(live_events_table.delete().where(live_events_table.c.at < cutoff))
            conn.execute(
                hosts_table.delete().where(
                    hosts_table.c.state != "alive", hosts_table.c.last_seen < cutoff
                )
            )
            rows = conn.execute(
                sa.select(hosts_table.c.host_id, hosts_table.c.state, hosts_table.c.last_seq)
            ).all()
        return [HostRow(str(r.host_id), str(r.state), int(r.last_seq)) for r in rows]

    def _declare_dead(self, host_id: str) -> None:
        """One transaction: only the first survivor to see the host stale does this."""
        with self._engine.begin() as conn:
            won = conn.execute(
                hosts_table.update()
                .where(
                    hosts_table.c.host_id == host_id,
                    hosts_table.c.state == "alive",
                    hosts_table.c.last_seen < DB_NOW - self.dead_after_s,
                )
                .values(state="dead")
                .returning(hosts_table.c.last_seen)
            ).first()
            if won is None:
                return
            last_seen = float(won[0])
            records = _close_host_calls(conn, host_id, "interrupted", last_seen)
            shown = _shown_calls(conn, host_id)
            _append_events(
                conn,
                host_id,
                (
                    (call_id, "ended", self._clock(), {"outcome": "interrupted"})
                    for call_id in shown
                ),
            )
        log.warning(
            "live relay: host %s silent for over %.0f s, declared dead: %d call record(s) "
            "marked interrupted, %d live call(s) removed from the consoles",
            host_id,
            self.dead_after_s,
            records,
            len(shown),
        )

    def _leave(self) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                sa.select(hosts_table.c.host_id)
                .where(hosts_table.c.host_id == self.host_id)
                .with_for_update()
            )
            # Calls the shutdown's grace did not see to their end were handed to operators.
            _close_host_calls(conn, self.host_id, "transferred", None)
            shown = _shown_calls(conn, self.host_id)
            _append_events(
                conn,
                self.host_id,
                (
                    (call_id, "ended", self._clock(), {"outcome": "transferred"})
                    for call_id in shown
                ),
            )
            conn.execute(
                hosts_table.update()
                .where(hosts_table.c.host_id == self.host_id)
                .values(state="left", last_seen=DB_NOW)
            )


_STATE_WORDS = {"alive": "alive", "left": "gone (stopped cleanly)", "dead": "gone (declared dead)"}


def _append_events(
    conn: Connection, host_id: str, events: Iterable[tuple[str, str, float, dict[str, Any]]]
) -> None:
    """Append events under ``host_id`` with its next sequence numbers, and notify. The host's
    row is locked first: the host itself and a survivor declaring it dead never collide."""
    rows = list(events)
    if not rows:
        return
    last = conn.execute(
        sa.select(hosts_table.c.last_seq).where(hosts_table.c.host_id == host_id).with_for_update()
    ).scalar()
    if last is None:
        raise IntegrityError("host not registered", None, Exception(host_id))
    seq = int(last)
    values = []
    for call_id, kind, at, data in rows:
        seq += 1
        values.append(
            {
                "host_id": host_id,
                "seq": seq,
                "call_id": call_id[:128],
                "kind": kind,
                "at": at,
                # No phone number leaves in clear for the database (the records' own rule).
                "data": json.dumps(redact_numbers_in(data), ensure_ascii=False, default=str),
            }
        )
    conn.execute(live_events_table.insert(), values)
    conn.execute(hosts_table.update().where(hosts_table.c.host_id == host_id).values(last_seq=seq))
    conn.execute(sa.select(sa.func.pg_notify(CHANNEL, f"{host_id} {seq}")))


def _insert_host(conn: Connection, host_id: str) -> None:
    """A host's first row: alive, seen now, no event sent yet."""
    conn.execute(
        hosts_table.insert().values(
            host_id=host_id, started_at=DB_NOW, last_seen=DB_NOW, state="alive", last_seq=0
        )
    )


def _shown_calls(conn: Connection, host_id: str) -> list[str]:
    """The host's calls that the consoles show: started, with no ``ended`` event."""
    table = live_events_table
    ended = sa.select(table.c.call_id).where(table.c.host_id == host_id, table.c.kind == "ended")
    query = (
        sa.select(table.c.call_id)
        .where(
            table.c.host_id == host_id,
            table.c.kind == "started",
            table.c.call_id.notin_(ended.scalar_subquery()),
        )
        .distinct()
    )
    return [str(r[0]) for r in conn.execute(query).all()]


def _close_host_calls(conn: Connection, host_id: str, outcome: str, ended_at: float | None) -> int:
    """The host's call records never ended get ``outcome``; returns how many."""
    end = sa.literal(ended_at, sa.Float) if ended_at else DB_NOW
    result = conn.execute(
        calls_table.update()
        .where(calls_table.c.host_id == host_id, calls_table.c.outcome.is_(None))
        .values(
            outcome=outcome,
            ended_at=end,
            duration_s=sa.func.greatest(0.0, end - calls_table.c.started_at),
        )
    )
    return int(result.rowcount or 0)

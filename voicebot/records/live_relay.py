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
The hosts and live-events tables, and what a heartbeat, a death and a leave do in them:
``voicebot.records.live_hosts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa

from voicebot.core.config import RecordsSettings
from voicebot.core.events import CallEvent, CallHub
from voicebot.records.live_hosts import (
    CHANNEL,
    HostRow,
    HostTable,
    append_events,
    live_events_table,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# What the consoles show; "taken": an operator took a transferred call from the queue (on any
# host's console, for a call of any host): it leaves every console's queue.
RELAYED_KINDS = frozenset({"started", "state", "caller", "bot", "handoff", "ended", "taken"})
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
        self._hosts = HostTable(self._engine, host_id, self.dead_after_s, clock)
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
        await self._run(self._hosts.register)
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
            await asyncio.wait_for(self._run(self._hosts.leave), timeout_s)
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
            append_events(conn, self.host_id, ((e.call_id, e.kind, e.at, e.data) for e in batch))

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
                hosts = await self._run(self._hosts.beat)
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


_STATE_WORDS = {"alive": "alive", "left": "gone (stopped cleanly)", "dead": "gone (declared dead)"}

"""The bot hosts sharing one PostgreSQL: who is alive, who left, who died (the ``hosts``
table), and the ``live_events`` table every host's console events go through.

``HostTable`` is one host's view of it, used by ``voicebot.records.live_relay`` on the
relay's own thread (every method blocks on the database):

- ``register``: this host's row, alive; a row left by an earlier life of the same name
  (records.host_id set) has its open call records closed ``interrupted`` first;
- ``beat``: this host seen now (the database's clock, the same for every host); any other
  host silent for over ``dead_after_s`` is declared dead by the first survivor to see it (one
  atomic UPDATE: only one wins), which in the same transaction marks its unfinished call
  records ``interrupted`` and appends an ``ended`` event for each call the consoles show;
  old events and long-gone hosts are deleted (``RETENTION_S``);
- ``leave``: a clean stop; calls still shown end ``transferred``, the host is ``left``.

``append_events`` appends events under a host with its next sequence numbers and NOTIFYs
``CHANNEL`` with "<host> <seq>" in the same transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from voicebot.core.logs import redact_numbers_in
from voicebot.records.database import calls_table, create_tables

log = logging.getLogger(__name__)

CHANNEL = "voicebot_live"
RETENTION_S = 3 * 3600.0  # events (and gone hosts) older than this are deleted

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


class HostTable:
    """One host's rows in the hosts table (see the module's docstring)."""

    def __init__(
        self,
        engine: Engine,
        host_id: str,
        dead_after_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.host_id = host_id
        self.dead_after_s = dead_after_s
        self.clock = clock

    def register(self) -> None:
        with self.engine.begin() as conn:
            create_tables(conn, live_metadata)
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(hosts_table.c.state)
                .where(hosts_table.c.host_id == self.host_id)
                .with_for_update()
            ).first()
            if row is None:
                insert_host(conn, self.host_id)
                return
            # The same name as an earlier life of this host (records.host_id set): the calls
            # that life left open ended with it.
            close_host_calls(conn, self.host_id, "interrupted", self._previous_last_seen(conn))
            shown = shown_calls(conn, self.host_id)
            ended = {"outcome": "interrupted"}
            append_events(conn, self.host_id, ((c, "ended", self.clock(), ended) for c in shown))
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

    def beat(self) -> list[HostRow]:
        with self.engine.begin() as conn:
            state = conn.execute(
                sa.select(hosts_table.c.state)
                .where(hosts_table.c.host_id == self.host_id)
                .with_for_update()
            ).first()
            if state is None:  # deleted meanwhile: register again
                insert_host(conn, self.host_id)
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
        with self.engine.begin() as conn:
            cutoff = self.clock() - RETENTION_S
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
        with self.engine.begin() as conn:
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
            records = close_host_calls(conn, host_id, "interrupted", last_seen)
            shown = shown_calls(conn, host_id)
            append_events(
                conn,
                host_id,
                ((call_id, "ended", self.clock(), {"outcome": "interrupted"}) for call_id in shown),
            )
        log.warning(
            "live relay: host %s silent for over %.0f s, declared dead: %d call record(s) "
            "marked interrupted, %d live call(s) removed from the consoles",
            host_id,
            self.dead_after_s,
            records,
            len(shown),
        )

    def leave(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.select(hosts_table.c.host_id)
                .where(hosts_table.c.host_id == self.host_id)
                .with_for_update()
            )
            # Calls the shutdown's grace did not see to their end were handed to operators.
            close_host_calls(conn, self.host_id, "transferred", None)
            shown = shown_calls(conn, self.host_id)
            append_events(
                conn,
                self.host_id,
                ((call_id, "ended", self.clock(), {"outcome": "transferred"}) for call_id in shown),
            )
            conn.execute(
                hosts_table.update()
                .where(hosts_table.c.host_id == self.host_id)
                .values(state="left", last_seen=DB_NOW)
            )


def append_events(
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


def insert_host(conn: Connection, host_id: str) -> None:
    """A host's first row: alive, seen now, no event sent yet."""
    conn.execute(
        hosts_table.insert().values(
            host_id=host_id, started_at=DB_NOW, last_seen=DB_NOW, state="alive", last_seq=0
        )
    )


def shown_calls(conn: Connection, host_id: str) -> list[str]:
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


def close_host_calls(conn: Connection, host_id: str, outcome: str, ended_at: float | None) -> int:
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

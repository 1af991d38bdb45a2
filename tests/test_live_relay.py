"""The live relay between bot hosts on a real PostgreSQL (LISTEN/NOTIFY), in one process:
two relays, each with its own call hub, as two `voicebot serve` would have."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa

from tests.pg_helpers import fresh_postgres_database
from voicebot.core.config import Settings
from voicebot.core.events import CallEvent, CallHub
from voicebot.records.database import calls_table
from voicebot.records.live_hosts import hosts_table
from voicebot.records.live_relay import LiveRelay
from voicebot.records.store import CallRecords

WAIT_S = 60.0  # generous: a busy 2-core machine


async def _until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def pg_settings(postgres_server: str, tmp_path: Path) -> Settings:
    settings = Settings().replace("paths", data_dir=tmp_path / "data")
    return settings.replace(
        "records",
        database_url=fresh_postgres_database(postgres_server),
        caller_hash_key="clé-de-test",
        heartbeat_s=0.3,
        dead_after_s=1.5,
    )


class Host:
    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self.hub = CallHub()
        self.records = CallRecords.open(settings)
        self.records.host_id = name
        self.relay = LiveRelay(settings.records.database_url, name, self.hub, settings.records)
        self.seen: list[CallEvent] = []
        self.relay.out.listen(self.seen.append)

    def kinds(self, call_id: str) -> list[str]:
        return [e.kind for e in self.seen if e.call_id == call_id]


@pytest_asyncio.fixture(loop_scope="function")
async def two_hosts(pg_settings: Settings) -> AsyncIterator[tuple[Host, Host]]:
    a, b = Host(pg_settings, "hote-a"), Host(pg_settings, "hote-b")
    await a.relay.start()
    await b.relay.start()
    try:
        yield a, b
    finally:
        for host in (a, b):
            await host.relay.close()
            await host.records.close()


def _row(records: CallRecords, call_id: str) -> sa.engine.Row:
    with records._engine.begin() as conn:
        row = conn.execute(sa.select(calls_table).where(calls_table.c.call_id == call_id)).one()
    return row


@pytest.mark.asyncio(loop_scope="function")
async def test_each_host_sees_the_others_calls_and_not_its_own_twice(
    two_hosts: tuple[Host, Host],
) -> None:
    a, b = two_hosts
    a.hub.publish(CallEvent("appel-a", "started", {"transport": "audiosocket"}))
    a.hub.publish(CallEvent("appel-a", "caller", {"text": "bonjour", "asr_confidence": 0.9}))
    a.hub.publish(CallEvent("appel-a", "partial", {"text": "bon"}))  # not for the consoles
    b.hub.publish(CallEvent("appel-b", "started", {"transport": "websocket"}))
    await _until(lambda: b.kinds("appel-a") == ["started", "caller"], "A's call on B")
    await _until(lambda: a.kinds("appel-b") == ["started"], "B's call on A")
    started = next(e for e in b.seen if e.call_id == "appel-a")
    assert started.data == {"transport": "audiosocket", "host": "hote-a"}
    # A's own events reach A's board once, at once, and are never read back.
    await asyncio.sleep(1.0)  # a few heartbeats: a loop would show by now
    assert a.kinds("appel-a") == ["started", "caller"]
    assert b.kinds("appel-b") == ["started"]
    # A long turn (well over NOTIFY's 8,000 bytes) goes through the table.
    long_text = "très long " * 2000
    a.hub.publish(CallEvent("appel-a", "bot", {"text": long_text, "intent": "x"}))
    await _until(lambda: "bot" in b.kinds("appel-a"), "the long turn on B")
    assert next(e for e in b.seen if e.kind == "bot").data["text"] == long_text


@pytest.mark.asyncio(loop_scope="function")
async def test_a_late_host_replays_the_live_calls(pg_settings: Settings) -> None:
    a = Host(pg_settings, "hote-a")
    await a.relay.start()
    late: Host | None = None
    try:
        a.hub.publish(CallEvent("appel-1", "started", {"transport": "audiosocket"}))
        a.hub.publish(CallEvent("appel-1", "handoff", {"reason": "demande"}))
        a.hub.publish(CallEvent("appel-2", "started", {"transport": "audiosocket"}))
        a.hub.publish(CallEvent("appel-2", "ended", {"outcome": "resolved"}))
        await a.relay._flush()
        late = Host(pg_settings, "hote-tardif")
        await late.relay.start()
        assert late.kinds("appel-1") == ["started", "handoff"]
        assert late.kinds("appel-2") == ["started", "ended"]
    finally:
        for host in (a, late):
            if host is not None:
                await host.relay.close()
                await host.records.close()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_silent_host_is_declared_dead_and_its_calls_interrupted(
    two_hosts: tuple[Host, Host],
) -> None:
    a, b = two_hosts
    await b.records.start_call("appel-b", "audiosocket", None)
    await b.records.start_call("appel-b-fini", "audiosocket", None)
    await b.records.end_call("appel-b-fini", "resolved")
    await a.records.start_call("appel-a", "audiosocket", None)
    b.hub.publish(CallEvent("appel-b", "started", {"transport": "audiosocket"}))
    await _until(lambda: a.kinds("appel-b") == ["started"], "B's call on A")
    # B stops without a word (as after SIGKILL): no heartbeat, no leave.
    for task in b.relay._tasks:
        task.cancel()
    b.relay._drop_listener()
    await _until(lambda: a.kinds("appel-b") == ["started", "ended"], "B's call ended on A")
    ended = [e for e in a.seen if e.call_id == "appel-b"][-1]
    assert ended.data["outcome"] == "interrupted"
    assert _row(a.records, "appel-b").outcome == "interrupted"
    assert _row(a.records, "appel-b").host_id == "hote-b"
    assert _row(a.records, "appel-b").ended_at is not None
    assert _row(a.records, "appel-b-fini").outcome == "resolved"  # untouched
    assert _row(a.records, "appel-a").outcome is None  # A's own call goes on
    with a.records._engine.begin() as conn:
        states = dict(conn.execute(sa.select(hosts_table.c.host_id, hosts_table.c.state)).all())
    assert states == {"hote-a": "alive", "hote-b": "dead"}


@pytest.mark.asyncio(loop_scope="function")
async def test_a_host_that_leaves_is_not_declared_dead(two_hosts: tuple[Host, Host]) -> None:
    a, b = two_hosts
    await b.records.start_call("appel-b", "audiosocket", None)
    b.hub.publish(CallEvent("appel-b", "started", {"transport": "audiosocket"}))
    await _until(lambda: a.kinds("appel-b") == ["started"], "B's call on A")
    await b.relay.leave()
    await _until(lambda: a.kinds("appel-b") == ["started", "ended"], "B's call ended on A")
    assert [e for e in a.seen if e.call_id == "appel-b"][-1].data["outcome"] == "transferred"
    await asyncio.sleep(3 * 1.5)  # past dead_after_s: still "left", never "dead"
    assert _row(a.records, "appel-b").outcome == "transferred"
    with a.records._engine.begin() as conn:
        states = dict(conn.execute(sa.select(hosts_table.c.host_id, hosts_table.c.state)).all())
    assert states["hote-b"] == "left"


@pytest.mark.asyncio(loop_scope="function")
async def test_lost_connections_are_logged_and_retried(
    two_hosts: tuple[Host, Host], pg_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection to the database cut (a PostgreSQL restart, a network cut): the
    relays say so, reconnect by themselves, and the events said since still arrive."""
    a, b = two_hosts
    a.hub.publish(CallEvent("avant", "started", {"transport": "audiosocket"}))
    await _until(lambda: b.kinds("avant") == ["started"], "the first call on B")
    engine = sa.create_engine(pg_settings.records.database_url, future=True)
    try:
        with engine.begin() as conn:
            cut = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
    finally:
        engine.dispose()
    assert cut and cut >= 2  # at least each relay's listening connection
    a.hub.publish(CallEvent("apres", "started", {"transport": "audiosocket"}))
    b.hub.publish(CallEvent("apres-b", "started", {"transport": "audiosocket"}))
    await _until(lambda: b.kinds("apres") == ["started"], "the next call on B")
    await _until(lambda: a.kinds("apres-b") == ["started"], "B's next call on A")
    assert "retrying, calls go on" in caplog.text  # logged, whichever noticed first
    # Nobody was declared dead for it.
    await asyncio.sleep(2 * 1.5)
    with a.records._engine.begin() as conn:
        states = dict(conn.execute(sa.select(hosts_table.c.host_id, hosts_table.c.state)).all())
    assert states == {"hote-a": "alive", "hote-b": "alive"}


@pytest.mark.asyncio(loop_scope="function")
async def test_a_host_name_registered_afresh_is_read_from_its_start(
    two_hosts: tuple[Host, Host], pg_settings: Settings
) -> None:
    """A host's row and events deleted (retention), then an instance of that name again
    (systemd's "<machine>-<N>"): its sequence starts over, and the others still read it."""
    a, b = two_hosts
    for n in range(5):
        b.hub.publish(CallEvent(f"ancien-{n}", "started", {"transport": "audiosocket"}))
    await _until(lambda: a.kinds("ancien-4") == ["started"], "B's calls on A")
    await b.relay.close()
    with a.records._engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM live_events WHERE host_id = 'hote-b'"))
        conn.execute(sa.text("DELETE FROM hosts WHERE host_id = 'hote-b'"))
    again = Host(pg_settings, "hote-b")
    try:
        await again.relay.start()
        again.hub.publish(CallEvent("nouveau", "started", {"transport": "audiosocket"}))
        await _until(lambda: a.kinds("nouveau") == ["started"], "the new life's call on A")
    finally:
        await again.relay.close()
        await again.records.close()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_call_taken_on_one_console_leaves_every_consoles_queue(
    two_hosts: tuple[Host, Host],
) -> None:
    from voicebot.console.board import LiveBoard
    from voicebot.console.context import WebLimits

    a, b = two_hosts
    board_a = LiveBoard(a.relay.out, WebLimits(), publish=a.hub)
    board_b = LiveBoard(b.relay.out, WebLimits(), publish=b.hub)
    board_a.start()
    board_b.start()
    b.hub.publish(CallEvent("transfere", "started", {"transport": "audiosocket"}))
    b.hub.publish(CallEvent("transfere", "handoff", {"reason": "demande", "summary": "x"}))
    await _until(lambda: "transfere" in board_a.queue, "B's transfer in A's queue")
    assert board_a.live["transfere"]["host"] == "hote-b"
    assert "transfere" in board_b.queue
    assert board_a.take("transfere")  # an operator on A's console takes B's call
    assert "transfere" not in board_a.queue
    await _until(lambda: "transfere" not in board_b.queue, "the call gone from B's queue")
    # A leaving does not end B's call on B's console (A only said it was taken).
    await a.relay.leave()
    await asyncio.sleep(1.0)
    assert "transfere" in board_b.live


@pytest.mark.asyncio(loop_scope="function")
async def test_no_phone_number_is_stored_in_clear(two_hosts: tuple[Host, Host]) -> None:
    a, b = two_hosts
    said = "rappelez-moi au 06 12 34 56 78 s'il vous plaît"
    a.hub.publish(CallEvent("numero", "caller", {"text": said, "asr_confidence": 0.9}))
    a.hub.publish(CallEvent("numero", "handoff", {"summary": said, "last_utterances": [said]}))
    await _until(lambda: b.kinds("numero") == ["caller", "handoff"], "the turns on B")
    with a.records._engine.begin() as conn:
        stored = " ".join(conn.execute(sa.text("SELECT data FROM live_events")).scalars())
    assert "rappelez-moi" in stored
    assert "06 12 34 56 78" not in stored and "12 34" not in stored
    assert all("06 12 34 56 78" not in str(e.data) for e in b.seen)

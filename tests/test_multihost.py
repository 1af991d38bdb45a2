"""Several bot hosts, one switchboard: two `voicebot serve` processes on one real PostgreSQL.

Host A serves the operators' console; host B takes calls only (`--no-web`). Calls placed on
both through the Asterisk emulator show on A's console (its WebSocket, as a browser reads
it). Then B is killed (SIGKILL) mid-call: B's callers see their media end, A's calls go on
untouched and end normally, B's calls leave A's console, and the records say they were
interrupted. Finally A is stopped with SIGTERM and leaves the hosts table cleanly.

Nothing here measures the machine's speed: every wait is for a condition, with generous
timeouts (two servers load Rasa on a busy 2-core machine).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from telephony.emulator.audiosocket import NO_TRAFFIC_TIMEOUT_S, AudioSocketCaller
from tests.serve_helpers import WAIT_S, ConsoleView, ServeProcess, until
from voicebot.core.config import Settings
from voicebot.core.events import CallEvent, CallHub
from voicebot.records.database import calls_table
from voicebot.records.live_hosts import hosts_table
from voicebot.records.live_relay import LiveRelay

TOKEN = "jeton-de-test-multihote"


def bot_host(name: str, url: str, folder: Path, web: bool, **settings: str) -> ServeProcess:
    """One bot host on the shared PostgreSQL; ``settings``: more ``VOICEBOT_…`` variables."""
    return ServeProcess(
        name,
        folder,
        {
            "VOICEBOT_RECORDS_DATABASE_URL": url,
            "VOICEBOT_RECORDS_HOST_ID": name,
            "VOICEBOT_RECORDS_HEARTBEAT_S": "0.5",
            "VOICEBOT_RECORDS_DEAD_AFTER_S": "4",
            "VOICEBOT_CONSOLE_TOKEN": TOKEN,
            # The emulated callers stay silent: no « Êtes-vous toujours là ? » during the
            # test, so that their calls last until the test ends them.
            "VOICEBOT_POLICY_SILENCE_PROMPT_S": "600",
            "VOICEBOT_ASR_WARM_RECOGNIZERS": "1",  # modest CPU: the machine is shared
            "VOICEBOT_ASR_IDLE_RECOGNIZERS": "1",
            **settings,
        },
        web,
    )


def _records(engine: sa.engine.Engine) -> dict[str, Any]:
    with engine.begin() as conn:
        rows = conn.execute(sa.select(calls_table)).all()
    return {row.call_id: row for row in rows}


def _host_states(engine: sa.engine.Engine) -> dict[str, str]:
    with engine.begin() as conn:
        rows = conn.execute(sa.select(hosts_table.c.host_id, hosts_table.c.state)).all()
    return {str(r[0]): str(r[1]) for r in rows}


async def _call(port: int) -> tuple[AudioSocketCaller, asyncio.Task[int]]:
    """One emulated call: Asterisk sends the caller's audio (silence) every 20 ms."""
    caller = AudioSocketCaller()
    await caller.connect("127.0.0.1", port)
    return caller, asyncio.create_task(caller.play_silence(900))


@pytest.mark.asyncio(loop_scope="function")
async def test_two_hosts_one_console_and_a_host_killed_mid_call(
    database: sa.engine.Engine, tmp_path: Path
) -> None:
    url = str(database.url)
    # B first, and calls on it: A and its console start after them (a console that starts
    # late must show the calls already under way on the other hosts).
    b = bot_host("hote-b", url, tmp_path, web=False)
    a: ServeProcess | None = None
    callers: list[tuple[AudioSocketCaller, asyncio.Task[int]]] = []
    session: aiohttp.ClientSession | None = None
    try:
        await b.wait_ready()
        on_b = [await _call(b.audiosocket_port) for _ in range(2)]
        callers += on_b
        a = bot_host("hote-a", url, tmp_path, web=True)
        await a.wait_ready()
        session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        ws = await session.ws_connect(f"http://127.0.0.1:{a.http_port}/ws/console")
        console = ConsoleView(ws)

        on_a = [await _call(a.audiosocket_port) for _ in range(2)]
        callers += on_a
        ids_a = {c.call_uuid for c, _ in on_a}
        ids_b = {c.call_uuid for c, _ in on_b}

        # One console, every host's calls, each with the host that holds it.
        await until(lambda: ids_a | ids_b <= set(console.live), "all four calls on A's console")
        await until(
            lambda: all(console.live[i].get("host") == "hote-b" for i in ids_b),
            "B's calls named as B's",
        )
        assert all(console.live[i].get("host") == "hote-a" for i in ids_a)
        # Every call is under way: the bot's greeting is reaching each caller.
        for caller, _ in callers:
            assert await caller.wait_for_audio(0.5, timeout=WAIT_S), caller.violations
        records = _records(database)
        assert {records[i].host_id for i in ids_a} == {"hote-a"}
        assert {records[i].host_id for i in ids_b} == {"hote-b"}

        # B dies mid-call.
        b.process.send_signal(signal.SIGKILL)
        b.process.wait(30)
        for caller, _ in on_b:
            # Asterisk sees the socket close: its dialplan goes on (to the next host or the
            # operators' queue, tests/test_dialplan.py).
            assert await caller.wait_for_hangup(WAIT_S) == "bot_close"
        # A declares B dead: B's calls leave A's console, the records say "interrupted".
        await until(lambda: not ids_b & set(console.live), "B's calls gone from A's console")
        assert {console.ended[i] for i in ids_b} == {"interrupted"}
        records = _records(database)
        assert {records[i].outcome for i in ids_b} == {"interrupted"}
        assert all(records[i].ended_at is not None for i in ids_b)
        assert _host_states(database)["hote-b"] == "dead"

        # A's calls went on untouched: still up, still shown, never a silence Asterisk would
        # hang up on, and their records still open.
        assert ids_a <= set(console.live)
        for caller, _ in on_a:
            assert not caller.ended and caller.violations == []
            assert caller.max_gap_s() < NO_TRAFFIC_TIMEOUT_S
        assert all(records[i].outcome is None for i in ids_a)
        # They end normally: the callers hang up.
        for caller, player in on_a:
            player.cancel()
            await caller.hangup()
        await until(lambda: not ids_a & set(console.live), "A's calls ended on the console")
        await until(
            lambda: all(_records(database)[i].outcome is not None for i in ids_a),
            "A's records closed",
        )
        records = _records(database)
        assert {records[i].outcome for i in ids_a} == {"abandoned"}  # the caller hung up
        assert {records[i].channel_end for i in ids_a} == {"caller_hung_up"}

        # A stops with SIGTERM during a call. Another host's console (here the test's own
        # relay, as a third host would run it) sees the call handed to an operator and end;
        # A leaves the hosts table, nobody declares it dead.
        last, player = await _call(a.audiosocket_port)
        callers.append((last, player))
        await until(lambda: last.call_uuid in console.live, "the last call on A's console")
        await ws.close()
        observer_hub = CallHub()
        settings = Settings().replace("records", heartbeat_s=0.5, dead_after_s=4.0)
        observer = LiveRelay(url, "observateur", observer_hub, settings.records)
        seen: list[CallEvent] = []
        observer.out.listen(seen.append)
        await observer.start()  # replays A's live call
        try:
            assert "started" in [e.kind for e in seen if e.call_id == last.call_uuid]
            a.process.send_signal(signal.SIGTERM)
            assert await last.wait_for_hangup(WAIT_S) in ("bot_hangup", "bot_close")
            assert await asyncio.to_thread(a.process.wait, 120) == 0, a.log_tail()
            await until(
                lambda: "ended" in [e.kind for e in seen if e.call_id == last.call_uuid],
                "A's last call ended on the other console",
            )
            ended = [e for e in seen if e.call_id == last.call_uuid][-1]
            assert ended.data["outcome"] == "transferred"
            assert _records(database)[last.call_uuid].outcome == "transferred"
            assert _host_states(database)["hote-a"] == "left"
            await asyncio.sleep(3 * 4.0)  # past dead_after_s: A is still "left", not "dead"
            assert _host_states(database)["hote-a"] == "left"
            assert _records(database)[last.call_uuid].outcome == "transferred"
        finally:
            await observer.leave()
        assert _host_states(database) == {
            "hote-a": "left",
            "hote-b": "dead",
            "observateur": "left",
        }
        log_a = a.log_path.read_text(encoding="utf-8", errors="replace")
        assert "declared dead" in log_a and "hote-b" in log_a
    finally:
        if session is not None:
            await session.close()
        for caller, player in callers:
            player.cancel()
            await caller.close()
        if a is not None:
            a.stop()
        b.stop()

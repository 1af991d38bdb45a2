"""Asterisk spreads calls over two real bot hosts: two `voicebot serve` processes on one real
PostgreSQL, the emulated Asterisk running the deployed extensions.conf with both hosts named
in its globals (ALLO_AUDIOSOCKET_1/_2, and the websocket_client.conf connections voicebot /
voicebot2), as an admin sets them up (deploy/asterisk/README.md « Plusieurs serveurs de bot »).

Consecutive calls land on one host then the other (each record says which host took it),
over AudioSocket and over WebSocket; with one host stopped, every call still gets a bot (the
other); with both stopped, callers reach the operators' queue. Every caller waits for the
bot's greeting before hanging up: a call counts as served only when a bot spoke to it.

Nothing here measures the machine's speed: every wait is for a condition, with generous
timeouts (two servers load Rasa on a busy 2-core machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from telephony.emulator import AmiEmulator
from telephony.emulator.dialplan import CallResult, EmulatedPbx, Media
from tests.pbx_helpers import deployed_copy, media_targets, websocket_connection
from tests.serve_helpers import until
from tests.test_call_endings import wait_until_the_bot_is_quiet
from tests.test_multihost import bot_host
from voicebot.records.database import calls_table

SECRET = "s3cret-de-test-repartition"
NUMBER = "0240419000"


async def greeted_then_hangs_up(media: Media) -> None:
    """The caller hears the bot's greeting out, then hangs up."""
    await wait_until_the_bot_is_quiet(media)
    await media.hangup()


def host_of(engine: sa.engine.Engine, call_id: str) -> str | None:
    """The host whose record holds ``call_id`` (None: no record yet)."""
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(calls_table.c.host_id).where(calls_table.c.call_id == call_id)
        ).first()
    return None if row is None else str(row[0])


async def served_by(engine: sa.engine.Engine, result: CallResult) -> str:
    """The host that served the call: the bot greeted the caller, who hung up; the host's
    record of it (under the UUID of the last media session) names it."""
    assert result.ending == "caller_hangup", result.trace
    call_id = result.variables["ALLO_UUID"]
    await until(lambda: host_of(engine, call_id) is not None, f"the record of {call_id}")
    return str(host_of(engine, call_id))


@pytest.mark.asyncio(loop_scope="function")
async def test_calls_spread_over_two_real_hosts_and_survive_their_loss(
    database: sa.engine.Engine, tmp_path: Path
) -> None:
    ami = AmiEmulator(secret=SECRET)
    ami_port = await ami.start()
    ami_settings = {
        "VOICEBOT_AMI_HOST": "127.0.0.1",
        "VOICEBOT_AMI_PORT": str(ami_port),
        "VOICEBOT_AMI_SECRET": SECRET,
    }
    url = str(database.url)
    hosts = [
        bot_host(name, url, tmp_path, web=False, **ami_settings) for name in ("hote-1", "hote-2")
    ]
    try:
        for host in hosts:
            await host.wait_ready()
        pbx = EmulatedPbx(
            ami=ami,
            extensions=deployed_copy(tmp_path, len(hosts)),
            globals_override={
                **{
                    f"ALLO_AUDIOSOCKET_{n}": f"127.0.0.1:{host.audiosocket_port}"
                    for n, host in enumerate(hosts, 1)
                },
                **{f"ALLO_WEBSOCKET_{n}": websocket_connection(n) for n in (1, 2)},
            },
            websocket_uris={
                websocket_connection(n): f"ws://127.0.0.1:{host.websocket_port}"
                for n, host in enumerate(hosts, 1)
            },
        )

        async def call(exten: str) -> CallResult:
            return await pbx.call(
                exten, caller=greeted_then_hangs_up, caller_number=NUMBER, timeout_s=180
            )

        # Both hosts up: AudioSocket calls alternate, each answered by the host it was
        # offered to first.
        spread = [await call("3939") for _ in range(4)]
        assert [len(media_targets(r)) for r in spread] == [1, 1, 1, 1]
        assert [await served_by(database, r) for r in spread] == [
            "hote-1",
            "hote-2",
            "hote-1",
            "hote-2",
        ]
        # WebSocket calls too, with their own round.
        over_ws = [await call("3940") for _ in range(2)]
        assert [media_targets(r) for r in over_ws] == [["voicebot"], ["voicebot2"]]
        assert [await served_by(database, r) for r in over_ws] == ["hote-1", "hote-2"]

        # Host 2 stops: every call still gets a bot, host 1; the call whose turn was host
        # 2's tried it first (refused at once) and went on to host 1.
        hosts[1].stop()
        survivors = [await call("3939") for _ in range(2)]
        assert [len(media_targets(r)) for r in survivors] == [1, 2]
        assert [await served_by(database, r) for r in survivors] == ["hote-1", "hote-1"]

        # Both stopped: the caller reaches a person, the operator sees why.
        hosts[0].stop()
        alone = await pbx.call("3939", caller_number=NUMBER, timeout_s=60)
        assert len(media_targets(alone)) == 2
        assert alone.ending == "queue" and alone.queue is not None
        assert alone.variables["ALLO_HANDOFF_REASON"] == "robot_indisponible"
        assert alone.callerid_name.startswith("robot_indisponible")
        # Every served call has exactly one record, on the host that took it.
        with database.begin() as conn:
            records = conn.execute(sa.select(calls_table.c.call_id)).all()
        assert len(records) == len(spread) + len(over_ws) + len(survivors)
    finally:
        for host in hosts:
            host.stop()
        await ami.stop()

"""`voicebot serve` from its start (issue 14: ready in ≤ 15 s from a cold start): the ready
line says how long each stage took, and a call placed the moment the server is ready is
answered by the dialogue, spoken French included. A real subprocess with the default engines
(the Whisper stand-in, espeak-ng), the real Rasa model, the console on top; the call comes
through the Asterisk emulator. No timing is asserted (machines differ several-fold): the
times are scripts/start_time.py's and docs/benchmarks.md's. Under systemd (a notify
socket and a watchdog period in the environment) it says READY=1 once it listens, feeds
the watchdog, and says STOPPING=1 on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from telephony.emulator import AudioSocketCaller
from tests.serve_helpers import ServeProcess, until
from tests.speech_helpers import french_prompt_pcm
from voicebot.records.database import calls_table, turns_table

pytestmark = pytest.mark.slow

READY_LINE = re.compile(r"ready in (\d+\.\d) s \((?P<stages>[^)]*)\): AudioSocket")
STAGES = (
    "Python start",
    "speech imports",
    "Rasa import",
    "dialogue",
    "ASR",
    "voice",
    "records",
    "listeners",
    "console",
    "heap freeze",
)


def _turns(server: ServeProcess, call_id: str) -> tuple[str | None, list[sa.Row[tuple[object]]]]:
    """The call's outcome and its turns, from the server's records database."""
    path = server.log_path.parent / server.name / "records.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            call = conn.execute(
                sa.select(calls_table).where(calls_table.c.call_id == call_id)
            ).first()
            turns = conn.execute(
                sa.select(turns_table)
                .where(turns_table.c.call_id == call_id)
                .order_by(turns_table.c.id)
            ).all()
    finally:
        engine.dispose()
    return (call.outcome if call is not None else None), list(turns)


async def test_ready_line_lists_the_stages_and_the_first_call_is_answered(
    tmp_path: Path,
) -> None:
    # systemd's side: a socket read all along (as systemd does), so that the bot never finds
    # it full.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.1)
    messages: list[str] = []
    reading = threading.Event()

    def read() -> None:
        while not reading.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                messages.append(notify.recv(4096).decode())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def received(field: str) -> int:
        return sum(field in message.split("\n") for message in list(messages))

    systemd = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    server = ServeProcess("robot", tmp_path, systemd, web=True)
    try:
        await server.wait_ready()
        await until(lambda: READY_LINE.search(server.log_text()) is not None, "the ready line")
        await until(lambda: received("READY=1") == 1, "READY=1 to systemd")
        await until(lambda: received("WATCHDOG=1") >= 2, "the watchdog fed twice")

        # At once: the caller hears the greeting, says « Au revoir », and the dialogue answers.
        caller = AudioSocketCaller()
        call_id = await caller.connect("127.0.0.1", server.audiosocket_port)
        line = asyncio.create_task(caller.play_silence(60.0))
        assert await caller.wait_for_quiet(1.0, timeout=60.0), "no greeting"
        line.cancel()
        await caller.play(french_prompt_pcm("vm-goodbye"))
        tail = asyncio.create_task(caller.play_silence(30.0))
        ended_by = await caller.wait_for_hangup(60.0)
        tail.cancel()
        await caller.close()
        assert ended_by == "bot_hangup", ended_by

        await until(lambda: _turns(server, call_id)[0] is not None, "the call's record")
        _, turns = _turns(server, call_id)
        heard = [t.text for t in turns if t.speaker == "caller"]
        answered = [t.intent for t in turns if t.speaker == "bot" and t.intent]
        assert heard and "revoir" in heard[0].lower(), heard
        assert answered == ["au_revoir"], answered

        found = READY_LINE.search(server.log_text())
        assert found is not None
        listed = dict(stage.rsplit(" ", 1) for stage in found.group("stages").split(", ") if stage)
        assert tuple(listed) == STAGES, listed
        assert all(float(seconds) >= 0.0 for seconds in listed.values()), listed
        # the dialogue (model and knowledge base) is what takes time: never a zero
        assert float(listed["dialogue"]) > 0.0, listed

        assert received("STOPPING=1") == 0
        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.process.wait, 120) == 0
        assert received("STOPPING=1") == 1
    finally:
        server.stop()
        reading.set()
        reader.join(5)
        notify.close()

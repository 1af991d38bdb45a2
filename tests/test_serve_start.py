"""`voicebot serve` from its start (issue 14: ready in ≤ 15 s from a cold start): the ready
line says how long each stage took, and a call placed the moment the server is ready is
answered by the dialogue, spoken French included. A real subprocess with the default engines
(the Whisper stand-in, espeak-ng), the real Rasa model, the console on top; the call comes
through the Asterisk emulator. No timing is asserted (machines differ several-fold): the
times are scripts/start_time.py's and docs/benchmarks.md's."""

from __future__ import annotations

import asyncio
import re
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
    server = ServeProcess("robot", tmp_path, {}, web=True)
    try:
        await server.wait_ready()
        await until(lambda: READY_LINE.search(server.log_text()) is not None, "the ready line")

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
    finally:
        server.stop()

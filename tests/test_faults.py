"""Faults under load, the short version (issue 15): a few calls live through the emulated
Asterisk running deploy/asterisk/extensions.conf, the real engines and Rasa model, and one
fault injected while they talk. For each fault:

* every caller either keeps talking to the bot (a key pressed after the fault gets a spoken
  answer) or reaches the queue (the emulator's ``CallResult.ending``);
* no other call is disturbed: its audio never stops long enough for a caller to hear the
  line drop (the emulator's frame arrival times; the 2-second AudioSocket rule never fires);
* no committed turn is lost: every turn in the records before the fault is there after it;
* the log says what happened, on a line tagged with the call id.

The faults inside the bot are injected by ``voicebot.tools.faults`` (the real part wrapped
so that it fails, explicitly, for the targeted calls). The records database is locked from
another sqlite connection; a full disk is simulated at the records boundary (each write
raises OSError ENOSPC, as sqlite's would). SIGTERM is ``PhoneServer.shutdown``, what the
signal handler of `voicebot serve` runs (scripts/fault_matrix.py sends a real SIGTERM to a
real `voicebot serve`, with 20 calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from telephony.emulator import AmiEmulator, EmulatedPbx
from telephony.emulator.dialplan import CallResult
from tests.phone_helpers import phone_server
from tests.speech_helpers import french_prompt_pcm
from voicebot.call.runtime import Runtime
from voicebot.call.server import PhoneServer, bound_port
from voicebot.core.events import CallEvent
from voicebot.core.logs import log_handler
from voicebot.records.database import database_url
from voicebot.tools.bench.paced_line import PacedCallerLine
from voicebot.tools.faults import (
    FaultSwitch,
    FaultyAsr,
    FaultyDialogue,
    FaultyTts,
    FullDiskRecords,
    never_reading_console,
)

EXTENSIONS = Path(__file__).resolve().parent.parent / "deploy" / "asterisk" / "extensions.conf"
SECRET = "s3cret-de-test"
CALLS = 4
GUARD_S = 60.0  # hang guards only: nothing here is a timing assertion
# A gap in the bot's audio this long is the line going dead for the caller, far beyond what
# a loaded machine does to the pacing (the pacer restarts its schedule after 0.2 s).
DEAD_LINE_S = 1.5
# The conversation never waits on them; no silence prompt may come in the way of a probe.
POLICY = {"silence_prompt_s": 60.0}


# --- the switchboard ------------------------------------------------------------------------


@dataclass
class Board:
    pbx: EmulatedPbx
    ami: AmiEmulator
    server: PhoneServer
    log: io.StringIO
    lines: dict[str, PacedCallerLine] = field(default_factory=dict)
    results: dict[str, asyncio.Task[CallResult]] = field(default_factory=dict)
    listening: dict[str, asyncio.Event] = field(default_factory=dict)

    async def place(self, count: int) -> list[PacedCallerLine]:
        placed: list[PacedCallerLine] = []
        arrived = asyncio.Event()

        async def caller(media: Any) -> None:
            line = PacedCallerLine(media)
            self.lines[line.call_id] = line
            placed.append(line)
            arrived.set()
            await line.stream()

        for _ in range(count):
            task = asyncio.ensure_future(
                self.pbx.call("3939", caller=caller, caller_number="0240419000", timeout_s=150.0)
            )
            while len(placed) < len(self.results) + 1:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), GUARD_S)
            self.results[placed[-1].call_id] = task
        return placed

    async def wait_listening(self, lines: list[PacedCallerLine]) -> None:
        """Until the bot has greeted each line (the caller heard it, then a second of quiet)
        and listens (its own state events)."""
        for line in lines:
            event = self.listening.setdefault(line.call_id, asyncio.Event())
            for _ in range(int(GUARD_S / 0.1)):
                if line.quiet_after_voice(1.0) is not None and event.is_set():
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{line.call_id}: the bot never finished its greeting")

    def note(self, event: CallEvent) -> None:
        if event.kind == "state":
            listening = self.listening.setdefault(event.call_id, asyncio.Event())
            if event.data.get("state") == "écoute":
                listening.set()
            else:
                listening.clear()

    async def result(self, line: PacedCallerLine) -> CallResult:
        return await asyncio.wait_for(asyncio.shield(self.results[line.call_id]), GUARD_S * 2)

    async def committed_turns(self, line: PacedCallerLine) -> list[tuple[str, str]]:
        call = await self.server.records.get_call(line.call_id)
        turns = call["turns"] if call is not None else []
        return [(t["speaker"], t["text"]) for t in turns]

    async def finished_record(self, line: PacedCallerLine) -> dict[str, Any]:
        for _ in range(int(GUARD_S / 0.1)):
            call = await self.server.records.get_call(line.call_id)
            if call is not None and call["outcome"] is not None:
                return dict(call)
            await asyncio.sleep(0.1)
        raise AssertionError(f"no finished record for {line.call_id}")

    def logged(self, line: PacedCallerLine, text: str) -> bool:
        tag = f"[call {line.call_id}]"
        return any(tag in entry and text in entry for entry in self.log.getvalue().splitlines())


@contextlib.asynccontextmanager
async def switchboard(
    runtime: Runtime, *, wrap: Callable[[Any], dict[str, Any]] | None = None, **options: Any
) -> AsyncIterator[Board]:
    """The emulated Asterisk (AMI and dialplan) and the real phone server; ``wrap`` gives
    the services to replace (the faulty wrappers), from the real services."""
    stream = io.StringIO()
    handler = log_handler(stream)
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("voicebot", "telephony")}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.INFO)
    ami = AmiEmulator(secret=SECRET)
    port = await ami.start()
    services = runtime.services
    replaced = wrap(services) if wrap is not None else {}
    runtime = dataclasses.replace(runtime, services=dataclasses.replace(services, **replaced))
    try:
        async with phone_server(
            runtime,
            policy=POLICY,
            dialogue=replaced.get("dialogue"),
            host="127.0.0.1",
            port=port,
            secret=SECRET,
            **options,
        ) as server:
            assert server.call_control is not None
            assert await server.call_control.wait_connected(GUARD_S)
            pbx = EmulatedPbx(
                ami=ami,
                extensions=EXTENSIONS,
                globals_override={"ALLO_AUDIOSOCKET_1": f"127.0.0.1:{server.audiosocket_port}"},
            )
            board = Board(pbx, ami, server, stream)
            stop = server.runtime.services.hub.listen(board.note)
            try:
                yield board
            finally:
                stop()
                for line in board.lines.values():
                    await line.media.hangup()
                await asyncio.gather(*board.results.values(), return_exceptions=True)
    finally:
        await ami.stop()
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# --- what every row checks -----------------------------------------------------------------


async def probe(line: PacedCallerLine, digit: str = "1") -> float | None:
    """The caller presses a key (a menu entry: the bot answers it and goes on talking);
    returns when the bot's spoken answer arrived (call clock), None if it never did."""
    sent = line.now()
    await line.media.send_dtmf(digit)
    return await line.voice_after(sent, GUARD_S)


async def keeps_talking(
    board: Board, line: PacedCallerLine, fault_at: float, digit: str = "2"
) -> None:
    """The line is up, answers a key, and its audio never went dead after the fault."""
    assert not line.media.ended, f"{line.call_id}: ended by {line.media.ended_by}"
    assert await probe(line, digit) is not None, f"{line.call_id}: no answer after the fault"
    undisturbed(line, fault_at)


def undisturbed(line: PacedCallerLine, fault_at: float) -> None:
    assert not line.media.violations, line.media.violations  # the 2-second rule never fired
    gap = line.longest_gap(fault_at)
    assert gap < DEAD_LINE_S, f"{line.call_id}: the bot's audio stopped for {gap:.2f} s"


async def reaches_queue(board: Board, line: PacedCallerLine, *reasons: str) -> CallResult:
    result = await board.result(line)
    assert result.ending == "queue", (line.call_id, result.ending, result.trace[-3:])
    assert result.variables.get("ALLO_HANDOFF_REASON") in reasons, result.variables
    return result


async def nothing_lost(board: Board, before: dict[str, list[tuple[str, str]]]) -> None:
    """Every turn committed before the fault is in the records once the calls are over."""
    for line in board.lines.values():
        if not line.media.ended:
            await line.media.hangup()
    await asyncio.gather(*board.results.values(), return_exceptions=True)
    for line in board.lines.values():
        await board.finished_record(line)
        after = await board.committed_turns(line)
        missing = [turn for turn in before[line.call_id] if turn not in after]
        assert not missing, f"{line.call_id}: committed turns lost: {missing}"


async def live_calls(
    board: Board,
) -> tuple[list[PacedCallerLine], dict[str, list[tuple[str, str]]]]:
    """CALLS calls placed and greeted, and the turns each has committed so far."""
    lines = await board.place(CALLS)
    await board.wait_listening(lines)
    before = {line.call_id: await board.committed_turns(line) for line in lines}
    for line in lines:
        assert before[line.call_id], f"{line.call_id}: the greeting was not recorded"
    return lines, before


def fault_times(lines: list[PacedCallerLine]) -> dict[str, float]:
    return {line.call_id: line.now() for line in lines}


# --- the matrix -------------------------------------------------------------------------------


async def test_ami_cut_mid_handoff_leaves_callers_with_a_person(call_runtime: Runtime) -> None:
    async with switchboard(call_runtime) as board:
        lines, before = await live_calls(board)
        leaving, staying = lines[:2], lines[2:]
        # The link is cut when the first decision variable reaches Asterisk, before it is set.
        board.ami.cut_on = lambda message: message.get("Action", "").lower() == "setvar"
        at = fault_times(lines)
        for line in leaving:
            await line.media.send_dtmf("0")  # « un conseiller »: a handoff, through AMI
        for line in leaving:
            # Cut before its context was set: the dialplan's fail-safe, reason unknown; the
            # other may find AMI back already and deliver its context.
            await reaches_queue(board, line, "inconnu", "dtmf")
        assert board.ami.cut_on is None, "the cut never happened"
        assert any(board.logged(line, "non transmise") for line in leaving), board.log.getvalue()
        for line in staying:
            await keeps_talking(board, line, at[line.call_id])
        await nothing_lost(board, before)
        for line in leaving:
            record = await board.finished_record(line)
            assert record["channel_end"] == "queued"


async def test_asterisk_closing_half_the_connections(call_runtime: Runtime) -> None:
    async with switchboard(call_runtime) as board:
        lines, before = await live_calls(board)
        closed, staying = lines[:2], lines[2:]
        at = fault_times(lines)
        await asyncio.gather(*(line.media.hangup() for line in closed))
        for line in closed:
            assert (await board.result(line)).ending == "caller_hangup"
        for line in staying:
            await keeps_talking(board, line, at[line.call_id])
        for line in closed:
            record = await board.finished_record(line)
            assert record["channel_end"] == "caller_hung_up"
            assert board.logged(line, "caller hung up")
        await nothing_lost(board, before)


async def test_the_dialogue_raising(call_runtime: Runtime) -> None:
    switch = FaultSwitch()
    wrap = lambda s: {"dialogue": FaultyDialogue(s.dialogue, switch)}  # noqa: E731
    async with switchboard(call_runtime, wrap=wrap) as board:
        lines, before = await live_calls(board)
        failing, staying = lines[:2], lines[2:]
        switch.calls = {line.call_id for line in failing}
        at = fault_times(lines)
        for line in failing:
            await line.media.send_dtmf("1")
        for line in failing:
            await reaches_queue(board, line, "erreur")
            assert board.logged(line, "internal error: handing the call to a human")
        for line in staying:
            await keeps_talking(board, line, at[line.call_id])
        await nothing_lost(board, before)


@pytest.mark.parametrize("hang", [False, True], ids=["raising", "hanging"])
async def test_the_recognizer_raising_or_hanging(
    call_runtime: Runtime, hang: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voicebot.call.listener as listener

    monkeypatch.setattr(listener, "ASR_HANG_GUARD_S", 3.0)  # the hang guard, shortened
    switch = FaultSwitch()
    asr = call_runtime.services.asr
    assert asr is not None
    wrap = lambda s: {"asr": FaultyAsr(asr, switch, hang=hang)}  # noqa: E731
    speech = french_prompt_pcm("auth-thankyou")
    async with switchboard(call_runtime, wrap=wrap) as board:
        lines, before = await live_calls(board)
        failing, staying = lines[:2], lines[2:]
        switch.calls = {line.call_id for line in failing}
        at = fault_times(lines)
        for line in failing:
            line.say(speech)
        for line in failing:
            await reaches_queue(board, line, "erreur")
            assert board.logged(line, "ASR failed"), board.log.getvalue()[-3000:]
        for line in staying:
            await keeps_talking(board, line, at[line.call_id])
        await nothing_lost(board, before)


async def test_the_voice_failing(call_runtime: Runtime) -> None:
    switch = FaultSwitch()
    wrap = lambda s: {"tts": FaultyTts(s.tts, switch)}  # noqa: E731
    async with switchboard(call_runtime, wrap=wrap) as board:
        lines, before = await live_calls(board)
        failing, staying = lines[:2], lines[2:]
        at = fault_times(lines)
        switch.everyone = True  # the engine fails: every call that needs speech meanwhile
        for line in failing:
            await line.media.send_dtmf("1")
        for line in failing:
            await reaches_queue(board, line, "erreur")
            assert board.logged(line, "internal error: handing the call to a human")
        switch.off()  # the voice is back (a restarted engine)
        for line in staying:
            await keeps_talking(board, line, at[line.call_id])
        await nothing_lost(board, before)


async def test_a_burst_of_turns_leaves_the_event_loop_to_the_other_calls(
    call_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys pressed on many lines at once (the fault matrix's probe of 20 calls): Rasa's
    turns are CPU that never waits; on the calls' event loop, turns that became ready
    together ran in one pass of it, back to back, with every call's pacer waiting (19 turns
    held every line silent for 1.9 s in the 20-call matrix). Rasa now computes on a loop of
    its own, in its own thread (voicebot.core.loop_thread, whose tests show the caller's
    loop running meanwhile): every turn of the burst is answered, and none ran here."""
    import threading
    import uuid

    dialogue = call_runtime.services.dialogue
    agent = dialogue.agent  # type: ignore[attr-defined]
    real_handle = agent.handle_message
    ran_in: list[tuple[str, asyncio.AbstractEventLoop]] = []

    async def traced(*args: Any, **kwargs: Any) -> Any:
        ran_in.append((threading.current_thread().name, asyncio.get_running_loop()))
        return await real_handle(*args, **kwargs)

    monkeypatch.setattr(agent, "handle_message", traced)
    ids = [f"burst-{uuid.uuid4()}" for _ in range(CALLS + 2)]
    try:
        replies = await asyncio.gather(*(dialogue.dtmf(call_id, "1") for call_id in ids))
    finally:
        for call_id in ids:
            await dialogue.end(call_id)
    assert all(reply.texts for reply in replies), replies
    assert len(ran_in) == len(ids)
    calls_loop = asyncio.get_running_loop()
    assert all(name == "rasa" and loop is not calls_loop for name, loop in ran_in), ran_in


async def test_the_records_database_locked(call_runtime: Runtime) -> None:
    async with switchboard(call_runtime) as board:
        lines, before = await live_calls(board)
        path = database_url(board.server.settings).removeprefix("sqlite:///")
        lock = sqlite3.connect(path, timeout=30, isolation_level=None)
        at = fault_times(lines)
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the database
        try:
            answered = await asyncio.gather(*(probe(line) for line in lines))
            # Every caller got the bot's answer while the database was still locked.
            assert all(t is not None for t in answered), answered
            for line in lines:
                undisturbed(line, at[line.call_id])
        finally:
            await asyncio.sleep(3.0)  # long enough for the waiting writes to be noticed
            lock.execute("ROLLBACK")
            lock.close()
        await nothing_lost(board, before)
        for line in lines:
            # The turns said during the lock were written once it was released.
            turns = await board.committed_turns(line)
            assert ("caller", "[touche 1]") in turns, turns
            assert board.logged(line, "database busy or locked"), board.log.getvalue()[-3000:]


async def test_the_records_disk_full(call_runtime: Runtime) -> None:
    switch = FaultSwitch()
    full: list[FullDiskRecords] = []

    async with switchboard(call_runtime) as board:
        # The records the calls write through: the real store, behind a full disk.
        full.append(FullDiskRecords(board.server.records, switch))
        board.server.runtime.services.records = full[0]
        lines, before = await live_calls(board)
        at = fault_times(lines)
        switch.everyone = True
        answered = await asyncio.gather(*(probe(line) for line in lines))
        assert all(t is not None for t in answered), answered  # the calls go on
        switch.off()
        for line in lines:
            undisturbed(line, at[line.call_id])
            assert board.logged(line, "call records: add_turn failed"), board.log.getvalue()[-2000:]
        await nothing_lost(board, before)


async def test_a_console_client_that_never_reads(call_runtime: Runtime) -> None:
    from voicebot.console.app import start_web

    async with switchboard(call_runtime) as board:
        server = board.server
        runner = await start_web(
            server.settings.replace("server", host="127.0.0.1", http_port=0),
            server.runtime.services.hub,
            server.records,
            server.on_call,
        )
        try:
            port = max(bound_port(getattr(site, "_server", None)) for site in runner.sites)
            stuck = await asyncio.to_thread(never_reading_console, port)
            try:
                lines, before = await live_calls(board)
                at = fault_times(lines)
                for _ in range(2):  # a burst of events that the stuck client never takes
                    answered = await asyncio.gather(*(probe(line) for line in lines))
                    assert all(t is not None for t in answered), answered
                for line in lines:
                    undisturbed(line, at[line.call_id])
                await nothing_lost(board, before)
            finally:
                stuck.close()
        finally:
            await runner.cleanup()


async def test_sigterm_during_the_load_hands_every_caller_to_a_person(
    call_runtime: Runtime,
) -> None:
    # The server's shutdown closes its runtime: this one's executor only, not the shared one.
    own = dataclasses.replace(call_runtime, executor=ThreadPoolExecutor(max_workers=1))
    async with switchboard(own) as board:
        lines, before = await live_calls(board)
        await board.server.shutdown(grace_s=20.0)  # what SIGTERM runs in `voicebot serve`
        for line in lines:
            await reaches_queue(board, line, "arret")  # as AMI carries it
            assert board.logged(line, "handoff to an operator: arrêt")
        # The records are closed with the server: read what it committed from the file.
        path = database_url(board.server.settings).removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as db:
            for line in lines:
                rows = db.execute(
                    "SELECT speaker, text FROM turns WHERE call_id = ? ORDER BY id",
                    (line.call_id,),
                ).fetchall()
                missing = [t for t in before[line.call_id] if t not in rows]
                assert not missing, missing
                (outcome,) = db.execute(
                    "SELECT channel_end FROM calls WHERE call_id = ?", (line.call_id,)
                ).fetchone()
                assert outcome == "queued"


def test_the_never_reading_console_fails_clearly_when_the_server_closes_the_handshake() -> None:
    """It read the handshake byte by byte and spun forever on a closed connection."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def close_at_once() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        conn.close()

    closer = threading.Thread(target=close_at_once, daemon=True)
    closer.start()
    with pytest.raises(RuntimeError, match="closed the connection"):
        never_reading_console(port)
    closer.join(GUARD_S)
    server.close()

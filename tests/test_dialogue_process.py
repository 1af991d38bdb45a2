"""The dialogue in a process of its own (voicebot.dialogue.process): the same answers as Rasa
in the calls' process; a child killed mid-turn fails that turn at once (the call goes to a
person), the calls it held go to a person at their next turn, and a new child takes the next
calls; a live reload swaps the brain in the child; a model that cannot load stops the start
with its reason. Real Rasa model, real child processes, calls through the Asterisk emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telephony.emulator import AudioSocketCaller, ChanWebSocketPeer
from tests.phone_helpers import switchboard
from voicebot.call.runtime import Runtime
from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.dialogue.agent import BrainInfo, RasaDialogue
from voicebot.dialogue.live_reload import LiveReloader
from voicebot.dialogue.process import DialogueProcess, DialogueUnavailable
from voicebot.tools.dialogue_speed import measure_dialogue

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 240.0  # Rasa's import and a model load on a busy 2-core machine, with margin
SENTENCES = (
    "je voudrais les horaires de la mairie",
    "à chantenay",
    "je veux refaire ma carte d'identité",
    "merci au revoir",
)


@pytest.fixture(scope="module")
def dialogue_process(
    call_settings: Settings, rasa_dialogue: RasaDialogue
) -> Iterator[DialogueProcess]:
    # rasa_dialogue first: it trains the model if nlu/ changed, which the child then loads
    process = DialogueProcess.start(call_settings)
    process.wait_ready(START_TIMEOUT_S)
    yield process
    process.close()


async def wait_until_ready(process: DialogueProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not process.ready:
        assert time.monotonic() < deadline, "the dialogue's process was not started again"
        await asyncio.sleep(0.2)


@pytest.mark.asyncio(loop_scope="function")
async def test_answers_as_rasa_in_the_calls_process(
    dialogue_process: DialogueProcess, rasa_dialogue: RasaDialogue
) -> None:
    assert dialogue_process.model_version == rasa_dialogue.model_version
    assert dialogue_process.static_texts() == rasa_dialogue.static_texts()
    assert dialogue_process.prompt("transfer") == rasa_dialogue.prompt("transfer")
    here, there = "same-in-process", "same-in-child"
    assert (await dialogue_process.greet(there)) == (await rasa_dialogue.greet(here))
    for text in SENTENCES:
        read_there = await dialogue_process.understand(text)
        read_here = await rasa_dialogue.understand(text)
        assert (read_there.intent, read_there.text) == (read_here.intent, read_here.text)
        assert read_there.confidence == pytest.approx(read_here.confidence, abs=1e-6)
        reply_there = await dialogue_process.turn(there, text, read_there)
        reply_here = await rasa_dialogue.turn(here, text, read_here)
        assert reply_there.texts == reply_here.texts, text
        assert (reply_there.intent, reply_there.entities, reply_there.end_call) == (
            reply_here.intent,
            reply_here.entities,
            reply_here.end_call,
        )
    key_there = await dialogue_process.dtmf("key-in-child", "0")
    key_here = await rasa_dialogue.dtmf("key-in-process", "0")
    assert key_there.handoff is not None and key_here.handoff is not None
    assert key_there.handoff.reason == key_here.handoff.reason == "dtmf"
    assert (await dialogue_process.parse("bonjour"))["intent"] == "saluer"
    for call_id in (there, "key-in-child"):
        await dialogue_process.end(call_id)
    for call_id in (here, "key-in-process"):
        await rasa_dialogue.end(call_id)


@pytest.mark.asyncio(loop_scope="function")
async def test_a_killed_child_fails_its_turns_at_once_and_is_replaced(
    dialogue_process: DialogueProcess,
) -> None:
    await dialogue_process.greet("held-by-the-first")
    first = dialogue_process._child
    assert first is not None
    restarts = dialogue_process.restarts
    pending = asyncio.ensure_future(
        dialogue_process.turn("held-by-the-first", "je voudrais un acte de naissance")
    )
    await asyncio.sleep(0)  # the request is on its way
    os.kill(first.process.pid, signal.SIGKILL)
    with pytest.raises(DialogueUnavailable) as failed:
        await pending
    # failed because the pipe closed, not because an answer timed out
    assert "stopped" in str(failed.value) and "within" not in str(failed.value)
    # meanwhile a call still has its prompts, and new turns go to a person at once
    assert dialogue_process.prompt("transfer_error")
    with pytest.raises(DialogueUnavailable, match="starting again"):
        await dialogue_process.turn("arrives-during-the-restart", "bonjour")

    await wait_until_ready(dialogue_process)
    assert dialogue_process.restarts == restarts + 1
    assert dialogue_process._child is not first
    # the conversation that lived in the dead child is gone: that call goes to a person
    with pytest.raises(DialogueUnavailable, match="held this call"):
        await dialogue_process.turn("held-by-the-first", "à chantenay")
    await dialogue_process.end("held-by-the-first")
    reply = await dialogue_process.turn(
        "after-the-restart", "je voudrais les horaires de la mairie"
    )
    assert reply.intent == "horaires_mairie" and reply.texts
    await dialogue_process.end("after-the-restart")


@pytest.mark.asyncio(loop_scope="function")
async def test_a_live_reload_swaps_the_brain_in_the_child(
    call_settings: Settings, dialogue_process: DialogueProcess
) -> None:
    reloader = LiveReloader(dialogue_process, call_settings)
    swapped: list[BrainInfo] = []
    reloader.on_swap.append(swapped.append)
    try:
        status = await reloader.reload("test")
    finally:
        await reloader.stop()
    assert status.ok, status.message
    assert swapped and swapped[0].model_version == dialogue_process.model_version
    assert dialogue_process.brain_info is swapped[0]
    reply = await dialogue_process.dtmf("after-the-reload", "3")
    assert reply.intent == "etat_civil"
    await dialogue_process.end("after-the-reload")


@pytest.mark.asyncio(loop_scope="function")
async def test_an_error_in_one_request_is_that_request_s_alone(
    dialogue_process: DialogueProcess,
) -> None:
    """An exception raised in the child for one request (here Rasa's own, for arguments it
    cannot take) reaches that request's caller; the child keeps serving the others."""
    await wait_until_ready(dialogue_process)
    child = dialogue_process._child
    with pytest.raises(Exception) as raised:
        await dialogue_process._request("turn", "bad-request")  # turn() without its text
    assert not isinstance(raised.value, DialogueUnavailable)
    assert dialogue_process._child is child and child is not None
    assert child.process.poll() is None  # still running
    reply = await dialogue_process.dtmf("after-a-bad-request", "3")
    assert reply.intent == "etat_civil"
    await dialogue_process.end("after-a-bad-request")


def test_a_model_that_cannot_load_stops_the_start_with_its_reason(
    call_settings: Settings, tmp_path: Path
) -> None:
    damaged = tmp_path / "allonantes-damaged.tar.gz"
    damaged.write_bytes(b"not a Rasa model archive")
    settings = call_settings.replace("dialogue", model=str(damaged))
    process = DialogueProcess.start(settings)
    with pytest.raises(ModelError, match="allonantes-damaged"):
        process.wait_ready(START_TIMEOUT_S)
    assert not process.ready


def test_the_calls_process_pays_a_fraction_of_a_turn(
    dialogue_process: DialogueProcess, rasa_dialogue: RasaDialogue
) -> None:
    """CPU time, not wall time (the same on a busy machine): what a turn costs the process
    that paces the calls' audio, with Rasa there and with Rasa in its own process."""
    turn = "turn with its own parse (turn)"
    here = {cost.name: cost for cost in measure_dialogue(rasa_dialogue, 0.5, 3)}[turn]
    there = {cost.name: cost for cost in measure_dialogue(dialogue_process, 0.5, 3)}[turn]
    assert here.operations >= 1 and there.operations >= 1
    assert there.cpu_ms < here.cpu_ms / 2, (there, here)


# --- a call whose dialogue process dies ---------------------------------------------------


@pytest.mark.asyncio(loop_scope="function")
async def test_a_call_whose_dialogue_dies_reaches_the_queue(
    call_runtime: Runtime, dialogue_process: DialogueProcess
) -> None:
    """The child is killed while the caller hears the greeting; the caller's key press is a
    turn the dialogue cannot answer: the bot hands the call over, and the dialplan (our
    extensions.conf, run by the emulated Asterisk) queues it with the reason."""
    await wait_until_ready(dialogue_process)

    async def caller(media: AudioSocketCaller | ChanWebSocketPeer) -> None:
        assert isinstance(media, AudioSocketCaller)  # extension 3939: AudioSocket
        line = asyncio.create_task(media.play_silence(60.0))
        try:
            assert await media.wait_for_voice(60.0) is not None  # the greeting
            child = dialogue_process._child
            assert child is not None
            os.kill(child.process.pid, signal.SIGKILL)
            await media.send_dtmf("3")
            await line
        finally:
            line.cancel()

    async with switchboard(call_runtime, dialogue=dialogue_process) as (pbx, server):
        result = await pbx.call("3939", caller=caller, timeout_s=90.0)
        assert result.ending == "queue", result.trace
        assert result.variables["ALLO_HANDOFF_REASON"] == "erreur"
        call_id = result.variables["ALLO_UUID"]
        record = None
        for _ in range(100):
            record = await server.records.get_call(call_id)
            if record is not None and record["outcome"] is not None:
                break
            await asyncio.sleep(0.1)
        assert record is not None and record["outcome"] == "error", record
    await wait_until_ready(dialogue_process)  # the next calls get the bot again
    reply = await dialogue_process.dtmf("after-the-death", "3")
    assert reply.intent == "etat_civil"
    await dialogue_process.end("after-the-death")

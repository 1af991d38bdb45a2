"""How calls end, end to end: the real phone server and engines on one side, the emulated
Asterisk on the other running the project's own deploy/asterisk/extensions.conf. Every end is
the bot's decision, and what the dialplan does next is what the caller gets: a resolved call is
hung up, a transfer reaches the queue with its reason, and when AMI cannot carry the decision
the caller reaches the queue (a person), which the records say.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from telephony.emulator import AudioSocketCaller, ChanWebSocketPeer, EmulatedPbx
from telephony.emulator.dialplan import CallResult
from tests.phone_helpers import BrokenDialogue
from tests.phone_helpers import switchboard as emulated_switchboard
from tests.speech_helpers import french_prompt_pcm
from voicebot.call.runtime import Runtime
from voicebot.call.server import PhoneServer
from voicebot.core.events import CallEvent
from voicebot.tools.asr_eval import builtin_corpus, transcribe

CALLER_NUMBER = "0240419000"
EXTENSION = {"audiosocket": "3939", "websocket": "3940"}
Media = AudioSocketCaller | ChanWebSocketPeer
Script = Callable[[Media], Awaitable[None]]


# --- the caller's side ---------------------------------------------------------------------


def _voiced(pcm: bytes, threshold: int = 500) -> bool:
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    return bool(samples.size) and int(np.abs(samples).max()) > threshold


async def wait_until_the_bot_is_quiet(media: Media, quiet_s: float = 1.0) -> None:
    """Listen (the line carries silence) until the bot has said something new, then been
    quiet for ``quiet_s``."""
    quiet_bytes = int(quiet_s * 8000) * 2
    already = len(media.received_audio())
    for _ in range(300):  # 60 s at most
        await media.play_silence(0.2)
        heard = media.received_audio()[already:]
        if _voiced(heard) and len(heard) > quiet_bytes and not _voiced(heard[-quiet_bytes:]):
            return
    raise AssertionError("the bot never went quiet")


# The bot's state per call id while a switchboard runs, from its own events: on a loaded
# machine a pause between two synthesised sentences can sound like the end of the greeting, and
# a caller who spoke into it would be heard only in part. The tests' callers wait for both.
_BOT_LISTENING: dict[str, asyncio.Event] = {}


def _note_state(event: CallEvent) -> None:
    if event.kind == "state":
        listening = _BOT_LISTENING.setdefault(event.call_id, asyncio.Event())
        if event.data.get("state") == "écoute":
            listening.set()
        else:
            listening.clear()


def _call_id(media: Media) -> str:
    if isinstance(media, AudioSocketCaller):
        return media.call_uuid
    return parse_qs(urlsplit(media.uri).query)["allo_uuid"][0]


async def wait_until_the_bot_listens(media: Media) -> None:
    """The bot has spoken and gone quiet (as the caller hears it), and it is listening."""
    await wait_until_the_bot_is_quiet(media)
    listening = _BOT_LISTENING.setdefault(_call_id(media), asyncio.Event())
    for _ in range(300):  # 60 s at most
        if listening.is_set():
            return
        await media.play_silence(0.2)
    raise AssertionError("the bot never listened")


def says(recording: str) -> Script:
    """Listen to the greeting, say a real French recording, then stay on the line."""

    async def script(media: Media) -> None:
        await wait_until_the_bot_listens(media)
        await media.play(french_prompt_pcm(recording))
        await media.play_silence(60.0)

    return script


def says_twice(recording: str) -> Script:
    async def script(media: Media) -> None:
        for _ in range(2):
            await wait_until_the_bot_listens(media)
            await media.play(french_prompt_pcm(recording))
        await media.play_silence(60.0)

    return script


async def presses_zero(media: Media) -> None:
    await media.play_silence(1.0)
    await media.send_dtmf("0")
    await media.play_silence(60.0)


async def stays_silent(media: Media) -> None:
    await media.play_silence(60.0)


async def hangs_up(media: Media) -> None:
    await media.play_silence(1.5)
    await media.hangup()


# --- the switchboard -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def switchboard(
    runtime: Runtime, **options: Any
) -> AsyncIterator[tuple[EmulatedPbx, PhoneServer]]:
    """tests.phone_helpers.switchboard, noting the bot's state for the callers' scripts."""
    async with emulated_switchboard(runtime, **options) as (pbx, server):
        stop_noting = server.runtime.services.hub.listen(_note_state)
        try:
            yield pbx, server
        finally:
            stop_noting()


async def place(pbx: EmulatedPbx, transport: str, script: Script) -> CallResult:
    return await pbx.call(
        EXTENSION[transport], caller=script, caller_number=CALLER_NUMBER, timeout_s=90.0
    )


async def record_of(server: PhoneServer, result: CallResult) -> dict[str, Any]:
    """The bot's record of the call, once the bot has closed it."""
    call_id = result.variables["ALLO_UUID"]
    for _ in range(100):
        call = await server.records.get_call(call_id)
        if call is not None and call["outcome"] is not None:
            return dict(call)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no finished record for {call_id}")


async def calls_of_the_caller(server: PhoneServer) -> set[str]:
    """The calls the records keep under the caller's keyed hash (never the number itself)."""
    number_hash = server.records.caller_hash(CALLER_NUMBER)
    assert number_hash is not None and CALLER_NUMBER not in number_hash
    return {call["call_id"] for call in await server.records.calls_with_hashes([number_hash])}


def prompt(server: PhoneServer, name: str) -> str:
    speak = server.runtime.services.prompt
    assert speak is not None
    return speak(name)


def assert_queued(result: CallResult, reason: str) -> None:
    assert result.ending == "queue", result.trace
    assert result.variables["ALLO_HANDOFF_REASON"] == reason
    assert result.callerid_name.startswith(reason)  # what the operator's phone shows


TRANSPORTS = ["audiosocket", "websocket"]

# Real French prompts in which a caller asks for a person (Asterisk's queue announcements).
PERSON_PROMPTS = ("queue-callswaiting", "queue-quantity2")


async def asks_for_a_person(runtime: Runtime) -> str:
    """The first of PERSON_PROMPTS that the model in service reads as ``demander_agent`` as
    this ASR writes it: the trainers change the model (since the grown data, « En attente
    pour parler à un préposé », Québec French, reads as off-topic)."""
    entries = {e.key: e for e in builtin_corpus().entries}
    for name in PERSON_PROMPTS:
        utterance, *_ = await transcribe(runtime.services.asr, entries[name])
        parsed = await runtime.services.dialogue.parse(utterance.text)  # type: ignore[attr-defined]
        if parsed["intent"] == "demander_agent":
            return name
    raise AssertionError("the model reads no prompt of PERSON_PROMPTS as a request for a person")


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_goodbye_hangs_up_and_transfers_reach_the_queue_with_their_reason(
    call_runtime: Runtime, transport: str
) -> None:
    async with switchboard(call_runtime) as (pbx, server):
        goodbye, zero, person, gone = await asyncio.gather(
            place(pbx, transport, says("vm-goodbye")),  # « Au revoir »
            place(pbx, transport, presses_zero),
            place(pbx, transport, says(await asks_for_a_person(call_runtime))),
            place(pbx, transport, hangs_up),
        )
        # A resolved call ends there: Asterisk hangs the caller up, no operator rings.
        assert goodbye.ending == "hangup" and goodbye.queue is None, goodbye.trace
        assert goodbye.variables["ALLO_DECISION"] == "raccrocher"
        record = await record_of(server, goodbye)
        assert record["outcome"] == "resolved"
        assert record["channel_end"] == "hung_up_by_bot"
        assert record["caller_known"], "the caller's number (its keyed hash) was not recorded"
        assert goodbye.variables["ALLO_UUID"] in await calls_of_the_caller(server)
        assert record["turns"][-1]["intent"] == "au_revoir"

        assert_queued(zero, "dtmf")
        assert_queued(person, "demande")
        assert person.variables["ALLO_INTENT"] == "demander_agent"
        for result in (zero, person):
            record = await record_of(server, result)
            assert record["outcome"] == "transferred"
            assert record["channel_end"] == "queued" and record["context_delivered"] is True
            assert record["caller_known"]

        assert gone.ending == "caller_hangup" and gone.queue is None
        record = await record_of(server, gone)
        assert record["outcome"] == "abandoned" and record["channel_end"] == "caller_hung_up"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_silence_ends_as_the_policy_says(call_runtime: Runtime, transport: str) -> None:
    quick = {"silence_prompt_s": 1.5, "silence_prompts_before_end": 1}
    async with switchboard(call_runtime, policy={**quick, "silence_action": "transfer"}) as (
        pbx,
        server,
    ):
        transferred = await place(pbx, transport, stays_silent)
        assert_queued(transferred, "silence")
        record = await record_of(server, transferred)
        assert record["channel_end"] == "queued"
        assert record["turns"][-1]["text"] == prompt(server, "silence_transfer")
    async with switchboard(call_runtime, policy={**quick, "silence_action": "hangup"}) as (
        pbx,
        server,
    ):
        hung_up = await place(pbx, transport, stays_silent)
        assert hung_up.ending == "hangup", hung_up.trace
        record = await record_of(server, hung_up)
        assert record["channel_end"] == "hung_up_by_bot"
        assert record["turns"][-1]["text"] == prompt(server, "silence_goodbye")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_when_ami_is_down_a_resolved_caller_still_reaches_a_person(
    call_runtime: Runtime, transport: str
) -> None:
    async with switchboard(call_runtime, ami_up=False) as (pbx, server):
        goodbye, zero = await asyncio.gather(
            place(pbx, transport, says("vm-goodbye")), place(pbx, transport, presses_zero)
        )
        # The dialplan got no decision: the fail-safe is the queue, never a silent hang-up.
        for result in (goodbye, zero):
            assert_queued(result, "inconnu")
            assert "ALLO_DECISION" not in result.variables
        record = await record_of(server, goodbye)
        assert record["outcome"] == "transferred" and record["channel_end"] == "queued"
        assert record["context_delivered"] is False
        assert record["handoff_reason"] == "fin_non_transmise"
        record = await record_of(server, zero)
        assert record["handoff_reason"] == "dtmf" and record["context_delivered"] is False


async def test_low_asr_confidence_hands_off_with_its_reason(call_runtime: Runtime) -> None:
    async with switchboard(call_runtime, policy={"min_asr_confidence": 0.999}) as (pbx, server):
        result = await place(pbx, "audiosocket", says_twice("auth-thankyou"))
        assert_queued(result, "confiance_asr")
        assert (await record_of(server, result))["context_delivered"] is True


async def test_an_error_in_the_bot_hands_the_caller_to_a_person(call_runtime: Runtime) -> None:
    failing = BrokenDialogue(call_runtime.services.dialogue)
    async with switchboard(call_runtime, dialogue=failing) as (pbx, server):
        result = await place(pbx, "audiosocket", says("vm-goodbye"))
        assert_queued(result, "erreur")
        record = await record_of(server, result)
        assert record["outcome"] == "error" and record["channel_end"] == "queued"

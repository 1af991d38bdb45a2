"""AMI call control (panoramisk) against the AMI emulator, and the context sanitising."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator

import pytest

from telephony.ami import (
    DECISION_VARIABLE,
    INTENT_VARIABLE,
    MAX_SUMMARY_CHARS,
    REASON_VARIABLE,
    SUMMARY_VARIABLE,
    AmiCallControl,
    handoff_variables,
    sanitize_value,
)
from telephony.emulator import AmiEmulator
from voicebot.core.config import AmiSettings
from voicebot.core.interfaces import Handoff

SECRET = "secret-de-test"


@contextlib.asynccontextmanager
async def ami_pair(
    secret: str = SECRET, emulator: AmiEmulator | None = None, **control_options: float
) -> AsyncIterator[tuple[AmiEmulator, AmiCallControl]]:
    emulator = emulator or AmiEmulator(secret=SECRET)
    port = await emulator.start()
    settings = AmiSettings(
        host="127.0.0.1",
        port=port,
        username="voicebot",
        secret=secret,
        ping_interval_s=0.2,
        reconnect_max_s=0.8,
    )
    options = {"action_timeout_s": 0.5, "handoff_timeout_s": 1.0, "first_retry_s": 0.1}
    control = AmiCallControl(settings, **{**options, **control_options})
    await control.start()
    try:
        yield emulator, control
    finally:
        await control.close()
        await emulator.stop()


# --- the context put on the channel ----------------------------------------------------------


def test_context_is_sanitised() -> None:
    handoff = Handoff(
        reason="incompréhension",
        intent="État civil / Acte!",
        summary="Demande d'acte de naissance,\r\nrappeler au 06 12 34 56 78\x00 ${SHELL} (urgent)",
    )
    variables = handoff_variables(handoff)
    assert set(variables) == {REASON_VARIABLE, INTENT_VARIABLE, SUMMARY_VARIABLE, DECISION_VARIABLE}
    assert REASON_VARIABLE.startswith("__")  # inherited by the operator's channel
    # The decision is set last: when the dialplan reads it, the context is already there.
    assert list(variables)[-1] == DECISION_VARIABLE and variables[DECISION_VARIABLE] == "transfert"
    assert not DECISION_VARIABLE.startswith("_")  # the caller's dialplan only, not the operator's
    assert variables[REASON_VARIABLE] == "incomprehension"
    assert variables[INTENT_VARIABLE] == "etat_civil_acte"
    summary = variables[SUMMARY_VARIABLE]
    assert summary == "Demande d'acte de naissance rappeler au <numéro> SHELL urgent"
    for forbidden in ("\r", "\n", "\x00", "$", "{", ",", "(", "06 12"):
        assert forbidden not in summary


def test_long_summaries_are_capped_and_empty_ones_fall_back_to_utterances() -> None:
    long_text = "mot " * 200
    assert len(sanitize_value(long_text, MAX_SUMMARY_CHARS)) == MAX_SUMMARY_CHARS
    assert sanitize_value(long_text, 20).endswith("…")
    variables = handoff_variables(
        Handoff(reason="dtmf", last_utterances=("bonjour", "je veux parler à quelqu'un"))
    )
    assert variables[SUMMARY_VARIABLE] == "bonjour / je veux parler à quelqu'un"
    assert variables[INTENT_VARIABLE] == ""


# --- connection --------------------------------------------------------------------------------


async def test_login_and_keepalive() -> None:
    async with ami_pair() as (emulator, control):
        assert await control.wait_connected(2.0)
        assert emulator.logins == [("voicebot", True)]
        login = emulator.actions_named("Login")[0]
        assert login["Events"] == "off" and login["ActionID"]
        await asyncio.sleep(0.5)
        assert len(emulator.actions_named("Ping")) >= 2  # every ping_interval_s (0.2 s)
    assert emulator.actions_named("Logoff")  # close() says goodbye


async def test_bad_secret_is_refused_and_retried_with_backoff() -> None:
    async with ami_pair(secret="mauvais") as (emulator, control):
        assert not await control.wait_connected(1.5)
        assert not control.connected and "login refusé" in control.last_error
    assert emulator.logins and {ok for _, ok in emulator.logins} == {False}
    gaps = [b - a for a, b in itertools.pairwise(emulator.connection_times)]
    assert len(gaps) >= 3
    assert gaps[2] > gaps[0] * 2  # 0.1 s, 0.2 s, 0.4 s, then capped at 0.8 s
    assert max(gaps) < 0.8 + 0.3


async def test_dropped_connection_reconnects() -> None:
    async with ami_pair() as (emulator, control):
        assert await control.wait_connected(2.0)
        await emulator.drop_connections()
        await asyncio.sleep(0.05)
        assert not control.connected
        assert await control.wait_connected(2.0)
        assert control.logins == 2 and emulator.logins == [("voicebot", True)] * 2


async def test_ami_restart_reconnects_on_the_same_port() -> None:
    async with ami_pair() as (emulator, control):
        assert await control.wait_connected(2.0)
        await emulator.stop()
        await asyncio.sleep(0.3)
        assert not control.connected
        await emulator.start(port=emulator.port)
        assert await control.wait_connected(2.0)


# --- which Asterisk ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "warned"),
    [("20.13.0", True), ("18.26.4", True), ("22.4.0", False), ("23.4.1", False)],
)
async def test_an_asterisk_whose_audiosocket_drops_keys_is_named_in_a_warning(
    version: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = AmiEmulator(secret=SECRET, asterisk_version=version)
    with caplog.at_level(logging.INFO, logger="telephony.ami"):
        async with ami_pair(emulator=emulator) as (_, control):
            assert await control.wait_connected(2.0)
            assert control.asterisk_version == version
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "touche 0" in w] == (
        [
            f"Asterisk {version} : AudioSocket() n'y transmet pas les touches de l'appelant "
            "(avant 20.14, 21.9 et 22.4) ; la touche 0 n'atteint pas le bot par AudioSocket, "
            "seule la parole le peut (deploy/asterisk/README.md, « Versions d'Asterisk »)"
        ]
        if warned
        else []
    )


async def test_without_the_reporting_class_the_version_is_unknown_and_all_else_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An older manager.conf (write = call only): CoreSettings is refused, the bot says so
    once and still connects and hands calls over."""
    emulator = AmiEmulator(secret=SECRET, asterisk_version="20.13.0", write_classes=["call"])
    with caplog.at_level(logging.INFO, logger="telephony.ami"):
        async with ami_pair(emulator=emulator) as (_, control):
            assert await control.wait_connected(2.0)
            assert control.asterisk_version == ""
            emulator.add_channel("PJSIP/trunk-1", ALLO_UUID="8a2f4f8e-3b7a-4d55-9d0e-1f1b2c3d4e5f")
            assert await control.hang_up("8a2f4f8e-3b7a-4d55-9d0e-1f1b2c3d4e5f", None)
    assert any("Permission denied" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


# --- handoff -------------------------------------------------------------------------------------


async def test_handoff_sets_the_context_on_the_callers_channel() -> None:
    call_id = str(uuid.uuid4())
    async with ami_pair() as (emulator, control):
        emulator.add_channel("PJSIP/autre-00000001", ALLO_UUID=str(uuid.uuid4()))
        caller = emulator.add_channel("PJSIP/standard-00000002", ALLO_UUID=call_id)
        assert await control.wait_connected(2.0)
        handoff = Handoff(
            reason="dtmf", intent="etat_civil", summary="Acte de naissance, au 0612345678\n"
        )
        assert await control.handoff(call_id, None, handoff)
    assert caller.variables[REASON_VARIABLE] == "dtmf"
    assert caller.variables[INTENT_VARIABLE] == "etat_civil"
    assert caller.variables[SUMMARY_VARIABLE] == "Acte de naissance au <numéro>"
    assert caller.variables[DECISION_VARIABLE] == "transfert"
    setvars = emulator.actions_named("Setvar")
    assert len(setvars) == 4 and setvars[-1]["Variable"] == DECISION_VARIABLE
    status = emulator.actions_named("Status")[0]
    assert status["Variables"] == "ALLO_UUID" and "Channel" not in status


async def test_hang_up_sets_the_decision_the_dialplan_reads() -> None:
    call_id = str(uuid.uuid4())
    async with ami_pair() as (emulator, control):
        caller = emulator.add_channel("PJSIP/standard-00000004", ALLO_UUID=call_id)
        assert await control.wait_connected(2.0)
        assert await control.hang_up(call_id, None)
        # no channel with that UUID: not delivered, and the dialplan will queue the caller
        assert not await control.hang_up(str(uuid.uuid4()), None)
    assert caller.variables == {"ALLO_UUID": call_id, DECISION_VARIABLE: "raccrocher"}


async def test_hang_up_without_ami_is_not_delivered() -> None:
    async with ami_pair() as (emulator, control):
        assert await control.wait_connected(2.0)
        await emulator.stop()
        await asyncio.sleep(0.3)
        assert not await control.hang_up(str(uuid.uuid4()), "PJSIP/standard-00000005")


async def test_the_callers_number_comes_from_the_channel_status() -> None:
    call_id = str(uuid.uuid4())
    async with ami_pair() as (emulator, control):
        emulator.add_channel("PJSIP/a-00000006", callerid_num="0240419000", ALLO_UUID=call_id)
        hidden = str(uuid.uuid4())
        emulator.add_channel("PJSIP/b-00000007", callerid_num="", ALLO_UUID=hidden)
        assert await control.wait_connected(2.0)
        assert await control.caller_number(call_id) == "0240419000"
        assert await control.caller_number(hidden) is None  # "<unknown>": no number
        assert await control.caller_number(str(uuid.uuid4())) is None


async def test_websocket_leg_is_skipped_for_the_callers_channel() -> None:
    call_id = str(uuid.uuid4())
    async with ami_pair() as (emulator, control):
        emulator.add_channel("WebSocket/voicebot/0x7f3a5c001230", ALLO_UUID=call_id)
        caller = emulator.add_channel("PJSIP/standard-00000003", ALLO_UUID=call_id.upper())
        assert await control.wait_connected(2.0)
        assert await control.find_channel(call_id) == caller.name
        assert await control.find_channel(str(uuid.uuid4())) is None
        assert await control.find_channel("pas-un-uuid") is None
        ok = await control.handoff(
            call_id, "WebSocket/voicebot/0x7f3a5c001230", Handoff(reason="demande")
        )
        assert ok and caller.variables[REASON_VARIABLE] == "demande"


async def test_unknown_call_uses_the_given_channel_or_gives_up() -> None:
    async with ami_pair() as (emulator, control):
        known = emulator.add_channel("PJSIP/standard-00000004")
        assert await control.wait_connected(2.0)
        call_id = str(uuid.uuid4())
        assert await control.handoff(call_id, known.name, Handoff(reason="urgence"))
        assert known.variables[REASON_VARIABLE] == "urgence"
        assert not await control.handoff(call_id, None, Handoff(reason="urgence"))
        assert not await control.handoff(call_id, "PJSIP/gone-1", Handoff(reason="urgence"))


async def test_ami_down_handoff_returns_false_at_once() -> None:
    async with ami_pair() as (emulator, control):
        emulator.add_channel("PJSIP/standard-00000005", ALLO_UUID="0" * 32)
        assert await control.wait_connected(2.0)
        await emulator.stop()
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert not await control.handoff("0" * 32, None, Handoff(reason="dtmf"))
        assert loop.time() - started < 0.1


async def test_hung_ami_handoff_is_bounded_then_reconnects() -> None:
    call_id = str(uuid.uuid4())
    async with ami_pair(handoff_timeout_s=0.6) as (emulator, control):
        emulator.add_channel("PJSIP/standard-00000006", ALLO_UUID=call_id)
        assert await control.wait_connected(2.0)
        emulator.mute = True  # reads everything, answers nothing
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert not await control.handoff(call_id, None, Handoff(reason="dtmf"))
        assert loop.time() - started < 0.8
        emulator.mute = False
        # The unanswered ping drops the link; the supervisor reconnects.
        for _ in range(40):
            if control.logins >= 2 and control.connected:
                break
            await asyncio.sleep(0.05)
        assert control.logins >= 2
        assert await control.handoff(call_id, None, Handoff(reason="dtmf"))


async def test_without_ami_settings_handoff_is_simply_false() -> None:
    control = AmiCallControl(AmiSettings(host=""))
    await control.start()
    assert not control.configured and not control.connected
    assert not await control.handoff(str(uuid.uuid4()), "PJSIP/x-1", Handoff(reason="dtmf"))
    await control.close()

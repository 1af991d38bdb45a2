"""What the bot reads from Asterisk's manager connection, from the bytes Asterisk writes.

Each reply is cut and parsed as panoramisk does (``Message.from_line`` on each block ending
with an empty line), then read by ``list_replies`` and ``status_caller_line`` as
``AmiCallControl`` does. The texts follow ``action_status`` in Asterisk's
``main/manager.c``: ``Response: Success`` with ``EventList: start``, one ``Event: Status`` per
channel (the requested variables as ``Variable: NAME=value`` lines), ``Event:
StatusComplete``; a refused action is a single ``Response: Error`` with a ``Message``.
"""

from __future__ import annotations

from typing import Any

import pytest
from panoramisk.message import Message

from telephony.ami import AmiError, list_replies, status_caller_line

CALL = "5b2c5d7e-9a41-4c1e-8f3b-2a6d0e4c1b7f"
OTHER_CALL = "0d9e8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"


def parse(raw: bytes) -> list[Any]:
    """The messages in what Asterisk wrote, as panoramisk builds them."""
    messages = [Message.from_line(block) for block in raw.decode("ascii").split("\r\n\r\n")]
    return [message for message in messages if message is not None]


def status(channel: bytes, number: bytes, *variables: bytes) -> bytes:
    lines = [
        b"Event: Status",
        b"Privilege: Call",
        b"Channel: " + channel,
        b"ChannelState: 6",
        b"ChannelStateDesc: Up",
        b"CallerIDNum: " + number,
        b"CallerIDName: <unknown>",
        *(b"Variable: " + variable for variable in variables),
        b"ActionID: 3",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


START = b"Response: Success\r\nActionID: 3\r\nEventList: start\r\nMessage: Channel status will follow\r\n\r\n"
COMPLETE = b"Event: StatusComplete\r\nActionID: 3\r\nEventList: Complete\r\nListItems: 2\r\n\r\n"


def caller_line(raw: bytes, wanted: str = CALL) -> tuple[str, str | None] | None:
    line = status_caller_line(list_replies(parse(raw), "Status"), wanted)
    return None if line is None else (line.channel, line.caller_number)


# --- list_replies ---------------------------------------------------------------------------


def test_a_list_answer_is_returned_whole_in_order() -> None:
    messages = parse(START + status(b"PJSIP/trunk-00000001", b"0612345678") + COMPLETE)
    replies = list_replies(messages, "Status")
    assert replies == messages
    assert [reply.get("Event") for reply in replies] == [None, "Status", "StatusComplete"]


def test_a_single_answer_becomes_a_one_item_list() -> None:
    (message,) = parse(
        b"Response: Success\r\nActionID: 3\r\nMessage: Channel status will follow\r\n\r\n"
    )
    replies = list_replies(message, "Status")
    assert isinstance(replies, list)
    assert len(replies) == 1
    assert replies[0] is message


def test_an_empty_list_is_no_refusal() -> None:
    assert list_replies([], "Status") == []


@pytest.mark.parametrize("as_list", [False, True])
def test_a_refused_action_raises_with_asterisks_message(as_list: bool) -> None:
    (message,) = parse(b"Response: Error\r\nActionID: 3\r\nMessage: Permission denied\r\n\r\n")
    with pytest.raises(AmiError) as caught:
        list_replies([message] if as_list else message, "Status")
    assert str(caught.value) == "Status refusé (Permission denied)"


def test_a_refusal_without_a_message_still_raises() -> None:
    (message,) = parse(b"Response: Error\r\nActionID: 9\r\n\r\n")
    with pytest.raises(AmiError) as caught:
        list_replies(message, "Setvar")
    assert str(caught.value) == "Setvar refusé ()"


def test_only_the_first_reply_says_whether_the_action_was_refused() -> None:
    messages = parse(START + b"Response: Error\r\nMessage: late\r\n\r\n")
    assert list_replies(messages, "Status") == messages


@pytest.mark.parametrize("response", [b"Success", b"Follows", b"Goodbye"])
def test_other_responses_are_not_refusals(response: bytes) -> None:
    (message,) = parse(b"Response: " + response + b"\r\nActionID: 3\r\n\r\n")
    assert list_replies(message, "Status") == [message]


# --- status_caller_line: the caller's channel ----------------------------------------------


def test_the_callers_channel_and_number() -> None:
    raw = START + status(b"PJSIP/trunk-00000001", b"0612345678", b"ALLO_UUID=" + CALL.encode())
    assert caller_line(raw + COMPLETE) == ("PJSIP/trunk-00000001", "0612345678")


def test_the_uuid_is_matched_whatever_its_case() -> None:
    raw = status(b"PJSIP/trunk-00000001", b"0612345678", b"ALLO_UUID=" + CALL.upper().encode())
    assert caller_line(START + raw + COMPLETE) == ("PJSIP/trunk-00000001", "0612345678")


@pytest.mark.parametrize("side", [b"AudioSocket/bot-00000002", b"WebSocket/bot-00000002"])
def test_the_bot_side_channel_is_passed_over_for_the_callers(side: bytes) -> None:
    uuid_line = b"ALLO_UUID=" + CALL.encode()
    for order in ((side, b"PJSIP/trunk-00000001"), (b"PJSIP/trunk-00000001", side)):
        raw = START
        for channel in order:
            raw += status(channel, b"0612345678", uuid_line)
        assert caller_line(raw + COMPLETE) == ("PJSIP/trunk-00000001", "0612345678")


def test_the_bot_side_channel_when_it_is_the_only_one() -> None:
    raw = status(b"AudioSocket/bot-00000002", b"<unknown>", b"ALLO_UUID=" + CALL.encode())
    assert caller_line(START + raw + COMPLETE) == ("AudioSocket/bot-00000002", None)


def test_the_first_of_two_caller_channels() -> None:
    uuid_line = b"ALLO_UUID=" + CALL.encode()
    raw = status(b"SIP/a-1", b"0611111111", uuid_line) + status(
        b"SIP/b-2", b"0622222222", uuid_line
    )
    assert caller_line(START + raw + COMPLETE) == ("SIP/a-1", "0611111111")


def test_other_calls_and_channels_without_the_variable_are_not_the_caller() -> None:
    raw = (
        START
        + status(b"PJSIP/other-00000007", b"0699999999", b"ALLO_UUID=" + OTHER_CALL.encode())
        + status(b"PJSIP/bare-00000008", b"0688888888")
        + status(b"PJSIP/empty-00000009", b"0677777777", b"ALLO_UUID=")
        + status(b"PJSIP/trunk-00000001", b"0612345678", b"ALLO_UUID=" + CALL.encode())
        + COMPLETE
    )
    assert caller_line(raw) == ("PJSIP/trunk-00000001", "0612345678")
    assert caller_line(raw, "9f1e2d3c-4b5a-4697-8877-665544332211") is None


def test_only_status_events_are_read() -> None:
    uuid_line = b"Variable: ALLO_UUID=" + CALL.encode()
    raw = (
        START.replace(b"Message:", uuid_line + b"\r\nMessage:")
        + b"Event: Newchannel\r\nChannel: PJSIP/x-1\r\nCallerIDNum: 0611111111\r\n"
        + uuid_line
        + b"\r\n\r\n"
        + COMPLETE
    )
    assert caller_line(raw) is None


def test_no_status_event_no_line() -> None:
    assert caller_line(START + COMPLETE) is None


def test_the_uuid_among_several_variables() -> None:
    raw = status(
        b"PJSIP/trunk-00000001",
        b"0612345678",
        b"OTHER=" + CALL.encode(),
        b"XALLO_UUID=" + OTHER_CALL.encode(),
        b"ALLO_UUID=" + CALL.encode(),
        b"LAST=1",
    )
    assert caller_line(START + raw + COMPLETE) == ("PJSIP/trunk-00000001", "0612345678")


@pytest.mark.parametrize(
    "variable",
    [
        b"OTHER=" + CALL.encode(),  # another variable holding the UUID
        b"allo_uuid=" + CALL.encode(),  # variable names are case-sensitive in Asterisk
        b"ALLO_UUID =" + CALL.encode(),
        b"ALLO_UUID=" + CALL.encode() + b"0",
        b"ALLO_UUID=x" + CALL.encode(),
        b"ALLO_UUID" + CALL.encode(),
    ],
)
def test_the_uuid_must_be_allo_uuids_whole_value(variable: bytes) -> None:
    assert caller_line(START + status(b"PJSIP/t-1", b"0612345678", variable) + COMPLETE) is None


def test_a_status_without_channel_or_number() -> None:
    raw = b"Event: Status\r\nVariable: ALLO_UUID=" + CALL.encode() + b"\r\n\r\n"
    assert caller_line(START + raw + COMPLETE) == ("", None)


# --- the caller's number (CallerIDNum) ------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (b"0612345678", "0612345678"),
        (b"+33612345678", "+33612345678"),
        (b"06 12 34 56 78", "0612345678"),
        (b"06.12.34.56.78", "0612345678"),
        (b"06-12-34-56-78", "0612345678"),
        (b"06\t12", "0612"),
        (b"12", "12"),  # two digits: the shortest number kept
        (b"1" * 20, "1" * 20),  # twenty: the longest
        (b"<unknown>", None),  # what Asterisk writes for a channel without a number
        (b"anonymous", None),
        (b"", None),
        (b"1", None),
        (b"1" * 21, None),
        (b"+", None),
        (b"++33612345678", None),
        (b"33+612345678", None),
        (b"0612345678x", None),
        (b"x0612345678", None),
        (b"06/12", None),
        (b"06_12", None),
    ],
)
def test_caller_number(number: bytes, expected: str | None) -> None:
    raw = status(b"PJSIP/trunk-00000001", number, b"ALLO_UUID=" + CALL.encode())
    assert caller_line(START + raw + COMPLETE) == ("PJSIP/trunk-00000001", expected)

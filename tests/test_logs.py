"""Logs carry the call id and never a raw phone number."""

from __future__ import annotations

import io
import logging
import random
import sys
import uuid
from collections.abc import Iterator

import pytest

from voicebot.core.logs import (
    LOG_FORMAT,
    CallFormatter,
    RedactingFilter,
    call_logger,
    log_handler,
    redact_numbers,
)

# The call id once seen mangled in a `voicebot serve` log as "[call <numéro>7c-09d4-…]": 7
# digits then a hex letter, where backtracking let the phone pattern take the first six.
MANGLED_SHAPE = "1234567c-09d4-4f5e-8a6b-0c1d2e3f4a5b"
ALL_DIGITS = "12345678-1234-4234-8234-123456789012"  # a valid uuid4, not one hex letter in it

PHONE_FORMS = (
    "+33 6 12 34 56 78",
    "+33612345678",
    "0612345678",
    "06 12 34 56 78",
    "06.12.34.56.78",
    "06-12-34-56-78",
    "02 40 41 90 00",
)


@pytest.mark.parametrize("number", PHONE_FORMS)
def test_phone_numbers_are_redacted_in_every_written_form(number: str) -> None:
    assert redact_numbers(f"rappelez le {number} svp") == "rappelez le <numéro> svp"
    assert redact_numbers(number) == "<numéro>"
    assert redact_numbers(f"tel:{number}, rappel") == "tel:<numéro>, rappel"


def test_call_ids_stay_whole_but_a_number_next_to_one_goes() -> None:
    call_id = "d667db52-8e6e-4ce5-9123-456789b39fa0"  # digit runs of 6+ inside a UUID
    assert redact_numbers(f"[call {call_id}] heard") == f"[call {call_id}] heard"
    assert redact_numbers("b9bdb123-4567-8aa0") == "b9bdb123-4567-8aa0"
    assert redact_numbers(f"[call {call_id}] from 0612345678") == f"[call {call_id}] from <numéro>"
    assert redact_numbers("tel:0612345678, rappel") == "tel:<numéro>, rappel"


def test_the_shape_once_mangled_stays_whole() -> None:
    assert redact_numbers(f"[call {MANGLED_SHAPE}] heard") == f"[call {MANGLED_SHAPE}] heard"
    assert redact_numbers(MANGLED_SHAPE) == MANGLED_SHAPE
    assert redact_numbers(MANGLED_SHAPE.upper()) == MANGLED_SHAPE.upper()
    assert redact_numbers(ALL_DIGITS) == ALL_DIGITS
    assert redact_numbers(f"uuid={ALL_DIGITS};") == f"uuid={ALL_DIGITS};"
    # digits glued to letters are an identifier, not a phone number
    assert redact_numbers("ref 1234567c") == "ref 1234567c"


@pytest.mark.parametrize("call_id", [MANGLED_SHAPE, ALL_DIGITS])
@pytest.mark.parametrize("number", PHONE_FORMS)
def test_a_number_written_next_to_a_call_id_is_redacted(call_id: str, number: str) -> None:
    assert redact_numbers(f"{call_id} {number}") == f"{call_id} <numéro>"
    assert redact_numbers(f"{number} {call_id}") == f"<numéro> {call_id}"
    assert redact_numbers(f"{call_id}: {number}.") == f"{call_id}: <numéro>."
    assert redact_numbers(f"({number}){call_id}") == f"(<numéro>){call_id}"
    assert redact_numbers(f"[call {call_id}] rappel {number} ou {number}, appel {call_id}") == (
        f"[call {call_id}] rappel <numéro> ou <numéro>, appel {call_id}"
    )


def _digit_heavy_uuid4s(count: int, seed: int = 20261201) -> Iterator[str]:
    """Valid uuid4s whose first group is 5 to 8 digits then hex letters (the mangled shape
    and its neighbours), with digit-heavy groups after it."""
    rng = random.Random(seed)

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    def mixed(n: int) -> str:
        return "".join(rng.choice("0123456789" * 3 + "abcdef") for _ in range(n))

    for _ in range(count):
        lead = rng.randint(5, 8)
        first = digits(lead) + "".join(rng.choice("abcdef") for _ in range(8 - lead))
        groups = [
            first,
            rng.choice((digits, mixed))(4),
            "4" + rng.choice((digits, mixed))(3),  # version 4
            rng.choice("89ab") + rng.choice((digits, mixed))(3),  # RFC 4122 variant
            rng.choice((digits, mixed))(12),
        ]
        text = "-".join(groups)
        if rng.random() < 0.2:
            text = text.upper()
        assert uuid.UUID(text).version == 4
        yield text


def test_random_digit_heavy_call_ids_are_never_redacted() -> None:
    for call_id in _digit_heavy_uuid4s(3000):
        assert redact_numbers(f"[call {call_id}] heard") == f"[call {call_id}] heard"
        assert redact_numbers(f"{call_id} 06 12 34 56 78") == f"{call_id} <numéro>"
        assert redact_numbers(f"0612345678 {call_id}") == f"<numéro> {call_id}"


def test_random_uuid4s_are_never_redacted() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        assert redact_numbers(f"canal {call_id} raccroché") == f"canal {call_id} raccroché"


def test_ip_addresses_stay_but_dotted_phone_numbers_go() -> None:
    assert redact_numbers("refused 127.0.0.1:5038 and 192.168.10.20") == (
        "refused 127.0.0.1:5038 and 192.168.10.20"
    )
    assert redact_numbers("rappeler le 02.40.41.90.00") == "rappeler le <numéro>"
    assert redact_numbers("06.12.34.56.78 ou 0612345678") == "<numéro> ou <numéro>"
    assert redact_numbers(f"{MANGLED_SHAPE} from 10.0.0.7") == f"{MANGLED_SHAPE} from 10.0.0.7"


def test_short_numbers_stay() -> None:
    assert redact_numbers("le 15, le 112, à 8 h 30") == "le 15, le 112, à 8 h 30"


# --- the call tag: a record attribute the formatter writes, never part of the redaction ------


@pytest.fixture()
def logged() -> Iterator[io.StringIO]:
    """What `voicebot serve`'s handler (log_handler) writes for the logger voicebot.test."""
    stream = io.StringIO()
    logger = logging.getLogger("voicebot.test")
    handler = log_handler(stream)
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _lines_after_the_time(stream: io.StringIO) -> list[str]:
    # "2026-12-01 21:00:00,123 INFO …": the two first fields are the time
    return [line.split(" ", 2)[2] for line in stream.getvalue().splitlines()]


def test_a_call_line_carries_its_whole_id_and_a_redacted_message(logged: io.StringIO) -> None:
    call_logger("voicebot.test", MANGLED_SHAPE).info("caller said %s", "06 12 34 56 78")
    call_logger("voicebot.test", ALL_DIGITS).warning("rappel au 0612345678 (%s)", ALL_DIGITS)
    logging.getLogger("voicebot.test").info("no call here: 06.12.34.56.78")
    assert _lines_after_the_time(logged) == [
        f"INFO voicebot.test: [call {MANGLED_SHAPE}] caller said <numéro>",
        f"WARNING voicebot.test: [call {ALL_DIGITS}] rappel au <numéro> ({ALL_DIGITS})",
        "INFO voicebot.test: no call here: <numéro>",
    ]


def test_the_call_tag_never_goes_through_the_redaction(logged: io.StringIO) -> None:
    # even an id that a phone pattern would match is written as it is: only messages are redacted
    call_logger("voicebot.test", "0612345678").info("from 0612345678")
    assert _lines_after_the_time(logged) == ["INFO voicebot.test: [call 0612345678] from <numéro>"]


def test_random_call_ids_come_out_whole_in_the_log(logged: io.StringIO) -> None:
    ids = list(_digit_heavy_uuid4s(300, seed=7))
    for call_id in ids:
        call_logger("voicebot.test", call_id).info("rappel %s", "+33 6 12 34 56 78")
    expected = [f"INFO voicebot.test: [call {call_id}] rappel <numéro>" for call_id in ids]
    assert _lines_after_the_time(logged) == expected


def test_the_serve_format_puts_the_tag_before_the_message() -> None:
    formatter = CallFormatter(LOG_FORMAT)
    record = logging.LogRecord("voicebot.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    assert formatter.format(record).endswith(" INFO voicebot.x: hello you")
    record.call_id = MANGLED_SHAPE
    assert formatter.format(record).endswith(f" INFO voicebot.x: [call {MANGLED_SHAPE}] hello you")


def test_call_logger_sets_the_call_id_and_filter_redacts(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("voicebot.test")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="voicebot.test"):
            call_logger("voicebot.test", "abc-123").info("caller said %s", "0612345678")
    finally:
        logger.filters.clear()
    record = caplog.records[0]
    assert record.getMessage() == "caller said <numéro>"
    assert record.call_id == "abc-123"


def test_the_default_handler_follows_sys_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler made while stderr was one stream (a test's capture, since closed) writes
    to the stream stderr is now, never to the closed one."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = log_handler()
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    handler.emit(logging.LogRecord("t", logging.WARNING, __file__, 1, "voix absente", None, None))
    assert "voix absente" in second.getvalue()

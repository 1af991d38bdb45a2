"""Logs carry the call id and never a raw phone number."""

from __future__ import annotations

import logging

import pytest

from voicebot.logs import RedactingFilter, call_logger, redact_numbers


@pytest.mark.parametrize(
    "text",
    ["appelez le 02 40 41 90 00", "mon numéro 0612345678", "+33 6 12 34 56 78", "02.40.41.90.00"],
)
def test_phone_numbers_are_redacted(text: str) -> None:
    redacted = redact_numbers(text)
    assert "<numéro>" in redacted
    assert not any(ch.isdigit() for ch in redacted)


def test_call_ids_stay_whole_but_a_number_next_to_one_goes() -> None:
    call_id = "d667db52-8e6e-4ce5-9123-456789b39fa0"  # digit runs of 6+ inside a UUID
    assert redact_numbers(f"[call {call_id}] heard") == f"[call {call_id}] heard"
    assert redact_numbers("b9bdb123-4567-8aa0") == "b9bdb123-4567-8aa0"
    assert redact_numbers(f"[call {call_id}] from 0612345678") == f"[call {call_id}] from <numéro>"
    assert redact_numbers("tel:0612345678, rappel") == "tel:<numéro>, rappel"


def test_ip_addresses_stay_but_dotted_phone_numbers_go() -> None:
    assert redact_numbers("refused 127.0.0.1:5038 and 192.168.10.20") == (
        "refused 127.0.0.1:5038 and 192.168.10.20"
    )
    assert redact_numbers("rappeler le 02.40.41.90.00") == "rappeler le <numéro>"
    assert redact_numbers("06.12.34.56.78 ou 0612345678") == "<numéro> ou <numéro>"


def test_short_numbers_stay() -> None:
    assert redact_numbers("le 15, le 112, à 8 h 30") == "le 15, le 112, à 8 h 30"


def test_call_logger_prefixes_call_id_and_filter_redacts(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("voicebot.test")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="voicebot.test"):
            call_logger("voicebot.test", "abc-123").info("caller said %s", "0612345678")
    finally:
        logger.filters.clear()
    assert caplog.records[0].getMessage() == "[call abc-123] caller said <numéro>"

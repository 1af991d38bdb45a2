"""Logging: every line of a call carries its call id; phone numbers never appear raw."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

# Runs of 6+ digits (allowing spaces, dots, dashes between them, and a leading +): phone
# numbers in any of the ways they are written or transcribed. Not inside a word or right
# after a dash: call ids are UUIDs ("d667db52-8e6e-…"), whose digit runs must stay whole or
# no log line could be traced back to its call.
_PHONE_RE = re.compile(r"(?<![\w\-])\+?\d(?:[\s.\-]?\d){5,}(?![^\W\d_])")


# An IPv4 address (a client of the console, Asterisk's end of a socket) is not a phone number:
# the console's security warnings must say which address was refused.
_IPV4_RE = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_PHONE_OR_IPV4_RE = re.compile(f"(?P<ipv4>{_IPV4_RE.pattern})|{_PHONE_RE.pattern}")


def redact_numbers(text: str) -> str:
    """Replace anything that looks like a phone number with a placeholder."""
    return _PHONE_OR_IPV4_RE.sub(lambda m: m[0] if m["ipv4"] else "<numéro>", text)


class RedactingFilter(logging.Filter):
    """Last line of defence: no log record leaves with a raw phone number in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_numbers(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


class CallLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger bound to one call: ``[call <id>]`` starts every line."""

    def __init__(self, logger: logging.Logger, call_id: str) -> None:
        super().__init__(logger, {"call_id": call_id})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra["call_id"] = self.extra["call_id"] if self.extra else "-"
        kwargs["extra"] = extra
        return f"[call {extra['call_id']}] {msg}", kwargs


def call_logger(name: str, call_id: str) -> CallLogger:
    return CallLogger(logging.getLogger(name), call_id)


def quiet_warnings() -> None:
    """Library deprecation chatter (TensorFlow, Rasa, SQLAlchemy, pkg_resources) is not for users."""
    import warnings

    for category in (DeprecationWarning, PendingDeprecationWarning, UserWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    # Some libraries reset the warning filters when imported: route whatever still gets
    # through to a logger that only speaks up for errors.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)


def setup_logging(level: str = "INFO") -> None:
    """Plain one-line logs on stderr, redacted; quiet the noisy libraries."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in (
        "tensorflow",
        "absl",
        "rasa",
        "sanic",
        "asyncio",
        "matplotlib",
        "urllib3",
        "apscheduler",
        "faster_whisper",
        "websockets",
        "panoramisk",
        "h5py",
        "rasa_sdk",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)

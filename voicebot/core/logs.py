"""Logging: every line of a call carries its call id; phone numbers never appear raw.

The call id travels in the record's ``call_id`` attribute and the formatter (CallFormatter)
writes the ``[call <id>]`` tag in front of the message: the redaction rewrites only the
message, so it can never touch the tag, and the id is the one thing that ties a log line to
its call.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import IO, Any

# Runs of 6+ digits (allowing spaces, dots, dashes between them, and a leading +): phone
# numbers in any of the ways they are written or transcribed. Not inside a word: neither
# after a word character or a dash, nor before a word character. The lookahead must refuse
# digits too, or backtracking finds a shorter run that ends before one: "1234567c-…" would
# lose "123456" (a call id, mangled, as once seen in `voicebot serve` logs).
_PHONE_RE = re.compile(r"(?<![\w\-])\+?\d(?:[\s.\-]?\d){5,}(?!\w)")

# A UUID (call ids from Asterisk, chan_websocket and the softphone) is kept whole whatever its
# digits: the text is split around UUIDs and only what lies between them is redacted, so that
# no phone pattern can start, end or backtrack inside one.
_UUID_RE = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
)


# An IPv4 address (a client of the console, Asterisk's end of a socket) is not a phone number:
# the console's security warnings must say which address was refused.
_IPV4_RE = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_PHONE_OR_IPV4_RE = re.compile(f"(?P<ipv4>{_IPV4_RE.pattern})|{_PHONE_RE.pattern}")


def _redact_between_uuids(text: str) -> str:
    return _PHONE_OR_IPV4_RE.sub(lambda m: m[0] if m["ipv4"] else "<numéro>", text)


def redact_numbers(text: str) -> str:
    """Replace anything that looks like a phone number with a placeholder; UUIDs stay whole."""
    parts = []
    last = 0
    for uuid in _UUID_RE.finditer(text):
        parts.append(_redact_between_uuids(text[last : uuid.start()]))
        parts.append(uuid[0])
        last = uuid.end()
    parts.append(_redact_between_uuids(text[last:]))
    return "".join(parts)


def redact_numbers_in(value: Any) -> Any:
    """``value`` (a string, or dicts and lists of them, as JSON holds) with every string's
    phone numbers masked; other values as they are."""
    if isinstance(value, str):
        return redact_numbers(value)
    if isinstance(value, dict):
        return {str(k): redact_numbers_in(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_numbers_in(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Last line of defence: no log record leaves with a raw phone number in its message (the
    call id is not part of the message: CallFormatter adds it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_numbers(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


class CallLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger bound to one call: its records carry ``call_id``, which CallFormatter writes
    as ``[call <id>]`` at the start of every line. The message itself is left as it is."""

    def __init__(self, logger: logging.Logger, call_id: str) -> None:
        super().__init__(logger, {"call_id": call_id})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra["call_id"] = self.extra["call_id"] if self.extra else "-"
        kwargs["extra"] = extra
        return msg, kwargs


class CallFormatter(logging.Formatter):
    """``%(call_tag)s`` is ``[call <id>] `` for a call's records (empty otherwise), taken from
    the record's ``call_id`` attribute after the filters have run: never redacted."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        call_id = getattr(record, "call_id", None)
        record.call_tag = f"[call {call_id}] " if call_id is not None else ""
        return super().formatMessage(record)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(call_tag)s%(message)s"


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


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes, not the one it was when the
    handler was made: that one may have been replaced and closed since (a test's capture),
    and every later record would be a "Logging error" instead."""

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass  # always sys.stderr


def log_handler(stream: IO[str] | None = None) -> logging.Handler:
    """One-line records on ``stream`` (stderr by default): messages redacted, call ids not."""
    handler = CurrentStderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(CallFormatter(LOG_FORMAT))
    handler.addFilter(RedactingFilter())
    return handler


def setup_logging(level: str = "INFO") -> None:
    """Plain one-line logs on stderr, redacted; quiet the noisy libraries."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler()]
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

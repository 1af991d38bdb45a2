"""Control messages of Asterisk's ``chan_websocket`` (media over WebSocket), as a pure codec.

Facts from Asterisk's ``channels/chan_websocket.c`` and ``chan_websocket_doc.xml``:

* Asterisk dials the bot (``Dial(WebSocket/<id>/c(slin16))``, ``websocket_client.conf``,
  subprotocol ``media``); binary frames carry raw audio in the channel's codec, text frames
  carry control messages;
* control messages are either the legacy single-line *plain-text* form
  (``MEDIA_START connection_id:… channel:… channel_id:… format:slin16
  optimal_frame_size:640 ptime:20``) or, with ``control_message_format = json`` (or the dial
  option ``f(json)``, Asterisk ≥ 20.18 / 22.8 / 23.2), one JSON object per message
  (``{"event": "MEDIA_START", …}``; commands as ``{"command": "FLUSH_MEDIA"}``). Older
  versions omit ``channel_id`` and ``ptime``: both are optional here;
* Asterisk → bot: ``MEDIA_START``, ``MEDIA_XOFF``/``MEDIA_XON`` (its playout queue of
  1,000 frames passed 900 / fell under 800), ``QUEUE_DRAINED``,
  ``MEDIA_BUFFERING_COMPLETED [id]``, ``MEDIA_MARK_PROCESSED [id]``, ``DTMF_END``,
  ``STATUS``, ``ERROR``;
* bot → Asterisk: ``ANSWER``, ``HANGUP``, ``START_MEDIA_BUFFERING``,
  ``STOP_MEDIA_BUFFERING [id]``, ``MARK_MEDIA [id]``, ``FLUSH_MEDIA``, ``GET_STATUS``,
  ``REPORT_QUEUE_DRAINED``, ``PAUSE_MEDIA``, ``CONTINUE_MEDIA``; Asterisk ignores a text
  message longer than 128 bytes.

Both directions are here (the bot's and Asterisk's) so that the test emulator speaks exactly
what the bot parses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from voicebot.core.errors import ProtocolError

PLAIN_TEXT = "plain-text"
JSON_FORMAT = "json"
MAX_TEXT_MESSAGE_LEN = 128  # chan_websocket ignores longer text messages

SUBPROTOCOL = "media"
# Bounds of MEDIA_START's framing (Asterisk sends 20 ms; slin allows at most 70 ms): one second,
# at the highest signed-linear rate for the frame size.
MAX_PTIME_MS = 1000
MAX_FRAME_BYTES = 192000 * 2

COMMANDS = frozenset(
    {
        "ANSWER",
        "HANGUP",
        "START_MEDIA_BUFFERING",
        "STOP_MEDIA_BUFFERING",
        "MARK_MEDIA",
        "FLUSH_MEDIA",
        "GET_STATUS",
        "REPORT_QUEUE_DRAINED",
        "PAUSE_MEDIA",
        "CONTINUE_MEDIA",
    }
)
COMMANDS_WITH_ID = frozenset({"STOP_MEDIA_BUFFERING", "MARK_MEDIA"})
_CORRELATION_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")

# Signed-linear formats by Asterisk's format name, with their sample rate.
SLIN_FORMAT_RATES: dict[str, int] = {
    "slin": 8000,
    "slin12": 12000,
    "slin16": 16000,
    "slin24": 24000,
    "slin32": 32000,
    "slin44": 44100,
    "slin48": 48000,
    "slin96": 96000,
    "slin192": 192000,
}


# --- events (Asterisk → bot) ---------------------------------------------------------------


@dataclass(frozen=True)
class MediaStart:
    connection_id: str
    channel: str
    channel_id: str = ""
    format: str = ""
    optimal_frame_size: int = 0
    ptime: int = 20
    channel_variables: dict[str, str] = field(default_factory=dict)

    @property
    def sample_rate(self) -> int | None:
        """The rate of a signed-linear format, None for any other codec."""
        return SLIN_FORMAT_RATES.get(self.format)


@dataclass(frozen=True)
class MediaXoff:
    pass


@dataclass(frozen=True)
class MediaXon:
    pass


@dataclass(frozen=True)
class QueueDrained:
    pass


@dataclass(frozen=True)
class MediaBufferingCompleted:
    correlation_id: str = ""


@dataclass(frozen=True)
class MediaMarkProcessed:
    correlation_id: str = ""


@dataclass(frozen=True)
class DtmfEnd:
    digit: str


@dataclass(frozen=True)
class DriverStatus:
    queue_length: int = 0
    xon_level: int = 800
    xoff_level: int = 900
    queue_full: bool = False
    bulk_media: bool = False
    media_paused: bool = False


@dataclass(frozen=True)
class DriverError:
    text: str


@dataclass(frozen=True)
class UnknownEvent:
    """An event this code does not know (a newer Asterisk): logged and ignored."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)


AsteriskEvent = (
    MediaStart
    | MediaXoff
    | MediaXon
    | QueueDrained
    | MediaBufferingCompleted
    | MediaMarkProcessed
    | DtmfEnd
    | DriverStatus
    | DriverError
    | UnknownEvent
)


# --- commands (bot → Asterisk) --------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    correlation_id: str | None = None


def encode_command(name: str, fmt: str = PLAIN_TEXT, correlation_id: str | None = None) -> str:
    """A control message for Asterisk, in the call's message format."""
    if name not in COMMANDS:
        raise ValueError(f"not a chan_websocket command: {name!r}")
    if correlation_id is not None:
        if name not in COMMANDS_WITH_ID:
            raise ValueError(f"{name} takes no correlation id")
        if not _CORRELATION_ID.fullmatch(correlation_id):
            raise ValueError(
                f"correlation id must be 1-64 of [A-Za-z0-9_.:-], not {correlation_id!r}"
            )
    if fmt == JSON_FORMAT:
        body: dict[str, str] = {"command": name}
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        text = json.dumps(body, separators=(",", ":"))
    elif fmt == PLAIN_TEXT:
        text = name if correlation_id is None else f"{name} {correlation_id}"
    else:
        raise ValueError(f"unknown control message format {fmt!r}")
    if len(text.encode()) > MAX_TEXT_MESSAGE_LEN:
        raise ValueError(f"Asterisk ignores control messages over {MAX_TEXT_MESSAGE_LEN} bytes")
    return text


def message_format(text: str) -> str:
    """Which of the two control formats a message is written in."""
    return JSON_FORMAT if text.lstrip().startswith("{") else PLAIN_TEXT


def parse_command(text: str) -> Command:
    """A bot's command as Asterisk reads it (used by the emulator)."""
    stripped = text.strip()
    if not stripped:
        raise ProtocolError("chan_websocket: empty command")
    if message_format(stripped) == JSON_FORMAT:
        body = _load_json(stripped)
        name = body.get("command")
        if not isinstance(name, str):
            raise ProtocolError(f"chan_websocket: JSON command without a 'command': {stripped!r}")
        correlation = body.get("correlation_id")
        return Command(name, correlation if isinstance(correlation, str) else None)
    name, _, data = stripped.partition(" ")
    return Command(name, data.strip() or None)


# --- parsing events ----------------------------------------------------------------------


def parse_event(text: str) -> AsteriskEvent:
    """One control message from Asterisk, in either format. ProtocolError if malformed."""
    stripped = text.strip()
    if not stripped:
        raise ProtocolError("chan_websocket: empty control message")
    if message_format(stripped) == JSON_FORMAT:
        body = _load_json(stripped)
        name = body.get("event")
        if not isinstance(name, str):
            raise ProtocolError(f"chan_websocket: JSON message without an 'event': {stripped!r}")
        args: list[str] = []
        fields: dict[str, Any] = {k: v for k, v in body.items() if k != "event"}
    else:
        name, args, fields = _split_plain(stripped)
    try:
        return _build_event(name, args, fields)
    except (KeyError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(
            f"chan_websocket: malformed {name} message {stripped!r} ({exc})"
        ) from None


def _load_json(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise ProtocolError(f"chan_websocket: invalid JSON control message {text!r}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"chan_websocket: a JSON control message must be an object: {text!r}")
    return body


_KEY_VALUE = re.compile(r"([a-z_]+):(.*)")
_EVENT_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _split_plain(text: str) -> tuple[str, list[str], dict[str, Any]]:
    """``NAME [bare args] key:value …``; ERROR's ``error_text`` runs to the end of the line."""
    head, sep, error_text = text.partition(" error_text:")
    name, *tokens = head.split()
    if not _EVENT_NAME.fullmatch(name):
        raise ProtocolError(f"chan_websocket: not a control message: {text[:60]!r}")
    args: list[str] = []
    fields: dict[str, Any] = {}
    for token in tokens:
        match = _KEY_VALUE.fullmatch(token)
        if match:
            fields[match.group(1)] = match.group(2)
        else:
            args.append(token)
    if sep:
        fields["error_text"] = error_text
    return name, args, fields


def _build_event(name: str, args: list[str], fields: dict[str, Any]) -> AsteriskEvent:
    if name == "MEDIA_START":
        variables = fields.get("channel_variables") or {}
        start = MediaStart(
            connection_id=str(fields["connection_id"]),
            channel=str(fields["channel"]),
            channel_id=str(fields.get("channel_id", "")),
            format=str(fields["format"]),
            optimal_frame_size=int(fields.get("optimal_frame_size", 0)),
            ptime=int(fields.get("ptime", 20)),
            channel_variables={str(k): str(v) for k, v in dict(variables).items()},
        )
        _check_framing(start)
        return start
    if name == "MEDIA_XOFF":
        return MediaXoff()
    if name == "MEDIA_XON":
        return MediaXon()
    if name == "QUEUE_DRAINED":
        return QueueDrained()
    if name in ("MEDIA_BUFFERING_COMPLETED", "MEDIA_MARK_PROCESSED"):
        correlation = str(fields.get("correlation_id", args[0] if args else ""))
        if name == "MEDIA_MARK_PROCESSED":
            return MediaMarkProcessed(correlation)
        return MediaBufferingCompleted(correlation)
    if name == "DTMF_END":
        digit = str(fields["digit"])
        if len(digit) != 1:
            raise ValueError(f"digit {digit!r}")
        return DtmfEnd(digit)
    if name == "STATUS":
        return DriverStatus(
            queue_length=int(fields.get("queue_length", 0)),
            xon_level=int(fields.get("xon_level", 800)),
            xoff_level=int(fields.get("xoff_level", 900)),
            queue_full=_as_bool(fields.get("queue_full", False)),
            bulk_media=_as_bool(fields.get("bulk_media", False)),
            media_paused=_as_bool(fields.get("media_paused", False)),
        )
    if name == "ERROR":
        return DriverError(str(fields.get("error_text", " ".join(args))))
    return UnknownEvent(name, fields)


def _check_framing(start: MediaStart) -> None:
    """The frame size and ptime the transport cuts the bot's audio with must make sense."""
    size = start.optimal_frame_size
    if size < 0 or size > MAX_FRAME_BYTES or (start.sample_rate is not None and size % 2):
        raise ValueError(f"optimal_frame_size {size}")
    if not 0 < start.ptime <= MAX_PTIME_MS:
        raise ValueError(f"ptime {start.ptime}")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


# --- encoding events (used by the emulator) ---------------------------------------------------


def encode_event(event: AsteriskEvent, fmt: str = PLAIN_TEXT, channel_id: str = "") -> str:
    """An event written exactly as chan_websocket writes it."""
    if fmt == JSON_FORMAT:
        return json.dumps(_event_json(event, channel_id), separators=(",", ":"))
    if fmt != PLAIN_TEXT:
        raise ValueError(f"unknown control message format {fmt!r}")
    if isinstance(event, MediaStart):
        return (
            f"MEDIA_START connection_id:{event.connection_id} channel:{event.channel}"
            f" channel_id:{event.channel_id or channel_id} format:{event.format}"
            f" optimal_frame_size:{event.optimal_frame_size} ptime:{event.ptime}"
        )
    if isinstance(event, MediaXoff):
        return "MEDIA_XOFF"
    if isinstance(event, MediaXon):
        return "MEDIA_XON"
    if isinstance(event, QueueDrained):
        return "QUEUE_DRAINED"
    if isinstance(event, MediaBufferingCompleted):
        return "MEDIA_BUFFERING_COMPLETED" + (
            f" {event.correlation_id}" if event.correlation_id else ""
        )
    if isinstance(event, MediaMarkProcessed):
        return "MEDIA_MARK_PROCESSED" + (f" {event.correlation_id}" if event.correlation_id else "")
    if isinstance(event, DtmfEnd):
        return f"DTMF_END digit:{event.digit} channel_id:{channel_id}"
    if isinstance(event, DriverStatus):
        flags = (event.queue_full, event.bulk_media, event.media_paused)
        full, bulk, paused = ("true" if flag else "false" for flag in flags)
        return (
            f"STATUS channel_id:{channel_id} queue_length:{event.queue_length}"
            f" xon_level:{event.xon_level} xoff_level:{event.xoff_level} queue_full:{full}"
            f" bulk_media:{bulk} media_paused:{paused}"
        )
    if isinstance(event, DriverError):
        return f"ERROR channel_id:{channel_id} error_text:{event.text}"
    raise ValueError(f"cannot encode {event!r}")


def _event_json(event: AsteriskEvent, channel_id: str) -> dict[str, Any]:
    if isinstance(event, MediaStart):
        return {
            "event": "MEDIA_START",
            "connection_id": event.connection_id,
            "channel": event.channel,
            "channel_id": event.channel_id or channel_id,
            "format": event.format,
            "optimal_frame_size": event.optimal_frame_size,
            "ptime": event.ptime,
            "channel_variables": dict(event.channel_variables),
        }
    names = {
        MediaXoff: "MEDIA_XOFF",
        MediaXon: "MEDIA_XON",
        QueueDrained: "QUEUE_DRAINED",
        MediaBufferingCompleted: "MEDIA_BUFFERING_COMPLETED",
        MediaMarkProcessed: "MEDIA_MARK_PROCESSED",
        DtmfEnd: "DTMF_END",
        DriverStatus: "STATUS",
        DriverError: "ERROR",
    }
    name = names.get(type(event))
    if name is None:
        raise ValueError(f"cannot encode {event!r}")
    body: dict[str, Any] = {"event": name, "channel_id": channel_id}
    if isinstance(event, (MediaBufferingCompleted, MediaMarkProcessed)):
        body["correlation_id"] = event.correlation_id
    elif isinstance(event, DtmfEnd):
        body["digit"] = event.digit
    elif isinstance(event, DriverStatus):
        body.update(
            queue_length=event.queue_length,
            xon_level=event.xon_level,
            xoff_level=event.xoff_level,
            queue_full=event.queue_full,
            bulk_media=event.bulk_media,
            media_paused=event.media_paused,
        )
    elif isinstance(event, DriverError):
        body["error_text"] = event.text
    return body

#!/usr/bin/env python3
"""Fuzz every decoder that reads bytes from outside the bot, at volume (issue 15).

    .venv/bin/python scripts/fuzz.py [--inputs N] [--decoder NAME] [--seed S]
    .venv/bin/python scripts/fuzz.py --decoder audiosocket --replay var/fuzz-crashes/FILE.bin

Each decoder gets N inputs (default 1,000,000; the two YAML loaders, which parse with
PyYAML's pure-Python parser, get a smaller default, printed in the table): a seeded random
mutator takes a valid input from the decoder's corpus and applies one to four mutations
(bit flips, interesting bytes and 16-bit lengths, insertions, deletions, truncation,
splicing two inputs, protocol tokens, huge numbers, bad UTF-8, deep nesting). The contract
is the one the bot relies on: an input gives either a valid result or the decoder's own
error (``ProtocolError``, ``BadMessage``, ``ConfigError``, ``KnowledgeBaseError``,
``AmiError``), never another exception, never a hang (``--timeout`` per input), and memory
stays bounded (checked where a decoder keeps state, RSS growth printed per decoder).

Every other outcome is a crash: the input is saved under ``--crash-dir`` (with its
traceback) and the command exits with status 1. Same seed, same inputs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import random
import re
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

import psutil
import yaml
from panoramisk.message import Message

from telephony.ami import AmiError, list_replies, status_caller_line
from telephony.audiosocket import codec as audiosocket
from telephony.chan_websocket import codec as chan_websocket
from telephony.chan_websocket.server import WebSocketTransport, _call_id
from voicebot.console.api import _console_command
from voicebot.console.board import LiveBoard
from voicebot.console.context import BadMessage, WebLimits
from voicebot.console.softphone import BrowserTransport, parse_start
from voicebot.core.config import load_settings
from voicebot.core.errors import ConfigError, KnowledgeBaseError, ProtocolError
from voicebot.core.events import CallHub
from voicebot.dialogue.knowledge import KnowledgeBase

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUTS = 1_000_000
DEFAULT_CRASH_DIR = ROOT / "var" / "fuzz-crashes"
SAVED_PER_SIGNATURE = 5  # inputs kept on disk for each distinct crash


class Hang(BaseException):
    """An input ran past the per-input time limit (a BaseException: no ``except Exception``
    in a decoder can swallow it)."""


class InvariantBroken(Exception):
    """The decoder returned, but what it returned (or kept) breaks its contract."""


@dataclass
class Target:
    name: str
    run: Callable[[bytes], object]
    expected: tuple[type[BaseException], ...]
    corpus: list[bytes]
    tokens: list[bytes]
    default_inputs: int = DEFAULT_INPUTS
    max_len: int = 64 * 1024
    note: str = ""


@dataclass
class Result:
    name: str
    inputs: int
    seconds: float
    rss_growth_mb: float
    crashes: int = 0
    signatures: dict[str, int] = field(default_factory=dict)
    note: str = ""


# --- the mutator ------------------------------------------------------------------------------

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x0D, 0x20, 0x22, 0x3A, 0x7B, 0x5B)
INTERESTING_16 = (0, 1, 2, 15, 16, 17, 319, 320, 321, 1600, 1601, 0x7FFF, 0x8000, 0xFFFF)
NUMBERS = (
    b"0",
    b"-1",
    b"1",
    b"2147483648",
    b"-9223372036854775809",
    b"1" * 30,
    b"9" * 5000,
    b"1e999",
    b"-1e999",
    b"1.5",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b".inf",
    b".nan",
    b"0x7fffffff",
    b"1_000",
    b"true",
    b"null",
)
_DIGITS = re.compile(rb"[0-9]+")
BAD_UTF8 = (
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xf0\x28\x8c\x28",
    b"\xed\xa0\x80",
    b"\xff",
)


class Mutator:
    """Seeded mutations of a corpus of valid inputs: same seed, same inputs."""

    def __init__(
        self, rng: random.Random, corpus: Sequence[bytes], tokens: Sequence[bytes], max_len: int
    ) -> None:
        self.rng = rng
        self.corpus = list(corpus)
        self.tokens = list(tokens) + list(NUMBERS) + list(BAD_UTF8)
        self.max_len = max_len
        self.operations: list[Callable[[bytearray], None]] = [
            self._flip_bit,
            self._random_byte,
            self._interesting_byte,
            self._insert_random,
            self._delete,
            self._duplicate,
            self._truncate,
            self._insert_token,
            self._replace_with_token,
            self._splice,
            self._length_16,
            self._nest,
            self._number,
        ]

    def next(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.02:  # now and then, plain random bytes
            return rng.randbytes(rng.randrange(0, 512))
        data = bytearray(rng.choice(self.corpus))
        for _ in range(rng.randint(1, 4)):
            rng.choice(self.operations)(data)
        return bytes(data[: self.max_len])

    def _pos(self, data: bytearray, end: bool = True) -> int:
        return self.rng.randrange(len(data) + (1 if end else 0)) if data else 0

    def _flip_bit(self, data: bytearray) -> None:
        if data:
            i = self._pos(data, end=False)
            data[i] ^= 1 << self.rng.randrange(8)

    def _random_byte(self, data: bytearray) -> None:
        if data:
            data[self._pos(data, end=False)] = self.rng.randrange(256)

    def _interesting_byte(self, data: bytearray) -> None:
        if data:
            data[self._pos(data, end=False)] = self.rng.choice(INTERESTING_BYTES)

    def _insert_random(self, data: bytearray) -> None:
        i = self._pos(data)
        data[i:i] = self.rng.randbytes(self.rng.randint(1, 8))

    def _delete(self, data: bytearray) -> None:
        if data:
            i = self._pos(data, end=False)
            del data[i : i + self.rng.randint(1, 16)]

    def _duplicate(self, data: bytearray) -> None:
        if data:
            i = self._pos(data, end=False)
            chunk = data[i : i + self.rng.randint(1, 64)]
            j = self._pos(data)
            data[j:j] = chunk * self.rng.choice((1, 1, 2, 8))

    def _truncate(self, data: bytearray) -> None:
        del data[self._pos(data) :]

    def _insert_token(self, data: bytearray) -> None:
        i = self._pos(data)
        data[i:i] = self.rng.choice(self.tokens)

    def _replace_with_token(self, data: bytearray) -> None:
        i = self._pos(data)
        data[i : i + self.rng.randint(1, 8)] = self.rng.choice(self.tokens)

    def _splice(self, data: bytearray) -> None:
        other = self.rng.choice(self.corpus)
        data[self._pos(data) :] = other[self.rng.randrange(len(other) + 1) :]

    def _length_16(self, data: bytearray) -> None:
        """A 16-bit big-endian value (AudioSocket's lengths) written over two bytes."""
        if len(data) >= 2:
            i = self.rng.randrange(len(data) - 1)
            data[i : i + 2] = self.rng.choice(INTERESTING_16).to_bytes(2, "big")

    def _nest(self, data: bytearray) -> None:
        """Deep nesting (JSON or YAML flow collections)."""
        opener = self.rng.choice((b"[", b"{", b'{"a":', b"- ", b"[[", b"{a: "))
        i = self._pos(data)
        data[i:i] = opener * self.rng.choice((10, 100, 1000, 5000))

    def _number(self, data: bytearray) -> None:
        """A run of digits replaced by a hostile number."""
        found = _DIGITS.search(data, self._pos(data)) or _DIGITS.search(data)
        if found is None:
            self._insert_token(data)
        else:
            data[found.start() : found.end()] = self.rng.choice(NUMBERS)


# --- the decoders, as the bot calls them --------------------------------------------------------

CALL_UUID = uuid.UUID("6f1c2a4e-93b1-4d6e-9a57-0c8e1f2d3b4a")


def _pcm(n_bytes: int, seed: int) -> bytes:
    """Some speech-like 16-bit audio (a seeded sine), little-endian."""
    samples = (int(8000 * math.sin(i * (0.05 + seed * 0.01))) for i in range(n_bytes // 2))
    return b"".join(s.to_bytes(2, "little", signed=True) for s in samples)


# AudioSocket: a whole stream (UUID first), cut in two at a point that depends on the input;
# both ways of feeding it must decode the same messages.
AUDIOSOCKET_MAX_PENDING = audiosocket.HEADER.size + max(
    audiosocket.max_audio_bytes(rate) for rate in audiosocket.AUDIO_KIND_RATES.values()
)


def _decode_audiosocket(chunks: Sequence[bytes]) -> list[Any] | str:
    decoder = audiosocket.AudioSocketDecoder()
    messages: list[Any] = []
    try:
        for chunk in chunks:
            messages += decoder.feed(chunk)
            if decoder.pending_bytes > AUDIOSOCKET_MAX_PENDING:
                raise InvariantBroken(f"AudioSocket decoder holds {decoder.pending_bytes} bytes")
        decoder.eof()
    except ProtocolError:
        return "ProtocolError"
    return messages


def run_audiosocket(data: bytes) -> None:
    whole = _decode_audiosocket([data])
    cut = (data[0] * 7919 + len(data)) % (len(data) + 1) if data else 0
    split = _decode_audiosocket([data[:cut], data[cut:]])
    if whole != split:
        raise InvariantBroken(f"AudioSocket: fed whole {whole!r:.120} / in two {split!r:.120}")
    if whole == "ProtocolError":
        raise ProtocolError("refused")


def audiosocket_corpus() -> list[bytes]:
    first = audiosocket.encode_uuid(CALL_UUID)
    corpus = [first, first + audiosocket.encode_hangup()]
    for i, rate in enumerate(audiosocket.AUDIO_KIND_RATES.values()):
        frame = audiosocket.encode_audio(_pcm(rate // 50 * 2, i), rate)
        corpus.append(first + frame * 2 + audiosocket.encode_dtmf("5") + frame)
    corpus.append(first + audiosocket.encode_error(1) + audiosocket.encode_error())
    corpus.append(first + b"".join(audiosocket.encode_dtmf(d) for d in "0123456789*#ABCD"))
    return corpus


# chan_websocket: a text control message as the server parses it; a MEDIA_START it accepts
# must also make a transport (its frame size, its call id).
class _NoSocket:
    path = "/media?allo_uuid=" + str(CALL_UUID)


def run_chan_websocket(data: bytes) -> None:
    text = data.decode("utf-8", "replace")  # the WebSocket layer refuses bad UTF-8 itself
    event = chan_websocket.parse_event(text)
    if isinstance(event, chan_websocket.MediaStart):
        _call_id("/media", event)
        WebSocketTransport(
            cast(Any, _NoSocket()), event, chan_websocket.message_format(text), "fuzz"
        )


def chan_websocket_corpus() -> list[bytes]:
    events: list[chan_websocket.AsteriskEvent] = [
        chan_websocket.MediaStart(
            "c1", "WebSocket/bot-0001", "1700000000.12", "slin16", 640, 20, {"ALLO_UUID": "x"}
        ),
        chan_websocket.MediaStart("c2", "WebSocket/bot-0002", "", "slin", 0, 20),
        chan_websocket.MediaXoff(),
        chan_websocket.MediaXon(),
        chan_websocket.QueueDrained(),
        chan_websocket.MediaBufferingCompleted("prompt-1"),
        chan_websocket.MediaMarkProcessed("mark.2"),
        chan_websocket.DtmfEnd("7"),
        chan_websocket.DriverStatus(12, 800, 900, False, True, False),
        chan_websocket.DriverError("Invalid command"),
    ]
    corpus = [
        chan_websocket.encode_event(event, fmt, "1700000000.12").encode()
        for event in events
        for fmt in (chan_websocket.PLAIN_TEXT, chan_websocket.JSON_FORMAT)
    ]
    corpus += [b'{"event":"MEDIA_START","connection_id":"c","channel":"W","format":"slin48"}']
    corpus += [b"SOMETHING_NEW key:value bare", b'{"event":"NEW","nested":{"a":[1,2]}}']
    return corpus


# chan_websocket media: a binary message at one of the signed-linear formats (the first byte
# chooses it), into a transport that keeps its state from one message to the next, as a call.
MEDIA_FORMATS = sorted(chan_websocket.SLIN_FORMAT_RATES, key=chan_websocket.SLIN_FORMAT_RATES.get)


def _media_transports() -> list[WebSocketTransport]:
    return [
        WebSocketTransport(
            cast(Any, _NoSocket()),
            chan_websocket.MediaStart("c", "WebSocket/bot", "1", fmt),
            chan_websocket.PLAIN_TEXT,
            "fuzz",
        )
        for fmt in MEDIA_FORMATS
    ]


_MEDIA: list[WebSocketTransport] = []


def run_chan_websocket_media(data: bytes) -> None:
    if not _MEDIA:
        _MEDIA.extend(_media_transports())
    transport = _MEDIA[data[0] % len(_MEDIA)] if data else _MEDIA[0]
    for frame in transport.audio_in(data[1:]):
        if len(frame.pcm) != 320:
            raise InvariantBroken(f"a {len(frame.pcm)}-byte frame out of the media path")


def media_corpus() -> list[bytes]:
    corpus = []
    for i, fmt in enumerate(MEDIA_FORMATS):
        rate = chan_websocket.SLIN_FORMAT_RATES[fmt]
        corpus.append(bytes([i]) + _pcm(rate // 50 * 2, i))
        corpus.append(bytes([i]) + _pcm(rate // 100 * 2, i + 1))
    return corpus


# AMI: what Asterisk writes on the manager connection, cut and parsed as panoramisk does
# (AMIProtocol.data_received, Message.from_line), then interpreted by telephony.ami.
def run_ami(data: bytes) -> None:
    text = data.decode("ascii", "ignore")
    messages = [
        message
        for message in (Message.from_line(chunk.strip()) for chunk in text.split("\r\n\r\n"))
        if message is not None
    ]
    if not messages:
        return
    for message in messages:  # what _connect, _set_variables and _keepalive read
        _ = message.success, f"{message.get('Message', '')}"
    replies = list_replies(messages if len(messages) > 1 else messages[0], "Status")
    status_caller_line(replies, str(CALL_UUID))


def ami_corpus() -> list[bytes]:
    status = (
        "Event: Status\r\nPrivilege: Call\r\nChannel: {channel}\r\nCallerIDNum: {number}\r\n"
        "Variable: ALLO_UUID={uuid}\r\nVariable: OTHER=1\r\nActionID: 3\r\n\r\n"
    )
    start = "Response: Success\r\nEventList: start\r\nMessage: Channel status will follow\r\n"
    complete = "Event: StatusComplete\r\nEventList: Complete\r\nItems: 2\r\nActionID: 3\r\n\r\n"
    both = (
        start
        + "ActionID: 3\r\n\r\n"
        + status.format(channel="PJSIP/trunk-0001", number="0612345678", uuid=CALL_UUID)
        + status.format(channel="AudioSocket/bot-0002", number="<unknown>", uuid=CALL_UUID)
        + complete
    )
    return [
        both.encode(),
        b"Response: Error\r\nActionID: 3\r\nMessage: Permission denied\r\n\r\n",
        b"Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n",
        b"Response: Success\r\nPing: Pong\r\nTimestamp: 1700000000.1\r\n\r\n",
        b"Response: Follows\r\nActionID: 4\r\nline one\r\n--END COMMAND--\r\n\r\n",
    ]


# The console's WebSocket: one client message, as the handler decodes it.
class _Outbox:
    """What the handlers call on an Outbox, and nothing kept (the fuzzer sends millions)."""

    def offer(self, item: object) -> bool:
        return True

    def drop_audio(self) -> None:
        pass

    def close_after_sending(self) -> None:
        pass


_BOARD = LiveBoard(CallHub(), WebLimits())
_OUTBOX = _Outbox()


def run_console(data: bytes) -> None:
    _BOARD.queue.setdefault("appel-1", {"call_id": "appel-1"})
    _console_command(_BOARD, cast(Any, _OUTBOX), data.decode("utf-8", "replace"))


def console_corpus() -> list[bytes]:
    return [b'{"type": "take", "call_id": "appel-1"}', b'{"type":"ping"}', b'{"type":"take"}']


# The softphone's WebSocket: the first message (parse_start) and every later text message
# (BrowserTransport.receive_text), then binary audio at the browser's rate.
_PHONES: dict[int, BrowserTransport] = {}
PHONE_RATES = (8000, 16000, 44100, 48000, 96000)


def _phone(rate: int) -> BrowserTransport:
    phone = _PHONES.get(rate)
    if phone is None:
        limits = WebLimits(max_audio_ahead_s=1e9)  # no real-time check: millions of inputs
        phone = BrowserTransport("fuzz", rate, cast(Any, _OUTBOX), CallHub(), limits)
        _PHONES[rate] = phone
    inbox: asyncio.Queue[Any] = phone._inbox
    while not inbox.empty():  # what the call session would have read
        inbox.get_nowait()
    return phone


def run_softphone(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    with contextlib.suppress(BadMessage):
        parse_start(text)
    _phone(PHONE_RATES[0]).receive_text(text)


def softphone_corpus() -> list[bytes]:
    return [
        b'{"type": "start", "sample_rate": 48000}',
        b'{"type": "text", "text": "Bonjour, les horaires de la mairie ?"}',
        b'{"type":"dtmf","digit":"#"}',
        b'{"type":"typing"}',
        b'{"type":"ping"}',
        b'{"type":"hangup"}',
    ]


def run_softphone_audio(data: bytes) -> None:
    rate = PHONE_RATES[data[0] % len(PHONE_RATES)] if data else PHONE_RATES[0]
    _phone(rate).receive_audio(data[1:])


def softphone_audio_corpus() -> list[bytes]:
    return [bytes([i]) + _pcm(rate // 25, i) for i, rate in enumerate(PHONE_RATES)]


# The settings: a YAML file, then the environment (one VARIABLE=value a line).
_WORK = Path(tempfile.mkdtemp(prefix="voicebot-fuzz-"))
_SETTINGS_FILE = _WORK / "voicebot.yml"


def run_settings(data: bytes) -> None:
    _SETTINGS_FILE.write_bytes(data)
    load_settings(_SETTINGS_FILE, environ={})


def settings_corpus() -> list[bytes]:
    example = (ROOT / "deploy" / "voicebot.example.yml").read_bytes()
    return [
        example,
        b"asr:\n  engine: whisper\n  whisper_threads: 4\nvad:\n  floor_dbfs: -.inf\n",
        b"report:\n  timezone: Europe/Paris\n  repeat_window_h: 24\n",
        b"transparency:\n  contact_phone: '02 40 41 9000'\n  contact_online: ''\n",
        b"paths:\n  nlu_dir: &a [x, x, x]\n  data_dir: *a\n",
        b"console: {}\npolicy: {silence_action: transfer, max_call_seconds: 600}\n",
    ]


def run_settings_env(data: bytes) -> None:
    environ: dict[str, str] = {}
    # A real environment holds no NUL; values are str with surrogate escapes.
    for line in data.replace(b"\x00", b"").decode("utf-8", "surrogateescape").split("\n"):
        name, sep, value = line.partition("=")
        if sep:
            environ[name] = value
    load_settings(None, environ=environ)


def settings_env_corpus() -> list[bytes]:
    return [
        b"VOICEBOT_VAD_END_SILENCE_MS=700\nVOICEBOT_ASR_ENGINE=whisper\n",
        b"VOICEBOT_POLICY_MAX_CALL_SECONDS=300\nVOICEBOT_AMI_HOST=127.0.0.1\n",
        b"VOICEBOT_TTS_VOLUME=0.5\nVOICEBOT_REPORT_TIMEZONE=Europe/Paris\n",
        b"VOICEBOT_SERVER_HOST=0.0.0.0\nVOICEBOT_RECORDS_RETENTION_DAYS=30\n",
    ]


# The knowledge base: a knowledge file and prompts.yml in an nlu folder; the first byte of
# the input says which of the two it replaces (even: the knowledge file, odd: the prompts).
_NLU = _WORK / "nlu"
_KNOWLEDGE_FILE = _NLU / "knowledge" / "fuzz.yml"
_PROMPTS_FILE = _NLU / "prompts.yml"
_KNOWLEDGE: dict[str, Any] = {}


def _knowledge_setup() -> dict[str, Any]:
    """A small valid knowledge file (a few real entries, variants included), its topics, the
    real prompts and the NLU's entity values."""
    if not _KNOWLEDGE:
        nlu = ROOT / "nlu"
        entries: list[dict[str, Any]] = []
        for path in sorted((nlu / "knowledge").glob("*.yml")):
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            entries += loaded["entries"][:2]
            entries += [e for e in loaded["entries"][2:] if "variants" in e][:1]
        text = yaml.safe_dump({"entries": entries}, allow_unicode=True, sort_keys=False)
        known: dict[str, set[str]] = {}
        for entry in entries:
            for entity, values in (entry.get("variants") or {}).items():
                known.setdefault(entity, set()).update(values)
        _KNOWLEDGE.update(
            knowledge=text.encode(),
            prompts=(nlu / "prompts.yml").read_bytes(),
            topics={entry["topic"] for entry in entries},
            known=known,
        )
        _KNOWLEDGE_FILE.parent.mkdir(parents=True, exist_ok=True)
    return _KNOWLEDGE


def run_knowledge(data: bytes) -> None:
    setup = _knowledge_setup()
    mutated = data[1:]
    prompts_mutated = bool(data) and data[0] % 2 == 1
    _KNOWLEDGE_FILE.write_bytes(setup["knowledge"] if prompts_mutated else mutated)
    _PROMPTS_FILE.write_bytes(mutated if prompts_mutated else setup["prompts"])
    KnowledgeBase.load(_NLU, setup["topics"], setup["known"], {"retention_days": 30})


def knowledge_corpus() -> list[bytes]:
    setup = _knowledge_setup()
    return [b"K" + setup["knowledge"], b"P" + setup["prompts"]]


JSON_TOKENS = [b'"', b"{", b"}", b"[", b"]", b":", b",", b"\\u0000", b"\\ud800", b'"type"']
YAML_TOKENS = [
    b"&a ",
    b"*a",
    b"!!binary ",
    b"!!set ",
    b"!!python/object:os.system ",
    b"? ",
    b"<<: *a\n",
    b"- ",
    b"\n  ",
    b": ",
    b"%YAML 1.1\n---\n",
    b"{a: [b, {c: d}]}",
    b"2026-02-30",
    b"{retention_days:{x}}",
    b"{retention_days:999999999}",
    b"{0}",
]


def targets() -> dict[str, Target]:
    found = [
        Target(
            "audiosocket",
            run_audiosocket,
            (ProtocolError,),
            audiosocket_corpus(),
            [audiosocket.encode_uuid(CALL_UUID), audiosocket.HEADER.pack(0x10, 0xFFFF)],
        ),
        Target(
            "chan_websocket",
            run_chan_websocket,
            (ProtocolError,),
            chan_websocket_corpus(),
            [
                *JSON_TOKENS,
                b"MEDIA_START ",
                b" error_text:",
                b" ptime:",
                b" optimal_frame_size:",
                b" format:slin192",
                b'"channel_variables":',
                b'"queue_full":',
            ],
        ),
        Target(
            "chan_websocket-media",
            run_chan_websocket_media,
            (ProtocolError,),
            media_corpus(),
            [b"\x00", b"\x00\x80", b"\xff\x7f"],
        ),
        Target(
            "ami",
            run_ami,
            (AmiError,),
            ami_corpus(),
            [
                b"\r\n",
                b"\r\n\r\n",
                b": ",
                b"Variable: ALLO_UUID=",
                b"CallerIDNum: ",
                b"Event: Status\r\n",
                b"Response: Error\r\n",
                b"Response: Follows\r\n",
                str(CALL_UUID).upper().encode(),
            ],
        ),
        Target("console", run_console, (BadMessage,), console_corpus(), JSON_TOKENS),
        Target(
            "softphone",
            run_softphone,
            (BadMessage,),
            softphone_corpus(),
            [*JSON_TOKENS, b'"sample_rate":', b'"digit":', b'"text":'],
        ),
        Target(
            "softphone-audio",
            run_softphone_audio,
            (BadMessage,),
            softphone_audio_corpus(),
            [b"\x00", b"\x00\x80"],
        ),
        Target(
            "settings",
            run_settings,
            (ConfigError,),
            settings_corpus(),
            YAML_TOKENS,
            default_inputs=20_000,
            max_len=16 * 1024,
            note="YAML parsed by PyYAML's pure-Python loader",
        ),
        Target(
            "settings-env",
            run_settings_env,
            (ConfigError,),
            settings_env_corpus(),
            [b"VOICEBOT_", b"=", b"\n", b"VOICEBOT_REPORT_TIMEZONE=", b"VOICEBOT_PATHS_NLU_DIR="],
            default_inputs=20_000,
            max_len=4096,
            note="every input builds the whole settings object",
        ),
        Target(
            "knowledge",
            run_knowledge,
            (KnowledgeBaseError,),
            knowledge_corpus(),
            YAML_TOKENS,
            default_inputs=5_000,
            max_len=16 * 1024,
            note="YAML composed by PyYAML's pure-Python loader",
        ),
    ]
    return {target.name: target for target in found}


# --- the loop ---------------------------------------------------------------------------------


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("input ran past the time limit")


def signature(exc: BaseException) -> str:
    """What makes two crashes the same: the exception's type and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {where}"


def save_crash(crash_dir: Path, name: str, data: bytes, exc: BaseException) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path.with_suffix(".txt").write_text(f"{signature(exc)}\n\n{trace}", encoding="utf-8")
    return path


def run_target(
    target: Target,
    inputs: int,
    seed: int,
    crash_dir: Path,
    timeout_s: float,
    progress: bool = False,
) -> Result:
    rng = random.Random(f"{seed}:{target.name}")
    mutator = Mutator(rng, target.corpus, target.tokens, target.max_len)
    expected = target.expected
    run = target.run
    result = Result(target.name, inputs, 0.0, 0.0, note=target.note)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=inputs, desc=target.name, unit="in", leave=False, mininterval=1.0)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    start = time.perf_counter()
    try:
        for done in range(inputs):
            data = mutator.next()
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                run(data)
            except expected:
                pass
            except (Exception, Hang) as exc:
                signal.setitimer(signal.ITIMER_REAL, 0)
                key = signature(exc)
                seen = result.signatures.get(key, 0)
                result.signatures[key] = seen + 1
                result.crashes += 1
                if seen < SAVED_PER_SIGNATURE:
                    path = save_crash(crash_dir, target.name, data, exc)
                    if seen == 0:
                        print(f"CRASH {target.name}: {key} ({path})", file=sys.stderr)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if bar is not None and done % 10_000 == 9_999:
                bar.update(10_000)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - start
    result.rss_growth_mb = (process.memory_info().rss - rss_before) / 2**20
    return result


def table(results: Sequence[Result]) -> str:
    header = "| décodeur | entrées | secondes | entrées/s | plantages | distincts | RSS (Mo) |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rate = r.inputs / r.seconds if r.seconds else 0.0
        lines.append(
            f"| {r.name} | {r.inputs:,} | {r.seconds:.1f} | {rate:,.0f} | {r.crashes} "
            f"| {len(r.signatures)} | {r.rss_growth_mb:+.1f} |"
        )
    total_inputs = sum(r.inputs for r in results)
    total_s = sum(r.seconds for r in results)
    total_crashes = sum(r.crashes for r in results)
    lines.append(f"| **total** | {total_inputs:,} | {total_s:.1f} | | {total_crashes} | | |")
    return "\n".join(lines).replace(",", "\u202f")


def replay(target: Target, path: Path) -> int:
    data = path.read_bytes()
    try:
        target.run(data)
    except target.expected as exc:
        print(f"{target.name}: refusé proprement ({type(exc).__name__}: {exc})")
        return 0
    except Exception:
        traceback.print_exc()
        return 1
    print(f"{target.name}: accepté")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    known = targets()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--inputs", type=int, default=None, help="inputs per decoder")
    parser.add_argument("--decoder", action="append", choices=sorted(known), help="repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per input")
    parser.add_argument("--crash-dir", type=Path, default=DEFAULT_CRASH_DIR)
    parser.add_argument("--replay", type=Path, help="run one saved input (needs --decoder)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    chosen = [known[name] for name in (args.decoder or sorted(known))]
    if args.replay is not None:
        if len(chosen) != 1:
            parser.error("--replay needs exactly one --decoder")
        return replay(chosen[0], args.replay)
    progress = not args.no_progress and sys.stderr.isatty()
    results: list[Result] = []
    print(f"graine {args.seed}, {os.cpu_count()} cœurs, charge {os.getloadavg()[0]:.2f}")
    for target in chosen:
        inputs = args.inputs if args.inputs is not None else target.default_inputs
        result = run_target(target, inputs, args.seed, args.crash_dir, args.timeout, progress)
        results.append(result)
        rate = result.inputs / result.seconds if result.seconds else 0.0
        smaller = f" (par défaut {target.default_inputs:,} : {target.note})" if target.note else ""
        print(
            f"{result.name}: {result.inputs:,} entrées en {result.seconds:.1f} s "
            f"({rate:,.0f}/s), {result.crashes} plantage(s){smaller}",
            flush=True,
        )
    print()
    print(table(results))
    print(f"\ncharge moyenne en fin de campagne : {os.getloadavg()[0]:.2f}")
    crashed = [r for r in results if r.crashes]
    for r in crashed:
        for key, count in sorted(r.signatures.items()):
            print(f"  {r.name}: {count} × {key}")
    if crashed:
        print(f"entrées en cause enregistrées dans {args.crash_dir}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

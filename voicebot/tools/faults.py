"""Fault injection for the fault matrix ONLY (tests/test_faults.py, scripts/fault_matrix.py).

Nothing in the normal path imports this module: `voicebot serve` never loads it. Each class
wraps a REAL part of the bot (the dialogue, the recognizer, the voice, the call records) and
makes it fail, explicitly, for the calls a ``FaultSwitch`` names (or for every call while it
is switched on): the fault matrix checks what the rest of the bot does about it. The failures
are the ones a deployment meets: a bug in the dialogue, a recognizer that raises or never
answers, a voice that cannot synthesise, a disk full under the records database.

``FileFaultSwitch`` lets the fault matrix's script drive a `voicebot serve` subprocess it
started through ``scripts/fault_matrix.py``'s ``--serve-with-faults`` mode: the script writes
the switch file (JSON ``{"calls": [...], "everyone": false}``), the server reads it.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from voicebot.core.audio import AudioFrame
from voicebot.core.interfaces import (
    Asr,
    AsrStream,
    BotReply,
    Dialogue,
    Tts,
    Understanding,
    Utterance,
)

FAULT_KINDS = ("dialogue_raise", "asr_raise", "asr_hang", "tts_fail", "records_full")


class InjectedFault(RuntimeError):
    """The failure a wrapper raises: its name says it was injected, in the logs too."""


class FaultSwitch:
    """Which calls a wrapper fails: those in ``calls``, or every call while ``everyone``."""

    def __init__(self) -> None:
        self.calls: set[str] = set()
        self.everyone = False

    def hits(self, call_id: str | None = None) -> bool:
        return self.everyone or (call_id is not None and call_id in self.calls)

    def off(self) -> None:
        self.calls = set()
        self.everyone = False


class FileFaultSwitch(FaultSwitch):
    """A switch read from a JSON file (re-read when it changes): for a server subprocess."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._stamp: float | None = None

    def hits(self, call_id: str | None = None) -> bool:
        self._reload()
        return super().hits(call_id)

    def _reload(self) -> None:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except OSError:
            self.off()
            self._stamp = None
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return
        self.calls = {str(c) for c in data.get("calls", [])}
        self.everyone = bool(data.get("everyone", False))


class FaultyDialogue:
    """The real dialogue; a targeted call's turns (speech, text or keys) raise."""

    def __init__(self, real: Dialogue, switch: FaultSwitch) -> None:
        self.real = real
        self.switch = switch

    def __getattr__(self, name: str) -> Any:  # prompt, static_texts…
        return getattr(self.real, name)

    async def greet(self, call_id: str) -> BotReply:
        return await self.real.greet(call_id)

    async def understand(self, text: str) -> Understanding:
        return await self.real.understand(text)

    async def turn(
        self, call_id: str, text: str, understood: Understanding | None = None
    ) -> BotReply:
        if self.switch.hits(call_id):
            raise InjectedFault("injected fault: the dialogue raised")
        return await self.real.turn(call_id, text, understood)

    async def dtmf(self, call_id: str, digit: str) -> BotReply:
        if self.switch.hits(call_id):
            raise InjectedFault("injected fault: the dialogue raised")
        return await self.real.dtmf(call_id, digit)

    async def end(self, call_id: str) -> None:
        await self.real.end(call_id)


class _FaultyAsrStream:
    def __init__(self, real: AsrStream, call_id: str, switch: FaultSwitch, hang: bool) -> None:
        self.real = real
        self.call_id = call_id
        self.switch = switch
        self.hang = hang

    async def push(self, frame: AudioFrame) -> str | None:
        return await self.real.push(frame)

    async def settle(self) -> str | None:
        return await self.real.settle()

    async def finalize(self) -> Utterance:
        if self.switch.hits(self.call_id):
            if self.hang:
                await asyncio.Event().wait()  # never set: the recognizer never answers
            raise InjectedFault("injected fault: the recognizer raised")
        return await self.real.finalize()

    def close(self) -> None:
        self.real.close()


class FaultyAsr:
    """The real recognizer; for a targeted call, the final result raises or never comes."""

    def __init__(self, real: Asr, switch: FaultSwitch, *, hang: bool = False) -> None:
        self.real = real
        self.switch = switch
        self.hang = hang
        self.name = real.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def start_stream(self, call_id: str) -> AsrStream:
        return _FaultyAsrStream(self.real.start_stream(call_id), call_id, self.switch, self.hang)


class FaultyTts:
    """The real voice; while the switch is on for everyone, synthesis raises (the voice
    knows no call: a TTS failure is the engine's, for every call that needs speech)."""

    def __init__(self, real: Tts, switch: FaultSwitch) -> None:
        self.real = real
        self.switch = switch
        self.name = real.name

    def __getattr__(self, name: str) -> Any:  # prerender…
        return getattr(self.real, name)

    async def speak(self, text: str) -> AsyncIterator[AudioFrame]:
        if self.switch.hits():
            raise InjectedFault("injected fault: the voice failed to synthesise")
        async for frame in self.real.speak(text):
            yield frame


class FullDiskRecords:
    """The real call records; while the switch is on (for everyone, or for the targeted
    calls), each write raises OSError(ENOSPC) as sqlite's write would on a full disk. What
    was committed before stays in the real database."""

    _WRITES = ("start_call", "set_caller", "add_turn", "end_call")

    def __init__(self, real: Any, switch: FaultSwitch) -> None:
        self.real = real
        self.switch = switch

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.real, name)
        if name not in self._WRITES:
            return attribute

        async def write(call_id: str, *args: Any, **kwargs: Any) -> Any:
            if self.switch.hits(call_id):
                raise OSError(errno.ENOSPC, "No space left on device (injected fault)")
            return await attribute(call_id, *args, **kwargs)

        return write


def never_reading_console(port: int) -> socket.socket:
    """A console page whose browser never reads: the WebSocket handshake on the console at
    127.0.0.1:``port``, then nothing read, with a small receive buffer so that the server's
    sends back up at once. Blocking: run it in a thread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/console HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Origin: http://127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        byte = sock.recv(1)
        if not byte:  # the server closed during the handshake: say so, do not spin
            sock.close()
            raise RuntimeError(f"the console closed the connection: {response[:80]!r}")
        response += byte
    if not response.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise RuntimeError(f"the console refused the WebSocket: {response[:80]!r}")
    return sock

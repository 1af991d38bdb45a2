"""`voicebot serve` as a real subprocess for tests, and a console as a browser reads it.

``ServeProcess`` starts the server on free loopback ports with a test's settings (as
``VOICEBOT_<SECTION>_<FIELD>`` variables) and waits, without a clock on the machine's speed,
until it listens. ``ConsoleView`` follows the console's WebSocket: the snapshot, then every
change. ``until`` waits for a condition with a generous timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from telephony.emulator.net import free_port
from voicebot.core.config import PROJECT_ROOT

START_TIMEOUT_S = 600.0  # Rasa and TensorFlow on a busy 2-core machine
WAIT_S = 120.0


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class ServeProcess:
    """One `voicebot serve` subprocess on free loopback ports.

    ``settings``: the test's settings as environment variables (``VOICEBOT_…``); the
    process inherits no other ``VOICEBOT_`` variable but the caller-number key."""

    def __init__(self, name: str, folder: Path, settings: dict[str, str], web: bool) -> None:
        self.name = name
        self.web = web
        self.audiosocket_port = free_port()
        self.http_port = free_port()
        self.websocket_port = free_port()
        self.log_path = folder / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOT_")}
        env.update(
            {
                "VOICEBOT_CALLER_HASH_KEY": os.environ["VOICEBOT_CALLER_HASH_KEY"],
                "VOICEBOT_PATHS_DATA_DIR": str(folder / name),
                "VOICEBOT_SERVER_HOST": "127.0.0.1",
                "VOICEBOT_SERVER_AUDIOSOCKET_PORT": str(self.audiosocket_port),
                "VOICEBOT_SERVER_WEBSOCKET_PORT": str(self.websocket_port),
                "VOICEBOT_SERVER_HTTP_PORT": str(self.http_port),
                "VOICEBOT_AMI_HOST": "",
                **settings,
            }
        )
        command = [sys.executable, "-m", "voicebot.cli", "serve"]
        if not web:
            command.append("--no-web")
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(PROJECT_ROOT),
            )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def wait_ready(self) -> None:
        ports = [self.audiosocket_port, self.websocket_port]
        ports += [self.http_port] if self.web else []
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in ports:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(f"{self.name} exited while starting:\n{self.log_tail()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"{self.name} did not listen:\n{self.log_tail()}")
                    await asyncio.sleep(0.5)
                    continue
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                break

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


class ConsoleView:
    """A console as the browser runs it: the snapshot, then every change over the WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.live: dict[str, dict[str, Any]] = {}
        self.ended: dict[str, Any] = {}
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            kind = data.get("type")
            if kind == "snapshot":
                self.live = {call["call_id"]: call for call in data["live"]}
            elif kind == "call":
                self.live[data["call"]["call_id"]] = data["call"]
            elif kind == "call_ended":
                self.live.pop(data["call_id"], None)
                self.ended[data["call_id"]] = data.get("outcome")

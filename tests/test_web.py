"""The console and softphone server: access, API, WebSockets and bad clients.

The call session is not needed here: ``CallDesk`` stands where the session would and
drives each ``BrowserTransport`` through the MediaTransport contract (the end-to-end tests
in test_browser.py run the real session).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from voicebot.console.app import make_app, start_web
from voicebot.console.auth import COOKIE_NAME, LoginThrottle, client_address
from voicebot.console.board import LiveBoard
from voicebot.console.context import CONTEXT, BadMessage, WebLimits
from voicebot.console.outbox import Outbox
from voicebot.console.softphone import BrowserTransport, parse_start
from voicebot.core.audio import FRAME_BYTES, AudioFrame
from voicebot.core.config import Settings
from voicebot.core.errors import ConfigError
from voicebot.core.events import CallEvent, CallHub
from voicebot.core.interfaces import (
    AudioIn,
    CallerActive,
    CallerHungUp,
    CallStarted,
    DtmfIn,
    MediaTransport,
    TextIn,
    TransportEvent,
)
from voicebot.records.store import CallRecords

TOKEN = "jeton-secret-de-test"


@dataclass
class DeskCall:
    transport: BrowserTransport
    events: asyncio.Queue[TransportEvent] = field(default_factory=asyncio.Queue)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def next_event(self, timeout: float = 5.0) -> TransportEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def next_of(self, kind: type, timeout: float = 5.0) -> Any:
        while True:
            event = await self.next_event(timeout)
            if isinstance(event, kind):
                return event


class CallDesk:
    """Takes each browser call and keeps what its transport delivers, for the test to read."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[DeskCall] = asyncio.Queue()

    async def on_call(self, transport: MediaTransport) -> None:
        assert isinstance(transport, BrowserTransport)
        call = DeskCall(transport)
        await self.calls.put(call)
        try:
            async for event in transport.events():
                await call.events.put(event)
        finally:
            call.finished.set()

    async def next_call(self) -> DeskCall:
        return await asyncio.wait_for(self.calls.get(), 5.0)


@dataclass
class Env:
    client: TestClient
    hub: CallHub
    records: CallRecords
    desk: CallDesk
    settings: Settings


async def _env(
    tmp_path: Path,
    token: str = "",
    limits: WebLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Env:
    settings = Settings().replace("paths", data_dir=tmp_path)
    settings = settings.replace("console", token=token)
    records = CallRecords.open(settings)
    hub = CallHub()
    desk = CallDesk()
    app = make_app(settings, hub, records, desk.on_call, limits, clock=clock)
    client = TestClient(TestServer(app))
    await client.start_server()
    return Env(client, hub, records, desk, settings)


@pytest_asyncio.fixture(loop_scope="function")
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    environment = await _env(tmp_path, limits=WebLimits(start_timeout_s=1.0))
    yield environment
    await environment.client.close()
    await environment.records.close()


@pytest_asyncio.fixture(loop_scope="function")
async def guarded(tmp_path: Path) -> AsyncIterator[Env]:
    environment = await _env(tmp_path, token=TOKEN)
    yield environment
    await environment.client.close()
    await environment.records.close()


async def _receive_json(
    ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0
) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == WSMsgType.TEXT, message
    data: dict[str, Any] = json.loads(message.data)
    return data


async def _receive_until(
    ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await ws.receive(timeout=max(0.01, deadline - loop.time()))
        if message.type == WSMsgType.TEXT:
            data: dict[str, Any] = json.loads(message.data)
            if data.get("type") == kind:
                return data
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
            raise AssertionError(f"socket closed while waiting for {kind}")


def _publish_call(
    hub: CallHub, call_id: str, caller_text: str = "je veux parler à quelqu'un"
) -> None:
    hub.publish(CallEvent(call_id, "started", {"transport": "audiosocket"}))
    hub.publish(
        CallEvent(
            call_id,
            "bot",
            {
                "text": "Bonjour, ici AlloNantes.",
                "intent": "greet",
                "confidence": 1.0,
                "entities": {},
            },
        )
    )
    hub.publish(CallEvent(call_id, "state", {"state": "écoute"}))
    hub.publish(CallEvent(call_id, "caller", {"text": caller_text, "asr_confidence": 0.82}))
    hub.publish(
        CallEvent(
            call_id,
            "bot",
            {
                "text": "Je vous passe un conseiller.",
                "intent": "parler_humain",
                "confidence": 0.91,
                "entities": {},
            },
        )
    )


def _handoff(hub: CallHub, call_id: str) -> None:
    hub.publish(
        CallEvent(
            call_id,
            "handoff",
            {
                "reason": "demande",
                "intent": "parler_humain",
                "entities": {"service": "état civil"},
                "summary": "L'appelant demande un conseiller.",
                "last_utterances": ["je veux parler à quelqu'un"],
                "context_delivered": True,
            },
        )
    )


# ---- access ---------------------------------------------------------------------------------


async def test_no_token_refuses_a_non_loopback_host(tmp_path: Path) -> None:
    settings = Settings().replace("server", host="0.0.0.0", http_port=0)  # noqa: S104 — the refusal to listen on every address is the test
    records = CallRecords.open(Settings().replace("paths", data_dir=tmp_path))
    try:
        with pytest.raises(ConfigError, match="VOICEBOT_CONSOLE_TOKEN"):
            await start_web(settings, CallHub(), records, CallDesk().on_call)
    finally:
        await records.close()


async def test_start_web_listens_on_loopback(tmp_path: Path) -> None:
    settings = Settings().replace("server", host="127.0.0.1", http_port=0)
    records = CallRecords.open(Settings().replace("paths", data_dir=tmp_path))
    runner = await start_web(settings, CallHub(), records, CallDesk().on_call)
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            assert response.status == 200
            assert "console des opérateurs" in await response.text()
    finally:
        await runner.cleanup()
        await records.close()


async def test_pages_and_api_need_the_token(guarded: Env) -> None:
    client = guarded.client
    response = await client.get("/", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login?next=/"
    response = await client.get("/appeler", allow_redirects=False)
    assert response.headers["Location"] == "/login?next=/appeler"
    assert (await client.get("/api/calls")).status == 401
    wrong = await client.get("/api/calls", headers={"Authorization": "Bearer pas-le-bon"})
    assert wrong.status == 403
    right = await client.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status == 200
    assert (await client.get("/static/style.css")).status == 200  # the login page needs it
    login = await client.get("/login?next=/appeler")
    assert 'value="/appeler"' in await login.text()


async def test_login_sets_a_cookie_that_is_not_the_token(guarded: Env) -> None:
    client = guarded.client
    refused = await client.post(
        "/login", data={"token": "devine", "next": "/"}, allow_redirects=False
    )
    assert refused.status == 403
    assert "Jeton incorrect." in await refused.text()
    assert COOKIE_NAME not in refused.cookies
    accepted = await client.post(
        "/login", data={"token": TOKEN, "next": "//ailleurs.example/"}, allow_redirects=False
    )
    assert accepted.status == 303
    assert accepted.headers["Location"] == "/"  # never an open redirect
    cookie = accepted.cookies[COOKIE_NAME]
    assert cookie.value and TOKEN not in cookie.value
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    page = await client.get("/")  # the client keeps the cookie
    assert page.status == 200 and "console des opérateurs" in await page.text()
    ws = await client.ws_connect("/ws/console")
    assert (await _receive_json(ws))["type"] == "snapshot"
    await ws.close()
    await client.post("/logout", allow_redirects=False)
    assert (await client.get("/api/live")).status == 401


class FakeClock:
    """The failed-login clock, moved by the test instead of waiting a minute."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FAST_LOGIN = WebLimits(login_failure_delay_s=0.0)


@pytest_asyncio.fixture(loop_scope="function")
async def throttled(tmp_path: Path) -> AsyncIterator[tuple[Env, FakeClock]]:
    clock = FakeClock()
    environment = await _env(tmp_path, token=TOKEN, limits=FAST_LOGIN, clock=clock)
    yield environment, clock
    await environment.client.close()
    await environment.records.close()


async def _try_login(client: TestClient, token: str, **headers: str) -> aiohttp.ClientResponse:
    return await client.post(
        "/login", data={"token": token, "next": "/"}, headers=headers, allow_redirects=False
    )


async def test_five_wrong_tokens_close_the_door_for_a_minute(
    throttled: tuple[Env, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    env, clock = throttled
    client = env.client
    with caplog.at_level(logging.INFO, logger="voicebot.console.auth"):
        for n in range(5):
            refused = await _try_login(client, f"essai-{n}")
            assert refused.status == 403
            assert "Jeton incorrect." in await refused.text()
            clock.now += 1.0
        blocked = await _try_login(client, TOKEN)  # the right token, too late
    assert blocked.status == 429
    assert blocked.headers["Retry-After"] == "55"  # the first failure leaves the window at 1060
    page = await blocked.text()
    assert "Trop de tentatives de connexion. Réessayez dans 55 secondes." in page
    assert 'name="token"' in page  # still the login form, to try again later
    assert COOKIE_NAME not in blocked.cookies
    # The other ways in are closed as well, even with the right token…
    api = await client.get("/api/live", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status == 429 and api.headers["Retry-After"] == "55"
    assert "Trop de tentatives" in (await api.json())["error"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as socket_refused:
        await client.ws_connect("/ws/console", headers={"Authorization": f"Bearer {TOKEN}"})
    assert socket_refused.value.status == 429
    # …while asking without any token is answered as usual (nothing is guessed there).
    assert (await client.get("/api/live")).status == 401
    # One warning for the blocked address; no token tried (nor the real one) in any log line.
    blocks = [r.getMessage() for r in caplog.records if "logins are refused" in r.getMessage()]
    assert len(blocks) == 1 and "127.0.0.1" in blocks[0], blocks
    for record in caplog.records:
        assert "essai-" not in record.getMessage() and TOKEN not in record.getMessage()

    clock.now = 1000.0 + 30.0
    assert (await _try_login(client, TOKEN)).headers["Retry-After"] == "30"
    clock.now = 1000.0 + 60.0  # the first failure is a minute old: one more try is allowed
    accepted = await _try_login(client, TOKEN)
    assert accepted.status == 303 and COOKIE_NAME in accepted.cookies
    assert (await client.get("/api/live")).status == 200  # with the cookie
    # A successful login does not count, and the failures left in the window still do.
    assert (await _try_login(client, TOKEN)).status == 303
    assert (await _try_login(client, "encore faux")).status == 403
    assert (await _try_login(client, TOKEN)).status == 429


async def test_the_limit_is_per_address_and_ignores_forwarded_headers(
    throttled: tuple[Env, FakeClock],
) -> None:
    env, _ = throttled
    for n in range(5):
        # Anyone can write X-Forwarded-For: it must not give a new "address" per guess.
        forged = {"X-Forwarded-For": f"203.0.113.{n}", "Forwarded": f"for=198.51.100.{n}"}
        assert (await _try_login(env.client, "devine", **forged)).status == 403
    forged = {"X-Forwarded-For": "192.0.2.77"}
    assert (await _try_login(env.client, TOKEN, **forged)).status == 429
    # Another machine (here another loopback address: 127.0.0.2) is not affected.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        response = await other.post(
            env.client.make_url("/login"),
            data={"token": TOKEN, "next": "/appeler"},
            allow_redirects=False,
        )
        assert response.status == 303 and response.headers["Location"] == "/appeler"


async def test_wrong_bearer_tokens_and_cookies_count_too(
    throttled: tuple[Env, FakeClock],
) -> None:
    env, _ = throttled
    client = env.client
    for _ in range(3):
        wrong = await client.get("/api/calls", headers={"Authorization": "Bearer devine"})
        assert wrong.status == 403
    # The cookie is derived from the token, so a forged one is a guess as well. A stale one
    # (the token changed) is removed, so that the browser does not count against itself.
    client.session.cookie_jar.update_cookies({COOKIE_NAME: "ancien"})
    stale = await client.get("/api/live")
    assert stale.status == 403 and stale.cookies[COOKIE_NAME].value == ""
    client.session.cookie_jar.update_cookies({COOKIE_NAME: "ancien"})
    page = await client.get("/appeler", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login?next=/appeler"
    assert page.cookies[COOKIE_NAME].value == ""
    # That made five.
    right = await client.get("/api/live", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status == 429


def test_login_throttle_memory_is_bounded_and_expires() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_failures=2, window_s=10.0, max_addresses=3, clock=clock)
    assert throttle.failed("a") is False
    clock.now += 1.0
    assert throttle.failed("a") is True  # the failure that blocks
    assert throttle.retry_after("a") == pytest.approx(9.0)
    assert throttle.retry_after("b") == 0.0
    for address in ("b", "c", "d"):
        throttle.failed(address)
    assert len(throttle) == 3  # full: "a", which failed longest ago, was forgotten
    assert throttle.retry_after("a") == 0.0
    clock.now += 10.0
    throttle.failed("e")
    assert len(throttle) == 1  # b, c and d failed more than a window ago
    clock.now += 9.0
    assert throttle.failed("e") is True  # still within e's window
    clock.now += 1.5
    assert throttle.retry_after("e") == 0.0 and throttle.failed("e") is True


def test_client_address_counts_an_ipv6_client_as_its_slash_64() -> None:
    assert client_address("192.0.2.10") == "192.0.2.10"
    assert client_address("::ffff:192.0.2.10") == "192.0.2.10"
    assert client_address("2001:db8:1:2:aaaa::1") == client_address("2001:db8:1:2:bbbb::9")
    assert client_address("2001:db8:1:2::1") != client_address("2001:db8:1:3::1")
    assert client_address(None) == "inconnue"


async def test_websockets_check_the_token_and_the_origin(guarded: Env, env: Env) -> None:
    for path in ("/ws/console", "/ws/softphone"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await guarded.client.ws_connect(path)
        assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
            await guarded.client.ws_connect(path, headers={"Authorization": "Bearer faux"})
        assert wrong.value.status == 403
        # Another web site may not drive a console open in the operator's browser.
        with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
            await env.client.ws_connect(path, headers={"Origin": "http://malveillant.example"})
        assert foreign.value.status == 403
    own_origin = f"http://{env.client.host}:{env.client.port}"
    ws = await env.client.ws_connect("/ws/console", headers={"Origin": own_origin})
    assert (await _receive_json(ws))["type"] == "snapshot"
    await ws.close()


async def test_security_headers(env: Env) -> None:
    response = await env.client.get("/appeler")
    assert response.status == 200
    assert "Appeler AlloNantes" in await response.text()
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await env.client.get("/static/../records.py")).status in (403, 404)
    assert (await env.client.get("/static/")).status in (403, 404)  # no listing


# ---- API ------------------------------------------------------------------------------------


async def test_search_api(env: Env) -> None:
    records = env.records
    await records.start_call("passe-1", "audiosocket", None)
    await records.add_turn("passe-1", "caller", "horaires de la piscine")
    await records.end_call(
        "passe-1", "transferred", "demande", {"reason": "demande", "summary": "piscine"}
    )
    await records.start_call("passe-2", "websocket", None)
    await records.end_call("passe-2", "resolved")

    found = await (await env.client.get("/api/calls", params={"q": "piscine"})).json()
    assert [c["call_id"] for c in found["calls"]] == ["passe-1"]
    resolved = await (await env.client.get("/api/calls", params={"outcome": "resolved"})).json()
    assert [c["call_id"] for c in resolved["calls"]] == ["passe-2"]
    detail = await (await env.client.get("/api/calls/passe-1")).json()
    assert detail["turns"][0]["text"] == "horaires de la piscine"
    assert detail["handoff"]["summary"] == "piscine"
    missing = await env.client.get("/api/calls/inconnu")
    assert missing.status == 404 and "introuvable" in (await missing.json())["error"]
    for params in (
        {"limit": "abc"},
        {"limit": "0"},
        {"limit": "100000"},
        {"outcome": "perdu"},
        {"q": "x" * 201},
    ):
        bad = await env.client.get("/api/calls", params=params)
        assert bad.status == 400, params
        assert (await bad.json())["error"]
    stats = await (await env.client.get("/api/stats")).json()
    assert stats["all"]["transferred"] == 1 and stats["all"]["resolved"] == 1
    assert stats["today"]["calls"] == 2
    assert (await (await env.client.get("/healthz")).json()) == {"ok": True}


# ---- the console's live view ----------------------------------------------------------------


async def test_console_gets_live_calls_and_the_handoff_summary(env: Env) -> None:
    first = await env.client.ws_connect("/ws/console")
    second = await env.client.ws_connect("/ws/console")
    for ws in (first, second):
        snapshot = await _receive_json(ws)
        assert snapshot == {"type": "snapshot", "live": [], "queue": []}

    _publish_call(env.hub, "appel-42", caller_text="rappelez-moi au 06 12 34 56 78")
    update = await _receive_until(first, "call")
    assert update["call"]["call_id"] == "appel-42"
    assert update["call"]["transport"] == "audiosocket"
    _handoff(env.hub, "appel-42")
    handoff = await _receive_until(first, "handoff")
    entry = handoff["entry"]
    assert entry["call_id"] == "appel-42"
    assert entry["reason"] == "demande" and entry["reason_label"] == "Demande de l'appelant"
    assert entry["summary"] == "L'appelant demande un conseiller."
    assert entry["entities"] == {"service": "état civil"}
    assert entry["intent"] == "parler_humain"
    assert entry["context_delivered"] is True
    assert entry["bot_answers"] == ["Bonjour, ici AlloNantes.", "Je vous passe un conseiller."]
    assert [t["speaker"] for t in entry["transcript"]] == ["bot", "caller", "bot"]
    assert entry["transcript"][1]["text"] == "rappelez-moi au <numéro>"  # no number leaves
    assert entry["transcript"][1]["asr_confidence"] == pytest.approx(0.82)

    env.hub.publish(CallEvent("appel-42", "ended", {"outcome": "transferred", "duration_s": 12.0}))
    ended = await _receive_until(first, "call_ended")
    assert ended["outcome"] == "transferred"
    live = await (await env.client.get("/api/live")).json()
    assert live["live"] == [] and live["queue"][0]["ended"] is True

    # A console opened later gets the queue in its first message.
    late = await env.client.ws_connect("/ws/console")
    late_snapshot = await _receive_json(late)
    assert [e["call_id"] for e in late_snapshot["queue"]] == ["appel-42"]

    # An operator takes the call: it leaves every console's queue.
    await second.send_json({"type": "take", "call_id": "appel-42"})
    for ws in (first, second, late):
        removed = await _receive_until(ws, "queue_remove")
        assert removed["call_id"] == "appel-42"
    await second.send_json({"type": "take", "call_id": "appel-42"})
    assert "plus dans la file" in (await _receive_until(second, "error"))["message"]
    for ws in (first, second, late):
        await ws.close()


async def test_live_call_row_follows_the_call(env: Env) -> None:
    ws = await env.client.ws_connect("/ws/console")
    await _receive_json(ws)
    _publish_call(env.hub, "appel-7")
    rows: list[dict[str, Any]] = []
    while len(rows) < 5:
        rows.append((await _receive_until(ws, "call"))["call"])
    last = rows[-1]
    assert last["state"] == "écoute"
    assert last["last_caller"] == "je veux parler à quelqu'un"
    assert last["intent"] == "parler_humain" and last["confidence"] == pytest.approx(0.91)
    await ws.close()


async def test_malformed_console_messages_are_answered_then_cut(env: Env) -> None:
    bystander = await env.client.ws_connect("/ws/console")
    await _receive_json(bystander)
    ws = await env.client.ws_connect("/ws/console")
    await _receive_json(ws)
    await ws.send_str("ceci n'est pas du JSON")
    assert "illisible" in (await _receive_until(ws, "error"))["message"]
    await ws.send_json({"type": "inconnu"})
    assert "inconnu" in (await _receive_until(ws, "error"))["message"]
    await ws.send_bytes(b"\x00\x01")
    assert (await _receive_until(ws, "error"))["type"] == "error"
    await ws.send_json({"type": "ping"})
    assert (await _receive_until(ws, "pong"))["type"] == "pong"
    for _ in range(5):
        await ws.send_json([1, 2, 3])
    closed = await _drain_until_closed(ws)
    assert closed
    # The other console never noticed.
    _publish_call(env.hub, "appel-b")
    assert (await _receive_until(bystander, "call"))["call"]["call_id"] == "appel-b"
    await bystander.close()


async def _drain_until_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        message = await ws.receive(timeout=max(0.01, deadline - loop.time()))
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            return True
    return False


async def test_a_huge_console_message_closes_only_that_socket(env: Env) -> None:
    bystander = await env.client.ws_connect("/ws/console")
    await _receive_json(bystander)
    ws = await env.client.ws_connect("/ws/console")
    await _receive_json(ws)
    await ws.send_str(json.dumps({"type": "ping", "pad": "x" * 100_000}))
    message = await ws.receive(timeout=5)
    while message.type == WSMsgType.TEXT:
        message = await ws.receive(timeout=5)
    assert message.type == WSMsgType.CLOSE
    assert message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    _publish_call(env.hub, "appel-c")
    assert (await _receive_until(bystander, "call"))["call"]["call_id"] == "appel-c"
    await bystander.close()


def _never_reading_websocket(host: str, port: int, path: str) -> socket.socket:
    """A real client that completes the WebSocket handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    sock.settimeout(5)
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: read the handshake and nothing more
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


class ConsoleView:
    """What a console page shows, rebuilt from its messages the way console.js does."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.queue: dict[str, dict[str, Any]] = {}  # in the board's order
        self.snapshots = 0

    def apply(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "snapshot":
            self.snapshots += 1
            self.live = {call["call_id"]: call for call in message["live"]}
            self.queue = {entry["call_id"]: entry for entry in message["queue"]}
        elif kind == "call":
            self.live[message["call"]["call_id"]] = message["call"]
        elif kind == "call_ended":
            call_id = message["call_id"]
            self.live.pop(call_id, None)
            if call_id in self.queue:  # the page knows that this transferred call is over
                self.queue[call_id] = {**self.queue[call_id], "ended": True}
        elif kind == "handoff":
            self.queue[message["entry"]["call_id"]] = message["entry"]
        elif kind == "queue_remove":
            self.queue.pop(message["call_id"], None)

    def shows(self, board: LiveBoard) -> bool:
        """Exactly the board: every live row, every queue entry, in the same order."""
        snapshot = board.snapshot()
        return (
            list(self.live.values()) == snapshot["live"]
            and list(self.queue.values()) == snapshot["queue"]
        )


async def _follow(
    ws: aiohttp.ClientWebSocketResponse, view: ConsoleView, until: str = "pong"
) -> None:
    while True:
        message = await ws.receive(timeout=30)
        assert message.type == WSMsgType.TEXT, message
        data = json.loads(message.data)
        if data["type"] == until:
            return
        view.apply(data)


async def _catch_up(ws: aiohttp.ClientWebSocketResponse, view: ConsoleView) -> None:
    """Apply every message the console was sent for what has been published so far.

    The pong is queued behind all of it, so once it arrives the console has been told
    everything (as changes, or as a fresh snapshot).
    """
    await ws.send_json({"type": "ping"})
    await _follow(ws, view)


async def _console_outbox(board: LiveBoard, others: set[Outbox]) -> Outbox:
    await _wait_for(lambda: len(board.consoles - others) == 1)
    return next(iter(board.consoles - others))


async def test_a_console_that_never_reads_is_dropped_without_slowing_others(
    tmp_path: Path,
) -> None:
    limits = WebLimits(send_timeout_s=1.0)
    environment = await _env(tmp_path, limits=limits)
    assert environment.client.app is not None
    board = environment.client.app[CONTEXT].board
    host, port = str(environment.client.host), int(environment.client.port or 0)
    good = await environment.client.ws_connect("/ws/console")
    view = ConsoleView()
    good_outbox = await _console_outbox(board, set())
    stalled = await asyncio.to_thread(_never_reading_websocket, host, port, "/ws/console")
    try:
        stalled_outbox = await _console_outbox(board, {good_outbox})
        reader = asyncio.create_task(_follow(good, view))
        long_text = "une très longue réponse " * 160  # ~4 kB per event
        most_pending = 0
        n = 0
        # 2000 events at least, and on until the stalled console's socket buffers (whatever
        # their size on this machine) are full and its send times out.
        while n < 2000 or (not stalled_outbox.dropped and n < 40_000):
            # Never awaited: nothing a console does can hold the publishing call back.
            environment.hub.publish(
                CallEvent("bavard", "bot", {"text": f"{n} {long_text}", "intent": None})
            )
            most_pending = max(most_pending, stalled_outbox.pending)
            n += 1
            if n % 20 == 0:
                await asyncio.sleep(0.005)
        await good.send_json({"type": "ping"})
        await asyncio.wait_for(reader, 30)
        # The reading console shows the last word of the call, as the board does; it was
        # never cut. What waited for the stalled one stayed bounded, and it was cut.
        assert view.live["bavard"]["last_bot"].startswith(f"{n - 1} une très longue")
        assert view.shows(board)
        assert not good_outbox.dropped and not good.closed
        assert most_pending <= limits.console_queue + 1
        await _wait_for(lambda: stalled_outbox.dropped, timeout=30)
        assert board.consoles == {good_outbox}
    finally:
        stalled.close()
        await good.close()
        await environment.client.close()
        await environment.records.close()


@dataclass
class Burst:
    events: int
    calls: set[str]
    handed_off: list[str]  # in the order their handoffs were published
    ended: set[str]


def _burst(hub: CallHub, calls: int, turns: int) -> Burst:
    """Many calls at once, their events interleaved, published in one go (never yielding).

    Every call starts and talks; 4 in 5 are handed off; 2 in 3 end; 1 in 7 is cut short
    before its last events (a handoff or an end that never comes).
    """
    scripts: list[list[CallEvent]] = []
    for n in range(calls):
        call_id = f"rafale-{n:03d}"
        script = [CallEvent(call_id, "started", {"transport": "websocket"})]
        for turn in range(turns):
            script += [
                CallEvent(call_id, "state", {"state": "écoute"}),
                CallEvent(call_id, "partial", {"text": "je voud"}),
                CallEvent(
                    call_id, "caller", {"text": f"{call_id} question {turn}", "asr_confidence": 0.8}
                ),
                CallEvent(
                    call_id,
                    "bot",
                    {"text": f"réponse {turn}", "intent": "horaires", "confidence": 0.9},
                ),
                CallEvent(call_id, "timing", {"total_ms": 120}),
            ]
        if n % 5:
            script.append(
                CallEvent(call_id, "handoff", {"reason": "demande", "summary": f"pour {call_id}"})
            )
        if n % 3:
            script.append(CallEvent(call_id, "ended", {"outcome": "transferred"}))
        if n % 7 == 6:
            del script[len(script) - 1 - n % 3 :]
        scripts.append(script)
    published = [
        script[step]
        for step in range(max(len(script) for script in scripts))
        for script in scripts
        if step < len(script)
    ]
    for event in published:
        hub.publish(event)
    return Burst(
        events=len(published),
        calls={script[0].call_id for script in scripts},
        handed_off=[e.call_id for e in published if e.kind == "handoff"],
        ended={e.call_id for e in published if e.kind == "ended"},
    )


BROWSER_SIZED = 256 * 2**20


async def test_a_burst_of_call_events_reaches_the_board_and_every_console(
    tmp_path: Path,
) -> None:
    limits = WebLimits(send_timeout_s=1.0)
    environment = await _env(tmp_path, limits=limits)
    assert environment.client.app is not None
    board = environment.client.app[CONTEXT].board
    host, port = str(environment.client.host), int(environment.client.port or 0)
    # A browser takes a message of any size; aiohttp's client stops at 4 MB, which the
    # board's snapshot passes below once the stalled console has been sent enough 40 kB
    # answers to fill its socket (how many depends on the kernel's buffers).
    reading = await environment.client.ws_connect("/ws/console", max_msg_size=BROWSER_SIZED)
    view = ConsoleView()
    view.apply(await _receive_json(reading))
    reading_outbox = await _console_outbox(board, set())
    stalled = await asyncio.to_thread(_never_reading_websocket, host, port, "/ws/console")
    try:
        stalled_outbox = await _console_outbox(board, {reading_outbox})
        burst = _burst(environment.hub, calls=50, turns=8)
        assert burst.events > 2000 and len(burst.handed_off) > 30 and len(burst.ended) > 25

        # The board is right the moment the burst is published: every call still on the
        # line, every handoff in the queue in order, with its whole transcript.
        snapshot = board.snapshot()
        assert {call["call_id"] for call in snapshot["live"]} == burst.calls - burst.ended
        assert [entry["call_id"] for entry in snapshot["queue"]] == burst.handed_off
        for entry in snapshot["queue"]:
            assert entry["ended"] is (entry["call_id"] in burst.ended)
            assert [turn["text"] for turn in entry["transcript"]][-2:] == [
                f"{entry['call_id']} question 7",
                "réponse 7",
            ]
            assert len(entry["transcript"]) == 16
        for call in snapshot["live"]:
            assert call["last_caller"].startswith(call["call_id"])

        # Far more changes than a console's queue holds: the reading console's backlog was
        # replaced by one snapshot, and what it shows is exactly the board. It was not cut.
        await _catch_up(reading, view)
        assert view.shows(board)
        assert view.snapshots == 2 and reading_outbox.resyncs == 2
        assert not reading_outbox.dropped
        # The one that never reads holds one snapshot to send at most (it may be cut already).
        assert stalled_outbox.dropped or stalled_outbox.pending <= 1

        # A console opened now starts from the same board; both follow new calls as usual,
        # while the stalled one, whose socket is full, is cut when its send times out.
        late = await environment.client.ws_connect("/ws/console", max_msg_size=BROWSER_SIZED)
        late_view = ConsoleView()
        await _catch_up(late, late_view)
        assert late_view.shows(board) and late_view.snapshots == 1
        long_text = "une très longue réponse " * 1600  # ~40 kB: the socket fills up sooner
        for n in range(500):
            if stalled_outbox.dropped:
                break
            _publish_call(environment.hub, f"après-{n}", caller_text=long_text)
            await asyncio.sleep(0.01)
        await _wait_for(lambda: stalled_outbox.dropped, timeout=30)
        await _catch_up(reading, view)
        await _catch_up(late, late_view)
        assert view.shows(board) and late_view.shows(board)
        assert len(board.consoles) == 2 and not reading_outbox.dropped
        await late.close()
    finally:
        stalled.close()
        await reading.close()
        await environment.client.close()
        await environment.records.close()


async def test_a_console_that_keeps_falling_behind_is_cut(tmp_path: Path) -> None:
    # A tiny queue, so that a burst of 20 changes overfills it.
    limits = WebLimits(console_queue=8, console_max_resyncs=3)
    environment = await _env(tmp_path, limits=limits)
    assert environment.client.app is not None
    board = environment.client.app[CONTEXT].board
    ws = await environment.client.ws_connect("/ws/console")
    view = ConsoleView()
    try:
        view.apply(await _receive_json(ws))
        outbox = await _console_outbox(board, set())
        # Changes it keeps up with: no snapshot, and the count of snapshots in a row restarts.
        _publish_call(environment.hub, "calme")
        await _catch_up(ws, view)
        assert view.snapshots == 1 and view.shows(board)
        for burst in range(1, 5):
            for n in range(20):
                environment.hub.publish(CallEvent("agité", "caller", {"text": f"{burst} {n}"}))
            if burst < 4:
                await _catch_up(ws, view)  # a snapshot stands for the 20 changes
                assert view.snapshots == 1 + burst and view.shows(board)
                assert not outbox.dropped
        # A 4th snapshot in a row, without one round of changes it kept up with between them.
        assert outbox.dropped
        assert await _drain_until_closed(ws)
        # The page reconnects and starts from the board as it is.
        again = await environment.client.ws_connect("/ws/console")
        fresh = ConsoleView()
        await _catch_up(again, fresh)
        assert fresh.live["agité"]["last_caller"] == "4 19" and fresh.shows(board)
        await again.close()
    finally:
        await ws.close()
        await environment.client.close()
        await environment.records.close()


async def test_the_board_limits_reach_the_consoles(tmp_path: Path) -> None:
    # The oldest transferred call leaves the queue, the oldest live row (its end never came)
    # leaves the live calls: on the board, and on a console that follows the changes.
    environment = await _env(tmp_path, limits=WebLimits(queue_entries=2, live_calls=2))
    assert environment.client.app is not None
    board = environment.client.app[CONTEXT].board
    ws = await environment.client.ws_connect("/ws/console")
    view = ConsoleView()
    try:
        view.apply(await _receive_json(ws))
        for call_id in ("un", "deux", "trois"):
            _publish_call(environment.hub, call_id)
            _handoff(environment.hub, call_id)
        await _catch_up(ws, view)
        assert list(view.queue) == ["deux", "trois"] and list(view.live) == ["deux", "trois"]
        assert view.shows(board)
        assert view.snapshots == 1  # by changes alone
    finally:
        await ws.close()
        await environment.client.close()
        await environment.records.close()


def test_a_failing_listener_does_not_break_the_call_that_publishes() -> None:
    hub = CallHub()
    seen: list[str] = []

    def broken(event: CallEvent) -> None:
        raise ValueError("bogue")

    stop_broken = hub.listen(broken)
    stop_seen = hub.listen(lambda event: seen.append(event.kind))
    hub.publish(CallEvent("a", "started"))  # does not raise
    stop_broken()
    stop_seen()
    hub.publish(CallEvent("a", "ended"))
    assert seen == ["started"] and hub.listener_count == 0


async def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# ---- the softphone ----------------------------------------------------------------------------


def test_parse_start() -> None:
    assert parse_start('{"type": "start", "sample_rate": 48000}') == 48000
    for bad in (
        "",
        "[]",
        '{"type": "text"}',
        '{"type": "start", "sample_rate": "48000"}',
        '{"type": "start", "sample_rate": 4000}',
        '{"type": "start", "sample_rate": true}',
    ):
        with pytest.raises(BadMessage):
            parse_start(bad)


def _sine(rate: int, seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


async def test_softphone_call_end_to_end_over_the_transport(env: Env) -> None:
    ws = await env.client.ws_connect("/ws/softphone")
    await ws.send_json({"type": "start", "sample_rate": 48000})
    ready = await _receive_json(ws)
    assert ready["type"] == "ready" and ready["sample_rate"] == 8000
    call = await env.desk.next_call()
    started = await call.next_event()
    assert isinstance(started, CallStarted) and started.call_id == ready["call_id"]

    # 1 s of a 440 Hz tone at 48 kHz, in browser-sized chunks → 8 kHz telephone frames.
    pcm = _sine(48000, 1.0)
    for offset in range(0, len(pcm), 1920):
        await ws.send_bytes(pcm[offset : offset + 1920])
    frames: list[bytes] = []
    while len(frames) < 47:  # the resampler may hold back a frame or two
        event = await call.next_event()
        assert isinstance(event, AudioIn)
        assert len(event.frame.pcm) == FRAME_BYTES
        frames.append(event.frame.pcm)
    audio = np.frombuffer(b"".join(frames[5:]), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * 8000 / len(audio)
    assert abs(peak_hz - 440) < 10  # resampled, not just relabelled

    await ws.send_json({"type": "text", "text": "  les horaires de la mairie  "})
    typed = await call.next_of(TextIn)
    assert typed.text == "les horaires de la mairie"
    await ws.send_json({"type": "dtmf", "digit": "0"})
    assert (await call.next_of(DtmfIn)).digit == "0"

    # The bot's audio reaches the browser as 8 kHz PCM; flush is passed on.
    bot_frame = AudioFrame(_sine(8000, 0.02, 300.0))
    await call.transport.send(bot_frame)
    message = await ws.receive(timeout=5)
    assert message.type == WSMsgType.BINARY and message.data == bot_frame.pcm
    await call.transport.flush()
    assert (await _receive_until(ws, "flush"))["type"] == "flush"

    # The page sees the live events of its own call only.
    env.hub.publish(CallEvent("un-autre-appel", "caller", {"text": "pas pour vous"}))
    env.hub.publish(
        CallEvent(call.transport.call_id, "caller", {"text": "pour vous", "asr_confidence": 0.7})
    )
    relayed = await _receive_until(ws, "event")
    assert relayed["kind"] == "caller" and relayed["text"] == "pour vous"

    # Handoff: the page gets the decision, then "ended", then the socket closes.
    env.hub.publish(
        CallEvent(call.transport.call_id, "handoff", {"reason": "demande", "summary": "s"})
    )
    await call.transport.end()
    handoff = await _receive_until(ws, "event")
    assert handoff["kind"] == "handoff" and handoff["reason"] == "demande"
    assert (await _receive_until(ws, "ended"))["type"] == "ended"
    assert await _drain_until_closed(ws)
    hung_up = await call.next_of(CallerHungUp)
    assert hung_up.reason
    await asyncio.wait_for(call.finished.wait(), 5)


async def test_softphone_hangup_and_bad_messages(env: Env) -> None:
    ws = await env.client.ws_connect("/ws/softphone")
    await ws.send_json({"type": "start", "sample_rate": 16000})
    await _receive_until(ws, "ready")
    call = await env.desk.next_call()
    for bad, expected in [
        ("pas du json", "illisible"),
        (json.dumps({"type": "dtmf", "digit": "A"}), "Touche"),
        (json.dumps({"type": "text", "text": ""}), "vide"),
        (json.dumps({"type": "text", "text": "x" * 501}), "trop long"),
        (json.dumps({"type": "voler"}), "inconnu"),
    ]:
        await ws.send_str(bad)
        assert expected in (await _receive_until(ws, "error"))["message"]
    await ws.send_bytes(b"\x01\x02\x03")  # half a sample
    assert "impair" in (await _receive_until(ws, "error"))["message"]
    await ws.send_json({"type": "hangup"})
    assert isinstance(await call.next_of(CallerHungUp), CallerHungUp)
    await asyncio.wait_for(call.finished.wait(), 5)
    await ws.close()


async def test_softphone_too_many_bad_messages_end_the_call(env: Env) -> None:
    ws = await env.client.ws_connect("/ws/softphone")
    await ws.send_json({"type": "start", "sample_rate": 16000})
    await _receive_until(ws, "ready")
    call = await env.desk.next_call()
    for _ in range(6):
        await ws.send_str("{")
    assert await _drain_until_closed(ws)
    await call.next_of(CallerHungUp)


async def test_softphone_typing_notices_reach_the_call(tmp_path: Path) -> None:
    environment = await _env(tmp_path, limits=WebLimits(typing_interval_s=0.2))
    try:
        ws = await environment.client.ws_connect("/ws/softphone")
        await ws.send_json({"type": "start", "sample_rate": 16000})
        await _receive_until(ws, "ready")
        call = await environment.desk.next_call()
        assert isinstance(await call.next_event(), CallStarted)
        for _ in range(20):  # a page that sends far too many
            await ws.send_json({"type": "typing"})
        await ws.send_json({"type": "text", "text": "bonjour"})
        delivered = [await call.next_event(), await call.next_event()]
        assert [type(e) for e in delivered] == [CallerActive, TextIn]  # the burst: one notice
        # Malformed ones get an error; the call goes on.
        await ws.send_str('{"type": "typing"')
        assert "illisible" in (await _receive_until(ws, "error"))["message"]
        await ws.send_json({"type": ["typing"]})
        assert "inconnu" in (await _receive_until(ws, "error"))["message"]
        await asyncio.sleep(0.25)
        await ws.send_json({"type": "typing"})
        assert isinstance(await call.next_event(), CallerActive)
        assert not call.finished.is_set() and not ws.closed
        await ws.send_json({"type": "hangup"})
        await call.next_of(CallerHungUp)
        await asyncio.wait_for(call.finished.wait(), 5)
        await ws.close()
    finally:
        await environment.client.close()
        await environment.records.close()


async def test_softphone_refuses_a_bad_or_missing_start(env: Env) -> None:
    ws = await env.client.ws_connect("/ws/softphone")
    await ws.send_json({"type": "start", "sample_rate": 1})
    assert "sample_rate" in (await _receive_until(ws, "error"))["message"]
    assert await _drain_until_closed(ws)
    silent = await env.client.ws_connect("/ws/softphone")  # says nothing: cut after 1 s
    assert await _drain_until_closed(silent, timeout=5)
    assert env.desk.calls.empty()  # no call was started for either


async def test_softphone_audio_faster_than_real_time_is_refused(env: Env) -> None:
    ws = await env.client.ws_connect("/ws/softphone")
    await ws.send_json({"type": "start", "sample_rate": 8000})
    await _receive_until(ws, "ready")
    call = await env.desk.next_call()
    await ws.send_bytes(bytes(8000 * 2 * 6))  # 6 s of audio at once
    assert "temps réel" in (await _receive_until(ws, "error"))["message"]
    await ws.send_json({"type": "hangup"})
    await call.next_of(CallerHungUp)


async def test_softphone_huge_message_closes_the_call(env: Env) -> None:
    ws = await env.client.ws_connect("/ws/softphone")
    await ws.send_json({"type": "start", "sample_rate": 48000})
    await _receive_until(ws, "ready")
    call = await env.desk.next_call()
    await ws.send_bytes(bytes(1024 * 1024))
    message = await ws.receive(timeout=5)
    while message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
        message = await ws.receive(timeout=5)
    assert message.type == WSMsgType.CLOSE
    assert message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert isinstance(await call.next_of(CallerHungUp), CallerHungUp)


async def test_a_softphone_that_never_reads_is_hung_up(tmp_path: Path) -> None:
    environment = await _env(tmp_path, limits=WebLimits(send_timeout_s=0.5, softphone_queue=50))
    try:
        host, port = str(environment.client.host), int(environment.client.port or 0)
        stalled = await asyncio.to_thread(_never_reading_websocket, host, port, "/ws/softphone")
        # A masked client text frame: the start message.
        payload = json.dumps({"type": "start", "sample_rate": 8000}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        stalled.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        call = await environment.desk.next_call()
        frame = AudioFrame(bytes(FRAME_BYTES))
        for _ in range(20000):  # far more than the socket buffers hold
            await call.transport.send(frame)
            if call.transport.outbox.dropped:
                break
            await asyncio.sleep(0)
        assert call.transport.outbox.dropped
        assert isinstance(await call.next_of(CallerHungUp), CallerHungUp)
        await asyncio.wait_for(call.finished.wait(), 5)
        stalled.close()
    finally:
        await environment.client.close()
        await environment.records.close()


async def test_too_many_browser_calls_are_refused(tmp_path: Path) -> None:
    environment = await _env(tmp_path, limits=WebLimits(max_browser_calls=1))
    try:
        first = await environment.client.ws_connect("/ws/softphone")
        await first.send_json({"type": "start", "sample_rate": 8000})
        await _receive_until(first, "ready")
        second = await environment.client.ws_connect("/ws/softphone")
        assert "Trop d'appels" in (await _receive_until(second, "error"))["message"]
        assert await _drain_until_closed(second)
        await first.close()
    finally:
        await environment.client.close()
        await environment.records.close()

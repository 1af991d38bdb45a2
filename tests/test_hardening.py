"""Hardening (issue 15): what another web site, a LAN neighbour, a careless file mode or a
loose service unit could do, refused. The threat model these guard: docs/securite.md.

- the console's and softphone's WebSockets (and any other path asked for an upgrade) refuse a
  foreign ``Origin`` with 403, logged without the token; same origin is accepted;
- every response carries the Content-Security-Policy and the other security headers, and the
  pages load nothing from another host, with no inline script or style;
- the login cookie is HttpOnly, SameSite=Strict, and Secure under TLS (the server's own, or a
  TLS-terminating proxy's ``console.public_origin``);
- without a token, the console and the softphone answer on loopback only, and only to requests
  addressed to a loopback name (DNS rebinding);
- a secrets file other users can read (or the group can change) is refused, naming the file
  and the fix;
- the systemd unit's sandbox directives.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from voicebot.console.app import make_app
from voicebot.console.auth import COOKIE_NAME, check_access
from voicebot.console.context import STATIC_DIR, WebLimits
from voicebot.core.config import Settings, load_settings, with_caller_hash_key
from voicebot.core.errors import ConfigError
from voicebot.core.events import CallHub
from voicebot.core.interfaces import CallerHungUp, MediaTransport
from voicebot.core.logs import redact_numbers
from voicebot.records.store import CallRecords

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "allonantes-voicebot.service"
TOKEN = "jeton-de-test-durcissement"
FOREIGN = "http://malveillant.example"
PROXY_ORIGIN = "https://console.allonantes.example"


async def _take_call(transport: MediaTransport) -> None:
    """The call session's stand-in: reads the browser call until it hangs up."""
    async for event in transport.events():
        if isinstance(event, CallerHungUp):
            return


@dataclass
class Console:
    client: TestClient
    records: CallRecords
    settings: Settings

    @property
    def own_origin(self) -> str:
        return str(self.client.make_url("/").origin())

    def routes(self) -> list[str]:
        """Every GET path the server has (a dynamic part filled in, the static folder's file)."""
        paths = set()
        for route in self.client.app.router.routes():
            if route.method == "GET" and route.resource is not None:
                canonical = route.resource.canonical
                if canonical == "/static":
                    canonical = "/static/style.css"
                paths.add(re.sub(r"\{[^}]*\}", "x", canonical))
        return sorted(paths)


async def _console(
    tmp_path: Path, token: str = "", public_origin: str = "", tls: ssl.SSLContext | None = None
) -> Console:
    settings = Settings().replace("paths", data_dir=tmp_path)
    settings = settings.replace("console", token=token, public_origin=public_origin)
    records = CallRecords.open(settings)
    app = make_app(settings, CallHub(), records, _take_call, WebLimits(start_timeout_s=2.0))
    server = TestServer(app, scheme="https" if tls else "http")
    await server.start_server(ssl=tls)
    client = TestClient(server)
    await client.start_server()
    return Console(client, records, settings)


@pytest_asyncio.fixture(loop_scope="function")
async def open_console(tmp_path: Path) -> AsyncIterator[Console]:
    console = await _console(tmp_path)
    yield console
    await console.client.close()
    await console.records.close()


@pytest_asyncio.fixture(loop_scope="function")
async def guarded(tmp_path: Path) -> AsyncIterator[Console]:
    console = await _console(tmp_path, token=TOKEN)
    yield console
    await console.client.close()
    await console.records.close()


@pytest_asyncio.fixture(loop_scope="function")
async def behind_proxy(tmp_path: Path) -> AsyncIterator[Console]:
    console = await _console(tmp_path, token=TOKEN, public_origin=PROXY_ORIGIN)
    yield console
    await console.client.close()
    await console.records.close()


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def _handshake_status(console: Console, path: str, headers: dict[str, str]) -> int:
    """The status of a WebSocket handshake on ``path`` (101 when it was accepted)."""
    try:
        ws = await console.client.ws_connect(path, headers=headers)
    except aiohttp.WSServerHandshakeError as refused:
        return refused.status
    await ws.close()
    return 101


async def _softphone_ready(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    await ws.send_str(json.dumps({"type": "start", "sample_rate": 16000}))
    while True:
        message = await ws.receive(timeout=10.0)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        data: dict[str, object] = json.loads(message.data)
        if data.get("type") in ("ready", "error"):
            return data


# ---- Origin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [FOREIGN, "null", "http://127.0.0.1.malveillant.example"])
async def test_every_websocket_refuses_a_foreign_origin(
    guarded: Console, origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    routes = guarded.routes()
    assert {"/ws/console", "/ws/softphone"} <= set(routes)
    # Every path, asked for an upgrade: a WebSocket added later is covered the same way.
    # /metrics answers loopback peers before the guard, read-only, never as a WebSocket.
    for path in [p for p in routes if p != "/metrics"]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="voicebot.console.auth"):
            # Even with the right token: the token would be the operator's browser's own.
            status = await _handshake_status(guarded, path, {"Origin": origin, **BEARER})
        assert status == 403, path
        logged = caplog.text
        # the origin as logged: digits in it are masked once the bot's log filter is on
        # (another test may have installed it), like any number that could be a caller's
        shown = {repr(origin), repr(redact_numbers(origin))}
        assert "foreign Origin" in logged and any(o in logged for o in shown), logged
        assert path in logged
        assert TOKEN not in logged


async def test_same_origin_websockets_are_accepted(guarded: Console) -> None:
    own = {"Origin": guarded.own_origin, **BEARER}
    ws = await guarded.client.ws_connect("/ws/console", headers=own)
    message = await ws.receive_json(timeout=10.0)
    assert message["type"] == "snapshot"
    await ws.close()
    ws = await guarded.client.ws_connect("/ws/softphone", headers=own)
    assert (await _softphone_ready(ws))["type"] == "ready"
    await ws.close()


async def test_a_client_without_origin_still_needs_the_token(guarded: Console) -> None:
    """No Origin: not a browser (browsers always send one on a WebSocket): the token decides."""
    for path in ("/ws/console", "/ws/softphone"):
        assert await _handshake_status(guarded, path, {}) == 401
        assert await _handshake_status(guarded, path, {"Authorization": "Bearer faux"}) == 403
        assert await _handshake_status(guarded, path, BEARER) == 101


async def test_a_foreign_origin_may_not_post_a_login(guarded: Console) -> None:
    response = await guarded.client.post(
        "/login", data={"token": TOKEN, "next": "/"}, headers={"Origin": FOREIGN},
        allow_redirects=False,
    )  # fmt: skip
    assert response.status == 403
    assert COOKIE_NAME not in response.cookies


async def test_behind_a_tls_proxy_its_public_origin_is_accepted(behind_proxy: Console) -> None:
    assert await _handshake_status(
        behind_proxy, "/ws/console", {"Origin": PROXY_ORIGIN, **BEARER}
    ) == 101  # fmt: skip
    # Same host, another scheme: another origin.
    plain = PROXY_ORIGIN.replace("https://", "http://")
    assert await _handshake_status(behind_proxy, "/ws/console", {"Origin": plain, **BEARER}) == 403
    # The server's own address stays usable (an operator on the machine itself).
    own = {"Origin": behind_proxy.own_origin, **BEARER}
    assert await _handshake_status(behind_proxy, "/ws/softphone", own) == 101


@pytest.mark.parametrize(
    "origin", ["https://console.example.fr/", "console.example.fr", "https://Console.fr", "ftp://x"]
)
def test_public_origin_must_be_an_origin(origin: str) -> None:
    with pytest.raises(ConfigError, match="public_origin must be scheme://host"):
        load_settings(environ={"VOICEBOT_CONSOLE_PUBLIC_ORIGIN": origin})
    ok = load_settings(
        environ={"VOICEBOT_CONSOLE_PUBLIC_ORIGIN": "https://console.example.fr:8443"}
    )
    assert ok.console.public_origin == "https://console.example.fr:8443"


# ---- headers and pages ------------------------------------------------------------------------

PAGES = ("/", "/appeler", "/tableau-de-bord", "/ameliorer", "/transparence", "/login")
OTHER = ("/static/style.css", "/static/console.js", "/api/calls", "/healthz", "/pas-de-page")


def _policy(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


@pytest.mark.parametrize("path", PAGES + OTHER)
async def test_every_response_sends_the_security_headers(guarded: Console, path: str) -> None:
    headers = BEARER if path != "/login" else {}
    response = await guarded.client.get(path, headers=headers, allow_redirects=False)
    assert response.status != 401 and response.status < 500, (path, response.status)
    policy = _policy(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"] and policy["form-action"] == ["'self'"]
    for directive, sources in policy.items():
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*"} & set(sources), directive
        # connect-src names this server's WebSocket addresses; nothing else names a host.
        hosts = [s for s in sources if "://" in s]
        assert all(h.split("://", 1)[1] == f"127.0.0.1:{guarded.client.port}" for h in hosts)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in ("no-referrer", "same-origin")
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_a_forged_host_adds_no_directive(open_console: Console) -> None:
    response = await open_console.client.get("/healthz", headers={"Host": "127.0.0.1;script-src *"})
    policy = _policy(response.headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"] and "*" not in str(policy)


class _Resources(HTMLParser):
    """What a page loads (script, style sheet, image, frame…), and its inline code."""

    # tag → the attribute that names what it loads
    LOADS: ClassVar[dict[str, str]] = {
        "script": "src", "img": "src", "iframe": "src", "embed": "src", "audio": "src",
        "video": "src", "source": "src", "object": "data", "link": "href",
    }  # fmt: skip
    # <link rel=…> that load something (a link rel="author" does not)
    LINKS_THAT_LOAD = ("stylesheet", "icon", "preload", "manifest")

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        loads = tag != "link" or values.get("rel") in self.LINKS_THAT_LOAD
        if tag in self.LOADS and self.LOADS[tag] in values and loads:
            self.loaded.append(values[self.LOADS[tag]])
        if tag == "script" and "src" not in values:
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {name}=" for name in values if name.startswith("on")]
        if "style" in values:
            self.inline.append(f"{tag} style=")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("<script> inline")


@pytest.mark.parametrize("path", PAGES)
async def test_pages_load_nothing_from_elsewhere_and_run_no_inline_code(
    guarded: Console, path: str
) -> None:
    headers = BEARER if path != "/login" else {}
    response = await guarded.client.get(path, headers=headers)
    assert response.status == 200 and response.content_type == "text/html"
    page = _Resources()
    page.feed(await response.text())
    assert page.loaded, "a page with no style sheet: the parser missed it"
    assert all(url.startswith("/") and not url.startswith("//") for url in page.loaded), page.loaded
    assert page.inline == []


def test_static_files_name_no_other_host() -> None:
    files = sorted(p for p in STATIC_DIR.iterdir() if p.is_file())
    assert {"console.js", "softphone.js", "style.css", "console.html"} <= {p.name for p in files}
    other_host = re.compile(r"(?i)(https?:|wss?:)?//[a-z0-9-]+(\.[a-z0-9-]+)+")
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not other_host.search(text), (path.name, other_host.search(text))
        assert "@import" not in text, path.name


# ---- the login cookie -------------------------------------------------------------------------


async def _login_cookie(console: Console) -> str:
    response = await console.client.post(
        "/login", data={"token": TOKEN, "next": "/"}, allow_redirects=False
    )
    assert response.status == 303
    cookies = [v for v in response.headers.getall("Set-Cookie") if v.startswith(COOKIE_NAME)]
    assert len(cookies) == 1
    return cookies[0]


def _flags(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")[1:]]
    return {p.partition("=")[0].lower(): p.partition("=")[2] for p in parts}


async def test_the_login_cookie_is_httponly_strict_and_not_secure_over_plain_http(
    guarded: Console,
) -> None:
    cookie = await _login_cookie(guarded)
    flags = _flags(cookie)
    assert "httponly" in flags and flags["samesite"] == "Strict" and flags["path"] == "/"
    assert "secure" not in flags  # a browser would not send it back over plain http
    assert TOKEN not in cookie


async def test_the_login_cookie_is_secure_behind_a_tls_proxy(behind_proxy: Console) -> None:
    flags = _flags(await _login_cookie(behind_proxy))
    assert "secure" in flags and "httponly" in flags and flags["samesite"] == "Strict"


@pytest.fixture
def tls(tmp_path: Path) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is missing: `make setup` installs it (DEBIAN_PKGS)"
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_the_login_cookie_is_secure_when_the_server_does_tls(
    tmp_path: Path, tls: ssl.SSLContext
) -> None:
    console = await _console(tmp_path, token=TOKEN, tls=tls)
    try:
        response = await console.client.post(
            "/login", data={"token": TOKEN, "next": "/"}, allow_redirects=False, ssl=False
        )
        assert response.status == 303
        cookie = next(v for v in response.headers.getall("Set-Cookie") if v.startswith(COOKIE_NAME))
        flags = _flags(cookie)
        assert "secure" in flags and "httponly" in flags and flags["samesite"] == "Strict"
    finally:
        await console.client.close()
        await console.records.close()


# ---- the token rule off loopback, the softphone included ---------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "voicebot.example"])  # noqa: S104 — hosts refused, nothing is bound
def test_no_token_no_listening_off_loopback(host: str) -> None:
    settings = Settings().replace("server", host=host)
    with pytest.raises(ConfigError, match="VOICEBOT_CONSOLE_TOKEN"):
        check_access(settings)
    check_access(settings.replace("console", token=TOKEN))
    for loopback in ("127.0.0.1", "::1", "localhost"):
        check_access(Settings().replace("server", host=loopback))


async def test_the_softphone_needs_the_token_like_the_console(guarded: Console) -> None:
    page = await guarded.client.get("/appeler", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"].startswith("/login")
    assert await _handshake_status(guarded, "/ws/softphone", {}) == 401
    ws = await guarded.client.ws_connect("/ws/softphone", headers=BEARER)
    assert (await _softphone_ready(ws))["type"] == "ready"
    await ws.close()


async def test_without_a_token_only_a_loopback_name_is_answered(
    open_console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    """A web page whose name was rebound to 127.0.0.1 (DNS rebinding) is same-origin with
    itself: its requests carry its own name in Host, and are refused."""
    port = open_console.client.port
    for path in ("/", "/appeler", "/api/calls", "/tableau-de-bord"):
        with caplog.at_level(logging.WARNING, logger="voicebot.console.auth"):
            response = await open_console.client.get(
                path, headers={"Host": f"malveillant.example:{port}"}
            )
        assert response.status == 403, path
        assert "not a loopback Host" in caplog.text
    rebound = f"http://malveillant.example:{port}"
    status = await _handshake_status(
        open_console,
        "/ws/softphone",
        {"Host": f"malveillant.example:{port}", "Origin": rebound},
    )
    assert status == 403
    for name in ("127.0.0.1", "localhost", "[::1]"):
        response = await open_console.client.get("/api/calls", headers={"Host": f"{name}:{port}"})
        assert response.status == 200, name
    # The public card stays public, whatever name it was asked by.
    response = await open_console.client.get("/healthz", headers={"Host": "allonantes.example"})
    assert response.status == 200


# ---- secrets files ----------------------------------------------------------------------------


def _secret(path: Path, text: str, mode: int) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


SECRET_FILES = [
    ("VOICEBOT_CONSOLE_TOKEN", ("console", "token")),
    ("VOICEBOT_AMI_SECRET", ("ami", "secret")),
]


def _read(variable: str, env: dict[str, str]) -> str:
    settings = load_settings(environ=env)
    if variable == "VOICEBOT_CALLER_HASH_KEY":
        return with_caller_hash_key(settings, env).records.caller_hash_key
    section, field = dict(SECRET_FILES)[variable]
    value: str = getattr(getattr(settings, section), field)
    return value


ALL_SECRETS = [v for v, _ in SECRET_FILES] + ["VOICEBOT_CALLER_HASH_KEY"]


@pytest.mark.parametrize("variable", ALL_SECRETS)
@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620, 0o640, 0o666])
def test_a_secret_file_others_can_read_or_change_is_refused(
    tmp_path: Path, variable: str, mode: int
) -> None:
    path = _secret(tmp_path / "secret", "s3cr3t-valeur\n", mode)
    env = {"HOME": str(tmp_path), f"{variable}_FILE": str(path)}
    with pytest.raises(ConfigError) as refused:
        _read(variable, env)
    message = str(refused.value)
    assert str(path) in message and f"chmod 600 {path}" in message
    assert f"{mode:04o}" in message and "s3cr3t" not in message
    path.chmod(0o600)
    assert _read(variable, env) == "s3cr3t-valeur"  # the newline stripped
    path.chmod(0o400)
    assert _read(variable, env) == "s3cr3t-valeur"


@pytest.mark.parametrize("variable", ALL_SECRETS)
def test_the_environment_wins_over_the_file(tmp_path: Path, variable: str) -> None:
    path = _secret(tmp_path / "secret", "du-fichier", 0o600)
    env = {"HOME": str(tmp_path), variable: "de-l-environnement", f"{variable}_FILE": str(path)}
    assert _read(variable, env) == "de-l-environnement"


@pytest.mark.parametrize("variable", [v for v, _ in SECRET_FILES])
def test_an_empty_or_missing_secret_file_is_refused(tmp_path: Path, variable: str) -> None:
    empty = _secret(tmp_path / "empty", "\n", 0o600)
    with pytest.raises(ConfigError, match=f"{re.escape(str(empty))} is empty"):
        load_settings(environ={f"{variable}_FILE": str(empty)})
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"{re.escape(str(missing))} does not exist"):
        load_settings(environ={f"{variable}_FILE": str(missing)})


CREDENTIALS = {
    "VOICEBOT_CONSOLE_TOKEN": "console-token",
    "VOICEBOT_AMI_SECRET": "ami-secret",
    "VOICEBOT_CALLER_HASH_KEY": "caller-hash-key",
}


@pytest.mark.parametrize("variable", ALL_SECRETS)
def test_systemd_credentials_are_read_and_checked(tmp_path: Path, variable: str) -> None:
    """LoadCredential=: systemd gives the service $CREDENTIALS_DIRECTORY, its own folder.
    It may grant the service's user read access by an ACL, shown as the group's read bit
    (0440): accepted there, but any access for others is still refused."""
    folder = tmp_path / "credentials"
    folder.mkdir(mode=0o500)
    path = folder / CREDENTIALS[variable]
    try:
        _secret(path, "de-systemd\n", 0o400)
        env = {"HOME": str(tmp_path), "CREDENTIALS_DIRECTORY": str(folder)}
        assert _read(variable, env) == "de-systemd"
        path.chmod(0o440)
        assert _read(variable, env) == "de-systemd"
        path.chmod(0o444)
        with pytest.raises(ConfigError, match=f"chmod 600 {re.escape(str(path))}"):
            _read(variable, env)
        # The environment, or a file the operator named, wins over the credential.
        assert _read(variable, {**env, variable: "env"}) == "env"
    finally:
        folder.chmod(0o700)


def test_without_credentials_nothing_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    folder.mkdir()
    settings = load_settings(environ={"CREDENTIALS_DIRECTORY": str(folder)})
    assert settings.console.token == "" and settings.ami.secret == ""


# ---- the systemd unit -------------------------------------------------------------------------


def _unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd's syntax: sections of KEY=VALUE lines; a key may repeat (LoadCredential)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"a setting outside any section: {line}"
        key, equals, value = line.partition("=")
        assert equals, f"not KEY=VALUE: {line}"
        current.append((key.strip(), value.strip()))
    return sections


def test_the_service_runs_sandboxed_as_its_own_user() -> None:
    service = _unit(UNIT.read_text(encoding="utf-8"))["Service"]
    settings: dict[str, str] = {}
    for key, value in service:
        settings[key] = value  # the last one wins, as for systemd
    assert settings["User"] == "voicebot" and settings["User"] != "root"
    expected = {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "PrivateTmp": "true",
        "PrivateDevices": "true",
        "ProtectKernelTunables": "true",
        "ProtectKernelModules": "true",
        "ProtectControlGroups": "true",
        "RestrictNamespaces": "true",
        "LockPersonality": "true",
        "RestrictSUIDSGID": "true",
        "SystemCallFilter": "@system-service",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert settings.get(key) == value, key
    assert set(settings["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # Only its data folder and what the trainers change from the console are writable.
    assert settings["ReadWritePaths"].split() == [
        "/opt/allonantes-voicebot/var",
        "/opt/allonantes-voicebot/nlu/data",
        "/opt/allonantes-voicebot/nlu/models",
    ]
    assert not {"ReadWriteDirectories", "StateDirectory", "LogsDirectory"} & set(settings)
    # Real-time priority for the audio pacing thread only, and at most 10 (voicebot.core.realtime).
    assert settings.get("RestrictRealtime") == "false"
    assert settings.get("LimitRTPRIO") == "10"
    # Not MemoryDenyWriteExecute: oneDNN's JIT (TensorFlow, CTranslate2); the unit says why.
    assert "MemoryDenyWriteExecute" not in settings
    assert "MemoryDenyWriteExecute=true: " in UNIT.read_text(encoding="utf-8")
    # The secrets: systemd credentials, under the names the bot reads.
    credentials = {v.split(":", 1)[0] for k, v in service if k == "LoadCredential"}
    assert credentials == set(CREDENTIALS.values())
    assert not any(k == "Environment" and "SECRET" in v.upper() for k, v in service)
    # `systemctl reload`: SIGHUP, a new model or knowledge base in service without a restart
    # (voicebot.dialogue.live_reload), the same in the instances' template (checked below).
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # Ready when it listens, and killed when its calls' loop stops feeding the watchdog (a
    # hung bot holds its callers in silence: voicebot.core.sd_notify), then restarted.
    assert (settings["Type"], settings["NotifyAccess"]) == ("notify", "main")
    assert 0 < int(settings["WatchdogSec"]) <= 30 and settings["Restart"] == "on-failure"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: `make setup` installs systemd"
    # The program is not installed here: verify the unit around a program that exists.
    text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", UNIT.read_text(encoding="utf-8"))
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=120
    )
    problems = [line for line in done.stderr.splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_ruff_security_rules_are_on() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("\n[tool.ruff.lint]\n", 1)[1].split("\n[", 1)[0]
    select = re.search(r"(?m)^select = \[(.*?)\]", section)
    assert select is not None and '"S"' in select.group(1).split(", ")
    assert "ruff check voicebot telephony tests nlu scripts" in (ROOT / "Makefile").read_text(
        encoding="utf-8"
    )


TEMPLATE = ROOT / "deploy" / "systemd" / "allonantes-voicebot@.service"


def test_the_instances_template_is_the_service_per_instance() -> None:
    """allonantes-voicebot@.service (N instances on a host): the single unit's user,
    credentials and sandbox, plus the instance's own settings (ports, data folder, name)."""
    single = _unit(UNIT.read_text(encoding="utf-8"))
    template = _unit(TEMPLATE.read_text(encoding="utf-8"))
    per_instance = {"EnvironmentFile", "Environment", "ExecStart", "ExecStartPre"}
    common = [(k, v) for k, v in single["Service"] if k not in per_instance]
    assert [(k, v) for k, v in template["Service"] if k not in per_instance] == common
    service = template["Service"]
    environment = [v for k, v in service if k == "Environment"]
    assert "VOICEBOT_PATHS_DATA_DIR=/opt/allonantes-voicebot/var/%i" in environment
    assert "VOICEBOT_RECORDS_HOST_ID=%H-%i" in environment
    files = [v for k, v in service if k == "EnvironmentFile"]
    # The instance's file comes last (its ports win) and is required (no leading "-").
    assert files[-1] == "/etc/allonantes-voicebot/instances/%i.env"
    exec_start = dict(service)["ExecStart"]
    assert exec_start == "/opt/allonantes-voicebot/.venv/bin/voicebot serve $VOICEBOT_SERVE_ARGS"


def test_systemd_accepts_the_instances_template(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: `make setup` installs systemd"
    text = TEMPLATE.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/bin/true", text)
    text = re.sub(r"(?m)^ExecStartPre=.*$", "ExecStartPre=/bin/true", text)
    copy = tmp_path / "allonantes-voicebot@2.service"  # an instance of the template
    copy.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=120
    )
    problems = [line for line in done.stderr.splitlines() if copy.name in line]
    assert done.returncode == 0 and not problems, done.stderr

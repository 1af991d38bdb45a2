"""Who may use the console: the token, its session cookie, failed logins per address
(``LoginThrottle``), the guard every request passes, and the login and logout pages.

With ``VOICEBOT_CONSOLE_TOKEN`` set every page, API and WebSocket needs the token (login
form, then a cookie; or ``Authorization: Bearer``); without a token the server refuses to
listen anywhere but on the loopback address (``check_access``: the softphone, on the same
server, follows the same rule), and answers only requests addressed to a loopback name (a
web page that rebinds its own name to 127.0.0.1 is refused). An address that gives a wrong
token 5 times within a minute is refused (HTTP 429) until the minute is up.

Another web site may not drive the console through the operator's browser: a form post or a
WebSocket whose ``Origin`` is not this server (or ``console.public_origin``, behind a TLS
proxy) is refused with 403 and logged (never with the token or the cookie). A request with
no ``Origin`` at all is let through to the token check: browsers always send one on a
WebSocket and on a cross-site post, so only a non-browser client (a script holding the
token, the tests, curl) omits it, and such a client could write any ``Origin`` anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import ipaddress
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from aiohttp import web
from yarl import URL

from voicebot.console.context import CONTEXT, STATIC_DIR, WebContext, json_error
from voicebot.core.config import Settings
from voicebot.core.errors import ConfigError

log = logging.getLogger(__name__)

COOKIE_NAME = "allonantes_console"
COOKIE_MAX_AGE_S = 12 * 3600
# /transparence: the public algorithm card, for anyone, read-only.
PUBLIC_PATHS = ("/login", "/healthz", "/favicon.ico", "/transparence")
PUBLIC_PREFIXES = ("/static/",)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(settings: Settings) -> None:
    """No token: loopback only. Raises ConfigError."""
    host = settings.server.host
    if not settings.console.token and not is_loopback(host):
        raise ConfigError(
            f"the console would be open to anyone on {host}: set VOICEBOT_CONSOLE_TOKEN, "
            "or keep server.host on 127.0.0.1"
        )


def token_matches(given: str, token: str) -> bool:
    """Constant time, whatever the lengths: the digests compared always have the same size."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode("utf-8")).digest(),
        hashlib.sha256(token.encode("utf-8")).digest(),
    )


def _session_value(token: str) -> str:
    """What the cookie holds: derived from the token, never the token itself."""
    return hmac.new(
        token.encode("utf-8"), b"allonantes-console-session", hashlib.sha256
    ).hexdigest()


def _auth_state(request: web.Request, token: str) -> str:
    """'ok', 'missing' or 'wrong'."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and token_matches(given.strip(), token):
            return "ok"
        return "wrong"
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie is None:
        return "missing"
    # The cookie is computable from a guessed token: a wrong one is a wrong token too.
    if token_matches(cookie, _session_value(token)):
        return "ok"
    return "wrong"


def client_address(remote: str | None) -> str:
    """The address failed logins are counted against: the TCP peer, never a header.

    X-Forwarded-For and the like are NOT trusted: anyone can write them, so an attacker would
    pick a new "address" for every guess. (Behind a reverse proxy every browser shares the
    proxy's address, and so shares its limit.) An IPv6 client owns a whole /64: counted as one.
    """
    if not remote:
        return "inconnue"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    """Wrong tokens per client address: after ``max_failures`` within ``window_s`` the address
    may not try again (not even the right token) until the oldest of them is ``window_s`` old.

    Memory stays bounded: an address whose failures are all older than the window is
    forgotten, and at most ``max_addresses`` are kept (the one that failed longest ago goes).
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        max_addresses: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        # address → times of its recent failures; the address that failed last comes last
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str) -> float:
        """Seconds before ``address`` may try a token again; 0 when it may now."""
        failures = self._failures.get(address)
        if failures is None or len(failures) < self.max_failures:
            return 0.0
        wait = failures[0] + self.window_s - self.clock()
        return max(0.0, wait)

    def failed(self, address: str) -> bool:
        """Count a wrong token; True when this failure is the one that blocks the address."""
        now = self.clock()
        self._forget_before(now - self.window_s)
        failures = self._failures.pop(address, None)
        if failures is None:
            failures = deque(maxlen=self.max_failures)
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        failures.append(now)
        self._failures[address] = failures
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return len(failures) >= self.max_failures

    def _forget_before(self, limit: float) -> None:
        while self._failures:
            oldest = next(iter(self._failures))
            if self._failures[oldest][-1] > limit:
                return
            del self._failures[oldest]


def is_websocket_upgrade(request: web.Request) -> bool:
    """A WebSocket handshake, whatever its path."""
    upgrade = request.headers.get("Upgrade", "")
    return "websocket" in (part.strip().lower() for part in upgrade.split(","))


def _same_origin(request: web.Request) -> bool:
    """A browser's Origin must be this server, or the public address a TLS-terminating proxy
    serves it at (no other site may drive the console). No Origin: not a browser."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    public = request.app[CONTEXT].settings.console.public_origin
    return origin == f"{request.scheme}://{request.host}" or (bool(public) and origin == public)


def _loopback_host(request: web.Request) -> bool:
    """The request names this machine (``Host``): a page whose own name was rebound to
    127.0.0.1 (DNS rebinding) sends its own name, and is refused."""
    try:
        host = URL(f"http://{request.host}").host
    except ValueError:
        return False
    return host is not None and is_loopback(host)


def _refused(request: web.Request, why: str, detail: str, message: str) -> web.Response:
    """403, logged with the peer, the method and the path (never a header's secret)."""
    log.warning(
        "console: %s %s from %s refused: %s %.100r",
        request.method,
        request.path,
        client_address(request.remote),
        why,
        detail,
    )
    return json_error(403, message)


def secure_cookie(request: web.Request) -> bool:
    """The login cookie is sent over TLS only when the browser reaches the console over TLS:
    the server's own (request.secure) or a TLS-terminating proxy's (console.public_origin)."""
    public = request.app[CONTEXT].settings.console.public_origin
    return request.secure or public.startswith("https://")


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    path = request.path
    websocket = is_websocket_upgrade(request) or path.startswith("/ws/")
    is_api = websocket or path.startswith("/api/")
    if (request.method == "POST" or websocket) and not _same_origin(request):
        origin = request.headers.get("Origin", "")
        return _refused(request, "foreign Origin", origin, "Origine refusée.")
    context = request.app[CONTEXT]
    token = context.settings.console.token
    public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
    if not token and not public and not _loopback_host(request):
        return _refused(request, "not a loopback Host", request.host, "Hôte refusé.")
    if token and not public:
        state = _auth_state(request, token)
        target = _safe_next(path)
        if state == "missing":
            if is_api:
                return json_error(401, "Authentification requise.")
            raise web.HTTPSeeOther(f"/login?next={target}")
        address = client_address(request.remote)
        wait = context.logins.retry_after(address)
        if wait > 0:
            # Even the right token is refused now: otherwise guessing would go on here.
            return _too_many_tries(wait, target, is_api)
        if state == "wrong":
            _count_failure(context, address)
            if is_api:
                refused: web.Response = json_error(403, "Jeton refusé.")
            else:
                refused = web.HTTPSeeOther(f"/login?next={target}")
            if COOKIE_NAME in request.cookies:
                # Stale after a token change: not sent again, so not counted again.
                refused.del_cookie(COOKIE_NAME, path="/")
            if isinstance(refused, web.HTTPException):
                raise refused
            return refused
    return await handler(request)


def _count_failure(context: WebContext, address: str) -> None:
    logins = context.logins
    if logins.failed(address):  # once per block, not once per refused try
        log.warning(
            "console: %d wrong tokens from %s within %.0f s: its logins are refused for %.0f s",
            logins.max_failures,
            address,
            logins.window_s,
            logins.retry_after(address),
        )


def _too_many_tries(wait_s: float, target: str, is_api: bool) -> web.Response:
    seconds = max(1, math.ceil(wait_s))
    message = f"Trop de tentatives de connexion. Réessayez dans {seconds} secondes."
    response = json_error(429, message) if is_api else _render_login(message, target, status=429)
    response.headers["Retry-After"] = str(seconds)
    return response


def _safe_next(target: str | None) -> str:
    return target if target in ("/", "/appeler", "/tableau-de-bord", "/ameliorer") else "/"


def _render_login(message: str, target: str, status: int = 200) -> web.Response:
    template = (STATIC_DIR / "login.html").read_text(encoding="utf-8")
    body = template.replace("{{message}}", html.escape(message)).replace(
        "{{next}}", html.escape(target)
    )
    return web.Response(text=body, content_type="text/html", status=status)


async def login_page(request: web.Request) -> web.StreamResponse:
    if not request.app[CONTEXT].settings.console.token:
        raise web.HTTPSeeOther("/")
    return _render_login("", _safe_next(request.query.get("next")))


async def login(request: web.Request) -> web.StreamResponse:
    context = request.app[CONTEXT]
    token = context.settings.console.token
    form = await request.post()
    target = _safe_next(str(form.get("next") or "/"))
    if not token:
        raise web.HTTPSeeOther(target)
    address = client_address(request.remote)
    wait = context.logins.retry_after(address)
    if wait > 0:
        return _too_many_tries(wait, target, is_api=False)
    given = str(form.get("token") or "")
    if not token_matches(given, token):
        log.warning("console: wrong token from %s", address)  # never the token tried
        _count_failure(context, address)
        await asyncio.sleep(context.limits.login_failure_delay_s)  # slows guessing down
        return _render_login("Jeton incorrect.", target, status=403)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        COOKIE_NAME,
        _session_value(token),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="Strict",
        secure=secure_cookie(request),
        path="/",
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE_NAME, path="/")
    raise response

"""Call control over the Asterisk Manager Interface (AMI), with panoramisk.

What the bot needs from AMI is small. Every way a call ends is a decision the dialplan
carries out (deploy/asterisk/extensions.conf, ``[allonantes-decision]``): just before it ends
the media session, the bot sets ``ALLO_DECISION`` on the caller's channel, ``raccrocher``
(hang up) or ``transfert`` (the queue, with the context as inherited variables
``__ALLO_HANDOFF_REASON``, ``__ALLO_INTENT``, ``__ALLO_SUMMARY`` that ``Queue(operators)`` and
the operator's phone show). A variable set through AMI is read by the dialplan's next
priority, so it must be on the channel before the media ends. Without it (AMI down) the
dialplan queues the caller: the fail-safe is a person. At the start of a call, the caller's
number (``CallerIDNum``, which AudioSocket does not carry) is read from the same ``Status``.

* **Connection.** ``AmiCallControl`` supervises one panoramisk connection: login, a
  ``Ping`` every ``ping_interval_s`` (a missing answer counts as a dead link), reconnection
  with exponential backoff capped at ``reconnect_max_s``. panoramisk's own fixed-delay
  reconnect and unchecked pinger are switched off so there is only one policy.
* **Finding the channel.** The dialplan sets ``ALLO_UUID`` (not inherited) on the caller's
  channel and passes the same UUID to the bot (AudioSocket's UUID, or the ``allo_uuid``
  query parameter of the WebSocket). ``find_channel`` asks ``Action: Status`` with
  ``Variables: ALLO_UUID``: one action lists every channel with that variable's value, and
  needs only the ``call`` write permission.
* **Never in the caller's way.** ``handoff`` returns False (and never raises) when AMI is
  unconfigured, down or slow (everything bounded by ``handoff_timeout_s``): the caller
  still reaches the queue, only the context is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from panoramisk import Manager
from panoramisk.message import Message

from telephony.audiosocket.versions import audiosocket_is_current
from voicebot.core.config import AmiSettings
from voicebot.core.interfaces import Handoff
from voicebot.core.logs import CallLogger, call_logger, redact_numbers

log = logging.getLogger("telephony.ami")

CALL_ID_VARIABLE = "ALLO_UUID"
DECISION_VARIABLE = "ALLO_DECISION"  # read by [allonantes-decision]; not inherited
HANG_UP = "raccrocher"
TRANSFER = "transfert"
REASON_VARIABLE = "__ALLO_HANDOFF_REASON"
INTENT_VARIABLE = "__ALLO_INTENT"
SUMMARY_VARIABLE = "__ALLO_SUMMARY"
MAX_REASON_CHARS = 32
MAX_INTENT_CHARS = 64
MAX_SUMMARY_CHARS = 200

# Channels on the bot's side of the call: they may carry the UUID too, but the context
# belongs on the caller's channel, the one that goes on to the queue.
_BOT_SIDE_CHANNELS = ("AudioSocket/", "WebSocket/")
# Variable values are substituted into dialplan application arguments, where these would
# split arguments or start an expression: they are replaced by spaces.
_DIALPLAN_SPECIALS = re.compile(r"[,|;()\[\]{}$\"\\^`]")
_SPACES = re.compile(r"\s+")


def sanitize_value(text: str, max_chars: int) -> str:
    """One short, safe line for a channel variable: no control characters (an AMI header
    ends at a newline), no raw phone number, no dialplan syntax, at most ``max_chars``."""
    text = redact_numbers(text)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    text = _DIALPLAN_SPECIALS.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def sanitize_name(text: str | None, max_chars: int) -> str:
    """An identifier (intent, reason): lower-case letters, digits, ``_``, ``.`` and ``-``."""
    folded = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9_.\-]+", "_", folded.lower()).strip("_")[:max_chars]


def handoff_variables(handoff: Handoff) -> dict[str, str]:
    """The transfer decision, and the inherited variables that carry its context to the
    operator. The decision comes last: the context is on the channel before it counts."""
    summary = handoff.summary or " / ".join(handoff.last_utterances[-2:])
    return {
        REASON_VARIABLE: sanitize_name(handoff.reason, MAX_REASON_CHARS),
        INTENT_VARIABLE: sanitize_name(handoff.intent, MAX_INTENT_CHARS),
        SUMMARY_VARIABLE: sanitize_value(summary, MAX_SUMMARY_CHARS),
        DECISION_VARIABLE: TRANSFER,
    }


def _caller_number(value: object) -> str | None:
    """Asterisk's CallerIDNum, or None when it has none ("<unknown>", empty, "anonymous")."""
    number = re.sub(r"[\s.\-]", "", str(value or ""))
    return number if re.fullmatch(r"\+?[0-9]{2,20}", number) else None


@dataclass(frozen=True)
class _CallerLine:
    channel: str
    caller_number: str | None


class AmiError(Exception):
    """AMI refused an action or is not reachable (internal: handoff turns it into False)."""


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager for one connection: no reconnect or pinger of its own."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.lost = asyncio.Event()

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            return  # the supervisor awaits the same future and sees the error
        super().connection_made(f)
        self._stop_pinger()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        self.authenticated = False
        self._stop_pinger()
        # Actions still waiting for an answer will never get one on this connection.
        while self.awaiting_actions:
            action = self.awaiting_actions.popleft()
            if not action.future.done():
                action.future.set_exception(AmiError("AMI connection lost"))
        self.lost.set()

    def _stop_pinger(self) -> None:
        pinger: asyncio.TimerHandle | None = getattr(self, "pinger", None)
        if pinger is not None:
            pinger.cancel()
            self.pinger = None


class AmiCallControl:
    """``voicebot.core.interfaces.CallControl`` over AMI (see the module docstring)."""

    def __init__(
        self,
        settings: AmiSettings,
        *,
        action_timeout_s: float = 2.0,
        handoff_timeout_s: float = 3.0,
        first_retry_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.action_timeout_s = action_timeout_s
        self.handoff_timeout_s = handoff_timeout_s
        self.first_retry_s = first_retry_s
        self._manager: _Manager | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.logins = 0  # successful logins since start (reconnects show here)
        self.last_error = ""
        self.asterisk_version = ""  # what CoreSettings said at the last login, if allowed

    @property
    def configured(self) -> bool:
        return bool(self.settings.host)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Start connecting in the background (the bot runs without AMI meanwhile)."""
        if not self.configured:
            log.info("AMI non configuré : les transferts se feront sans contexte")
            return
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="ami-supervisor")

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self.connected

    async def close(self) -> None:
        """Log off politely (if connected), then stop the supervisor and the connection."""
        manager = self._manager
        if manager is not None and self.connected:
            with contextlib.suppress(Exception):
                await self._request(manager, {"Action": "Logoff"})
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        self._drop()

    # --- CallControl -------------------------------------------------------------------------

    async def caller_number(self, call_id: str) -> str | None:
        """The caller's CallerIDNum (None if unknown or AMI cannot answer; never raises)."""
        if not self.connected:
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            line = await asyncio.wait_for(self._find(call_id), self.handoff_timeout_s)
            return line.caller_number if line is not None else None
        return None

    async def handoff(self, call_id: str, channel: str | None, handoff: Handoff) -> bool:
        """The caller goes to the queue with the context; False if it could not be set (the
        dialplan still queues the caller, without the context)."""
        return await self._decide(call_id, channel, handoff_variables(handoff), handoff.reason)

    async def hang_up(self, call_id: str, channel: str | None) -> bool:
        """Asterisk hangs the caller up after the media; False if that could not be set (the
        dialplan then queues the caller)."""
        return await self._decide(call_id, channel, {DECISION_VARIABLE: HANG_UP}, HANG_UP)

    async def find_channel(self, call_id: str) -> str | None:
        """The caller's Asterisk channel whose ``ALLO_UUID`` is ``call_id``; None if there is
        none, if ``call_id`` is not a UUID, or if AMI cannot answer (never raises)."""
        line = await self._find(call_id)
        return line.channel if line is not None else None

    # --- internals ---------------------------------------------------------------------------

    async def _decide(
        self, call_id: str, channel: str | None, variables: dict[str, str], what: str
    ) -> bool:
        clog = call_logger("telephony.ami", call_id)
        if not self.connected:
            clog.warning("AMI indisponible : décision %s non transmise (file d'attente)", what)
            return False
        try:
            return await asyncio.wait_for(
                self._set_variables(call_id, channel, variables, what, clog),
                self.handoff_timeout_s,
            )
        except asyncio.TimeoutError:
            clog.warning(
                "AMI trop lent (> %.1f s) : décision %s non transmise", self.handoff_timeout_s, what
            )
        except AmiError as exc:
            clog.warning("AMI : %s : décision %s non transmise", exc, what)
        except Exception:
            clog.exception("AMI : erreur inattendue : décision %s non transmise", what)
        return False

    async def _find(self, call_id: str) -> _CallerLine | None:
        try:
            wanted = str(uuid.UUID(call_id))
        except ValueError:
            return None
        try:
            replies = await self._action(
                {"Action": "Status", "Variables": CALL_ID_VARIABLE}, expect_list=True
            )
        except AmiError as exc:
            call_logger("telephony.ami", call_id).warning("recherche du canal impossible : %s", exc)
            return None
        return status_caller_line(replies, wanted)

    async def _set_variables(
        self,
        call_id: str,
        channel: str | None,
        variables: dict[str, str],
        what: str,
        clog: CallLogger,
    ) -> bool:
        target = await self.find_channel(call_id)
        if target is None and channel and not channel.startswith(_BOT_SIDE_CHANNELS):
            target = channel
        if target is None:
            clog.warning(
                "aucun canal Asterisk avec %s=%s : décision %s non transmise",
                CALL_ID_VARIABLE,
                call_id,
                what,
            )
            return False
        for variable, value in variables.items():
            reply = await self._action(
                {"Action": "Setvar", "Channel": target, "Variable": variable, "Value": value}
            )
            if not reply.success:
                raise AmiError(f"Setvar {variable} refusé ({reply.get('Message', '')})")
        clog.info("décision %s posée sur %s", what, target)
        return True

    async def _action(self, fields: dict[str, str], *, expect_list: bool = False) -> Any:
        manager = self._manager
        if manager is None or not self.connected:
            raise AmiError("AMI non connecté")
        reply = await self._request(manager, fields)
        if not expect_list:
            return reply
        return list_replies(reply, fields["Action"])

    async def _request(self, manager: _Manager, fields: dict[str, str]) -> Any:
        """Send one action; its answer, or AmiError at once if the link drops, or on timeout."""
        future = manager.send_action(dict(fields))
        lost = asyncio.ensure_future(manager.lost.wait())
        try:
            done, _ = await asyncio.wait(
                {future, lost}, timeout=self.action_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
        if future not in done:
            future.cancel()
            if manager.lost.is_set():
                raise AmiError(f"connexion perdue pendant {fields['Action']}")
            raise AmiError(f"pas de réponse à {fields['Action']}")
        return future.result()

    async def _supervise(self) -> None:
        delay = self.first_retry_s
        while True:
            try:
                await self._connect()
                delay = self.first_retry_s
                await self._keepalive()
            except asyncio.CancelledError:
                raise
            except AmiError as exc:
                self.last_error = str(exc)
                log.warning("AMI %s:%s : %s", self.settings.host, self.settings.port, exc)
            except (OSError, asyncio.TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.warning(
                    "AMI %s:%s injoignable : %s",
                    self.settings.host,
                    self.settings.port,
                    self.last_error,
                )
            except Exception:  # a bug must not end the supervision: log it and retry
                self.last_error = "erreur inattendue"
                log.exception("AMI : erreur inattendue de la connexion")
            finally:
                self._drop()
            log.info("AMI : nouvelle tentative dans %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _connect(self) -> None:
        manager = _Manager(
            host=self.settings.host,
            port=self.settings.port,
            loop=asyncio.get_running_loop(),
            events="off",
            ping_delay=3600,
            ping_interval=3600,
            reconnect_timeout=3600,
        )
        self._manager = manager
        await asyncio.wait_for(manager.connect(), self.action_timeout_s)
        if manager.protocol is None:
            raise AmiError("connexion impossible")
        reply: Message = await self._request(
            manager,
            {
                "Action": "Login",
                "Username": self.settings.username,
                "Secret": self.settings.secret,
                "Events": "off",
            },
        )
        if not reply.success:
            raise AmiError(
                f"login refusé pour {self.settings.username!r} ({reply.get('Message', '')})"
            )
        manager.authenticated = True
        self.logins += 1
        await self._learn_asterisk_version(manager)
        self._connected.set()
        log.info("AMI connecté à %s:%s", self.settings.host, self.settings.port)

    async def _learn_asterisk_version(self, manager: _Manager) -> None:
        """Ask which Asterisk this is (``CoreSettings``) and warn when its AudioSocket() drops
        the caller's keys: the greeting promises « tapez 0 ». Never fails the connection."""
        try:
            reply = await self._request(manager, {"Action": "CoreSettings"})
        except AmiError as exc:
            log.info("AMI : version d'Asterisk inconnue (%s)", exc)
            return
        if not reply.success:
            log.info(
                "AMI : version d'Asterisk inconnue (CoreSettings : %s ; manager.conf : "
                "write = call,reporting)",
                reply.get("Message", ""),
            )
            return
        self.asterisk_version = str(reply.get("AsteriskVersion", ""))
        try:
            current = audiosocket_is_current(self.asterisk_version)
        except ValueError:  # a development build names no release
            log.info("AMI : Asterisk %s", self.asterisk_version)
            return
        if not current:
            log.warning(
                "Asterisk %s : AudioSocket() n'y transmet pas les touches de l'appelant "
                "(avant 20.14, 21.9 et 22.4) ; la touche 0 n'atteint pas le bot par "
                "AudioSocket, seule la parole le peut (deploy/asterisk/README.md, "
                "« Versions d'Asterisk »)",
                self.asterisk_version,
            )

    async def _keepalive(self) -> None:
        """Ping until the link dies: returns (or raises) when a reconnect is needed."""
        manager = self._manager
        assert manager is not None  # noqa: S101 — set by the caller before this task starts; narrows the type
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(manager.lost.wait(), self.settings.ping_interval_s)
            if manager.lost.is_set():
                raise AmiError("connexion perdue")
            reply = await self._action({"Action": "Ping"})
            if not reply.success:
                raise AmiError("Ping refusé")

    def _drop(self) -> None:
        self._connected.clear()
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.close()


def list_replies(reply: Any, action: str) -> list[Any]:
    """A list action's replies (it answers with a list); AmiError when it was refused (a
    single Error response)."""
    replies = reply if isinstance(reply, list) else [reply]
    if replies and replies[0].get("Response") == "Error":
        raise AmiError(f"{action} refusé ({replies[0].get('Message', '')})")
    return replies


def status_caller_line(replies: list[Any], wanted: str) -> _CallerLine | None:
    """The caller's line among the replies to ``Action: Status``: the channel whose
    ``ALLO_UUID`` is ``wanted`` (a UUID in lower case), the caller's side first."""
    matches = [
        reply
        for reply in replies
        if reply.get("Event") == "Status"
        and wanted in {value.lower() for value in _variable_values(reply, CALL_ID_VARIABLE)}
    ]
    callers = [r for r in matches if not str(r.get("Channel", "")).startswith(_BOT_SIDE_CHANNELS)]
    found = callers or matches
    if not found:
        return None
    return _CallerLine(
        str(found[0].get("Channel", "")), _caller_number(found[0].get("CallerIDNum"))
    )


def _variable_values(reply: Message, name: str) -> list[str]:
    """Values of ``Variable: NAME=value`` lines (one header, or several as a list)."""
    raw = reply.get("Variable", [])
    lines = raw if isinstance(raw, list) else [raw]
    prefix = f"{name}="
    return [
        line[len(prefix) :] for line in lines if isinstance(line, str) and line.startswith(prefix)
    ]

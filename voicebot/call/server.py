"""The phone server: AudioSocket and WebSocket media from Asterisk, AMI, console and softphone.

Every connection becomes one ``CallSession`` task. A failing call hands its caller to a
human and ends there; the server and the other calls carry on. On SIGTERM the server stops
accepting calls, hands the live ones to operators, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from voicebot.call.runtime import Runtime, load_runtime, settle_heap
from voicebot.call.session import CallSession
from voicebot.core.config import Settings, with_caller_hash_key
from voicebot.core.events import CallHub
from voicebot.core.interfaces import MediaTransport

log = logging.getLogger(__name__)


@dataclass
class PhoneServer:
    """A running server: what it listens on and the calls it holds."""

    settings: Settings
    runtime: Runtime
    sessions: dict[str, CallSession] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    listeners: list[Any] = field(default_factory=list)
    web_runner: Any = None
    call_control: Any = None
    records: Any = None
    audiosocket_port: int = 0
    websocket_port: int = 0
    http_port: int = 0
    accepting: bool = True

    async def on_call(self, transport: MediaTransport) -> None:
        """Run one call to its end. Never raises: a call's failure stays in that call."""
        if not self.accepting:
            with contextlib.suppress(Exception):
                await transport.end()
            return
        session = CallSession(self.runtime.services, transport)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        key = str(id(session))
        self.sessions[key] = session
        try:
            await session.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("[call %s] session crashed outside its own guard", session.call_id)
            with contextlib.suppress(Exception):
                await transport.end()
        finally:
            self.sessions.pop(key, None)
            if task is not None:
                self.tasks.discard(task)

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting; hand live calls to operators; wait for them, then close."""
        self.accepting = False
        for listener in self.listeners:
            listener.close()
        live = list(self.sessions.values())
        if live:
            log.info("shutting down: handing %d live call(s) to operators", len(live))
        for session in live:
            session.request_handoff("arrêt du service")
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await listener.wait_closed()
        if self.web_runner is not None:
            await self.web_runner.cleanup()
        if self.call_control is not None:
            with contextlib.suppress(Exception):
                await self.call_control.close()
        if self.records is not None:
            with contextlib.suppress(Exception):
                await self.records.close()
        self.runtime.close()


def _bound_port(listener: Any) -> int:
    sockets = getattr(listener, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return 0


async def start_phone_server(
    settings: Settings, with_web: bool = True, runtime: Runtime | None = None
) -> PhoneServer:
    """Load everything and start listening. Returns once the server takes calls."""
    from telephony.audiosocket.server import start_audiosocket_server
    from telephony.chan_websocket.server import start_websocket_server
    from voicebot.records.store import CallRecords

    hub = CallHub()
    if runtime is None:
        runtime = await asyncio.get_running_loop().run_in_executor(
            None, lambda: load_runtime(settings, hub)
        )
    server = PhoneServer(settings, runtime)
    services = runtime.services

    server.records = CallRecords.open(settings)
    services.records = server.records
    if settings.ami.host:
        from telephony.ami import AmiCallControl

        server.call_control = AmiCallControl(settings.ami)
        await server.call_control.start()
        services.call_control = server.call_control
    else:
        log.info("AMI not configured: handoffs reach the queue without context variables")

    host = settings.server.host
    audiosocket = await start_audiosocket_server(
        host, settings.server.audiosocket_port, server.on_call
    )
    websocket = await start_websocket_server(host, settings.server.websocket_port, server.on_call)
    server.listeners = [audiosocket, websocket]
    server.audiosocket_port = _bound_port(audiosocket)
    server.websocket_port = _bound_port(websocket)
    if with_web:
        from voicebot.console.app import start_web

        server.web_runner = await start_web(settings, services.hub, server.records, server.on_call)
        for site in getattr(server.web_runner, "sites", []):
            server_obj = getattr(site, "_server", None)
            if server_obj is not None:
                server.http_port = _bound_port(server_obj)
    return server


def serve(settings: Settings, with_web: bool = True, banner: bool = False) -> int:
    """`voicebot serve` / `voicebot run`: run until SIGTERM or Ctrl-C. Refuses to start
    without the key that hashes callers' numbers (ConfigError, before anything loads): a
    server without one could not record who called, and must not run as if it could."""
    settings = with_caller_hash_key(settings)
    return asyncio.run(_serve(settings, with_web, banner))


async def _serve(settings: Settings, with_web: bool, banner: bool) -> int:
    started = time.perf_counter()
    server = await start_phone_server(settings, with_web=with_web)
    # in thousands: a 6-digit count would read as a phone number to the log redaction
    log.info("%dk loaded objects kept out of the garbage collector's way", settle_heap() // 1000)
    ready_s = time.perf_counter() - started
    host = settings.server.host
    log.info(
        "ready in %.1f s: AudioSocket %s:%d, WebSocket media %s:%d%s",
        ready_s,
        host,
        server.audiosocket_port,
        host,
        server.websocket_port,
        f", console http://{host}:{server.http_port}/" if with_web else "",
    )
    if banner:
        print(_banner(settings, server), flush=True)
    prerender = asyncio.create_task(server.runtime.prerender())
    purge = asyncio.create_task(_purge_daily(server))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stop requested")
    prerender.cancel()
    purge.cancel()
    await server.shutdown(settings.server.shutdown_grace_s)
    log.info("stopped")
    return 0


async def _purge_daily(server: PhoneServer) -> None:
    """Minimal retention: records older than the retention period go, at start and daily."""
    retention_s = server.settings.records.retention_days * 86400.0
    while True:
        try:
            removed = await server.records.purge(retention_s)
            if removed:
                log.info("records: purged %d call(s) older than the retention period", removed)
        except Exception:
            log.exception("records: purge failed; retrying tomorrow")
        await asyncio.sleep(86400.0)


def _banner(settings: Settings, server: PhoneServer) -> str:
    host = settings.server.host
    lines = [
        "",
        "  AlloNantes — assistant vocal automatique, prêt.",
        f"  Reconnaissance vocale : {server.runtime.asr_description}",
        f"  Voix : {server.runtime.tts_description}",
        f"  Asterisk AudioSocket : {host}:{server.audiosocket_port}",
        f"  Asterisk WebSocket (média) : ws://{host}:{server.websocket_port}",
    ]
    if server.http_port:
        lines += [
            f"  Console des opérateurs : http://{host}:{server.http_port}/",
            f"  Appeler AlloNantes depuis le navigateur : http://{host}:{server.http_port}/appeler",
        ]
    lines += ["  Ctrl-C pour arrêter.", ""]
    return "\n".join(lines)

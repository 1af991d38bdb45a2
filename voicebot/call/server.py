"""The phone server: AudioSocket and WebSocket media from Asterisk, AMI and the call records.

Every connection becomes one ``CallSession`` task. A failing call hands its caller to a
human and ends there; the server and the other calls carry on. On shutdown the server stops
accepting calls, hands the live ones to operators, and closes. The process around it (signals,
the console on top, the daily purge, the banner) is ``voicebot.app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicebot.call.runtime import Runtime, load_runtime
from voicebot.call.session import CallSession
from voicebot.core.config import Settings
from voicebot.core.events import CallHub
from voicebot.core.interfaces import MediaTransport
from voicebot.core.stages import StageTimes

if TYPE_CHECKING:
    from voicebot.dialogue.live_reload import LiveReloader

log = logging.getLogger(__name__)


@dataclass
class PhoneServer:
    """A running server: what it listens on and the calls it holds."""

    settings: Settings
    runtime: Runtime
    sessions: dict[str, CallSession] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    listeners: list[Any] = field(default_factory=list)
    call_control: Any = None
    records: Any = None
    audiosocket_port: int = 0
    websocket_port: int = 0
    # What runs on top of this server and hands it calls too (the web console, started by
    # voicebot.app): its port, and how to close it once the media listeners are closed.
    http_port: int = 0
    front_end_closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    accepting: bool = True
    # Several hosts on one PostgreSQL: this host's name, the relay that shares the live calls
    # with the other hosts (None on SQLite), and the hub the console's board follows (every
    # host's calls through the relay; this process's own hub without one).
    host_id: str = ""
    live_relay: Any = None
    board_hub: CallHub | None = None
    # The dialogue's live reload (voicebot.dialogue.live_reload.LiveReloader, started by
    # voicebot.app): its ``last`` outcome is for the console.
    reloader: LiveReloader | None = None
    # How long each stage of this server's start took (the ready line of voicebot.app)
    start_stages: StageTimes = field(default_factory=StageTimes)

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
        if self.live_relay is not None:
            # After the calls ended (handed to operators): the other hosts' consoles saw them
            # end; this host then leaves the hosts table (never declared dead).
            with contextlib.suppress(Exception):
                await self.live_relay.leave()
        for close in self.front_end_closers:
            await close()
        if self.call_control is not None:
            with contextlib.suppress(Exception):
                await self.call_control.close()
        if self.records is not None:
            with contextlib.suppress(Exception):
                await self.records.close()
        self.runtime.close()


def bound_port(listener: Any) -> int:
    """The port a listening server is bound to (0 if none)."""
    sockets = getattr(listener, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return 0


async def start_phone_server(settings: Settings, runtime: Runtime | None = None) -> PhoneServer:
    """Load everything and start listening for Asterisk's media. Returns once the server
    takes calls; ``voicebot.app`` adds the web console on top of it."""
    from telephony.audiosocket.server import start_audiosocket_server
    from telephony.chan_websocket.server import start_websocket_server
    from voicebot.records.database import database_url, is_postgresql, resolve_host_id
    from voicebot.records.store import CallRecords

    hub = CallHub()
    stages = StageTimes()
    if runtime is None:
        runtime = await asyncio.get_running_loop().run_in_executor(
            None, lambda: load_runtime(settings, hub)
        )
        stages.merge(runtime.stages)
    server = PhoneServer(settings, runtime, start_stages=stages)
    services = runtime.services

    records_opened = time.perf_counter()
    server.records = CallRecords.open(settings)
    services.records = server.records
    server.host_id = resolve_host_id(settings)
    server.records.host_id = server.host_id
    server.board_hub = services.hub
    if is_postgresql(settings):
        from voicebot.records.live_relay import LiveRelay

        relay = LiveRelay(database_url(settings), server.host_id, services.hub, settings.records)
        # Receiving the other hosts' calls starts with the console (voicebot.app), once
        # its board follows relay.out: the replay of their live calls is for that board.
        await relay.start(receive=False)
        server.live_relay = relay
        server.board_hub = relay.out
    stages.add("records", time.perf_counter() - records_opened)
    if settings.ami.host:
        from telephony.ami import AmiCallControl

        server.call_control = AmiCallControl(settings.ami)
        await server.call_control.start()
        services.call_control = server.call_control
    else:
        log.info("AMI not configured: handoffs reach the queue without context variables")

    host = settings.server.host
    listening = time.perf_counter()
    audiosocket = await start_audiosocket_server(
        host, settings.server.audiosocket_port, server.on_call
    )
    websocket = await start_websocket_server(host, settings.server.websocket_port, server.on_call)
    server.listeners = [audiosocket, websocket]
    server.audiosocket_port = bound_port(audiosocket)
    server.websocket_port = bound_port(websocket)
    stages.add("listeners", time.perf_counter() - listening)
    return server

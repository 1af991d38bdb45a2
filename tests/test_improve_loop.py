"""The trainers' loop end to end, in a real headless Chromium, against a running server.

A real `voicebot serve` (subprocess: a real Rasa model, Whisper stand-in for French, SQLite
records) holds call records seeded with sentences the bot did not understand. The model in
service is a deliberately weak one (see ``_nlu_with_a_weak_model``: why). A trainer,
in Debian's Chromium driven by Playwright, logs in, opens « Améliorer le robot », teaches
three grouped sentences the intent `demander_agent`, starts a retraining (a real Rasa
training and the gate's real evaluation), sees it accepted and opens its evaluation. The
server picks the new model up by itself; a call placed afterwards through the Asterisk
emulator says one of those sentences (a real French recording) and now reaches a person,
from the same server process, never restarted.

Every wait is for a condition, with timeouts sized for a slow, busy 2-core machine: the
training alone takes minutes there. Nothing here measures speed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from playwright.async_api import Browser, Page, async_playwright

from telephony.emulator import AudioSocketCaller
from tests.browser_helpers import CHROMIUM, HEADLESS_ARGS
from tests.serve_helpers import ServeProcess, until
from voicebot.core.config import PROJECT_ROOT, Settings
from voicebot.records.database import calls_table, turns_table
from voicebot.records.store import CallRecords
from voicebot.speech.standins import whisper_base_dir

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "jeton-du-test-formateur"
TRAINING_TIMEOUT_MS = 30 * 60 * 1000  # a Rasa training and two evaluations, slow machine
SWAP_TIMEOUT_MS = 10 * 60 * 1000  # loading the new model beside the old, slow machine
# A real French recording (asterisk-core-sounds-fr) of a sentence the current model does not
# understand; Whisper writes it « Personne n'est en mesure de prendre votre appel en ce
# moment. »
RECORDING = Path("/usr/share/asterisk/sounds/fr/vm-nobodyavail.wav")
# Three groups of sentences the bot missed, as the call records hold them: in each, the
# spellings differ only in case, accents and punctuation, and the first one is the most said.
MISSED = {
    "Personne n'est en mesure de prendre votre appel en ce moment.": [
        "Personne n'est en mesure de prendre votre appel en ce moment.",
        "Personne n'est en mesure de prendre votre appel en ce moment.",
        "personne n'est en mesure de prendre votre appel, en ce moment ?",
    ],
    "personne ne peut prendre mon appel": [
        "personne ne peut prendre mon appel",
        "personne ne peut prendre mon appel",
        "Personne ne peut prendre mon appel ?",
    ],
    "je veux quelqu'un au bout du fil": [
        "je veux quelqu'un au bout du fil",
        "je veux quelqu'un au bout du fil",
        "Je veux quelqu'un au bout du fil.",
    ],
}
TAUGHT_INTENT = "demander_agent"
WEAK = {"epochs": "2", "threshold": "0.0", "ambiguity_threshold": "0.0"}


def _nlu_with_a_weak_model(folder: Path) -> Path:
    """The project's Rasa data, and in service a model trained on it for 2 epochs instead of
    40 and without the fallback (which a weak model would take for every sentence, and
    that the figures count as right for off-topic ones): worse on every intent than what a
    retraining gives (measured: 81 % of the test sentences against 96 %, every intent's F1
    at least 3 points lower), so that the gate's verdict on the retraining does not hang on
    training noise. Against a model trained on the same data, a candidate with three more
    sentences is within that noise: the gate (no accuracy lost, no intent's F1 down by more
    than 2 points, about two test sentences) refuses or lets it in by chance."""
    nlu = folder / "nlu"
    shutil.copytree(
        PROJECT_ROOT / "nlu", nlu, ignore=shutil.ignore_patterns("models", "__pycache__")
    )
    config = nlu / "config.yml"
    real = config.read_text("utf-8")
    weak = real
    for setting, value in (("epochs", "40"), ("threshold", "0.6"), ("ambiguity_threshold", "0.05")):
        assert f"    {setting}: {value}\n" in weak, setting
        weak = weak.replace(f"    {setting}: {value}\n", f"    {setting}: {WEAK[setting]}\n")
    config.write_text(weak, "utf-8")
    trained = subprocess.run(
        [sys.executable, "-m", "voicebot.cli", "train"],
        env={**os.environ, "VOICEBOT_PATHS_NLU_DIR": str(nlu)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    config.write_text(real, "utf-8")  # the retraining uses the project's own settings
    return nlu


async def _seed_missed_calls(data_dir: Path) -> None:
    settings = Settings().replace("paths", data_dir=data_dir)
    records = CallRecords.open(settings)
    try:
        number = 0
        for spellings in MISSED.values():
            for said in spellings:
                number += 1
                call_id = f"appel-passe-{number}"
                await records.start_call(call_id, "audiosocket", None)
                await records.add_turn(call_id, "caller", said, asr_confidence=0.9)
                await records.add_turn(
                    call_id,
                    "bot",
                    "Je n'ai pas bien compris votre demande.",
                    intent="nlu_fallback",
                    confidence=0.6,
                )
                await records.end_call(call_id, "abandoned")
    finally:
        await records.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("formateur")
    nlu = _nlu_with_a_weak_model(folder)
    await _seed_missed_calls(folder / "robot")
    process = ServeProcess(
        "robot",
        folder,
        {
            "VOICEBOT_PATHS_NLU_DIR": str(nlu),
            "VOICEBOT_CONSOLE_TOKEN": TOKEN,
            "VOICEBOT_ASR_ENGINE": "whisper",
            "VOICEBOT_ASR_MODEL": str(whisper_base_dir()),
        },
        web=True,
    )
    try:
        await process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), "install Debian's chromium: apt-get install chromium"
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=list(HEADLESS_ARGS),
        )
        yield chromium
        await chromium.close()


async def _login(page: Page, base_url: str, path: str) -> None:
    await page.goto(base_url + path)
    await page.get_by_label("Jeton d'accès").fill(TOKEN)
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_url(base_url + path)


def _records(server: ServeProcess) -> tuple[dict[str, Any], list[Any]]:
    engine = sa.create_engine(f"sqlite:///{server_data(server) / 'records.sqlite3'}")
    try:
        with engine.begin() as conn:
            calls = {row.call_id: row for row in conn.execute(sa.select(calls_table)).all()}
            turns = list(conn.execute(sa.select(turns_table).order_by(turns_table.c.id)).all())
    finally:
        engine.dispose()
    return calls, turns


def _ended(server: ServeProcess, call_id: str) -> bool:
    call = _records(server)[0].get(call_id)
    return call is not None and call.outcome is not None


def server_data(server: ServeProcess) -> Path:
    return server.log_path.parent / server.name


async def test_a_trainer_teaches_the_bot_and_the_running_server_answers(
    server: ServeProcess, browser: Browser
) -> None:
    context = await browser.new_context(locale="fr-FR")
    context.set_default_timeout(30_000)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await _login(page, server.base_url, "/ameliorer")

    # The review queue: the three groups, each once, with how many times it was said.
    await page.get_by_test_id("nom").fill("Camille Formatrice")
    rows = page.get_by_test_id("groupe")
    await rows.first.wait_for()
    for text, spellings in MISSED.items():
        row = page.locator(f'[data-testid="groupe"][data-text="{text}"]')
        await row.wait_for()
        assert str(len(spellings)) in await row.inner_text()
        await row.get_by_test_id("intention").select_option(TAUGHT_INTENT)
        await row.get_by_test_id("enregistrer").click()
        await page.locator(
            f'[data-testid="groupe"][data-text="{text}"][data-done="true"]'
        ).wait_for()
    taught = (Path(server_nlu(server)) / "data" / "appels_reetiquetes.yml").read_text("utf-8")
    assert all(text.rstrip(".") in taught for text in MISSED)

    # Retrain from the page; the gate accepts; this server takes the new model by itself.
    await page.get_by_test_id("reentrainer").click()
    await (
        page.get_by_test_id("etat-entrainement")
        .filter(has_text="lancé par Camille Formatrice")
        .wait_for()
    )
    result = page.get_by_test_id("resultat-entrainement")
    await result.filter(has_text="Nouveau modèle accepté").wait_for(timeout=TRAINING_TIMEOUT_MS)
    accepted = re.search(r"version (\S+?)\.?$", (await result.inner_text()).strip())
    assert accepted, await result.inner_text()
    version = accepted.group(1)
    await (
        page.get_by_test_id("version-en-service")
        .filter(has_text=version)
        .wait_for(timeout=SWAP_TIMEOUT_MS)
    )

    # The evaluation that let it in.
    await page.get_by_test_id("lien-evaluation").click()
    await page.wait_for_load_state()
    assert "report.html" in page.url
    images = page.locator("img")
    assert await images.count() >= 2
    for index in range(await images.count()):
        width = await images.nth(index).evaluate("img => img.complete && img.naturalWidth")
        assert width and width > 0, "an evaluation figure did not load"
    assert not errors, errors

    # A caller says one of the taught sentences, to the same server process.
    calls_before = set(_records(server)[0])
    caller = AudioSocketCaller()
    await caller.connect("127.0.0.1", server.audiosocket_port)
    line = asyncio.create_task(caller.play_silence(120.0))
    # the greeting said (the caller hears it out), then the caller speaks
    assert await caller.wait_for_quiet(1.0, timeout=120.0), "no greeting"
    line.cancel()
    await caller.play_wav(RECORDING)
    tail = asyncio.create_task(caller.play_silence(60.0))
    ended_by = await caller.wait_for_hangup(120.0)
    tail.cancel()
    await caller.close()
    # a person takes over: the bot ends its media session, the dialplan queues the call
    assert ended_by == "bot_hangup", ended_by
    call_id = caller.call_uuid
    await until(lambda: _ended(server, call_id), "the end of the call in its record")
    calls, turns = _records(server)
    assert set(calls) - calls_before == {call_id}
    said = [t for t in turns if t.call_id == call_id and t.speaker == "caller"]
    answered = [t for t in turns if t.call_id == call_id and t.speaker == "bot" and t.intent]
    assert said and "mesure de prendre" in said[0].text.lower()
    assert answered[0].intent == TAUGHT_INTENT
    assert answered[0].model_version == version
    assert calls[call_id].outcome == "transferred"
    assert server.process.poll() is None, "the server was restarted"
    await context.close()


def server_nlu(server: ServeProcess) -> Path:
    return server.log_path.parent / "nlu"

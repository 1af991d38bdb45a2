"""The public algorithm card (/transparence, `voicebot transparence`): made from the running
configuration, never by hand.

Every expected value is computed here from its own source (the settings given, the YAML of
nlu/, a saved report), not read back from the card's code: when the card stops following
the configuration, these tests fail.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pypdf
import pytest
import pytest_asyncio
import yaml
from aiohttp.test_utils import TestClient, TestServer

from voicebot.console.app import make_app
from voicebot.console.transparency import gather_card, render_html
from voicebot.console.transparency.model import AlgorithmCard
from voicebot.core.config import PROJECT_ROOT, Settings, load_settings
from voicebot.core.errors import ConfigError
from voicebot.core.events import CallHub
from voicebot.core.interfaces import MediaTransport
from voicebot.records.store import CallRecords

if TYPE_CHECKING:
    from voicebot.dialogue.agent import RasaDialogue

NLU_DIR = PROJECT_ROOT / "nlu"
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "jeton-de-la-fiche"


def flat(text: str) -> str:
    """Whitespace (no-break spaces included) as single spaces, entities decoded."""
    return " ".join(html.unescape(text).replace("\u00a0", " ").split())


def row(page: str, row_id: str) -> str:
    """The text of one table row of the page (its cells, tags removed)."""
    found = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', page, re.S)
    assert found, f"no row {row_id} in the page"
    return flat(re.sub(r"<[^>]+>", " ", found.group(1)))


def settings_in(tmp_path: Path) -> Settings:
    return Settings().replace("paths", data_dir=tmp_path / "data")


# --- the rules follow the settings -------------------------------------------------------------


def test_the_thresholds_follow_the_settings(tmp_path: Path) -> None:
    base = settings_in(tmp_path)
    changed = base.replace(
        "policy",
        min_asr_confidence=0.6,
        max_low_confidence_turns=3,
        max_call_seconds=420,
        max_consecutive_fallbacks=4,
        silence_prompt_s=12.0,
        silence_prompts_before_end=1,
        silence_action="transfer",
    )
    before, after = gather_card(base), gather_card(changed)
    page_before, page_after = render_html(before), render_html(after)

    asr_before, asr_after = (
        row(page_before, "regle-confiance-asr"),
        row(page_after, "regle-confiance-asr"),
    )
    assert "45 %" in asr_before and "2 fois de suite" in asr_before
    assert "60 %" in asr_after and "3 fois de suite" in asr_after and "45 %" not in asr_after
    assert "policy.min_asr_confidence = 0.6" in asr_after

    assert "5 minutes" in row(page_before, "regle-duree")
    assert "7 minutes" in row(page_after, "regle-duree")
    assert "policy.max_call_seconds = 420" in row(page_after, "regle-duree")

    assert "2 fois de suite" in row(page_before, "regle-incomprehension")
    assert "4 fois de suite" in row(page_after, "regle-incomprehension")

    silence_before, silence_after = (
        row(page_before, "regle-silence"),
        row(page_after, "regle-silence"),
    )
    assert "8 secondes" in silence_before and "raccroche" in silence_before
    assert "12 secondes" in silence_after and "1 fois au plus" in silence_after
    assert "raccroche" not in silence_after and "conseiller" in silence_after
    assert "policy.silence_action = transfer" in silence_after
    # the same facts in the card itself, which the PDF prints
    assert flat(after.rule("confiance-asr").threshold).endswith("inférieure à 60 %")


def test_when_the_bot_answers_is_published_with_the_waits_in_force(tmp_path: Path) -> None:
    """The end-of-turn rule (voicebot.call.turn_end) is on the card with its live waits."""
    base = settings_in(tmp_path)
    quicker = base.replace("turn", complete_silence_ms=500, unfinished_silence_ms=1500)
    off = base.replace("turn", enabled=False)
    rows = {
        name: row(render_html(gather_card(settings)), "regle-fin-de-tour")
        for name, settings in (("base", base), ("quicker", quicker), ("off", off))
    }
    assert "0,3 seconde" in rows["base"] and "1,2 seconde" in rows["base"]
    assert "« je voudrais »" in rows["base"] and "voix" in rows["base"]
    assert "0,5 seconde" in rows["quicker"] and "1,5 seconde" in rows["quicker"]
    assert "turn.complete_silence_ms = 500" in rows["quicker"]
    assert "0,65 seconde de silence" in rows["off"] and "turn.enabled = False" in rows["off"]
    assert "« je voudrais »" not in rows["off"]


def _nlu_copy(tmp_path: Path, threshold: float) -> Path:
    """nlu/ without its trained models, with FallbackClassifier's threshold set."""
    nlu = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, nlu, ignore=shutil.ignore_patterns("models"))
    config = (nlu / "config.yml").read_text(encoding="utf-8")
    config, replaced = re.subn(
        r"(- name: FallbackClassifier\n\s+threshold:) [0-9.]+", rf"\g<1> {threshold}", config
    )
    assert replaced == 1
    (nlu / "config.yml").write_text(config, encoding="utf-8")
    return nlu


def _fake_model(nlu: Path, threshold: float) -> None:
    """A model archive as `voicebot train` leaves it, holding only its metadata.json."""
    metadata = {
        "trained_at": "2026-11-30T10:00:00",
        "rasa_open_source_version": "3.6.21",
        "predict_schema": {
            "nodes": {
                "run_FallbackClassifier8": {
                    "uses": "rasa.nlu.classifiers.fallback_classifier.FallbackClassifier",
                    "config": {"threshold": threshold, "ambiguity_threshold": 0.05},
                }
            }
        },
    }
    data = json.dumps(metadata).encode()
    (nlu / "models").mkdir()
    with tarfile.open(nlu / "models" / "allonantes-20261130-100000.tar.gz", "w:gz") as archive:
        member = tarfile.TarInfo("metadata.json")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))


def test_the_nlu_threshold_is_the_trained_model_s_else_the_configuration_s(
    tmp_path: Path,
) -> None:
    nlu = _nlu_copy(tmp_path, 0.7)
    settings = settings_in(tmp_path).replace("paths", nlu_dir=nlu)

    untrained = gather_card(settings)  # no model yet: nlu/config.yml
    assert "70 %" in flat(untrained.rule("incomprehension").threshold)
    assert any("Aucun modèle" in note for note in untrained.notes)

    _fake_model(nlu, 0.55)  # trained before the configuration changed: the model's rules
    trained = gather_card(settings)
    threshold = flat(trained.rule("incomprehension").threshold)
    assert "55 %" in threshold and "70 %" not in threshold
    assert any("0.7" in note and "0.55" in note for note in trained.notes)
    assert "55 %" in row(render_html(trained), "regle-incomprehension")


# --- what the bot knows, from its own files ----------------------------------------------------


def _domain_intents() -> list[str]:
    domain = yaml.safe_load((NLU_DIR / "domain.yml").read_text(encoding="utf-8"))
    return [next(iter(i)) if isinstance(i, dict) else str(i) for i in domain["intents"]]


def _example_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in sorted((NLU_DIR / "data").rglob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for item in document.get("nlu") or []:
            if "intent" in item:
                examples = re.findall(r"^\s*- ", item["examples"], re.M)
                counts[item["intent"]] = counts.get(item["intent"], 0) + len(examples)
    return counts


def test_every_intent_of_the_domain_with_its_number_of_examples(tmp_path: Path) -> None:
    card = gather_card(settings_in(tmp_path))
    page = render_html(card)
    intents, counts = _domain_intents(), _example_counts()
    assert len(intents) > 10 and "hors_sujet" in intents
    assert sorted(i.name for i in card.intents) == sorted(intents)
    for name in intents:
        assert counts.get(name, 0) > 0, f"{name} has no training example"
        assert card.intent(name).examples == counts[name], name
        cells = row(page, f"intention-{name}")
        assert name in cells and f" {counts[name]}" in f" {cells} ", cells
    # what it never handles: off-topic questions and emergencies, with the words it says
    never = flat(" ".join(card.never))
    assert f"({counts['hors_sujet']} phrases" in never
    assert "15, 17, 18 et 112" in never


def test_every_knowledge_source_with_its_verified_on_date(tmp_path: Path) -> None:
    card = gather_card(settings_in(tmp_path))
    page = render_html(card)
    entries = []
    for path in sorted((NLU_DIR / "knowledge").glob("*.yml")):
        for entry in yaml.safe_load(path.read_text(encoding="utf-8"))["entries"]:
            entries.append(
                (entry["topic"], " ".join(entry["source"].split()), entry["verified_on"])
            )
    assert entries
    assert sorted(s.topic for s in card.sources) == sorted(t for t, _, _ in entries)
    for topic, source, verified_on in entries:
        found = next(s for s in card.sources if s.topic == topic)
        assert (found.source, found.verified_on) == (source, verified_on)
        cells = re.search(rf'<tr id="source-{topic}">(.*?)</tr>', page, re.S)
        assert cells is not None
        assert f'<time datetime="{verified_on.isoformat()}">' in cells.group(1)
        assert flat(source) in row(page, f"source-{topic}")


def test_no_evaluation_is_said_honestly_and_a_saved_report_is_shown(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    card = gather_card(settings)
    assert card.evaluation is None
    assert "pas encore d'évaluation enregistrée" in flat(render_html(card)).lower()

    folder = tmp_path / "data" / "evaluations"
    folder.mkdir(parents=True)
    (folder / "notes.json").write_text('{"not": "a report"}', encoding="utf-8")
    report = {
        "engine": "vosk",
        "model": "Vosk vosk-model-small-fr-0.22",
        "corpus": "asterisk",
        "utterances": 412,
        "reference_words": 2301,
        "wer": 0.183,
        "rtf": 0.041,
    }
    (folder / "asr-eval.json").write_text(json.dumps(report), encoding="utf-8")
    card = gather_card(settings)
    assert card.evaluation is not None and card.evaluation.utterances == 412
    page = flat(render_html(card))
    assert "18,3 %" in page and "412 phrases" in page
    assert "pas encore d'évaluation" not in page.lower()


def test_the_contact_comes_from_the_settings_and_is_validated(tmp_path: Path) -> None:
    default = gather_card(settings_in(tmp_path))
    assert default.contact.phone == "02 40 41 9000"
    assert default.contact.online.startswith("https://") and default.contact.postal

    settings = load_settings(
        environ={
            "VOICEBOT_TRANSPARENCY_CONTACT_PHONE": "02 40 00 00 01",
            "VOICEBOT_TRANSPARENCY_CONTACT_ONLINE": "https://exemple.nantes.fr/contact",
        }
    ).replace("paths", data_dir=tmp_path / "data")
    page = flat(render_html(gather_card(settings)))
    assert "02 40 00 00 01" in page and "https://exemple.nantes.fr/contact" in page
    assert "02 40 41 9000" not in page

    with pytest.raises(ConfigError, match="contact_online"):
        load_settings(environ={"VOICEBOT_TRANSPARENCY_CONTACT_ONLINE": "nantes.fr"})
    with pytest.raises(ConfigError, match="contact_phone"):
        load_settings(environ={"VOICEBOT_TRANSPARENCY_CONTACT_PHONE": "appelez-nous"})
    with pytest.raises(ConfigError, match="contact_postal or contact_online"):
        load_settings(
            environ={
                "VOICEBOT_TRANSPARENCY_CONTACT_POSTAL": "",
                "VOICEBOT_TRANSPARENCY_CONTACT_ONLINE": "",
            }
        )


# --- the greeting and the card tell the same retention ------------------------------------------


async def test_the_greeting_and_the_card_tell_the_same_retention(
    rasa_dialogue: RasaDialogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot's own loading path (RasaDialogue.load), with only the trained model reused."""
    from voicebot.dialogue import agent as agent_module

    monkeypatch.setattr(agent_module, "load_agent", lambda *a, **k: rasa_dialogue.agent)
    for days in (30, 7):
        settings = settings_in(tmp_path).replace("records", retention_days=days)
        bot = agent_module.RasaDialogue.load(settings)
        greeting = " ".join((await bot.greet("transparence")).texts)
        card = gather_card(settings)
        assert f"gardée {days} jours" in greeting
        assert card.greeting == greeting and card.data.retention_days == days
        page = flat(render_html(card))
        assert f"gardées {days} jours" in page  # what is kept, and for how long
        assert f"au bout de {days} jours" in page  # the citizens' rights
        assert greeting in page  # the greeting itself, as the bot says it


def test_the_sentences_kept_for_training_are_published(tmp_path: Path) -> None:
    """Relabelled sentences outlive the retention period: the card says so, and the rights
    do not promise that everything goes after it."""
    page = flat(render_html(gather_card(settings_in(tmp_path))))
    assert "Ce qui est gardé pour l'apprentissage" in page
    assert "au-delà de la durée de conservation" in page
    assert "numéro est toujours refusée" in page
    assert "sauf les phrases choisies pour l'apprentissage" in page
    assert "tout est effacé" not in page


# --- the public page and the command ----------------------------------------------------------------


class NoCalls:
    async def on_call(self, transport: MediaTransport) -> None:
        raise AssertionError("no call expected")


@pytest_asyncio.fixture(loop_scope="function")
async def guarded(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = settings_in(tmp_path).replace("console", token=TOKEN)
    records = CallRecords.open(settings)
    app = make_app(settings, CallHub(), records, NoCalls().on_call)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()
    await records.close()


async def test_transparence_needs_no_token_while_the_console_does(guarded: TestClient) -> None:
    response = await guarded.get("/transparence", allow_redirects=False)
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert page.startswith('<!doctype html>\n<html lang="fr">')
    assert '<link rel="stylesheet" href="/static/style.css">' in page
    assert "Content-Security-Policy" in response.headers

    console = await guarded.get("/", allow_redirects=False)
    assert console.status == 303 and console.headers["Location"].startswith("/login")
    assert (await guarded.get("/api/calls")).status == 401
    # with the token, the console opens
    opened = await guarded.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert opened.status == 200
    # read-only: nothing but GET (and HEAD)
    assert (await guarded.post("/transparence", data=b"")).status == 405
    assert (await guarded.head("/transparence")).status == 200


def test_the_command_writes_the_html_and_the_pdf(tmp_path: Path) -> None:
    config = tmp_path / "voicebot.yml"
    config.write_text(
        yaml.safe_dump(
            {"paths": {"data_dir": str(tmp_path / "data")}, "policy": {"min_asr_confidence": 0.62}}
        ),
        encoding="utf-8",
    )
    out = tmp_path / "fiche"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicebot.cli",
            "--config",
            str(config),
            "transparence",
            "--out",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout
    assert str(out / "transparence.html") in printed and str(out / "transparence.pdf") in printed

    page = (out / "transparence.html").read_text(encoding="utf-8")
    assert len(page) > 5000 and '<html lang="fr">' in page
    assert "<style>" in page and "<link" not in page  # self-contained: the console's CSS inside
    assert "--accent: #0b4f8a" in page
    assert "62 %" in row(page, "regle-confiance-asr")

    pdf = (out / "transparence.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = flat(" ".join(p.extract_text() for p in reader.pages))
    assert "inférieure à 62 %" in text
    assert "policy.min_asr_confidence = 0.62" in text
    assert "02 40 41 9000" in text
    assert reader.metadata is not None and "assistant automatique" in str(reader.metadata.title)


# --- in a real browser ---------------------------------------------------------------------------------


def _artefacts() -> Path:
    folder = Path(
        os.environ.get("VOICEBOT_SCREENSHOTS") or PROJECT_ROOT / "bench-out" / "test-artefacts"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_transparence_in_chromium(guarded: TestClient) -> None:
    from playwright.async_api import async_playwright

    assert CHROMIUM.exists(), "install Debian's chromium: apt-get install chromium"
    base = str(guarded.make_url("/")).rstrip("/")
    requests: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(locale="fr-FR", viewport={"width": 1100, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            await page.goto(base + "/transparence")
            title = "Comment fonctionne l'assistant automatique — AlloNantes"
            await page.get_by_role("heading", level=1, name=title).wait_for()
            assert await page.get_attribute("html", "lang") == "fr"
            # the console's stylesheet is applied (the banner's colour)
            banner = await page.locator("header.banner").evaluate(
                "e => getComputedStyle(e).backgroundColor"
            )
            assert banner == "rgb(11, 79, 138)"
            # every table has a caption; the rules table is reachable by its name
            assert (
                await page.locator("table").count() == await page.locator("table > caption").count()
            )
            rules = page.get_by_role(
                "table", name="Règles de l'assistant, avec les seuils en vigueur"
            )
            assert "45 %" in flat(await rules.inner_text())
            assert await page.get_by_role("heading", level=2).count() >= 9
            path = _artefacts() / "transparence.png"
            await page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of /transparence: {path}")
        finally:
            await browser.close()
    assert requests and all(url.startswith(base) for url in requests), (
        requests
    )  # nothing third-party
    assert path.stat().st_size > 10_000


def test_the_card_is_a_frozen_dataclass(tmp_path: Path) -> None:
    card = gather_card(settings_in(tmp_path))
    assert isinstance(card, AlgorithmCard)
    with pytest.raises(AttributeError):
        card.service = "autre"  # type: ignore[misc]

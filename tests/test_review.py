"""« Améliorer le robot »: the review queue of missed caller sentences, relabelling into
nlu/data/appels_reetiquetes.yml, and the console's API for both.

Every test works on a copy of nlu/ in tmp_path: the repository's nlu/ is never written."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from tests.pg_helpers import fresh_postgres_database
from voicebot.console.app import make_app
from voicebot.core.config import PROJECT_ROOT, Settings, load_settings
from voicebot.core.errors import ConfigError
from voicebot.core.events import CallHub
from voicebot.core.french import sentence_key
from voicebot.core.interfaces import MediaTransport
from voicebot.dialogue.nlu_eval import load_examples
from voicebot.dialogue.relabel import RELABELLED_FILE, Relabeller, RelabelRefused, has_number
from voicebot.records.store import CallRecords, database_url

TOKEN = "jeton-de-test-formateurs"
CUTOFF = 0.75  # the fallback threshold (0.6) plus the default margin (0.15)
# A sentence of the held-out test set (nlu/tests/heldout.yml) and one trained as hors_sujet.
TEST_SENTENCE = "bonjour madame je vous appelle"
HORS_SUJET_SENTENCE = "quel temps fait-il demain"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def nlu_copy(tmp_path: Path) -> Path:
    """The project's Rasa sources (no models) copied under tmp_path."""
    source = PROJECT_ROOT / "nlu"
    target = tmp_path / "nlu"
    target.mkdir()
    for name in ("config.yml", "domain.yml"):
        shutil.copy(source / name, target / name)
    for folder in ("data", "tests"):
        shutil.copytree(source / folder, target / folder)
    return target


@pytest.fixture
def settings(tmp_path: Path, nlu_copy: Path) -> Settings:
    base = Settings().replace("paths", data_dir=tmp_path / "data", nlu_dir=nlu_copy)
    return base.replace("records", caller_hash_key="clé-de-test")


@pytest.fixture(params=["sqlite", "postgresql"])
def records_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        return settings.replace("records", database_url=fresh_postgres_database(server))
    return settings


@pytest_asyncio.fixture(loop_scope="function")
async def records(records_settings: Settings) -> AsyncIterator[CallRecords]:
    store = CallRecords.open(records_settings, clock=Clock())
    try:
        yield store
    finally:
        await store.close()


async def _call(
    records: CallRecords,
    call_id: str,
    exchanges: list[tuple[str, str, str | None, float | None]],
    outcome: str = "resolved",
    reason: str | None = None,
) -> None:
    """One call: (caller text, bot answer, answer's intent, answer's confidence) per turn."""
    await records.start_call(call_id, "simulation", None)
    for said, answer, intent, confidence in exchanges:
        await records.add_turn(call_id, "caller", said, asr_confidence=0.9)
        await records.add_turn(call_id, "bot", answer, intent=intent, confidence=confidence)
    await records.end_call(call_id, outcome, handoff_reason=reason)


async def _seed(records: CallRecords) -> None:
    rephrase = "Pouvez-vous reformuler ?"
    await _call(
        records,
        "appel-1",
        [
            ("Bonjour", "Bonjour, que puis-je pour vous ?", "saluer", 0.98),
            ("je veux un composteur", rephrase, "nlu_fallback", 0.6),
            ("le ramassage des sapins", "Les collectes…", "collecte_dechets", 0.66),
        ],
    )
    await _call(
        records,
        "appel-2",
        [
            ("Je veux un COMPOSTEUR !", rephrase, "nlu_fallback", 0.6),
            ("je veux un composteur", "Je vous passe un conseiller.", "nlu_fallback", 0.6),
        ],
        outcome="transferred",
        reason="incompréhension",
    )
    # Not heard well twice: the NLU never ran (the answer is the « pardon ? » prompt).
    await _call(
        records,
        "appel-3",
        [
            ("gris ma la meuh", "Pardon, je n'ai pas entendu.", None, None),
            ("gris ma la meuh", "Je vous passe un conseiller.", None, None),
        ],
        outcome="transferred",
        reason="confiance_asr",
    )
    # Confident, or not missed: none of these is in the queue.
    await _call(
        records,
        "appel-4",
        [
            ("horaires de la mairie", "La mairie ouvre…", "horaires_mairie", 0.95),
            ("gris ma la meuh", "Pardon ?", None, None),  # a resolved call: not transferred
            ("[touche 0]", "Je vous passe un conseiller.", "demander_agent", 0.5),
        ],
    )


# ----- the review queue -------------------------------------------------------------------


async def test_queue_groups_missed_sentences_by_normalised_text(records: CallRecords) -> None:
    await _seed(records)
    groups = {g["key"]: g for g in await records.review_queue(CUTOFF)}
    assert set(groups) == {"je veux un composteur", "le ramassage des sapins", "gris ma la meuh"}

    compost = groups["je veux un composteur"]
    assert compost["count"] == 3 and compost["calls"] == 2
    assert compost["text"] == "je veux un composteur"  # the most frequent spelling
    assert "Je veux un COMPOSTEUR !" in compost["spellings"]
    assert compost["intent"] == "nlu_fallback" and compost["confidence_min"] == 0.6
    assert compost["bot_answer"] == "Pouvez-vous reformuler ?"
    assert compost["outcomes"] == {"resolved": 1, "transferred": 1}
    assert compost["reasons"] == {"fallback": 3}
    assert compost["first_seen"] < compost["last_seen"]

    low = groups["le ramassage des sapins"]
    assert low["reasons"] == {"low_confidence": 1}
    assert low["intent"] == "collecte_dechets" and low["confidence_mean"] == 0.66

    asr = groups["gris ma la meuh"]  # appel-3's two turns; appel-4's resolved one is not
    assert asr["count"] == 2 and asr["reasons"] == {"transferred": 2}
    assert asr["outcomes"] == {"transferred": 1} and asr["intent"] == "aucune"


async def test_queue_order_limit_and_cutoff(records: CallRecords) -> None:
    await _seed(records)
    ranked = await records.review_queue(CUTOFF)
    assert [g["count"] for g in ranked] == [3, 2, 1]
    assert len(await records.review_queue(CUTOFF, limit=1)) == 1
    # Below a lower cutoff 0.66 is confident enough: that group leaves the queue.
    keys = {g["key"] for g in await records.review_queue(0.65)}
    assert "le ramassage des sapins" not in keys and "je veux un composteur" in keys


async def test_decided_group_leaves_the_queue(records: CallRecords) -> None:
    await _seed(records)
    await records.add_relabel("Camille", "Je veux un composteur.", "ignored")
    keys = {g["key"] for g in await records.review_queue(CUTOFF)}
    assert "je veux un composteur" not in keys and "gris ma la meuh" in keys
    with pytest.raises(ValueError):
        await records.add_relabel("Camille", "phrase", "peut-être")
    await records.add_relabel("Camille 0612345678", "rappelez le 06 12 34 56 78", "ignored")
    latest = (await records.relabels(limit=1))[0]
    assert "12" not in latest["text"] + latest["who"] and "<numéro>" in latest["text"]


async def test_relabels_survive_the_purge(records: CallRecords) -> None:
    await _seed(records)
    await records.add_relabel("Camille", "je veux un composteur", "trained", "collecte_dechets")
    assert await records.purge(1.0) == 4  # every call is older than a second by now
    kept = await records.relabels()
    assert [(r["who"], r["decision"], r["intent"]) for r in kept] == [
        ("Camille", "trained", "collecte_dechets")
    ]
    assert kept[0]["at"] > 1_800_000_000.0
    assert await records.review_queue(CUTOFF) == []


def test_sentence_key_and_numbers() -> None:
    assert sentence_key("  Où est la DÉCHÈTERIE ?!  ") == "ou est la decheterie"
    assert sentence_key("l'état-civil, euh…") == "l etat civil euh"
    assert has_number("rappelez-moi au <numéro>")
    assert has_number("mon numéro c'est 06 12 34 56 78")
    assert has_number("c'est le zéro six douze trente quatre")
    assert not has_number("je veux deux bacs jaunes")


def test_margin_setting_is_validated(tmp_path: Path) -> None:
    assert Settings().dialogue.review_confidence_margin == 0.15
    config = tmp_path / "voicebot.yml"
    config.write_text("dialogue:\n  review_confidence_margin: 1.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="review_confidence_margin"):
        load_settings(config, environ={})


# ----- relabelling --------------------------------------------------------------------------


def _trained(nlu_dir: Path) -> list[tuple[str, str]]:
    return load_examples(nlu_dir / "data" / RELABELLED_FILE)


def test_teach_writes_rasa_yaml_that_rasa_reads(nlu_copy: Path) -> None:
    relabeller = Relabeller(nlu_copy)
    taught = relabeller.teach("mon voisin veut un composteur collectif", "collecte_dechets")
    assert not taught.known and "prochain entraînement" in taught.message
    marked = relabeller.teach(
        "mon frigo à jeter à Bellevue", "encombrants", "quartier", "Bellevue-Chantenay-Sainte-Anne"
    )
    assert marked.example == (
        'mon frigo à jeter à [Bellevue]{"entity": "quartier", '
        '"value": "Bellevue-Chantenay-Sainte-Anne"}'
    )
    text = (nlu_copy / "data" / RELABELLED_FILE).read_text(encoding="utf-8")
    assert 'version: "3.1"' in text and "- intent: collecte_dechets" in text
    assert sorted(_trained(nlu_copy)) == [
        ("mon frigo à jeter à Bellevue", "encombrants"),
        ("mon voisin veut un composteur collectif", "collecte_dechets"),
    ]
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(nlu_copy / "data" / RELABELLED_FILE))
    entities = [e for m in data.intent_examples for e in m.get("entities") or []]
    assert entities == [
        {
            "start": 20,
            "end": 28,
            "value": "Bellevue-Chantenay-Sainte-Anne",
            "entity": "quartier",
        }
    ]
    assert not list((nlu_copy / "data").glob(f".{RELABELLED_FILE}*"))  # no temporary left


def test_teach_same_intent_is_already_known(nlu_copy: Path) -> None:
    relabeller = Relabeller(nlu_copy)
    relabeller.teach("mon voisin veut un composteur collectif", "collecte_dechets")
    before = (nlu_copy / "data" / RELABELLED_FILE).read_bytes()
    again = relabeller.teach("Mon voisin veut un COMPOSTEUR collectif !", "collecte_dechets")
    assert again.known and again.message.startswith("Déjà appris")
    assert (nlu_copy / "data" / RELABELLED_FILE).read_bytes() == before
    # A sentence of the original training data under its own intent: known, nothing written.
    assert relabeller.teach(HORS_SUJET_SENTENCE, "hors_sujet").known


@pytest.mark.parametrize(
    ("text", "intent", "entity", "value", "conflict", "says"),
    [
        (TEST_SENTENCE, "saluer", None, None, True, "jeu de test"),
        (HORS_SUJET_SENTENCE, "encombrants", None, None, True, "autre intention"),
        ("je veux un composteur", "compost", None, None, False, "Intention inconnue"),
        ("rappelez-moi au <numéro>", "demander_agent", None, None, False, "numéro"),
        ("   ", "saluer", None, None, False, "vide"),
        ("un frigo à Bellevue", "encombrants", "quartier", "Atlantis", False, "pas une valeur"),
        ("un frigo à Rezé", "encombrants", "quartier", "Centre-ville", False, "aucune façon"),
    ],
)
def test_teach_refusals(
    nlu_copy: Path,
    text: str,
    intent: str,
    entity: str | None,
    value: str | None,
    conflict: bool,
    says: str,
) -> None:
    with pytest.raises(RelabelRefused, match=says) as refused:
        Relabeller(nlu_copy).teach(text, intent, entity, value)
    assert refused.value.conflict is conflict
    assert not (nlu_copy / "data" / RELABELLED_FILE).exists()


def test_choices_are_the_domain_and_the_lookups(nlu_copy: Path) -> None:
    choices = Relabeller(nlu_copy).choices()
    assert "hors_sujet" in choices.intents and "nlu_fallback" not in choices.intents
    assert "Bellevue-Chantenay-Sainte-Anne" in choices.entities["quartier"]


# ----- the console's API --------------------------------------------------------------------


@dataclass
class Console:
    client: TestClient
    records: CallRecords
    settings: Settings


async def _no_call(transport: MediaTransport) -> None:
    raise AssertionError("no call in these tests")


@pytest_asyncio.fixture(loop_scope="function")
async def console(settings: Settings) -> AsyncIterator[Console]:
    settings = settings.replace("console", token=TOKEN)
    records = CallRecords.open(settings, clock=Clock())
    app = make_app(settings, CallHub(), records, _no_call)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Console(client, records, settings)
    finally:
        await client.close()
        await records.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_api_needs_the_token(console: Console) -> None:
    for path in ("/api/review", "/api/review/intents"):
        assert (await console.client.get(path)).status == 401
    refused = await console.client.post("/api/review/relabel", json={"text": "x"})
    assert refused.status == 401
    page = await console.client.get("/ameliorer", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"].startswith("/login")
    page = await console.client.get("/ameliorer", headers=AUTH)
    html = await page.text()
    assert page.status == 200 and 'id="entrainement"' in html
    assert '<script src="/static/entrainement.js" defer></script>' in html
    console_page = await (await console.client.get("/", headers=AUTH)).text()
    assert 'href="/ameliorer"' in console_page


async def test_api_queue_relabel_and_ignore(console: Console) -> None:
    await _seed(console.records)
    client = console.client
    queue = await (await client.get("/api/review", headers=AUTH)).json()
    assert queue["threshold"] == 0.6 and queue["cutoff"] == pytest.approx(0.75)
    assert queue["groups"][0]["key"] == "je veux un composteur"
    intents = await (await client.get("/api/review/intents", headers=AUTH)).json()
    assert "collecte_dechets" in intents["intents"] and intents["ignore"] == "ignorer"

    saved = await client.post(
        "/api/review/relabel",
        headers=AUTH,
        json={"text": "je veux un composteur", "intent": "collecte_dechets", "who": "Camille"},
    )
    body = await saved.json()
    assert saved.status == 200 and body["ok"] and "Enregistré" in body["message"]
    assert ("je veux un composteur", "collecte_dechets") in _trained(console.settings.paths.nlu_dir)

    ignored = await client.post(
        "/api/review/relabel",
        headers=AUTH,
        json={"text": "gris ma la meuh", "intent": "ignorer", "who": "Dominique"},
    )
    assert ignored.status == 200 and "ignorée" in (await ignored.json())["message"]

    queue = await (await client.get("/api/review", headers=AUTH)).json()
    assert [g["key"] for g in queue["groups"]] == ["le ramassage des sapins"]

    again = await client.post(
        "/api/review/relabel",
        headers=AUTH,
        json={"text": "Je veux un composteur", "intent": "collecte_dechets", "who": "Camille"},
    )
    assert again.status == 200 and (await again.json())["message"].startswith("Déjà appris")

    engine = sa.create_engine(database_url(console.settings))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT who, decision, intent, text, at FROM relabels ORDER BY id")
        ).all()
    engine.dispose()
    assert [(r.who, r.decision, r.intent) for r in rows] == [
        ("Camille", "trained", "collecte_dechets"),
        ("Dominique", "ignored", None),
        ("Camille", "known", "collecte_dechets"),
    ]
    assert all(r.at > 1_800_000_000.0 for r in rows)


async def test_api_refusals_in_french(console: Console) -> None:
    client = console.client

    async def relabel(payload: dict[str, object]) -> tuple[int, str]:
        response = await client.post("/api/review/relabel", headers=AUTH, json=payload)
        return response.status, (await response.json()).get("error", "")

    status, error = await relabel({"text": TEST_SENTENCE, "intent": "saluer", "who": "Camille"})
    assert status == 409 and "jeu de test" in error
    status, error = await relabel({"text": "un texte", "intent": "inventée", "who": "Camille"})
    assert status == 400 and "Intention inconnue" in error
    status, error = await relabel({"text": "un texte", "intent": "saluer"})
    assert status == 400 and "who" in error
    status, error = await relabel({"text": 3, "intent": "saluer", "who": "Camille"})
    assert status == 400 and "text" in error
    bad = await client.post("/api/review/relabel", headers=AUTH, data="pas du JSON")
    assert bad.status == 400
    assert (await client.get("/api/review?limit=0", headers=AUTH)).status == 400
    assert not (console.settings.paths.nlu_dir / "data" / RELABELLED_FILE).exists()

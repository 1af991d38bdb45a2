"""NLU quality and training data: held-out accuracy, off-topic, entities, fingerprint."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from voicebot.core.config import PROJECT_ROOT, Settings
from voicebot.core.errors import KnowledgeBaseError, ModelError
from voicebot.dialogue.agent import RasaDialogue
from voicebot.dialogue.asr_noise import FILLERS, numbers_in_words, strip_accents
from voicebot.dialogue.nlu_eval import evaluation_files, load_test_sets
from voicebot.dialogue.training import fingerprint, heldout_path, labelled_examples, train

NLU_DIR = PROJECT_ROOT / "nlu"
INTENTS = [
    "saluer",
    "au_revoir",
    "affirmer",
    "nier",
    "remercier",
    "demander_agent",
    "repeter",
    "urgence",
    "horaires_mairie",
    "papiers_identite",
    "etat_civil",
    "collecte_dechets",
    "decheterie",
    "encombrants",
    "signalement_voirie",
    "stationnement",
    "inscription_scolaire",
    "carte_blanche",
    "taxe_sejour",
    "listes_electorales",
    "objets_trouves",
    "hors_sujet",
]
HELDOUT_FLOOR = 0.90
# nlu/tests/unseen.yml: a second evaluation set, written independently of the training data
# the way callers speak and the ASR transcribes (fillers, one-word requests, misrecognitions,
# many kinds of off-topic requests). Measured on 242 sentences: 97.5 %, off-topic 52/55.
UNSEEN_PATH = NLU_DIR / "tests" / "unseen.yml"
UNSEEN_FLOOR = 0.93
UNSEEN_OFF_TOPIC_FLOOR = 0.90


def training_examples() -> list[tuple[str, str]]:
    pairs = []
    for path in sorted((NLU_DIR / "data").glob("*.yml")):
        for item in yaml.safe_load(path.read_text(encoding="utf-8")).get("nlu", []):
            if "intent" in item:
                for line in item["examples"].splitlines():
                    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", line.strip()[2:].strip())
                    if text:
                        pairs.append((text.lower(), item["intent"]))
    return pairs


def test_every_required_intent_has_at_least_30_examples() -> None:
    counts = Counter(intent for _, intent in training_examples())
    assert set(INTENTS) <= set(counts)
    assert {i: counts[i] for i in INTENTS if counts[i] < 30} == {}
    assert counts["hors_sujet"] >= 80


def letters(text: str) -> str:
    """What makes two sentences the same sentence for the model: their letters (no case,
    accents, punctuation, « euh »/« ben » or spaces; numbers in words)."""
    text = strip_accents(numbers_in_words(text.lower()))
    return "".join(w for w in re.sub(r"[^\w]|_", " ", text).split() if w not in FILLERS)


@pytest.mark.parametrize("test_set", [path.name for path in evaluation_files(NLU_DIR)])
def test_no_test_sentence_is_a_training_sentence(test_set: str) -> None:
    """Test sentences are never trained on, not even respelt the way the ASR writes them
    (nlu/data/asr_variantes.yml), nor with other fillers or spacing."""
    trained = {letters(text) for text, _ in training_examples()}
    sentences = labelled_examples(NLU_DIR / "tests" / test_set)
    assert [text for text, _ in sentences if letters(text) in trained] == []


def test_first_test_sets_cover_every_intent() -> None:
    for path in (UNSEEN_PATH, heldout_path(Settings())):
        sentences = labelled_examples(path)
        assert len(sentences) >= 200
        assert {intent for _, intent in sentences} == set(INTENTS)


def test_every_intent_has_enough_test_sentences_for_the_gate() -> None:
    """With n sentences of an intent, one sentence moves its F1 by about 1 / (2n - 1): 45
    keep it near 1 point, below the gate's tolerance (dialogue.gate_max_f1_drop, 2 points)."""
    counts = Counter(e.intent for e in load_test_sets(NLU_DIR))
    assert set(counts) == set(INTENTS)
    assert {intent: n for intent, n in counts.items() if n < 45} == {}


async def test_heldout_intent_accuracy(rasa_dialogue: RasaDialogue) -> None:
    examples = labelled_examples(heldout_path(rasa_dialogue.settings))
    wrong = []
    for text, intent in examples:
        result = await rasa_dialogue.parse(text)
        # Off-topic is handled right when it ends in hors_sujet or in the fallback.
        accepted = {intent, "nlu_fallback"} if intent == "hors_sujet" else {intent}
        if result["intent"] not in accepted:
            wrong.append(f"{intent} -> {result['intent']} ({result['confidence']:.2f}): {text}")
    accuracy = 1 - len(wrong) / len(examples)
    print(f"\nheld-out intent accuracy: {accuracy:.1%} on {len(examples)} sentences")
    print("\n".join(wrong))
    assert accuracy >= HELDOUT_FLOOR


async def test_unseen_set_accuracy_and_off_topic(rasa_dialogue: RasaDialogue) -> None:
    examples = labelled_examples(UNSEEN_PATH)
    wrong = []
    off_topic_kept_away = off_topic = 0
    urgence_on_off_topic = []
    for text, intent in examples:
        result = await rasa_dialogue.parse(text)
        accepted = {intent, "nlu_fallback"} if intent == "hors_sujet" else {intent}
        right = result["intent"] in accepted
        if intent == "hors_sujet":
            off_topic += 1
            off_topic_kept_away += right
            if result["intent"] == "urgence":
                urgence_on_off_topic.append(text)
        if not right:
            wrong.append(f"{intent} -> {result['intent']} ({result['confidence']:.2f}): {text}")
    accuracy = 1 - len(wrong) / len(examples)
    off_topic_rate = off_topic_kept_away / off_topic
    print(f"\nunseen-set intent accuracy: {accuracy:.1%} on {len(examples)} sentences")
    print(f"off-topic kept away (hors_sujet or fallback): {off_topic_rate:.1%} of {off_topic}")
    print("\n".join(wrong))
    assert accuracy >= UNSEEN_FLOOR
    assert off_topic_rate >= UNSEEN_OFF_TOPIC_FLOOR
    # urgence hands the call off with the emergency numbers. Char n-grams still confuse a few
    # off-topic sentences with emergencies ("mayonnaise" ~ "malaise"); the floor keeps this
    # from growing. Measured: 1 of 58 (printed above).
    print(f"off-topic read as urgence: {urgence_on_off_topic}")
    assert len(urgence_on_off_topic) <= 2, urgence_on_off_topic


OFF_TOPIC = [
    "quelle équipe a gagné le tournoi de rugby",
    "je voudrais réserver un taxi pour demain matin",
    "combien coûte un kilo de tomates au marché",
    "pouvez-vous me conseiller un bon livre",
    "ma machine à café fait un bruit bizarre",
    "le numéro de téléphone de la caf s'il vous plaît",
    "je voudrais changer mon abonnement de téléphone portable",
    "est-ce qu'il va neiger à noël",
]


@pytest.mark.parametrize("text", OFF_TOPIC)
async def test_off_topic_ends_in_fallback_or_hors_sujet(
    rasa_dialogue: RasaDialogue, text: str
) -> None:
    result = await rasa_dialogue.parse(text)
    assert result["intent"] in ("nlu_fallback", "hors_sujet"), result["ranking"][:3]


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("la mairie de saint félix ouvre quand", "quartier", "Hauts-Pavés-Saint-Félix"),
        ("les encombrants à nantes nord", "quartier", "Nantes Nord"),
        ("horaires mairie ile de nantes", "quartier", "Île de Nantes"),
        ("la déchetterie des couëts", "lieu", "Les Couëts"),
        ("renouveler ma cni", "document", "carte d'identité"),
        ("un extrait de naissance", "document", "acte de naissance"),
        ("un réverbère est éteint rue de strasbourg", "probleme", "éclairage"),
        ("des graffitis sur le mur", "probleme", "tag"),
    ],
)
async def test_entities_come_out_as_canonical_values(
    rasa_dialogue: RasaDialogue, text: str, entity: str, value: str
) -> None:
    result = await rasa_dialogue.parse(text)
    assert {"entity": entity, "value": value} in result["entities"]


def test_train_if_needed_skips_when_nothing_changed(
    rasa_dialogue: RasaDialogue, capsys: pytest.CaptureFixture[str]
) -> None:
    model = train(rasa_dialogue.settings, if_needed=True)  # the fixture trained if needed
    assert model.is_file() and model.name.startswith("allonantes-")
    assert "à jour" in capsys.readouterr().out


def test_fingerprint_follows_training_files_only(tmp_path: Path) -> None:
    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("models"))
    before = fingerprint(copy)
    (copy / "tests" / "heldout.yml").write_text("version: '3.1'\n", encoding="utf-8")
    (copy / "knowledge" / "voirie.yml").write_text("entries: []\n", encoding="utf-8")
    assert fingerprint(copy) == before  # held-out set and knowledge base are not trained on
    with (copy / "data" / "rules.yml").open("a", encoding="utf-8") as rules:
        rules.write("\n")
    assert fingerprint(copy) != before


def test_load_without_a_model_names_voicebot_train(tmp_path: Path) -> None:
    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("models"))
    settings = Settings().replace("paths", nlu_dir=copy)
    with pytest.raises(ModelError, match="voicebot train"):
        RasaDialogue.load(settings)


def test_broken_knowledge_base_refuses_to_start(tmp_path: Path) -> None:
    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("models"))
    path = copy / "knowledge" / "voirie.yml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("    source:", "    sourse:", 1), encoding="utf-8"
    )
    settings = Settings().replace("paths", nlu_dir=copy)
    with pytest.raises(
        KnowledgeBaseError, match=r"voirie\.yml, ligne \d+ : champ « sourse » inconnu"
    ):
        RasaDialogue.load(settings)

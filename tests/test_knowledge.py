"""The knowledge base: the real files load; broken files name file, line and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from voicebot.core.config import PROJECT_ROOT
from voicebot.core.errors import KnowledgeBaseError
from voicebot.dialogue.actions import TOPICS
from voicebot.dialogue.knowledge import REQUIRED_PROMPTS, KnowledgeBase, entity_values

NLU_DIR = PROJECT_ROOT / "nlu"


def load(nlu_dir: Path = NLU_DIR) -> KnowledgeBase:
    return KnowledgeBase.load(
        nlu_dir,
        topics=TOPICS,
        known_values=entity_values(NLU_DIR),
        prompt_fields={"retention_days": 30},
    )


def test_real_knowledge_base_loads_with_every_topic_and_prompt() -> None:
    kb = load()
    assert set(kb.entries) == set(TOPICS)
    for name in REQUIRED_PROMPTS:
        assert kb.prompt(name).strip()
    assert "30 jours" in kb.prompt("greeting")
    for entry in kb.entries.values():
        assert entry.source and entry.verified_on.year >= 2024
        # A short first sentence, then details: what a caller hears first is the gist.
        first_sentence = entry.answer.split(". ")[0]
        assert len(first_sentence.split()) <= 45, entry.topic


def test_every_knowledge_file_says_it_is_sample_data() -> None:
    for path in sorted((NLU_DIR / "knowledge").glob("*.yml")):
        header = path.read_text(encoding="utf-8").split("entries:")[0]
        assert "EXEMPLE" in header and "remplacer" in header, path.name


def test_variant_is_chosen_for_a_known_value_else_the_general_answer() -> None:
    kb = load()
    entry = kb.entries["decheterie"]
    text, used = entry.answer_for({"lieu": "Prairie de Mauves"})
    assert used == "lieu" and "Prairie de Mauves" in text
    assert entry.answer_for({"lieu": None}) == (entry.answer, None)
    assert entry.answer_for({"lieu": "Nulle part"}) == (entry.answer, None)


def test_texts_hold_every_prompt_and_variant_once() -> None:
    kb = load()
    texts = kb.texts()
    assert len(texts) == len(set(texts))
    assert kb.prompt("anything_else") in texts
    for entry in kb.entries.values():
        for values in entry.variants.values():
            assert set(values.values()) <= set(texts)


def test_entity_values_are_the_canonical_synonyms() -> None:
    values = entity_values(NLU_DIR)
    assert "Doulon-Bottière" in values["quartier"]
    assert "doulon" not in values["quartier"]
    assert "Prairie de Mauves" in values["lieu"]
    assert "passeport" in values["document"]


# --- broken files -----------------------------------------------------------------------

GOOD_ENTRY = """\
  - topic: stationnement
    answer: Le stationnement est payant. Détails.
    source: exemple
    verified_on: 2026-01-02
"""


@pytest.fixture()
def nlu_copy(tmp_path: Path) -> Path:
    """A minimal nlu/ folder: the real prompts and one knowledge file to break."""
    (tmp_path / "knowledge").mkdir()
    shutil.copy(NLU_DIR / "prompts.yml", tmp_path / "prompts.yml")
    return tmp_path


def write_kb(nlu_dir: Path, body: str, name: str = "test.yml") -> Path:
    path = nlu_dir / "knowledge" / name
    path.write_text("# exemple\nentries:\n" + body, encoding="utf-8")
    return path


def load_one(nlu_dir: Path, topics: tuple[str, ...] = ("stationnement",)) -> KnowledgeBase:
    return KnowledgeBase.load(
        nlu_dir,
        topics=topics,
        known_values=entity_values(NLU_DIR),
        prompt_fields={"retention_days": 7},
    )


def test_minimal_valid_file_loads(nlu_copy: Path) -> None:
    write_kb(nlu_copy, GOOD_ENTRY)
    kb = load_one(nlu_copy)
    assert kb.entries["stationnement"].answer == "Le stationnement est payant. Détails."
    assert "7 jours" in kb.prompt("greeting")


@pytest.mark.parametrize(
    ("body", "line", "field", "problem"),
    [
        (GOOD_ENTRY.replace("    source: exemple\n", ""), 3, "source", "manquant"),
        (
            GOOD_ENTRY.replace("answer: Le stationnement est payant. Détails.", "answer: 12"),
            4,
            "answer",
            "texte attendu",
        ),
        (GOOD_ENTRY.replace("2026-01-02", "hier"), 6, "verified_on", "date"),
        (GOOD_ENTRY.replace("topic: stationnement", "topic: meteo"), 3, "topic", "meteo"),
        (GOOD_ENTRY + "    couleur: bleu\n", 7, "couleur", "inconnu"),
        (GOOD_ENTRY + "    ask_for: rue\n", 7, "ask_for", "rue"),
        (GOOD_ENTRY + "    ask_for: quartier\n", 7, "ask_for", "aucune variante"),
        (
            GOOD_ENTRY + "    variants:\n      quartier:\n        Belleville: Texte.\n",
            9,
            "variants.quartier.Belleville",
            "valeur inconnue",
        ),
        (
            GOOD_ENTRY + "    variants:\n      couleur:\n        bleu: Texte.\n",
            8,
            "variants.couleur",
            "entité inconnue",
        ),
        (GOOD_ENTRY + GOOD_ENTRY, 7, "topic", "déjà décrit"),
        (GOOD_ENTRY + "    source: deux fois\n", 7, "source", "en double"),
    ],
)
def test_broken_entry_names_file_line_and_field(
    nlu_copy: Path, body: str, line: int, field: str, problem: str
) -> None:
    path = write_kb(nlu_copy, body)
    with pytest.raises(KnowledgeBaseError) as error:
        load_one(nlu_copy)
    message = str(error.value)
    assert str(path) in message
    assert f"ligne {line}" in message
    assert f"« {field}" in message
    assert problem in message


def test_invalid_yaml_names_file_and_line(nlu_copy: Path) -> None:
    path = write_kb(nlu_copy, GOOD_ENTRY + "    answer: [pas fermé\n")
    with pytest.raises(KnowledgeBaseError, match=r"ligne \d+ : YAML invalide") as error:
        load_one(nlu_copy)
    assert str(path) in str(error.value)


def test_missing_topic_entry_refuses_to_start(nlu_copy: Path) -> None:
    write_kb(nlu_copy, GOOD_ENTRY)
    with pytest.raises(KnowledgeBaseError, match=r"aucune entrée pour le.* encombrants"):
        load_one(nlu_copy, topics=("stationnement", "encombrants"))


def test_missing_prompt_and_unknown_placeholder(nlu_copy: Path) -> None:
    write_kb(nlu_copy, GOOD_ENTRY)
    prompts = nlu_copy / "prompts.yml"
    original = prompts.read_text(encoding="utf-8")
    prompts.write_text(original.replace("anything_else:", "autre_chose:"), encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=r"manquante.*anything_else"):
        load_one(nlu_copy)
    prompts.write_text(original + "extra: Dans {delai} jours.\n", encoding="utf-8")
    with pytest.raises(
        KnowledgeBaseError, match=r"ligne \d+ : champ « extra » : variable \{delai\}"
    ):
        load_one(nlu_copy)


def test_non_utf8_file_is_refused(nlu_copy: Path) -> None:
    path = nlu_copy / "knowledge" / "latin1.yml"
    path.write_bytes(("entries:\n" + GOOD_ENTRY.replace("Détails", "Détails é")).encode("latin-1"))
    with pytest.raises(KnowledgeBaseError, match="UTF-8"):
        load_one(nlu_copy)

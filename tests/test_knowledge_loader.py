"""The knowledge-base loader's decoding of the YAML trainers write: each refusal names the file,
the line and the field, and a valid file gives exactly the entries and prompts written."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from voicebot.core.errors import KnowledgeBaseError
from voicebot.dialogue.knowledge import REQUIRED_PROMPTS, Entry, KnowledgeBase

TOPICS = {"horaires", "decheterie"}
KNOWN = {"lieu": {"Prairie de Mauves", "Tougas"}, "quartier": {"Doulon"}}

HORAIRES = """\
entries:
  - topic: horaires
    answer: "La mairie ouvre   à 8 h 30.\\n  Elle ferme à 17 h."
    source: nantes.fr
    verified_on: 2026-11-25
"""
DECHETERIE = """\
entries:
  - topic: decheterie
    answer: Les déchèteries ouvrent à 9 h.
    ask_for: lieu
    variants:
      lieu:
        Prairie de Mauves: Celle de la Prairie de Mauves ouvre à 10 h.
        Tougas: Celle de Tougas ouvre à 9 h.
      document:
        facture: Apportez une facture.
    source: metropole.nantes.fr
    verified_on: '2026-11-20'
"""


def prompts_text(**changes: str | None) -> str:
    lines = {name: f"Phrase {name}." for name in REQUIRED_PROMPTS}
    lines["greeting"] = "Bonjour. Vos données sont gardées {retention_days} jours."
    for name, text in changes.items():
        if text is None:
            del lines[name]
        else:
            lines[name] = text
    return "".join(f"{name}: {text}\n" for name, text in lines.items())


def nlu(tmp_path: Path, *files: str, prompts: str | None = None) -> Path:
    folder = tmp_path / "nlu"
    (folder / "knowledge").mkdir(parents=True)
    for number, text in enumerate(files):
        (folder / "knowledge" / f"{number}.yml").write_text(text, encoding="utf-8")
    (folder / "prompts.yml").write_text(prompts or prompts_text(), encoding="utf-8")
    return folder


def load(folder: Path, topics: set[str] = TOPICS) -> KnowledgeBase:
    return KnowledgeBase.load(folder, topics, KNOWN, {"retention_days": 30})


def refused(folder: Path, topics: set[str] = TOPICS) -> str:
    with pytest.raises(KnowledgeBaseError) as caught:
        load(folder, topics)
    return str(caught.value)


def knowledge(tmp_path: Path, entry: str, prompts: str | None = None) -> tuple[Path, Path]:
    """An nlu folder whose second file holds ``entry`` (YAML lines under ``entries:``)."""
    folder = nlu(tmp_path, HORAIRES, "entries:\n" + entry, prompts=prompts)
    return folder, folder / "knowledge" / "1.yml"


# --- what a valid base gives -------------------------------------------------------------------


def test_the_entries_and_prompts_as_written(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE)
    kb = load(folder)
    first, second = folder / "knowledge" / "0.yml", folder / "knowledge" / "1.yml"
    assert kb.entries == {
        "horaires": Entry(
            topic="horaires",
            answer="La mairie ouvre à 8 h 30. Elle ferme à 17 h.",
            source="nantes.fr",
            verified_on=dt.date(2026, 11, 25),
            origin=f"{first}, ligne 2",
        ),
        "decheterie": Entry(
            topic="decheterie",
            answer="Les déchèteries ouvrent à 9 h.",
            source="metropole.nantes.fr",
            verified_on=dt.date(2026, 11, 20),
            ask_for="lieu",
            variants={
                "lieu": {
                    "Prairie de Mauves": "Celle de la Prairie de Mauves ouvre à 10 h.",
                    "Tougas": "Celle de Tougas ouvre à 9 h.",
                },
                "document": {"facture": "Apportez une facture."},
            },
            origin=f"{second}, ligne 2",
        ),
    }
    assert list(kb.entries) == ["horaires", "decheterie"]  # files in name order
    assert kb.prompts["greeting"] == "Bonjour. Vos données sont gardées 30 jours."
    assert kb.prompts["goodbye"] == "Phrase goodbye."
    assert list(kb.prompts) == list(REQUIRED_PROMPTS)


def test_only_the_topics_asked_for(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES)
    with pytest.raises(KnowledgeBaseError, match="n'est pas une intention"):
        load(folder, {"decheterie"})
    assert set(load(folder, {"horaires"}).entries) == {"horaires"}


def test_only_yml_files_are_read(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE)
    (folder / "knowledge" / "notes.yaml").write_text("pas: lu\n", encoding="utf-8")
    (folder / "knowledge" / "2.yml.bak").write_text("pas: lu\n", encoding="utf-8")
    assert set(load(folder).entries) == TOPICS


def test_a_prompt_without_placeholders_is_kept_as_written(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE, prompts=prompts_text(goodbye="Au   revoir !"))
    assert load(folder).prompts["goodbye"] == "Au revoir !"


def test_extra_prompts_are_kept(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE, prompts=prompts_text() + "bonus: En plus.\n")
    assert load(folder).prompts["bonus"] == "En plus."


def test_variants_of_an_entity_the_nlu_does_not_list_are_kept(tmp_path: Path) -> None:
    entry = (
        "  - topic: decheterie\n    answer: A.\n    variants:\n      probleme:\n"
        "        panne: B.\n    source: s\n    verified_on: 2026-01-02\n"
    )
    folder, _ = knowledge(tmp_path, entry)
    assert load(folder).entries["decheterie"].variants == {"probleme": {"panne": "B."}}


# --- refusals: the folder and the files ------------------------------------------------------


def test_no_knowledge_file(tmp_path: Path) -> None:
    folder = nlu(tmp_path)
    assert (
        refused(folder) == f"{folder / 'knowledge'} : aucun fichier .yml de base de connaissances"
    )


def test_a_topic_without_an_entry(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES)
    assert refused(folder, {"horaires", "decheterie", "abc"}) == (
        f"{folder / 'knowledge'} : aucune entrée pour le(s) sujet(s) abc, decheterie "
        "(ajoutez une entrée « topic: » pour chacun)"
    )


def test_a_topic_described_twice(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE, HORAIRES)
    first, third = folder / "knowledge" / "0.yml", folder / "knowledge" / "2.yml"
    assert refused(folder) == (
        f"{third}, ligne 2 : champ « topic » : le sujet « horaires » est déjà décrit "
        f"({first}, ligne 2)"
    )


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE)
    path = folder / "knowledge" / "1.yml"
    path.write_bytes(DECHETERIE.encode("latin-1"))
    assert refused(folder) == f"{path} : le fichier n'est pas en UTF-8"


def test_a_folder_named_like_a_file(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE)
    (folder / "knowledge" / "2.yml").mkdir()
    assert refused(folder) == f"{folder / 'knowledge' / '2.yml'} : illisible (Is a directory)"


def test_an_empty_file(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE, "# rien\n")
    assert refused(folder) == f"{folder / 'knowledge' / '2.yml'}, ligne 1 : fichier vide"


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, "entries:\n  - topic: [decheterie\n")
    message = refused(folder)
    assert message.startswith(f"{folder / 'knowledge' / '1.yml'}, ligne 3 : YAML invalide (")


def test_nesting_up_to_the_limit_is_parsed(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, "entries: " + "[" * 100 + "]" * 100 + "\n")
    # parsed: refused by the entry check, not by the nesting guard
    assert "YAML imbriqué" not in refused(folder)


def test_nesting_past_the_limit_is_refused(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, "entries: " + "[" * 101 + "]" * 101 + "\n")
    assert refused(folder) == f"{folder / 'knowledge' / '1.yml'} : YAML imbriqué trop profondément"


@pytest.mark.parametrize("text", ["- entries\n", "entries\n", "12\n"])
def test_a_file_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    folder = nlu(tmp_path, HORAIRES, text)
    assert refused(folder) == (
        f"{folder / 'knowledge' / '1.yml'}, ligne 1 : le fichier doit être une table « clé: valeur »"
    )


def test_a_file_without_entries(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, "entrees:\n  - topic: decheterie\n")
    assert (
        refused(folder) == f"{folder / 'knowledge' / '1.yml'}, ligne 1 : champ « entries » manquant"
    )


def test_a_file_with_another_field(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE + "zz: 1\nauteur: moi\n")
    assert (
        refused(folder) == f"{folder / 'knowledge' / '1.yml'}, ligne 14 : champ « auteur » inconnu"
    )


@pytest.mark.parametrize("value", ["decheterie", "{topic: decheterie}", ""])
def test_entries_must_be_a_list(tmp_path: Path, value: str) -> None:
    folder = nlu(tmp_path, HORAIRES, "\n\nentries: " + value + "\n")
    assert refused(folder) == (
        f"{folder / 'knowledge' / '1.yml'}, ligne 3 : champ « entries » : liste attendue"
    )


def test_a_key_that_is_not_a_name(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, "entries: []\n[a, b]: 1\n")
    assert (
        refused(folder)
        == f"{folder / 'knowledge' / '1.yml'}, ligne 2 : clé invalide dans le fichier"
    )


def test_a_key_written_twice(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES, "entries: []\nentries: []\n")
    assert refused(folder) == (
        f"{folder / 'knowledge' / '1.yml'}, ligne 2 : champ « entries » : en double dans le fichier"
    )


# --- refusals: one entry -----------------------------------------------------------------------

ENTRY = (
    "  - topic: decheterie\n"
    "    answer: Réponse.\n"
    "    source: nantes.fr\n"
    "    verified_on: 2026-11-25\n"
)


def entry_refused(tmp_path: Path, entry: str) -> tuple[str, Path]:
    folder, path = knowledge(tmp_path, entry)
    return refused(folder), path


def test_an_entry_that_is_not_a_mapping(tmp_path: Path) -> None:
    message, path = entry_refused(tmp_path, "  - decheterie\n")
    assert message == f"{path}, ligne 2 : l'entrée doit être une table « clé: valeur »"


def test_an_unknown_entry_field(tmp_path: Path) -> None:
    message, path = entry_refused(tmp_path, ENTRY + "    auteur: moi\n")
    assert message == (
        f"{path}, ligne 6 : champ « auteur » inconnu "
        "(attendus : answer, ask_for, source, topic, variants, verified_on)"
    )


def test_a_field_written_twice_in_an_entry(tmp_path: Path) -> None:
    message, path = entry_refused(tmp_path, ENTRY + "    answer: Autre.\n")
    assert message == f"{path}, ligne 6 : champ « answer » : en double dans l'entrée"


@pytest.mark.parametrize("field", ["topic", "answer", "source", "verified_on"])
def test_a_missing_entry_field(tmp_path: Path, field: str) -> None:
    lines = [line for line in ENTRY.splitlines(keepends=True) if f" {field}:" not in line]
    entry = "  - " + "".join(lines).lstrip(" -")
    message, path = entry_refused(tmp_path, entry)
    assert message == f"{path}, ligne 2 : champ « {field} » manquant"


@pytest.mark.parametrize("value", ["[a, b]", "{a: b}", "12", "true", "2026-11-25", "~"])
def test_texts_must_be_text(tmp_path: Path, value: str) -> None:
    message, path = entry_refused(tmp_path, ENTRY.replace("Réponse.", value))
    assert message == f"{path}, ligne 3 : champ « answer » : texte attendu"


@pytest.mark.parametrize("value", ["''", '"  \\n "'])
def test_texts_must_not_be_empty(tmp_path: Path, value: str) -> None:
    message, path = entry_refused(tmp_path, ENTRY.replace("nantes.fr", value))
    assert message == f"{path}, ligne 4 : champ « source » : texte vide"


def test_quoted_numbers_are_text(tmp_path: Path) -> None:
    folder, _ = knowledge(tmp_path, ENTRY.replace("Réponse.", "'12'"))
    assert load(folder).entries["decheterie"].answer == "12"


def test_a_topic_the_bot_does_not_answer(tmp_path: Path) -> None:
    message, path = entry_refused(tmp_path, ENTRY.replace("decheterie", "meteo"))
    assert message == (
        f"{path}, ligne 2 : champ « topic » : « meteo » n'est pas une intention à laquelle "
        "le robot répond (decheterie, horaires)"
    )


@pytest.mark.parametrize("value", ["2026-02-30", "25/11/2026", "demain", "[2026, 11, 25]"])
def test_a_bad_date(tmp_path: Path, value: str) -> None:
    message, path = entry_refused(tmp_path, ENTRY.replace("2026-11-25", value))
    shown = "None" if value.startswith("[") else repr(value)
    assert (
        message
        == f"{path}, ligne 5 : champ « verified_on » : date AAAA-MM-JJ attendue, pas {shown}"
    )


def test_ask_for_an_entity_the_bot_cannot_ask(tmp_path: Path) -> None:
    entry = ENTRY + "    ask_for: document\n    variants:\n      document:\n        facture: F.\n"
    message, path = entry_refused(tmp_path, entry)
    assert message == (
        f"{path}, ligne 6 : champ « ask_for » : « document » n'est pas l'une des valeurs "
        "quartier, lieu"
    )


@pytest.mark.parametrize("entity", ["quartier", "lieu"])
def test_ask_for_without_its_variants(tmp_path: Path, entity: str) -> None:
    entry = ENTRY + f"    ask_for: {entity}\n    variants:\n      probleme:\n        panne: P.\n"
    message, path = entry_refused(tmp_path, entry)
    assert message == (
        f"{path}, ligne 6 : champ « ask_for » : aucune variante « variants.{entity} » : "
        "la question ne servirait à rien"
    )


def test_ask_for_with_its_variants(tmp_path: Path) -> None:
    entry = ENTRY + "    ask_for: quartier\n    variants:\n      quartier:\n        Doulon: D.\n"
    folder, _ = knowledge(tmp_path, entry)
    found = load(folder).entries["decheterie"]
    assert (found.ask_for, found.variants) == ("quartier", {"quartier": {"Doulon": "D."}})


def test_variants_of_an_unknown_entity(tmp_path: Path) -> None:
    message, path = entry_refused(tmp_path, ENTRY + "    variants:\n      rue:\n        x: X.\n")
    assert message == (
        f"{path}, ligne 7 : champ « variants.rue » : entité inconnue "
        "(attendues : quartier, lieu, document, probleme)"
    )


def test_a_variant_value_the_nlu_does_not_know(tmp_path: Path) -> None:
    entry = ENTRY + "    variants:\n      lieu:\n        Tougas: T.\n        Ailleurs: A.\n"
    message, path = entry_refused(tmp_path, entry)
    assert message == (
        f"{path}, ligne 9 : champ « variants.lieu.Ailleurs » : valeur inconnue du NLU "
        "(connues : Prairie de Mauves, Tougas)"
    )


@pytest.mark.parametrize(
    ("variants", "line", "what"),
    [
        ("    variants: [lieu]\n", 6, "« variants »"),
        ("    variants:\n      lieu: [Tougas]\n", 7, "« variants.lieu »"),
    ],
)
def test_variants_must_be_mappings(tmp_path: Path, variants: str, line: int, what: str) -> None:
    message, path = entry_refused(tmp_path, ENTRY + variants)
    assert message == f"{path}, ligne {line} : {what} doit être une table « clé: valeur »"


def test_a_variant_text_must_be_text(tmp_path: Path) -> None:
    message, path = entry_refused(
        tmp_path, ENTRY + "    variants:\n      lieu:\n        Tougas: 12\n"
    )
    assert message == f"{path}, ligne 8 : champ « variants.lieu.Tougas » : texte attendu"


def test_every_entry_of_a_file_is_checked(tmp_path: Path) -> None:
    folder = nlu(tmp_path, HORAIRES + ENTRY + "  - 12\n")
    message = refused(folder)
    assert (
        message
        == f"{folder / 'knowledge' / '0.yml'}, ligne 10 : l'entrée doit être une table « clé: valeur »"
    )


# --- refusals: the prompts -------------------------------------------------------------------


def prompts_refused(tmp_path: Path, prompts: str) -> tuple[str, Path]:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE, prompts=prompts)
    return refused(folder), folder / "prompts.yml"


def test_missing_prompts_are_listed_in_order(tmp_path: Path) -> None:
    message, path = prompts_refused(tmp_path, prompts_text(transfer=None, greeting=None))
    assert message == f"{path} : phrase(s) manquante(s) : greeting, transfer"


def test_an_unknown_placeholder(tmp_path: Path) -> None:
    message, path = prompts_refused(tmp_path, prompts_text(goodbye="Au revoir {nom} {age}."))
    line = REQUIRED_PROMPTS.index("goodbye") + 1
    assert message == (
        f"{path}, ligne {line} : champ « goodbye » : variable {{age}} inconnue "
        "(connues : retention_days)"
    )


@pytest.mark.parametrize("text", ["'Au revoir {.'", "'Au revoir }.'", "'Au {retention_days!z}.'"])
def test_malformed_braces(tmp_path: Path, text: str) -> None:
    message, path = prompts_refused(tmp_path, prompts_text(goodbye=text))
    line = REQUIRED_PROMPTS.index("goodbye") + 1
    assert message.startswith(f"{path}, ligne {line} : champ « goodbye » : accolades mal formées (")


def test_a_prompt_must_be_text(tmp_path: Path) -> None:
    message, path = prompts_refused(tmp_path, prompts_text(goodbye="[a, b]"))
    line = REQUIRED_PROMPTS.index("goodbye") + 1
    assert message == f"{path}, ligne {line} : champ « goodbye » : texte attendu"


def test_prompts_must_be_a_mapping(tmp_path: Path) -> None:
    message, path = prompts_refused(tmp_path, "- greeting\n")
    assert message == f"{path}, ligne 1 : le fichier doit être une table « clé: valeur »"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("'Tapez {{dièse}}.'", "Tapez {dièse}."),  # no placeholder: the braces still unescape
        ("'{{x}} {retention_days} jours.'", "{x} 30 jours."),
    ],
)
def test_doubled_braces_are_one_brace(tmp_path: Path, text: str, said: str) -> None:
    folder = nlu(tmp_path, HORAIRES, DECHETERIE, prompts=prompts_text(goodbye=text))
    assert load(folder).prompts["goodbye"] == said


def test_a_topic_must_be_text(tmp_path: Path) -> None:
    message, path = entry_refused(tmp_path, ENTRY.replace("topic: decheterie", "topic: [a]"))
    assert message == f"{path}, ligne 2 : champ « topic » : texte attendu"


def test_ask_for_must_be_text(tmp_path: Path) -> None:
    message, path = entry_refused(tmp_path, ENTRY + "    ask_for: [lieu]\n")
    assert message == f"{path}, ligne 6 : champ « ask_for » : texte attendu"

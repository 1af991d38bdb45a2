"""The knowledge base: what the bot answers, read at start-up from ``nlu/knowledge/*.yml``
and the fixed sentences from ``nlu/prompts.yml``.

Trainers edit these files without retraining. They are validated on load: a broken file
raises ``KnowledgeBaseError`` naming the file, the line and the field, and the bot refuses
to start rather than answer wrongly. Line numbers come from YAML's node marks, so the
files are walked as nodes (``yaml.compose``) instead of plain Python values.

Knowledge file format (one entry per topic; ``topic`` is the Rasa intent it answers)::

    entries:
      - topic: decheterie
        answer: Short first sentence. Then the details.
        ask_for: lieu              # optional: ask once for this entity when unknown
        variants:                  # optional: entity -> canonical value -> answer
          lieu:
            Prairie de Mauves: ...
        source: where the content comes from
        verified_on: 2026-11-25
"""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from voicebot.core.config import MAX_YAML_NESTING, yaml_nesting
from voicebot.core.errors import KnowledgeBaseError

STR_TAG = "tag:yaml.org,2002:str"
# Entities a knowledge entry may vary on (the Rasa entities of nlu/domain.yml).
ENTITIES = ("quartier", "lieu", "document", "probleme")
# Entities the bot may ask the caller for, once, when an answer depends on them.
ASKABLE = ("quartier", "lieu")
ENTRY_FIELDS = {"topic", "answer", "ask_for", "variants", "source", "verified_on"}
REQUIRED_FIELDS = ("topic", "answer", "source", "verified_on")

# Prompts the session and the actions use: all must exist in nlu/prompts.yml.
REQUIRED_PROMPTS = (
    "greeting",
    "anything_else",
    "silence_check",
    "silence_goodbye",
    "silence_transfer",
    "not_heard",
    "transfer",
    "transfer_error",
    "max_duration",
    "goodbye",
    "dtmf_menu",
    "listening",
    "rephrase",
    "urgence",
    "hello",
    "thanks",
    "off_topic",
    "nothing_to_repeat",
    "ask_quartier",
    "ask_lieu",
)


@dataclass(frozen=True)
class Entry:
    """One topic's answer, with its optional variants per entity value."""

    topic: str
    answer: str
    source: str
    verified_on: dt.date
    ask_for: str | None = None
    variants: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    origin: str = ""  # "file:line", for messages

    def answer_for(self, known: Mapping[str, str | None]) -> tuple[str, str | None]:
        """The most specific answer for what we know, and the entity it used (or None).

        The entity the entry asks for wins, then the others in their declared order.
        """
        order = [self.ask_for] if self.ask_for else []
        order += [name for name in self.variants if name not in order]
        for name in order:
            value = known.get(name)
            if value and value in self.variants.get(name, {}):
                return self.variants[name][value], name
        return self.answer, None

    def texts(self) -> list[str]:
        return [self.answer] + [
            text for values in self.variants.values() for text in values.values()
        ]


@dataclass(frozen=True)
class KnowledgeBase:
    entries: Mapping[str, Entry]
    prompts: Mapping[str, str]

    def entry(self, topic: str) -> Entry | None:
        return self.entries.get(topic)

    def prompt(self, name: str) -> str:
        return find_prompt(self.prompts, name)

    def texts(self) -> list[str]:
        """Every fixed sentence the bot can say (prompts, answers, variants), once each."""
        seen: dict[str, None] = {}
        for text in self.prompts.values():
            seen.setdefault(text, None)
        for entry in self.entries.values():
            for text in entry.texts():
                seen.setdefault(text, None)
        return list(seen)

    @classmethod
    def load(
        cls,
        nlu_dir: Path,
        topics: Iterable[str],
        known_values: Mapping[str, Iterable[str]] | None = None,
        prompt_fields: Mapping[str, object] | None = None,
    ) -> KnowledgeBase:
        """Load and validate the knowledge base and prompts. Raises KnowledgeBaseError.

        ``topics``: the intents that need an answer (each must have exactly one entry).
        ``known_values``: canonical entity values (from the NLU synonyms); a variant key
        outside them could never be matched, so it is an error.
        ``prompt_fields``: values for ``{placeholders}`` in prompts (e.g. retention_days).
        """
        folder = nlu_dir / "knowledge"
        files = sorted(folder.glob("*.yml"))
        if not files:
            raise KnowledgeBaseError(f"{folder} : aucun fichier .yml de base de connaissances")
        wanted = set(topics)
        known = {name: set(values) for name, values in (known_values or {}).items()}
        entries: dict[str, Entry] = {}
        for path in files:
            for entry in _load_entries(path, wanted, known):
                if entry.topic in entries:
                    raise KnowledgeBaseError(
                        f"{entry.origin} : champ « topic » : le sujet « {entry.topic} » "
                        f"est déjà décrit ({entries[entry.topic].origin})"
                    )
                entries[entry.topic] = entry
        missing = sorted(wanted - set(entries))
        if missing:
            raise KnowledgeBaseError(
                f"{folder} : aucune entrée pour le(s) sujet(s) {', '.join(missing)} "
                "(ajoutez une entrée « topic: » pour chacun)"
            )
        prompts = _load_prompts(nlu_dir / "prompts.yml", prompt_fields or {})
        return cls(entries=entries, prompts=prompts)


# --- validation helpers -------------------------------------------------------------------


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}, ligne {node.start_mark.line + 1}"


def _compose(path: Path) -> yaml.Node:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise KnowledgeBaseError(f"{path} : le fichier n'est pas en UTF-8") from None
    except OSError as exc:
        raise KnowledgeBaseError(f"{path} : illisible ({exc.strerror})") from None
    if yaml_nesting(text) > MAX_YAML_NESTING:
        raise KnowledgeBaseError(f"{path} : YAML imbriqué trop profondément")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise KnowledgeBaseError(f"{path} : YAML imbriqué trop profondément") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f", ligne {mark.line + 1}" if mark is not None else ""
        raise KnowledgeBaseError(f"{path}{line} : YAML invalide ({exc.problem})") from None
    except yaml.YAMLError as exc:
        raise KnowledgeBaseError(f"{path} : YAML invalide ({exc})") from None
    if node is None:
        raise KnowledgeBaseError(f"{path}, ligne 1 : fichier vide")
    return node


def _mapping(path: Path, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping node as {key: (key node, value node)}; duplicate keys are errors."""
    if not isinstance(node, yaml.MappingNode):
        raise KnowledgeBaseError(
            f"{_where(path, node)} : {what} doit être une table « clé: valeur »"
        )
    result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise KnowledgeBaseError(f"{_where(path, key_node)} : clé invalide dans {what}")
        key = str(key_node.value)
        if key in result:
            raise KnowledgeBaseError(
                f"{_where(path, key_node)} : champ « {key} » : en double dans {what}"
            )
        result[key] = (key_node, value_node)
    return result


def _text(path: Path, node: yaml.Node, name: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag != STR_TAG:
        raise KnowledgeBaseError(f"{_where(path, node)} : champ « {name} » : texte attendu")
    text = " ".join(str(node.value).split())
    if not text:
        raise KnowledgeBaseError(f"{_where(path, node)} : champ « {name} » : texte vide")
    return text


def _date(path: Path, node: yaml.Node, name: str) -> dt.date:
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise KnowledgeBaseError(
            f"{_where(path, node)} : champ « {name} » : date AAAA-MM-JJ attendue, pas {value!r}"
        ) from None


def _load_entries(path: Path, topics: set[str], known: Mapping[str, set[str]]) -> list[Entry]:
    root = _mapping(path, _compose(path), "le fichier")
    if "entries" not in root:
        raise KnowledgeBaseError(f"{path}, ligne 1 : champ « entries » manquant")
    extra = sorted(set(root) - {"entries"})
    if extra:
        raise KnowledgeBaseError(
            f"{_where(path, root[extra[0]][0])} : champ « {extra[0]} » inconnu"
        )
    items = root["entries"][1]
    if not isinstance(items, yaml.SequenceNode):
        raise KnowledgeBaseError(f"{_where(path, items)} : champ « entries » : liste attendue")
    return [_entry(path, item, topics, known) for item in items.value]


def _entry(path: Path, node: yaml.Node, topics: set[str], known: Mapping[str, set[str]]) -> Entry:
    fields = _mapping(path, node, "l'entrée")
    for name, (key_node, _) in fields.items():
        if name not in ENTRY_FIELDS:
            raise KnowledgeBaseError(
                f"{_where(path, key_node)} : champ « {name} » inconnu "
                f"(attendus : {', '.join(sorted(ENTRY_FIELDS))})"
            )
    for name in REQUIRED_FIELDS:
        if name not in fields:
            raise KnowledgeBaseError(f"{_where(path, node)} : champ « {name} » manquant")
    topic = _text(path, fields["topic"][1], "topic")
    if topic not in topics:
        raise KnowledgeBaseError(
            f"{_where(path, fields['topic'][1])} : champ « topic » : « {topic} » n'est pas "
            f"une intention à laquelle le robot répond ({', '.join(sorted(topics))})"
        )
    ask_for = None
    if "ask_for" in fields:
        ask_for = _text(path, fields["ask_for"][1], "ask_for")
        if ask_for not in ASKABLE:
            raise KnowledgeBaseError(
                f"{_where(path, fields['ask_for'][1])} : champ « ask_for » : "
                f"« {ask_for} » n'est pas l'une des valeurs {', '.join(ASKABLE)}"
            )
    variants: dict[str, dict[str, str]] = {}
    if "variants" in fields:
        for entity, (entity_key, values_node) in _mapping(
            path, fields["variants"][1], "« variants »"
        ).items():
            if entity not in ENTITIES:
                raise KnowledgeBaseError(
                    f"{_where(path, entity_key)} : champ « variants.{entity} » : entité inconnue "
                    f"(attendues : {', '.join(ENTITIES)})"
                )
            variants[entity] = {}
            for value, (value_key, text_node) in _mapping(
                path, values_node, f"« variants.{entity} »"
            ).items():
                allowed = known.get(entity)
                if allowed is not None and value not in allowed:
                    raise KnowledgeBaseError(
                        f"{_where(path, value_key)} : champ « variants.{entity}.{value} » : "
                        f"valeur inconnue du NLU (connues : {', '.join(sorted(allowed))})"
                    )
                variants[entity][value] = _text(path, text_node, f"variants.{entity}.{value}")
    if ask_for is not None and ask_for not in variants:
        raise KnowledgeBaseError(
            f"{_where(path, fields['ask_for'][1])} : champ « ask_for » : aucune variante "
            f"« variants.{ask_for} » : la question ne servirait à rien"
        )
    return Entry(
        topic=topic,
        answer=_text(path, fields["answer"][1], "answer"),
        source=_text(path, fields["source"][1], "source"),
        verified_on=_date(path, fields["verified_on"][1], "verified_on"),
        ask_for=ask_for,
        variants=variants,
        origin=_where(path, node),
    )


def _load_prompts(path: Path, values: Mapping[str, object]) -> dict[str, str]:
    prompts: dict[str, str] = {}
    for name, (_, text_node) in _mapping(path, _compose(path), "le fichier").items():
        text = _text(path, text_node, name)
        try:
            placeholders = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            unknown = sorted(placeholders - set(values))
            if unknown:
                raise KnowledgeBaseError(
                    f"{_where(path, text_node)} : champ « {name} » : variable "
                    f"{{{unknown[0]}}} inconnue (connues : {', '.join(sorted(values)) or 'aucune'})"
                )
            prompts[name] = text.format(**values)  # {{ and }} are literal braces
        except ValueError as exc:
            raise KnowledgeBaseError(
                f"{_where(path, text_node)} : champ « {name} » : accolades mal formées ({exc})"
            ) from None
    missing = [name for name in REQUIRED_PROMPTS if name not in prompts]
    if missing:
        raise KnowledgeBaseError(f"{path} : phrase(s) manquante(s) : {', '.join(missing)}")
    return prompts


def entity_values(nlu_dir: Path) -> dict[str, set[str]]:
    """Canonical entity values, from the NLU lookup tables and synonyms in nlu/data.

    A lookup entry maps to its synonym's canonical value when it has one, else to itself.
    """
    lookups: dict[str, list[str]] = {}
    synonyms: dict[str, str] = {}
    for path in sorted((nlu_dir / "data").rglob("*.yml")):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise KnowledgeBaseError(f"{path} : illisible ({exc})") from None
        for item in document.get("nlu", []) if isinstance(document, dict) else []:
            if not isinstance(item, dict):
                continue
            examples = [
                line.strip()[2:].strip()
                for line in str(item.get("examples", "")).splitlines()
                if line.strip().startswith("- ")
            ]
            if "lookup" in item:
                lookups.setdefault(str(item["lookup"]), []).extend(examples)
            elif "synonym" in item:
                for example in examples:
                    synonyms[example.lower()] = str(item["synonym"])
    return {
        entity: {synonyms.get(value.lower(), value) for value in values}
        for entity, values in lookups.items()
    }


def find_prompt(prompts: Mapping[str, str], name: str) -> str:
    """The prompt ``name``, or a KeyError that names the file to look in."""
    try:
        return prompts[name]
    except KeyError:
        raise KeyError(f"unknown prompt {name!r} (nlu/prompts.yml)") from None

"""Teaching the bot a caller's sentence from the console (« Améliorer le robot »).

A trainer gives a sentence an intent of the domain, and optionally marks one entity value of
the lookup tables in it. Accepted sentences go into ONE file, ``nlu/data/appels_reetiquetes.yml``
(Rasa 3 NLU YAML), rewritten atomically and read back by Rasa's own reader before it
replaces the old one; the next ``voicebot train`` sees the change (its fingerprint covers
every ``nlu/data`` file) and retrains, behind its quality gate.

Refused, with the reason in French (``RelabelRefused``): an empty sentence, a sentence with
a phone number (masked or not, in digits or dictated in words: personal data is never
trained on), an intent not in the domain, an entity value not in the lookup tables or not
in the sentence, a sentence of the test sets (``nlu/tests``: never trained on), a sentence
already trained under another intent. A sentence already trained under the same intent is
not an error: ``Taught.known``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from voicebot.core.errors import VoicebotError
from voicebot.core.french import sentence_key
from voicebot.core.logs import redact_numbers
from voicebot.dialogue.catalogue import _examples as example_lines
from voicebot.dialogue.catalogue import domain_intents
from voicebot.dialogue.knowledge import entity_values
from voicebot.dialogue.nlu_eval import load_examples

RELABELLED_FILE = "appels_reetiquetes.yml"
IGNORE = "ignorer"  # the console's choice that sets a sentence aside (never trained)
MAX_SENTENCE_CHARS = 500  # as the dialogue cuts a caller's text (agent.MAX_TEXT_CHARS)
# What ``redact_numbers`` leaves in place of a number in the call records.
NUMBER_MARK = redact_numbers("0240000000")
# Characters of Rasa's entity markup: a sentence holding them would not read back as written.
MARKUP_CHARACTERS = frozenset("[]{}")
# A number dictated in words (« zéro six douze trente-quatre… »): the recogniser writes it
# in words, which the records' redaction (digits) does not see.
NUMBER_WORDS = frozenset((
    "zero", "un", "une", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf",
    "dix", "onze", "douze", "treize", "quatorze", "quinze", "seize", "vingt", "trente",
    "quarante", "cinquante", "soixante", "septante", "huitante", "nonante", "cent", "cents",
    "mille", "et",
))  # fmt: skip
MAX_NUMBER_WORDS_IN_A_ROW = 4
HEADER = (
    "# Sentences callers really said, labelled by trainers in the console (« Améliorer le\n"
    "# robot »). Written by voicebot.dialogue.relabel: edit with care, the console rewrites\n"
    "# this file (who decided what and when: the records' relabels table).\n"
)


class RelabelRefused(VoicebotError):
    """A sentence that may not be taught as asked; ``conflict``: it clashes with the data
    (another intent's, a test set's) rather than being a bad request."""

    def __init__(self, message: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


@dataclass(frozen=True)
class Taught:
    text: str  # the sentence as trained (spaces collapsed)
    intent: str
    example: str  # the line in the file: the sentence with its entity markup, if any
    known: bool  # already trained under this intent: nothing written
    message: str  # for the trainer, in French


@dataclass(frozen=True)
class Choices:
    """What the console's pickers offer: the domain's intents, the lookups' values."""

    intents: tuple[str, ...]
    entities: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {"intents": list(self.intents), "entities": self.entities, "ignore": IGNORE}


def clean_sentence(text: str) -> str:
    """One line, spaces collapsed, as the dialogue reads a caller's text."""
    return " ".join(text.split())[:MAX_SENTENCE_CHARS]


def has_number(text: str) -> bool:
    """A phone number, masked by the records or still there, in digits or in words."""
    if NUMBER_MARK in text or redact_numbers(text) != text:
        return True
    in_a_row = 0
    for word in sentence_key(text).split():
        in_a_row = in_a_row + 1 if word in NUMBER_WORDS else 0
        if in_a_row >= MAX_NUMBER_WORDS_IN_A_ROW:
            return True
    return False


class Relabeller:
    """Teaches sentences into ``nlu/data/appels_reetiquetes.yml`` of one Rasa project.

    Blocking (reads every NLU file, a fraction of a second): call it off the event loop.
    One lock: two trainers saving at once each see the other's sentence."""

    def __init__(self, nlu_dir: Path) -> None:
        self.nlu_dir = nlu_dir
        self.path = nlu_dir / "data" / RELABELLED_FILE
        self._lock = threading.Lock()

    def choices(self) -> Choices:
        values = entity_values(self.nlu_dir)
        return Choices(
            intents=domain_intents(self.nlu_dir),
            entities={entity: sorted(values[entity], key=str.casefold) for entity in values},
        )

    def check_ignorable(self, text: str) -> str:
        """The sentence to set aside, or RelabelRefused (empty)."""
        sentence = clean_sentence(text)
        if not sentence_key(sentence):
            raise RelabelRefused("La phrase est vide.")
        return sentence

    def teach(
        self, text: str, intent: str, entity: str | None = None, value: str | None = None
    ) -> Taught:
        """Add the sentence under ``intent`` (with ``entity``=``value`` marked), or refuse."""
        sentence = self._checked_sentence(text)
        with self._lock:
            intents = domain_intents(self.nlu_dir)
            if intent not in intents:
                raise RelabelRefused(
                    f"Intention inconnue : « {intent} » n'est pas une intention du robot."
                )
            example = self._example(sentence, entity, value)
            key = sentence_key(sentence)
            self._refuse_test_sentence(key)
            known = self._trained_intents(key)
            others = sorted(known - {intent})
            if others:
                raise RelabelRefused(
                    f"Cette phrase est déjà apprise sous une autre intention "
                    f"(« {', '.join(others)} ») : la corriger dans nlu/data d'abord.",
                    conflict=True,
                )
            if intent in known:
                return Taught(
                    sentence,
                    intent,
                    example,
                    known=True,
                    message=f"Déjà appris : le robot connaît cette phrase sous « {intent} ».",
                )
            self._write_with(intent, example, sentence)
        return Taught(
            sentence,
            intent,
            example,
            known=False,
            message=(
                f"Enregistré : « {sentence} » → « {intent} ». Le robot l'apprendra au "
                "prochain entraînement."
            ),
        )

    # ----- checks ----------------------------------------------------------------------

    def _checked_sentence(self, text: str) -> str:
        sentence = self.check_ignorable(text)
        if has_number(sentence):
            raise RelabelRefused(
                "La phrase contient un numéro (donnée personnelle) : elle ne peut pas servir "
                "à l'entraînement. Choisir « Ignorer »."
            )
        if MARKUP_CHARACTERS & set(sentence):
            raise RelabelRefused(
                "La phrase contient des crochets ou des accolades, réservés au balisage "
                "des entités : elle ne peut pas être apprise telle quelle."
            )
        return sentence

    def _example(self, sentence: str, entity: str | None, value: str | None) -> str:
        """The sentence, with ``entity``'s span marked when one is asked for."""
        if not entity and not value:
            return sentence
        if not entity or not value:
            raise RelabelRefused("Choisir à la fois le type d'information et sa valeur.")
        values = entity_values(self.nlu_dir)
        if entity not in values:
            raise RelabelRefused(f"Type d'information inconnu : « {entity} ».")
        if value not in values[entity]:
            raise RelabelRefused(
                f"« {value} » n'est pas une valeur connue de « {entity} » (listes de nlu/data)."
            )
        span = self._find_value(sentence, entity, value)
        if span is None:
            raise RelabelRefused(
                f"La phrase ne contient aucune façon de dire « {value} » connue du robot."
            )
        start, end = span
        said = sentence[start:end]
        if said == value:
            markup = f"[{said}]({entity})"
        else:
            annotation = json.dumps({"entity": entity, "value": value}, ensure_ascii=False)
            markup = f"[{said}]{annotation}"
        return sentence[:start] + markup + sentence[end:]

    def _find_value(self, sentence: str, entity: str, value: str) -> tuple[int, int] | None:
        """The longest span of the sentence that a lookup entry of ``value`` matches."""
        data = self._training_data()
        synonyms = {str(k).lower(): str(v) for k, v in data.entity_synonyms.items()}
        entries = [
            str(element)
            for table in data.lookup_tables
            if table.get("name") == entity
            for element in table.get("elements") or []
            if synonyms.get(str(element).lower(), str(element)) == value
        ]
        found: tuple[int, int] | None = None
        for entry in entries:
            pattern = re.compile(rf"(?<!\w){re.escape(entry)}(?!\w)", re.IGNORECASE)
            match = pattern.search(sentence)
            if match and (found is None or match.end() - match.start() > found[1] - found[0]):
                found = (match.start(), match.end())
        return found

    def _refuse_test_sentence(self, key: str) -> None:
        for path in sorted((self.nlu_dir / "tests").glob("*.yml")):
            for text, _intent in load_examples(path):
                if sentence_key(text) == key:
                    raise RelabelRefused(
                        f"Cette phrase fait partie d'un jeu de test (nlu/tests/{path.name}) : "
                        "le robot ne doit jamais l'apprendre, sinon son évaluation serait "
                        "faussée.",
                        conflict=True,
                    )

    def _trained_intents(self, key: str) -> set[str]:
        return {
            str(message.get("intent"))
            for message in self._training_data().intent_examples
            if sentence_key(str(message.get("text"))) == key
        }

    def _training_data(self) -> Any:
        """Every NLU file training reads (nlu/data), merged by Rasa's own reader."""
        from voicebot.dialogue.rasa_runtime import quiet_rasa

        quiet_rasa()
        from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader
        from rasa.shared.nlu.training_data.training_data import TrainingData

        parts = []
        for path in sorted((self.nlu_dir / "data").rglob("*.yml")):
            if path.is_file() and RasaYAMLReader.is_yaml_nlu_file(path):
                parts.append(_read_nlu(path.read_text(encoding="utf-8"), str(path)))
        return TrainingData().merge(*parts)

    # ----- the file ----------------------------------------------------------------------

    def _write_with(self, intent: str, example: str, sentence: str) -> None:
        """The file with one more example, validated by Rasa, then swapped in atomically."""
        examples = self._current_examples()
        examples.setdefault(intent, []).append(example)
        text = render(examples)
        # Rasa must read the new example back as it is meant, or the old file stays.
        read_back = _read_nlu(text, str(self.path)).intent_examples
        if not any(m.get("text") == sentence and m.get("intent") == intent for m in read_back):
            raise VoicebotError(f"{self.path}: the new example would not read back as written")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{RELABELLED_FILE}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _current_examples(self) -> dict[str, list[str]]:
        """The file's examples per intent, markup kept (empty when there is no file yet)."""
        if not self.path.is_file():
            return {}
        try:
            document = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise VoicebotError(f"{self.path}: unreadable ({exc})") from None
        return _examples_of(document)


def render(examples: dict[str, list[str]]) -> str:
    """Rasa 3 NLU YAML: one ``- intent:`` block per intent, intents in alphabetical order."""
    lines = [HEADER.rstrip("\n"), 'version: "3.1"', "nlu:"]
    for intent in sorted(examples):
        lines += [f"- intent: {intent}", "  examples: |"]
        lines += [f"    - {example}" for example in examples[intent]]
    return "\n".join(lines) + "\n"


def _examples_of(document: Any) -> dict[str, list[str]]:
    """An NLU document's example lines per intent, as written (entity markup kept)."""
    examples: dict[str, list[str]] = {}
    items = document.get("nlu") if isinstance(document, dict) else None
    for item in items or []:
        if isinstance(item, dict) and "intent" in item:
            examples.setdefault(str(item["intent"]), []).extend(example_lines(item.get("examples")))
    return examples


def _read_nlu(text: str, where: str) -> Any:
    """Rasa's reader on one NLU document (a fresh reader: one accumulates what it reads)."""
    from voicebot.dialogue.rasa_runtime import quiet_rasa

    quiet_rasa()
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader

    try:
        return RasaYAMLReader().reads(text)
    except Exception as exc:  # Rasa raises its own kinds for bad YAML and bad structure
        raise VoicebotError(f"{where}: Rasa cannot read it ({exc})") from None

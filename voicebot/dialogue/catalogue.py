"""What the dialogue can publish about itself, read from the files the bot really loads.

For the public algorithm card (``/transparence``, ``voicebot transparence``) and anyone who
needs the dialogue's facts without loading Rasa:

- ``domain_intents``: the intents of ``nlu/domain.yml``, in their declared order;
- ``example_counts``: training examples per intent, over every file training reads
  (``nlu/data/**/*.yml``, see ``training.training_files``);
- ``intent_actions``: the action each intent's rule runs (``nlu/data/rules.yml``);
- ``fallback_thresholds``: the NLU fallback threshold the running model was trained with
  (read from the trained archive's ``metadata.json``, with ``nlu/config.yml`` beside it:
  the two differ when the configuration changed and nobody retrained);
- ``dialogue_facts``: what only the actions module knows (the topics the bot answers from
  the knowledge base and the emergency rule), and the knowledge base loaded exactly as the
  bot loads it, with the greeting's ``{retention_days}`` from the same settings.

Only ``dialogue_facts`` imports Rasa (through the actions module), and only when called.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.dialogue.knowledge import KnowledgeBase, entity_values
from voicebot.dialogue.training import latest_model, training_files

FALLBACK_CLASSIFIER = "FallbackClassifier"
RULE_POLICY = "RulePolicy"
MODEL_METADATA = "metadata.json"


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from None


def domain_intents(nlu_dir: Path) -> tuple[str, ...]:
    """The intents declared in ``nlu/domain.yml``, in order (``- name`` or ``- name: {…}``)."""
    path = nlu_dir / "domain.yml"
    document = _yaml(path)
    items = document.get("intents") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ModelError(f"{path}: no 'intents:' list")
    names: list[str] = []
    for item in items:
        name = next(iter(item)) if isinstance(item, dict) and item else item
        if str(name) not in names:
            names.append(str(name))
    return tuple(names)


def _examples(value: Any) -> list[str]:
    """The examples of one NLU item: a ``|`` block of ``- text`` lines, or a YAML list."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return [
        line.strip()[2:].strip()
        for line in str(value or "").splitlines()
        if line.strip().startswith("- ")
    ]


def example_counts(nlu_dir: Path) -> dict[str, int]:
    """Training examples per intent, summed over every file training reads."""
    counts: dict[str, int] = {}
    for path in training_files(nlu_dir):
        document = _yaml(path)
        items = document.get("nlu", []) if isinstance(document, dict) else []
        for item in items or []:
            if isinstance(item, dict) and "intent" in item:
                intent = str(item["intent"])
                counts[intent] = counts.get(intent, 0) + len(_examples(item.get("examples")))
    return counts


def intent_actions(nlu_dir: Path) -> dict[str, str]:
    """intent → the action its rule runs (rules of one intent step then one action step)."""
    actions: dict[str, str] = {}
    for path in training_files(nlu_dir):
        document = _yaml(path)
        rules = document.get("rules", []) if isinstance(document, dict) else []
        for rule in rules or []:
            steps = rule.get("steps") if isinstance(rule, dict) else None
            if not isinstance(steps, list):
                continue
            intent: str | None = None
            for step in steps:
                if not isinstance(step, dict):
                    continue
                if "intent" in step:
                    intent = str(step["intent"])
                elif "action" in step and intent is not None:
                    actions.setdefault(intent, str(step["action"]))
                    intent = None
    return actions


@dataclass(frozen=True)
class FallbackThresholds:
    """Below ``threshold`` the NLU's guess is discarded (intent ``nlu_fallback``); two
    intents closer than ``ambiguity_threshold`` count as a misunderstanding too; the
    dialogue policy falls back below ``core_threshold``. ``None``: not set (Rasa's default)."""

    threshold: float | None
    ambiguity_threshold: float | None
    core_threshold: float | None
    origin: str  # "model" (the trained archive the bot loads) or "config" (nlu/config.yml)
    config_threshold: float | None  # what nlu/config.yml says now
    model_name: str | None = None
    trained_at: str | None = None
    rasa_version: str | None = None


def _component(items: Any, name: str) -> Mapping[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and str(item.get("name", "")).split(".")[-1] == name:
            return item
    return {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def model_metadata(model: Path) -> dict[str, Any]:
    """The ``metadata.json`` of a trained Rasa archive (read with tarfile: no Rasa needed)."""
    try:
        with tarfile.open(model, "r:gz") as archive:
            for member in archive:
                if member.name.lstrip("/") == MODEL_METADATA and member.isfile():
                    stream = archive.extractfile(member)
                    if stream is not None:
                        loaded = json.load(stream)
                        if isinstance(loaded, dict):
                            return loaded
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ModelError(f"cannot read the Rasa model {model}: {exc}") from None
    raise ModelError(f"the Rasa model {model} has no {MODEL_METADATA}")


def fallback_thresholds(settings: Settings) -> FallbackThresholds:
    """The thresholds of the model the bot loads, else those of ``nlu/config.yml``."""
    config = _yaml(settings.paths.nlu_dir / "config.yml")
    config = config if isinstance(config, dict) else {}
    classifier = _component(config.get("pipeline"), FALLBACK_CLASSIFIER)
    policy = _component(config.get("policies"), RULE_POLICY)
    from_config = FallbackThresholds(
        threshold=_number(classifier.get("threshold")),
        ambiguity_threshold=_number(classifier.get("ambiguity_threshold")),
        core_threshold=_number(policy.get("core_fallback_threshold")),
        origin="config",
        config_threshold=_number(classifier.get("threshold")),
    )
    model = latest_model(settings)
    if model is None or not model.is_file():
        return from_config
    metadata = model_metadata(model)
    nodes = (metadata.get("predict_schema") or {}).get("nodes") or {}
    found: dict[str, Mapping[str, Any]] = {}
    for node in nodes.values():
        uses = str(node.get("uses", "")) if isinstance(node, dict) else ""
        for name in (FALLBACK_CLASSIFIER, RULE_POLICY):
            if uses.split(".")[-1] == name:
                found[name] = node.get("config") or {}
    trained_classifier = found.get(FALLBACK_CLASSIFIER, {})
    trained_policy = found.get(RULE_POLICY, {})
    return FallbackThresholds(
        threshold=_number(trained_classifier.get("threshold")),
        ambiguity_threshold=_number(trained_classifier.get("ambiguity_threshold")),
        core_threshold=_number(trained_policy.get("core_fallback_threshold")),
        origin="model",
        config_threshold=from_config.threshold,
        model_name=model.name,
        trained_at=str(metadata.get("trained_at") or "") or None,
        rasa_version=str(metadata.get("rasa_open_source_version") or "") or None,
    )


def prompt_fields(settings: Settings) -> dict[str, object]:
    """The values of the ``{placeholders}`` of ``nlu/prompts.yml``, from the settings."""
    return {"retention_days": settings.records.retention_days}


@dataclass(frozen=True)
class DialogueFacts:
    """What the actions module decides, and the knowledge base as the bot loads it."""

    topics: Mapping[str, str]  # intent → the words an operator reads (answered from the kb)
    emergency_min_confidence: float  # an « urgence » guess below this needs emergency words
    knowledge: KnowledgeBase


def dialogue_facts(settings: Settings) -> DialogueFacts:
    """Imports the actions module (and so Rasa): seconds the first time in a process.

    The knowledge base is loaded and validated exactly as ``RasaDialogue.load`` does."""
    from voicebot.dialogue.actions import TOPICS, URGENCE_MIN_CONFIDENCE

    nlu_dir = settings.paths.nlu_dir
    knowledge = KnowledgeBase.load(
        nlu_dir,
        topics=TOPICS,
        known_values=entity_values(nlu_dir),
        prompt_fields=prompt_fields(settings),
    )
    return DialogueFacts(dict(TOPICS), URGENCE_MIN_CONFIDENCE, knowledge)

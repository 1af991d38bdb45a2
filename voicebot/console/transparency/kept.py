"""What is kept of a call (from the records' own schema), for how long; the caller's rights."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from voicebot.console.transparency.model import DataKept
from voicebot.console.transparency.words import NBSP
from voicebot.core.config import Settings
from voicebot.records.store import calls_table, turns_table

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


def gather_data_kept(settings: Settings) -> DataKept:
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
        for_training=FOR_TRAINING,
    )


# What the trainers' relabelling (« Améliorer le robot », voicebot.records.review) keeps.
FOR_TRAINING = (
    "Quand l'assistant n'a pas compris une phrase, un formateur de la Ville peut la choisir "
    "pour lui apprendre à la comprendre. Cette phrase, en texte écrit, entre alors dans les "
    "exemples d'apprentissage de l'assistant et y reste au-delà de la durée de conservation, "
    "sans lien avec votre appel ni avec votre numéro.",
    "Une phrase qui contient un numéro est toujours refusée pour l'apprentissage ; les "
    "formateurs écartent aussi les phrases qui contiennent un nom, une adresse ou toute "
    "autre information personnelle.",
    "Le nom du formateur et la date de sa décision sont gardés avec la phrase.",
)


def gather_rights(settings: Settings) -> tuple[str, ...]:
    days = settings.records.retention_days
    return (
        "Vous pouvez savoir ce qui est gardé de vos appels (droit d'accès) et le faire "
        "effacer (droit à l'effacement). Indiquez le numéro de téléphone depuis lequel vous "
        "avez appelé : c'est la seule façon de retrouver vos appels, puisque le numéro "
        "n'est gardé que sous forme d'empreinte.",
        "Le personnel de la Ville répond à ces demandes avec les commandes "
        "« voicebot records export --caller NUMÉRO » (ce qui est gardé pour ce numéro) et "
        "« voicebot records delete --caller NUMÉRO » (l'effacement).",
        f"Sans demande de votre part, tout ce qui est gardé de vos appels est effacé "
        f"automatiquement au bout de {days}{NBSP}jours, sauf les phrases choisies pour "
        "l'apprentissage de l'assistant, qui ne sont plus liées à votre appel (voir plus "
        "haut).",
        "Vous pouvez aussi adresser une réclamation à la CNIL (www.cnil.fr).",
    )

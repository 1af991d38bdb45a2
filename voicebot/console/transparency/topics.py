"""The card's intents (what a caller may say, what its rule does) and what is never handled."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from voicebot.console.transparency.model import Intent
from voicebot.console.transparency.words import emergency_numbers_fr, quote_fr
from voicebot.dialogue.knowledge import KnowledgeBase

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


def gather_intents(
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


def gather_never(intents: tuple[Intent, ...], kb: KnowledgeBase) -> tuple[str, ...]:
    items = []
    for intent in intents:
        if intent.group == "off_topic":
            items.append(
                f"Les questions hors des sujets de la mairie ({intent.examples} phrases "
                f"d'exemple apprises pour les reconnaître) : l'assistant répond "
                f"{quote_fr(kb.prompt('off_topic'))}"
            )
        elif intent.group == "emergency":
            items.append(
                "Les urgences : l'assistant ne les traite pas lui-même. Il donne "
                f"{emergency_numbers_fr(kb.prompt('urgence'))} et vous passe un conseiller : "
                f"{quote_fr(kb.prompt('urgence'))}"
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

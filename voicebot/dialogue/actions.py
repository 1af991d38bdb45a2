"""The bot's custom actions (rasa-sdk), run in-process.

Rasa's rules map each intent to one action (nlu/data/rules.yml); the actions decide what
to say from the call's memory (slots) and the knowledge base, which is read at run time
so that editing an answer needs no retraining.

Rasa 3.6 open source only runs custom actions through an action server. Instead of a
server, ``InProcessActions`` is an ``EndpointConfig`` whose ``request()`` hands Rasa's
request body straight to rasa-sdk's ``ActionExecutor``: same JSON, same code path as an
action server, no socket.

Signals for the caller of the dialogue travel in the bot's output as a JSON message
(``{"handoff": {...}}`` or ``{"end_call": true}``), next to the spoken texts.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from rasa.utils.endpoints import EndpointConfig
from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import ActionExecutor, CollectingDispatcher

from voicebot.core.config import PolicySettings
from voicebot.core.logs import call_logger
from voicebot.dialogue.knowledge import ENTITIES, KnowledgeBase

log = logging.getLogger(__name__)

# Intents answered from the knowledge base, with the words an operator reads.
TOPICS: dict[str, str] = {
    "horaires_mairie": "horaires des mairies",
    "papiers_identite": "carte d'identité et passeport",
    "etat_civil": "état civil",
    "collecte_dechets": "collecte des déchets",
    "decheterie": "déchèteries",
    "encombrants": "encombrants",
    "signalement_voirie": "signalement sur la voirie",
    "stationnement": "stationnement",
    "inscription_scolaire": "inscription scolaire",
    "carte_blanche": "carte blanche",
    "taxe_sejour": "taxe de séjour",
    "listes_electorales": "listes électorales",
    "objets_trouves": "objets trouvés",
}
# Intents that interrupt a pending question instead of answering it.
INTERRUPTS = frozenset({"urgence", "demander_agent", "au_revoir", "repeter"})
# A short reply holding the awaited entity answers the pending question, whatever its intent.
SHORT_REPLY_WORDS = 5
FALLBACK_INTENT = "nlu_fallback"
REASON_LABELS = {
    "demande": "l'appelant a demandé un conseiller",
    "dtmf": "l'appelant a tapé 0 pour un conseiller",
    "urgence": "l'appelant signale une urgence (numéros d'urgence donnés)",
    "incompréhension": "le robot n'a pas compris l'appelant deux fois de suite",
}
ENTITY_LABELS = {
    "quartier": "quartier",
    "lieu": "lieu",
    "document": "document",
    "probleme": "problème",
}


class Reply:
    """What one action says and signals, turned into rasa-sdk messages and events."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.handoff: dict[str, Any] | None = None
        self.end_call = False
        self.remember = True  # store the texts for "répéter"

    def say(self, *texts: str) -> Reply:
        self.texts.extend(texts)
        return self

    def set(self, slot: str, value: Any) -> Reply:
        self.events.append(SlotSet(slot, value))
        return self

    def send(self, dispatcher: CollectingDispatcher) -> list[dict[str, Any]]:
        for text in self.texts:
            dispatcher.utter_message(text=text)
        if self.handoff is not None:
            dispatcher.utter_message(json_message={"handoff": self.handoff})
        elif self.end_call:
            dispatcher.utter_message(json_message={"end_call": True})
        if self.remember and self.texts:
            self.set("derniere_reponse", list(self.texts))
        return self.events


class BotAction(Action):
    """Base of every action: handles a pending question, then the action's own reply."""

    action_name = ""

    def __init__(self, kb: KnowledgeBase, policy: PolicySettings) -> None:
        self.kb = kb
        self.policy = policy

    def name(self) -> str:
        return self.action_name

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        intent = _intent(tracker)
        pending = tracker.get_slot("sujet_en_attente")
        if pending and pending in TOPICS and self._answers_pending(tracker, intent, pending):
            reply = self.answer(tracker, pending, asked=True)
        else:
            reply = self.respond(tracker)
        if intent != FALLBACK_INTENT and tracker.get_slot("incomprehensions"):
            reply.set("incomprehensions", 0.0)
        call_logger(__name__, tracker.sender_id).debug(
            "%s (intent %s): %d text(s)", self.name(), intent, len(reply.texts)
        )
        return reply.send(dispatcher)

    def respond(self, tracker: Tracker) -> Reply:
        raise NotImplementedError

    def _answers_pending(self, tracker: Tracker, intent: str | None, pending: str) -> bool:
        """Does this message answer the question we asked (which quartier, which place)?"""
        if intent in INTERRUPTS:
            return False
        entry = self.kb.entry(pending)
        awaited = entry.ask_for if entry is not None else None
        has_awaited = any(
            e.get("entity") == awaited for e in tracker.latest_message.get("entities", [])
        )
        words = len(str(tracker.latest_message.get("text") or "").split())
        if has_awaited and (words <= SHORT_REPLY_WORDS or intent in (pending, None)):
            return True
        # Anything but a new topic ("je ne sais pas", "non", misheard words) ends the
        # question: the caller gets the general answer rather than the same question again.
        return intent not in TOPICS

    def answer(self, tracker: Tracker, topic: str, asked: bool = False) -> Reply:
        """The knowledge-base answer for a topic; asks once for a missing quartier/lieu."""
        reply = Reply().set("sujet", topic)
        entry = self.kb.entry(topic)
        if entry is None:  # the knowledge base is checked on load; this is a safety net
            return reply.say(self.kb.prompt("rephrase"))
        known = {name: tracker.get_slot(name) for name in ENTITIES}
        already_asked = list(tracker.get_slot("precisions_demandees") or [])
        missing = entry.ask_for and not known.get(entry.ask_for)
        if missing and not asked and entry.ask_for not in already_asked:
            return (
                reply.say(self.kb.prompt(f"ask_{entry.ask_for}"))
                .set("sujet_en_attente", topic)
                .set("precisions_demandees", [*already_asked, entry.ask_for])
            )
        text, _ = entry.answer_for(known)
        if tracker.get_slot("sujet_en_attente"):
            reply.set("sujet_en_attente", None)
        return reply.say(text, self.kb.prompt("anything_else"))

    def handoff(self, tracker: Tracker, reason: str, *texts: str) -> Reply:
        reply = Reply().say(*texts)
        reply.handoff = handoff_context(tracker, reason)
        return reply


class ActionRepondre(BotAction):
    action_name = "action_repondre"

    def respond(self, tracker: Tracker) -> Reply:
        intent = _intent(tracker)
        if intent not in TOPICS:
            return Reply().say(self.kb.prompt("rephrase"))
        return self.answer(tracker, intent)


class ActionSaluer(BotAction):
    action_name = "action_saluer"

    def respond(self, tracker: Tracker) -> Reply:
        return Reply().say(self.kb.prompt("hello"))


class ActionAuRevoir(BotAction):
    action_name = "action_au_revoir"

    def respond(self, tracker: Tracker) -> Reply:
        reply = Reply().say(self.kb.prompt("goodbye"))
        reply.end_call = True
        return reply


class ActionAffirmer(BotAction):
    action_name = "action_affirmer"

    def respond(self, tracker: Tracker) -> Reply:
        return Reply().say(self.kb.prompt("listening"))


class ActionNier(BotAction):
    """A "non" to "anything else?": the call ends politely."""

    action_name = "action_nier"

    def respond(self, tracker: Tracker) -> Reply:
        reply = Reply().say(self.kb.prompt("goodbye"))
        reply.end_call = True
        return reply


class ActionRemercier(BotAction):
    action_name = "action_remercier"

    def respond(self, tracker: Tracker) -> Reply:
        return Reply().say(self.kb.prompt("thanks"), self.kb.prompt("anything_else"))


class ActionTransfert(BotAction):
    action_name = "action_transfert"

    def respond(self, tracker: Tracker) -> Reply:
        return self.handoff(tracker, "demande", self.kb.prompt("transfer"))


# An emergency hands the call off at once with the emergency numbers, so a classifier's
# guess is not enough on its own: the words must say it, or the model must be very sure.
# (The intent classifier matches letter sequences: "mayonnaise" looks like "malaise".)
URGENCE_MIN_CONFIDENCE = 0.9
EMERGENCY_WORDS = re.compile(
    r"\b(?:feu|incendie|br[uû]l|fum[ée]e|malaise|inconscient|respir|bless|sang|saign|"
    r"accident|agress|attaqu|arme|couteau|gaz|explos|noy|secours|urgen|samu|pompier|"
    r"police|gendarm|ambulance|mour|meurt|mort|suicid|tu[ée]|frapp|violen|c[oœ]ur|avc|"
    r"tomb|chute|danger|inond|effondr|[ée]lectrocut|[ée]touff|overdose|disparu|viol)",
    re.IGNORECASE,
)


def emergency_is_credible(tracker: Tracker) -> bool:
    message = tracker.latest_message or {}
    confidence = float((message.get("intent") or {}).get("confidence") or 0.0)
    text = str(message.get("text") or "")
    return confidence >= URGENCE_MIN_CONFIDENCE or EMERGENCY_WORDS.search(text) is not None


class ActionUrgence(BotAction):
    action_name = "action_urgence"

    def respond(self, tracker: Tracker) -> Reply:
        if not emergency_is_credible(tracker):
            return not_understood(self, tracker)
        return self.handoff(tracker, "urgence", self.kb.prompt("urgence"))


class ActionRepeter(BotAction):
    action_name = "action_repeter"

    def respond(self, tracker: Tracker) -> Reply:
        last = [str(t) for t in tracker.get_slot("derniere_reponse") or []]
        reply = Reply().say(*last) if last else Reply().say(self.kb.prompt("nothing_to_repeat"))
        reply.remember = False
        return reply


class ActionHorsSujet(BotAction):
    action_name = "action_hors_sujet"

    def respond(self, tracker: Tracker) -> Reply:
        return Reply().say(self.kb.prompt("off_topic"), self.kb.prompt("anything_else"))


class ActionIncomprehension(BotAction):
    """NLU fallback: ask to rephrase; after too many in a row, hand off to a human."""

    action_name = "action_incomprehension"

    def respond(self, tracker: Tracker) -> Reply:
        return not_understood(self, tracker)


def not_understood(action: BotAction, tracker: Tracker) -> Reply:
    """Ask to rephrase; after too many misunderstandings in a row, hand off to a human."""
    count = int(tracker.get_slot("incomprehensions") or 0) + 1
    if count >= action.policy.max_consecutive_fallbacks:
        return action.handoff(tracker, "incompréhension", action.kb.prompt("transfer")).set(
            "incomprehensions", 0.0
        )
    return Reply().say(action.kb.prompt("rephrase")).set("incomprehensions", float(count))


ACTION_CLASSES: tuple[type[BotAction], ...] = (
    ActionRepondre,
    ActionSaluer,
    ActionAuRevoir,
    ActionAffirmer,
    ActionNier,
    ActionRemercier,
    ActionTransfert,
    ActionUrgence,
    ActionRepeter,
    ActionHorsSujet,
    ActionIncomprehension,
)


def build_executor(kb: KnowledgeBase, policy: PolicySettings) -> ActionExecutor:
    executor = ActionExecutor()
    for cls in ACTION_CLASSES:
        executor.register_action(cls(kb, policy))
    return executor


class InProcessActions(EndpointConfig):
    """Rasa's action endpoint, answered in-process by rasa-sdk's executor (no server)."""

    def __init__(self, executor: ActionExecutor) -> None:
        # Selective domain: Rasa then leaves the (unused) domain out of each request.
        super().__init__(url="inprocess://voicebot-actions", enable_selective_domain=True)
        self.executor = executor

    async def request(
        self,
        method: str = "post",
        subpath: str | None = None,
        content_type: str | None = "application/json",
        compress: bool = False,
        **kwargs: Any,
    ) -> Any:
        return await self.executor.run(kwargs["json"])


def install_compiled_response_validation() -> None:
    """Make Rasa validate action responses with a schema compiled once, not per call.

    Rasa's RemoteAction runs ``jsonschema.validate(response, schema)`` on every custom
    action, which first re-checks the (large) schema itself: measured at about 50 ms of
    a 65 ms turn. The responses are still validated against the same schema, with a
    validator built once. Idempotent; affects only this process's RemoteAction.
    """
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction

    current = RemoteAction._validate_action_result
    if getattr(current, "compiled_schema", False):
        return
    schema = RemoteAction.action_response_format_spec()
    validator = validator_for(schema)(schema)

    def validate_with_compiled_schema(self: RemoteAction, result: dict[str, Any]) -> bool:
        error = best_match(validator.iter_errors(result))
        if error is not None:
            raise error
        return True

    validate_with_compiled_schema.compiled_schema = True  # type: ignore[attr-defined]
    RemoteAction._validate_action_result = validate_with_compiled_schema  # type: ignore[method-assign]


# --- helpers ------------------------------------------------------------------------------


def _intent(tracker: Tracker) -> str | None:
    intent = tracker.latest_message.get("intent") or {}
    name = intent.get("name")
    return str(name) if name else None


def caller_texts(tracker: Tracker, limit: int = 3) -> list[str]:
    """The caller's last turns, as an operator reads them (keys shown as keys)."""
    texts: list[str] = []
    for event in tracker.events:
        if event.get("event") != "user":
            continue
        digit = (event.get("metadata") or {}).get("dtmf")
        texts.append(f"[touche {digit}]" if digit else str(event.get("text") or ""))
    return texts[-limit:]


def handoff_context(tracker: Tracker, reason: str) -> dict[str, Any]:
    """The structured handoff signal: reason, topic, entities, French summary, last turns."""
    topic = tracker.get_slot("sujet")
    intent = topic or _intent(tracker)
    entities = {name: str(tracker.get_slot(name)) for name in ENTITIES if tracker.get_slot(name)}
    parts = [f"Transfert : {REASON_LABELS.get(reason, reason)}."]
    parts.append(f"Sujet : {TOPICS[topic]}." if topic in TOPICS else "Sujet : non identifié.")
    parts += [f"{ENTITY_LABELS[name].capitalize()} : {value}." for name, value in entities.items()]
    return {
        "reason": reason,
        "intent": intent,
        "entities": entities,
        "summary": " ".join(parts),
        "last_utterances": caller_texts(tracker),
    }

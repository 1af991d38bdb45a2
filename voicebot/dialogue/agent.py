"""The dialogue: Rasa in-process, one Agent per process, one tracker per call.

``RasaDialogue.load(settings)`` loads the trained model once (``voicebot train`` makes it)
and the knowledge base (validated: a broken file stops the start-up). Each call's
conversation lives in Rasa's in-memory tracker store under its call id; ``end()`` drops it.

Every reply is a ``BotReply``: the texts to speak, what was understood (intent,
confidence, entities) and the decisions: ``handoff`` (a structured ``Handoff`` for the
operator) or ``end_call`` (the caller said goodbye).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from voicebot.core.config import Settings
from voicebot.core.errors import CallError, ModelError
from voicebot.core.french import spoken_words
from voicebot.core.interfaces import BotReply, Handoff, Understanding
from voicebot.core.logs import call_logger, redact_numbers
from voicebot.core.loop_thread import LoopThread
from voicebot.dialogue.knowledge import KnowledgeBase, entity_values
from voicebot.dialogue.rasa_runtime import quiet_rasa

log = logging.getLogger(__name__)

# Keys of the telephone keypad, usable when speech fails (the "dtmf_menu" prompt says them).
DTMF_INTENTS = {
    "0": "demander_agent",
    "1": "horaires_mairie",
    "2": "papiers_identite",
    "3": "etat_civil",
    "4": "collecte_dechets",
    "5": "signalement_voirie",
    "*": "repeter",
}
# Longer than any spoken turn; typed text beyond this is cut (NLU cost grows with length).
MAX_TEXT_CHARS = 500
# A caller's text must never be read as Rasa's "/intent{...}" shortcut.
_INTENT_SHORTCUT = re.compile(r"^[\s/]+")


def model_path(settings: Settings) -> Path:
    """The trained model to load, or ModelError saying how to make one."""
    from voicebot.dialogue.training import latest_model

    model = latest_model(settings)
    if model is None or not model.is_file():
        where = model or settings.paths.nlu_dir / "models"
        raise ModelError(f"no trained Rasa model ({where}): run `voicebot train` first")
    return model


def load_agent(
    settings: Settings,
    action_endpoint: Any = None,
    tracker_store: Any = None,
    model: Path | None = None,
) -> Any:
    """A Rasa Agent on the trained model, or on ``model`` (blocking: a few seconds)."""
    if model is None:
        model = model_path(settings)
    elif not model.is_file():
        raise ModelError(f"no Rasa model at {model}")
    quiet_rasa()
    from rasa.core.agent import Agent

    try:
        agent = Agent.load(str(model), action_endpoint=action_endpoint, tracker_store=tracker_store)
    except Exception as exc:  # Rasa raises many kinds for a damaged archive
        raise ModelError(
            f"cannot load the Rasa model {model} ({exc}); run `voicebot train` again"
        ) from exc
    if not agent.is_ready():
        raise ModelError(f"the Rasa model {model} is incomplete; run `voicebot train` again")
    return agent


def clean_text(text: str) -> str:
    """One line of caller text as the NLU should see it."""
    text = " ".join(text.split())[:MAX_TEXT_CHARS]
    return _INTENT_SHORTCUT.sub("", text)


def nlu_result(parse_data: dict[str, Any]) -> dict[str, Any]:
    """The NLU decision in the project's JSON shape (``voicebot nlu parse --json``)."""
    intent = parse_data.get("intent") or {}
    return {
        "text": parse_data.get("text", ""),
        "intent": intent.get("name"),
        "confidence": round(float(intent.get("confidence") or 0.0), 4),
        "entities": [
            {"entity": e.get("entity"), "value": e.get("value")}
            for e in parse_data.get("entities") or []
        ],
        "ranking": [
            {"name": r.get("name"), "confidence": round(float(r.get("confidence") or 0.0), 4)}
            for r in parse_data.get("intent_ranking") or []
        ],
    }


class RasaDialogue:
    """The Dialogue of voicebot.core.interfaces, backed by a Rasa Agent and the knowledge base."""

    def __init__(self, agent: Any, trackers: Any, kb: KnowledgeBase, settings: Settings) -> None:
        self.agent = agent
        self.trackers = trackers  # the in-memory tracker store: one tracker per call id
        self.kb = kb
        self.settings = settings
        # Rasa computes on a loop of its own, off the calls' loop (voicebot.core.loop_thread).
        self.rasa_loop = LoopThread("rasa")

    @classmethod
    def load(cls, settings: Settings) -> RasaDialogue:
        """Load the model and the knowledge base. Raises ModelError or KnowledgeBaseError."""
        quiet_rasa()
        from voicebot.dialogue.actions import (
            TOPICS,
            InProcessActions,
            build_executor,
            install_compiled_response_validation,
        )

        started = time.perf_counter()
        nlu_dir = settings.paths.nlu_dir
        kb = KnowledgeBase.load(
            nlu_dir,
            topics=TOPICS,
            known_values=entity_values(nlu_dir),
            prompt_fields={"retention_days": settings.records.retention_days},
        )
        from rasa.core.tracker_store import InMemoryTrackerStore
        from rasa.shared.core.domain import Domain

        install_compiled_response_validation()
        endpoint = InProcessActions(build_executor(kb, settings.policy))
        trackers = InMemoryTrackerStore(Domain.empty())  # the model's domain is set on load
        agent = load_agent(settings, action_endpoint=endpoint, tracker_store=trackers)
        log.info(
            "dialogue ready in %.1f s (%d knowledge-base entries)",
            time.perf_counter() - started,
            len(kb.entries),
        )
        return cls(agent, trackers, kb, settings)

    # --- the Dialogue protocol ---------------------------------------------------------

    async def greet(self, call_id: str) -> BotReply:
        return BotReply(texts=(self.kb.prompt("greeting"),))

    async def understand(self, text: str) -> Understanding:
        """The NLU's reading of ``text`` alone (no tracker touched)."""
        cleaned = clean_text(text)
        parse_data = await self.rasa_loop.run(self.agent.parse_message(cleaned))
        intent = parse_data.get("intent") or {}
        return Understanding(
            text=cleaned,
            intent=intent.get("name"),
            confidence=float(intent.get("confidence") or 0.0),
            raw=parse_data,
        )

    async def turn(
        self, call_id: str, text: str, understood: Understanding | None = None
    ) -> BotReply:
        cleaned = clean_text(text)
        if not cleaned:
            return BotReply(texts=(self.kb.prompt("not_heard"),))
        parsed = None
        if understood is not None and spoken_words(understood.text) == spoken_words(cleaned):
            parsed = dict(understood.raw)  # read while the caller paused: no second parse
        return await self._handle(call_id, cleaned, metadata=None, parsed=parsed)

    async def dtmf(self, call_id: str, digit: str) -> BotReply:
        intent = DTMF_INTENTS.get(digit)
        if intent is None:
            return BotReply(texts=(self.kb.prompt("dtmf_menu"),))
        reply = await self._handle(call_id, f"/{intent}", metadata={"dtmf": digit})
        if digit == "0" and reply.handoff is not None:
            summary = reply.handoff.summary.replace(
                "l'appelant a demandé un conseiller", "l'appelant a tapé 0 pour un conseiller"
            )
            handoff = Handoff(
                reason="dtmf",
                intent=reply.handoff.intent,
                entities=dict(reply.handoff.entities),
                summary=summary,
                last_utterances=reply.handoff.last_utterances,
            )
            reply = BotReply(
                texts=reply.texts,
                intent=reply.intent,
                confidence=reply.confidence,
                entities=dict(reply.entities),
                handoff=handoff,
            )
        return reply

    async def end(self, call_id: str) -> None:
        self.trackers.store.pop(call_id, None)

    # --- for the session, the CLI and tests ---------------------------------------------

    def prompt(self, name: str) -> str:
        return self.kb.prompt(name)

    def static_texts(self) -> list[str]:
        """Every fixed prompt and knowledge-base answer (for TTS pre-rendering)."""
        return self.kb.texts()

    async def parse(self, text: str) -> dict[str, Any]:
        """NLU only (no dialogue state): the project's JSON shape, see nlu_result()."""
        return nlu_result(await self.rasa_loop.run(self.agent.parse_message(clean_text(text))))

    # --- internals ----------------------------------------------------------------------

    async def _handle(
        self,
        call_id: str,
        text: str,
        metadata: dict[str, Any] | None,
        parsed: dict[str, Any] | None = None,
    ) -> BotReply:
        clog = call_logger(__name__, call_id)
        parse_data, messages = await self.rasa_loop.run(
            self._rasa_turn(call_id, text, metadata, parsed)
        )
        texts: list[str] = []
        handoff: Handoff | None = None
        end_call = False
        for item in messages:
            if item.get("text"):
                texts.append(str(item["text"]))
            custom = item.get("custom") or {}
            if "handoff" in custom:
                handoff = Handoff(
                    reason=str(custom["handoff"]["reason"]),
                    intent=custom["handoff"].get("intent"),
                    entities=dict(custom["handoff"].get("entities") or {}),
                    summary=str(custom["handoff"].get("summary") or ""),
                    last_utterances=tuple(custom["handoff"].get("last_utterances") or ()),
                )
            if custom.get("end_call"):
                end_call = True
        if not texts:
            # Rasa logs and swallows an action's exception: the session must hear of it.
            raise CallError("the dialogue produced no reply (see the log above)")
        intent = parse_data.get("intent") or {}
        entities = {str(e["entity"]): str(e["value"]) for e in parse_data.get("entities") or []}
        clog.info(
            "intent %s (%.2f)%s",
            intent.get("name"),
            float(intent.get("confidence") or 0.0),
            f", handoff {handoff.reason}" if handoff else "",
        )
        clog.debug("caller: %s", redact_numbers(text))
        return BotReply(
            texts=tuple(texts),
            intent=intent.get("name"),
            confidence=float(intent.get("confidence") or 0.0),
            entities=entities,
            handoff=handoff,
            end_call=end_call,
        )

    async def _rasa_turn(
        self,
        call_id: str,
        text: str,
        metadata: dict[str, Any] | None,
        parsed: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The NLU (unless read already) and the dialogue's turn; runs on Rasa's own loop."""
        from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

        parse_data = parsed if parsed is not None else await self.agent.parse_message(text)
        message = UserMessage(
            text,
            CollectingOutputChannel(),
            sender_id=call_id,
            parse_data=parse_data,
            metadata=metadata,
        )
        return parse_data, await self.agent.handle_message(message) or []

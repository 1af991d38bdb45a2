"""The dialogue: Rasa in-process, one Agent per process, one tracker per call.

``RasaDialogue.load(settings)`` loads the trained model once (``voicebot train`` makes it)
and the knowledge base (validated: a broken file stops the start-up). Each call's
conversation lives in Rasa's in-memory tracker store under its call id; ``end()`` drops it.

The agent, the knowledge base and the model's version form one ``DialogueBrain``, replaced
whole by ``RasaDialogue.swap`` while calls go on (voicebot.dialogue.live_reload): each turn
pins the brain it starts with, and the conversations (serialised trackers) are shared by
every brain, so a call goes on across a swap with its slots.

Every reply is a ``BotReply``: the texts to speak, what was understood (intent,
confidence, entities), the model version that read it, and the decisions: ``handoff`` (a
structured ``Handoff`` for the operator) or ``end_call`` (the caller said goodbye).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gc
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebot.core.config import Settings
from voicebot.core.errors import CallError, ModelError
from voicebot.core.french import spoken_words
from voicebot.core.interfaces import BotReply, Handoff, Understanding
from voicebot.core.logs import call_logger, redact_numbers
from voicebot.core.loop_thread import LoopThread
from voicebot.dialogue.knowledge import KnowledgeBase, entity_values, find_prompt
from voicebot.dialogue.model_store import MODEL_PREFIX, read_version
from voicebot.dialogue.rasa_runtime import (
    install_fast_event_lookup,
    install_fast_model_load,
    quiet_rasa,
)

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
    lock_store: Any = None,
) -> Any:
    """A Rasa Agent on the trained model, or on ``model`` (blocking: a few seconds)."""
    if model is None:
        model = model_path(settings)
    elif not model.is_file():
        raise ModelError(f"no Rasa model at {model}")
    quiet_rasa()
    install_fast_model_load()
    install_fast_event_lookup()
    from rasa.core.agent import Agent

    try:
        agent = Agent.load(
            str(model),
            action_endpoint=action_endpoint,
            tracker_store=tracker_store,
            lock_store=lock_store,
        )
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


# The key under which ``understand`` notes which model read a text (removed before Rasa).
_READ_BY = "voicebot_model_version"


@dataclass(frozen=True)
class BrainInfo:
    """What the rest of the server knows of a brain, without its Rasa agent (so that it can
    cross from the dialogue's process to the calls' one): which model, and every fixed text
    it may say (the prompts, for a call whose dialogue failed; all texts, for the voice's
    pre-rendering)."""

    model: Path
    model_version: str
    loaded_s: float
    prompts: Mapping[str, str]
    texts: tuple[str, ...]

    @property
    def log_name(self) -> str:
        return version_log_name(self.model_version)

    def prompt(self, name: str) -> str:
        return find_prompt(self.prompts, name)


@dataclass(frozen=True)
class DialogueBrain:
    """What answers the calls at one time: a Rasa agent on one model, the knowledge base its
    actions answer from, and that model's version. Never changed: replaced whole."""

    agent: Any
    kb: KnowledgeBase
    model: Path
    model_version: str
    loaded_s: float  # how long loading it took

    @property
    def info(self) -> BrainInfo:
        return BrainInfo(
            model=self.model,
            model_version=self.model_version,
            loaded_s=self.loaded_s,
            prompts=dict(self.kb.prompts),
            texts=tuple(self.kb.texts()),
        )

    @property
    def log_name(self) -> str:
        return version_log_name(self.model_version)


def version_log_name(version: str) -> str:
    """A model version as logs can show it: a bare ``20261202-141339-…`` reads as a phone
    number to the log redaction (voicebot.core.logs), ``allonantes-20261202-…`` does not."""
    return MODEL_PREFIX + version


class Conversations:
    """The calls' conversations, shared by every brain: each brain's tracker store reads and
    writes the same serialised trackers (so a call goes on across a swap), and one lock store
    keeps one call's turns in order whichever brain runs them. Each brain keeps a tracker
    store of its own only because Rasa sets the store's domain when it loads a model: a
    shared one would change domain under the brain in service while the next one loads."""

    def __init__(self) -> None:
        from rasa.core.lock_store import InMemoryLockStore

        self.serialised: dict[str, str] = {}  # call id -> tracker (Rasa's own JSON)
        self.locks = InMemoryLockStore()

    def tracker_store(self) -> Any:
        from rasa.core.tracker_store import InMemoryTrackerStore
        from rasa.shared.core.domain import Domain

        store = InMemoryTrackerStore(Domain.empty())  # the model's domain is set on load
        store.store = self.serialised
        return store

    def drop(self, call_id: str) -> None:
        self.serialised.pop(call_id, None)


def load_knowledge(settings: Settings) -> KnowledgeBase:
    """The knowledge base and prompts, validated. Raises KnowledgeBaseError (file, line,
    field)."""
    from voicebot.dialogue.actions import TOPICS

    nlu_dir = settings.paths.nlu_dir
    return KnowledgeBase.load(
        nlu_dir,
        topics=TOPICS,
        known_values=entity_values(nlu_dir),
        prompt_fields={"retention_days": settings.records.retention_days},
    )


def load_brain(
    settings: Settings, conversations: Conversations, model: Path | None = None
) -> DialogueBrain:
    """A new brain on the current model (or ``model``) and the knowledge base as the files
    say now. Blocking (seconds): never on the calls' event loop. Raises ModelError or
    KnowledgeBaseError."""
    quiet_rasa()
    from voicebot.dialogue.actions import (
        InProcessActions,
        build_executor,
        install_compiled_response_validation,
    )

    started = time.perf_counter()
    kb = load_knowledge(settings)
    model = model or model_path(settings)
    install_compiled_response_validation()
    endpoint = InProcessActions(build_executor(kb, settings.policy))
    agent = load_agent(
        settings,
        action_endpoint=endpoint,
        tracker_store=conversations.tracker_store(),
        model=model,
        lock_store=conversations.locks,
    )
    return DialogueBrain(
        agent=agent,
        kb=kb,
        model=model,
        model_version=read_version(model).version,
        loaded_s=time.perf_counter() - started,
    )


def with_new_knowledge(brain: DialogueBrain, settings: Settings) -> DialogueBrain:
    """``brain``'s model with the knowledge base as the files say now: no model load
    (milliseconds, no memory kept by the old brain), the new brain's agent shares the model
    and swaps only the actions' knowledge base (Rasa reads its processor's action endpoint at
    every action). Raises KnowledgeBaseError."""
    from voicebot.dialogue.actions import InProcessActions, build_executor

    started = time.perf_counter()
    kb = load_knowledge(settings)
    endpoint = InProcessActions(build_executor(kb, settings.policy))
    agent = copy.copy(brain.agent)
    agent.processor = copy.copy(brain.agent.processor)
    agent.action_endpoint = agent.processor.action_endpoint = endpoint
    return dataclasses.replace(brain, agent=agent, kb=kb, loaded_s=time.perf_counter() - started)


class RasaDialogue:
    """The Dialogue of voicebot.core.interfaces, backed by a Rasa Agent and the knowledge base."""

    def __init__(
        self, brain: DialogueBrain, conversations: Conversations, settings: Settings
    ) -> None:
        self._brain = brain
        self.conversations = conversations
        self.settings = settings
        # Rasa computes on a loop of its own, off the calls' loop (voicebot.core.loop_thread).
        self.rasa_loop = LoopThread("rasa")

    @classmethod
    def load(cls, settings: Settings) -> RasaDialogue:
        """Load the model and the knowledge base. Raises ModelError or KnowledgeBaseError."""
        conversations = Conversations()
        brain = load_brain(settings, conversations)
        log.info(
            "dialogue ready in %.1f s (model %s, %d knowledge-base entries)",
            brain.loaded_s,
            brain.log_name,
            len(brain.kb.entries),
        )
        return cls(brain, conversations, settings)

    # --- the brain in service -----------------------------------------------------------

    @property
    def brain(self) -> DialogueBrain:
        """The brain in service now; a turn reads it once and keeps it to its end."""
        return self._brain

    def swap(self, brain: DialogueBrain) -> DialogueBrain:
        """Put ``brain`` in service (one assignment: atomic for every reader); returns the
        one it replaces. Turns already started finish on theirs."""
        old, self._brain = self._brain, brain
        return old

    @property
    def model_version(self) -> str:
        return self._brain.model_version

    @property
    def brain_info(self) -> BrainInfo:
        return self._brain.info

    async def reload_brain(self, model_too: bool) -> BrainInfo:
        """A new brain from the files as they are now, loaded in a thread (never on a loop
        that answers turns) and put in service; returns it. Raises ModelError or
        KnowledgeBaseError and keeps the brain in service. One at a time: the caller's
        (voicebot.dialogue.live_reload.LiveReloader) lock."""
        brain = await asyncio.to_thread(self._load_brain, model_too)
        self.swap(brain)
        return brain.info

    def _load_brain(self, model_too: bool) -> DialogueBrain:
        """A knowledge-base change keeps the model in service (no load, nothing kept in
        memory). A new model is put out of the garbage collector's sight, like everything
        loaded at start-up (voicebot.call.runtime.settle_heap): full collections walking its
        objects would stop the process's other threads for tens of milliseconds;
        ``gc.freeze`` alone walks nothing. The price: the model it replaces stays in memory
        (~115 MB measured) until the next restart."""
        if not model_too:
            return with_new_knowledge(self._brain, self.settings)
        brain = load_brain(self.settings, self.conversations)
        gc.freeze()
        return brain

    @property
    def agent(self) -> Any:
        return self._brain.agent

    @property
    def kb(self) -> KnowledgeBase:
        return self._brain.kb

    # --- the Dialogue protocol ---------------------------------------------------------

    async def greet(self, call_id: str) -> BotReply:
        brain = self._brain
        return BotReply(texts=(brain.kb.prompt("greeting"),), model_version=brain.model_version)

    async def understand(self, text: str) -> Understanding:
        """The NLU's reading of ``text`` alone (no tracker touched)."""
        brain = self._brain
        cleaned = clean_text(text)
        parse_data = await self.rasa_loop.run(brain.agent.parse_message(cleaned))
        intent = parse_data.get("intent") or {}
        return Understanding(
            text=cleaned,
            intent=intent.get("name"),
            confidence=float(intent.get("confidence") or 0.0),
            raw={**parse_data, _READ_BY: brain.model_version},
        )

    async def turn(
        self, call_id: str, text: str, understood: Understanding | None = None
    ) -> BotReply:
        brain = self._brain
        cleaned = clean_text(text)
        if not cleaned:
            return BotReply(
                texts=(brain.kb.prompt("not_heard"),), model_version=brain.model_version
            )
        parsed = None
        if understood is not None and spoken_words(understood.text) == spoken_words(cleaned):
            # read while the caller paused: no second parse, unless another model read it
            raw = dict(understood.raw)
            if raw.pop(_READ_BY, brain.model_version) == brain.model_version:
                parsed = raw
        return await self._handle(brain, call_id, cleaned, metadata=None, parsed=parsed)

    async def dtmf(self, call_id: str, digit: str) -> BotReply:
        brain = self._brain
        intent = DTMF_INTENTS.get(digit)
        if intent is None:
            return BotReply(
                texts=(brain.kb.prompt("dtmf_menu"),), model_version=brain.model_version
            )
        reply = await self._handle(brain, call_id, f"/{intent}", metadata={"dtmf": digit})
        if digit == "0" and reply.handoff is not None:
            summary = reply.handoff.summary.replace(
                "l'appelant a demandé un conseiller", "l'appelant a tapé 0 pour un conseiller"
            )
            handoff = dataclasses.replace(reply.handoff, reason="dtmf", summary=summary)
            reply = dataclasses.replace(reply, handoff=handoff)
        return reply

    async def end(self, call_id: str) -> None:
        self.conversations.drop(call_id)

    # --- for the session, the CLI and tests ---------------------------------------------

    def prompt(self, name: str) -> str:
        return self._brain.kb.prompt(name)

    def static_texts(self) -> list[str]:
        """Every fixed prompt and knowledge-base answer (for TTS pre-rendering)."""
        return self._brain.kb.texts()

    async def parse(self, text: str) -> dict[str, Any]:
        """NLU only (no dialogue state): the project's JSON shape, see nlu_result()."""
        agent = self._brain.agent
        return nlu_result(await self.rasa_loop.run(agent.parse_message(clean_text(text))))

    # --- internals ----------------------------------------------------------------------

    async def _handle(
        self,
        brain: DialogueBrain,
        call_id: str,
        text: str,
        metadata: dict[str, Any] | None,
        parsed: dict[str, Any] | None = None,
    ) -> BotReply:
        clog = call_logger(__name__, call_id)
        parse_data, messages = await self.rasa_loop.run(
            _rasa_turn(brain.agent, call_id, text, metadata, parsed)
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
            model_version=brain.model_version,
        )


async def _rasa_turn(
    agent: Any,
    call_id: str,
    text: str,
    metadata: dict[str, Any] | None,
    parsed: dict[str, Any] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The NLU (unless read already) and the dialogue's turn; runs on Rasa's own loop."""
    from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

    parse_data = parsed if parsed is not None else await agent.parse_message(text)
    message = UserMessage(
        text,
        CollectingOutputChannel(),
        sender_id=call_id,
        parse_data=parse_data,
        metadata=metadata,
    )
    return parse_data, await agent.handle_message(message) or []

"""The custom actions, called the way rasa-sdk calls them (no Rasa model needed)."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from voicebot.core.config import PROJECT_ROOT, PolicySettings
from voicebot.dialogue.actions import (
    ActionIncomprehension,
    ActionNier,
    ActionRepeter,
    ActionRepondre,
    ActionTransfert,
    InProcessActions,
    build_executor,
)
from voicebot.dialogue.knowledge import KnowledgeBase, entity_values

NLU_DIR = PROJECT_ROOT / "nlu"


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    from voicebot.dialogue.actions import TOPICS

    return KnowledgeBase.load(
        NLU_DIR, TOPICS, entity_values(NLU_DIR), prompt_fields={"retention_days": 30}
    )


def tracker_json(
    intent: str,
    text: str = "",
    entities: list[dict[str, Any]] | None = None,
    slots: dict[str, Any] | None = None,
    user_texts: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A tracker as Rasa serialises it for an action server."""
    events = [{"event": "user", "text": t, "metadata": {}} for t in (*user_texts, text)]
    return {
        "sender_id": "call-actions",
        "slots": slots or {},
        "latest_message": {
            "text": text,
            "intent": {"name": intent, "confidence": 0.9},
            "entities": entities or [],
        },
        "events": events,
        "paused": False,
        "followup_action": None,
        "active_loop": {},
        "latest_action_name": "action_listen",
    }


async def run(action: Any, tracker: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    dispatcher = CollectingDispatcher()
    events = await action.run(dispatcher, Tracker.from_dict(tracker), {})
    slots = {e["name"]: e["value"] for e in events if e.get("event") == "slot"}
    return dispatcher.messages, slots


async def test_topic_missing_place_asks_once(kb: KnowledgeBase) -> None:
    action = ActionRepondre(kb, PolicySettings())
    messages, slots = await run(action, tracker_json("decheterie", "horaires déchetterie"))
    assert [m["text"] for m in messages] == [kb.prompt("ask_lieu")]
    assert slots["sujet_en_attente"] == "decheterie"
    assert slots["precisions_demandees"] == ["lieu"]
    # Already asked during this call: the general answer, no second question.
    messages, _ = await run(
        action, tracker_json("decheterie", "déchetterie", slots={"precisions_demandees": ["lieu"]})
    )
    assert messages[0]["text"] == kb.entries["decheterie"].answer


async def test_pending_question_is_answered_by_a_short_reply_with_the_entity(
    kb: KnowledgeBase,
) -> None:
    action = ActionIncomprehension(kb, PolicySettings())  # "vertou" alone may be a fallback
    tracker = tracker_json(
        "nlu_fallback",
        "vertou",
        entities=[{"entity": "lieu", "value": "Vertou"}],
        slots={"sujet_en_attente": "decheterie", "lieu": "Vertou"},
    )
    messages, slots = await run(action, tracker)
    texts = [m["text"] for m in messages]
    assert texts == [kb.entries["decheterie"].answer, kb.prompt("anything_else")]  # no variant
    assert slots["sujet_en_attente"] is None
    assert "incomprehensions" not in slots  # answering the question is not a fallback


async def test_fallback_counter_then_handoff(kb: KnowledgeBase) -> None:
    action = ActionIncomprehension(kb, PolicySettings(max_consecutive_fallbacks=3))
    messages, slots = await run(action, tracker_json("nlu_fallback", "brouhaha"))
    assert messages[0]["text"] == kb.prompt("rephrase") and slots["incomprehensions"] == 1.0
    messages, slots = await run(
        action, tracker_json("nlu_fallback", "brouhaha", slots={"incomprehensions": 1.0})
    )
    assert slots["incomprehensions"] == 2.0 and all(
        "custom" not in m or not m["custom"] for m in messages
    )
    messages, _ = await run(
        action,
        tracker_json(
            "nlu_fallback", "brouhaha", slots={"incomprehensions": 2.0}, user_texts=("a", "b")
        ),
    )
    handoff = messages[-1]["custom"]["handoff"]
    assert handoff["reason"] == "incompréhension"
    assert handoff["last_utterances"] == ["a", "b", "brouhaha"]


async def test_transfer_summary_names_topic_and_entities(kb: KnowledgeBase) -> None:
    action = ActionTransfert(kb, PolicySettings())
    slots = {"sujet": "signalement_voirie", "probleme": "éclairage", "quartier": "Nantes Nord"}
    messages, _ = await run(action, tracker_json("demander_agent", "un conseiller", slots=slots))
    assert messages[0]["text"] == kb.prompt("transfer")
    handoff = messages[1]["custom"]["handoff"]
    assert handoff["intent"] == "signalement_voirie"
    assert handoff["entities"] == {"quartier": "Nantes Nord", "probleme": "éclairage"}
    assert "Sujet : signalement sur la voirie." in handoff["summary"]
    assert "Quartier : Nantes Nord." in handoff["summary"]


async def test_non_ends_the_call_and_repeat_replays(kb: KnowledgeBase) -> None:
    messages, _ = await run(ActionNier(kb, PolicySettings()), tracker_json("nier", "non"))
    assert messages[-1]["custom"] == {"end_call": True}
    last = ["Réponse.", "Puis-je vous aider pour autre chose ?"]
    messages, slots = await run(
        ActionRepeter(kb, PolicySettings()),
        tracker_json("repeter", "pardon", slots={"derniere_reponse": last}),
    )
    assert [m["text"] for m in messages] == last
    assert "derniere_reponse" not in slots


async def test_in_process_endpoint_speaks_the_action_server_protocol(kb: KnowledgeBase) -> None:
    endpoint = InProcessActions(build_executor(kb, PolicySettings()))
    body = {
        "next_action": "action_repondre",
        "sender_id": "call-actions",
        "tracker": tracker_json("stationnement", "stationnement"),
        "version": "3.6.21",
    }
    response = await endpoint.request(json=body, method="post")
    assert response["responses"][0]["text"] == kb.entries["stationnement"].answer
    assert {"event": "slot", "name": "sujet", "value": "stationnement"}.items() <= response[
        "events"
    ][0].items()

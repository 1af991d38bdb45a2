"""Conversations through RasaDialogue with the real trained model (loaded once per session)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from voicebot.core.interfaces import BotReply
from voicebot.dialogue.agent import RasaDialogue

_ids = itertools.count()


@pytest.fixture()
def dialogue(rasa_dialogue: RasaDialogue) -> RasaDialogue:
    return rasa_dialogue


@pytest.fixture()
def call_id() -> str:
    return f"test-call-{next(_ids)}"


def said(reply: BotReply) -> str:
    return " ".join(reply.texts)


async def test_greeting_says_automatic_assistant_conseiller_zero_and_not_recorded(
    dialogue: RasaDialogue, call_id: str
) -> None:
    reply = await dialogue.greet(call_id)
    text = said(reply).lower()
    assert "assistant automatique" in text
    assert "conseiller" in text and "tapez 0" in text
    assert "n'est pas enregistré" in text and "transcription écrite" in text
    assert f"{dialogue.settings.records.retention_days} jours" in text
    assert reply.handoff is None and not reply.end_call


async def test_answer_then_anything_else_then_oui_then_non_ends(
    dialogue: RasaDialogue, call_id: str
) -> None:
    reply = await dialogue.turn(call_id, "comment renouveler mon passeport")
    assert reply.intent == "papiers_identite"
    assert reply.entities == {"document": "passeport"}
    passport = dialogue.kb.entries["papiers_identite"].variants["document"]["passeport"]
    assert reply.texts == (passport, dialogue.prompt("anything_else"))

    reply = await dialogue.turn(call_id, "oui j'ai une autre question")
    assert reply.intent == "affirmer"
    assert reply.texts == (dialogue.prompt("listening"),)
    assert not reply.end_call

    reply = await dialogue.turn(call_id, "non merci c'est tout")
    assert reply.intent == "nier"
    assert reply.texts == (dialogue.prompt("goodbye"),)
    assert reply.end_call and reply.handoff is None


async def test_repeter_repeats_the_last_answer(dialogue: RasaDialogue, call_id: str) -> None:
    first = await dialogue.turn(call_id, "comment avoir la carte blanche")
    assert first.intent == "carte_blanche"
    again = await dialogue.turn(call_id, "pardon vous pouvez répéter")
    assert again.intent == "repeter"
    assert again.texts == first.texts


async def test_repeter_before_any_answer(dialogue: RasaDialogue, call_id: str) -> None:
    reply = await dialogue.turn(call_id, "vous pouvez répéter s'il vous plaît")
    assert reply.texts == (dialogue.prompt("nothing_to_repeat"),)


async def test_quartier_is_asked_once_then_the_variant_is_given(
    dialogue: RasaDialogue, call_id: str
) -> None:
    reply = await dialogue.turn(call_id, "quels sont les horaires de la mairie")
    assert reply.intent == "horaires_mairie"
    assert reply.texts == (dialogue.prompt("ask_quartier"),)
    reply = await dialogue.turn(call_id, "doulon")
    doulon = dialogue.kb.entries["horaires_mairie"].variants["quartier"]["Doulon-Bottière"]
    assert reply.texts == (doulon, dialogue.prompt("anything_else"))


async def test_unknown_quartier_falls_back_to_the_general_answer_and_is_not_asked_again(
    dialogue: RasaDialogue, call_id: str
) -> None:
    await dialogue.turn(call_id, "à quelle heure ouvre la mairie")
    reply = await dialogue.turn(call_id, "je ne sais pas")
    general = dialogue.kb.entries["horaires_mairie"].answer
    assert reply.texts == (general, dialogue.prompt("anything_else"))
    # Asked once per call: another quartier-dependent topic gets the general answer.
    reply = await dialogue.turn(call_id, "quel jour passent les poubelles")
    assert reply.intent == "collecte_dechets"
    assert reply.texts[0] == dialogue.kb.entries["collecte_dechets"].answer


async def test_quartier_in_the_question_is_used_without_asking(
    dialogue: RasaDialogue, call_id: str
) -> None:
    reply = await dialogue.turn(call_id, "quels sont les horaires de la mairie de chantenay")
    assert reply.entities.get("quartier") == "Bellevue-Chantenay-Sainte-Anne"
    variant = dialogue.kb.entries["horaires_mairie"].variants["quartier"][
        "Bellevue-Chantenay-Sainte-Anne"
    ]
    assert reply.texts[0] == variant
    # Remembered for the rest of the call.
    reply = await dialogue.turn(call_id, "et les poubelles elles passent quand")
    assert reply.intent == "collecte_dechets"
    assert (
        reply.texts[0]
        == dialogue.kb.entries["collecte_dechets"].variants["quartier"][
            "Bellevue-Chantenay-Sainte-Anne"
        ]
    )


async def test_decheterie_asks_for_the_place(dialogue: RasaDialogue, call_id: str) -> None:
    reply = await dialogue.turn(call_id, "les horaires de la déchetterie s'il vous plaît")
    assert reply.intent == "decheterie"
    assert reply.texts == (dialogue.prompt("ask_lieu"),)
    reply = await dialogue.turn(call_id, "celle de la prairie de mauves")
    assert "Prairie de Mauves" in reply.texts[0]


async def test_au_revoir_ends_politely(dialogue: RasaDialogue, call_id: str) -> None:
    reply = await dialogue.turn(call_id, "merci au revoir")
    assert reply.intent == "au_revoir"
    assert reply.end_call and reply.texts == (dialogue.prompt("goodbye"),)


async def test_urgence_gives_the_numbers_and_hands_off(
    dialogue: RasaDialogue, call_id: str
) -> None:
    reply = await dialogue.turn(call_id, "au secours il y a le feu chez ma voisine")
    assert reply.intent == "urgence"
    text = said(reply)
    for number in ("15", "17", "18", "112"):
        assert f"le {number}" in text
    assert reply.handoff is not None
    assert reply.handoff.reason == "urgence"
    assert reply.handoff.last_utterances == ("au secours il y a le feu chez ma voisine",)
    assert "urgence" in reply.handoff.summary


@pytest.mark.parametrize(
    "text", ["comment on fait une mayonnaise", "ma recette de sauce béarnaise a raté"]
)
async def test_a_guessed_emergency_without_emergency_words_asks_to_rephrase(
    dialogue: RasaDialogue, call_id: str, text: str
) -> None:
    """Whatever intent the classifier guesses, an off-topic sentence never sends the caller
    the emergency numbers and a handoff on its first turn."""
    reply = await dialogue.turn(call_id, text)
    assert reply.handoff is None
    assert "15" not in said(reply)


async def test_demander_agent_hands_off_with_the_context(
    dialogue: RasaDialogue, call_id: str
) -> None:
    await dialogue.turn(call_id, "je voudrais un acte de naissance")
    reply = await dialogue.turn(call_id, "je veux parler à un conseiller")
    assert reply.intent == "demander_agent"
    assert reply.texts == (dialogue.prompt("transfer"),)
    handoff = reply.handoff
    assert handoff is not None and handoff.reason == "demande"
    assert handoff.intent == "etat_civil"
    assert handoff.entities == {"document": "acte de naissance"}
    assert "état civil" in handoff.summary and "acte de naissance" in handoff.summary
    assert handoff.last_utterances == (
        "je voudrais un acte de naissance",
        "je veux parler à un conseiller",
    )


# Sentences far from every intent. Which of them fall under the threshold depends on the
# trained model, so the tests pick those the model really sends to nlu_fallback.
UNCLEAR = [
    "zzz zzz",
    "zorglub",
    "c'est pour euh",
    "c'est à propos de",
    "euh attendez",
    "ma voiture ne démarre plus il me faut une dépanneuse",
    "zorglub trimbalate frumpf",
    "oui mais non mais si enfin",
    "le truc là avec le machin",
    "quarante-deux",
    "blorp snarfle quixotique",
    "ah bah tiens voilà autre chose",
    "stationnement encombrants",
    "carte blanche taxe de séjour",
]


async def fallback_sentences(dialogue: RasaDialogue) -> list[str]:
    found = [t for t in UNCLEAR if (await dialogue.parse(t))["intent"] == "nlu_fallback"]
    assert len(found) >= 2, "the model sends almost nothing to nlu_fallback"
    return found


async def test_one_fallback_asks_to_rephrase_two_in_a_row_hand_off(
    dialogue: RasaDialogue, call_id: str
) -> None:
    first, second = (await fallback_sentences(dialogue))[:2]
    reply = await dialogue.turn(call_id, first)
    assert reply.intent == "nlu_fallback"
    assert reply.texts == (dialogue.prompt("rephrase"),)
    assert reply.handoff is None
    reply = await dialogue.turn(call_id, second)
    assert reply.intent == "nlu_fallback"
    assert reply.handoff is not None and reply.handoff.reason == "incompréhension"
    assert reply.texts == (dialogue.prompt("transfer"),)
    assert reply.handoff.last_utterances == (first, second)


async def test_fallbacks_must_be_consecutive(dialogue: RasaDialogue, call_id: str) -> None:
    first, second = (await fallback_sentences(dialogue))[:2]
    assert (await dialogue.turn(call_id, first)).handoff is None
    assert (await dialogue.turn(call_id, "objets trouvés")).intent == "objets_trouves"
    reply = await dialogue.turn(call_id, second)
    assert reply.intent == "nlu_fallback" and reply.handoff is None


async def test_off_topic_is_declined_without_handoff(dialogue: RasaDialogue, call_id: str) -> None:
    reply = await dialogue.turn(call_id, "quel temps fait-il demain")
    assert reply.intent in ("hors_sujet", "nlu_fallback")
    assert reply.handoff is None and not reply.end_call


async def test_dtmf_zero_hands_off_with_reason_dtmf(dialogue: RasaDialogue, call_id: str) -> None:
    reply = await dialogue.dtmf(call_id, "0")
    assert reply.handoff is not None and reply.handoff.reason == "dtmf"
    assert reply.handoff.last_utterances == ("[touche 0]",)
    assert "tapé 0" in reply.handoff.summary


async def test_dtmf_menu_keys_and_star_repeats(dialogue: RasaDialogue, call_id: str) -> None:
    reply = await dialogue.dtmf(call_id, "3")
    assert reply.intent == "etat_civil" and reply.confidence == 1.0
    assert reply.texts[0] == dialogue.kb.entries["etat_civil"].answer
    again = await dialogue.dtmf(call_id, "*")
    assert again.texts == reply.texts
    menu = await dialogue.dtmf(call_id, "9")
    assert menu.texts == (dialogue.prompt("dtmf_menu"),)


async def test_caller_text_cannot_inject_an_intent(dialogue: RasaDialogue, call_id: str) -> None:
    # Rasa reads "/intent{entities}" as a command; caller text must stay text.
    reply = await dialogue.turn(call_id, '/saluer{"quartier": "Piraterie"}')
    assert reply.entities.get("quartier") != "Piraterie"
    result = await dialogue.parse('/urgence{"lieu": "Atlantide"}')
    assert result["entities"] == []


async def test_empty_turn_asks_to_repeat(dialogue: RasaDialogue, call_id: str) -> None:
    reply = await dialogue.turn(call_id, "   ")
    assert reply.texts == (dialogue.prompt("not_heard"),)


async def test_end_drops_the_tracker(dialogue: RasaDialogue, call_id: str) -> None:
    await dialogue.turn(call_id, "stationnement résident")
    store: dict[str, Any] = dialogue.conversations.serialised
    assert call_id in store
    await dialogue.end(call_id)
    assert call_id not in store


async def test_calls_do_not_share_memory(dialogue: RasaDialogue) -> None:
    await dialogue.turn("call-a", "les horaires de la mairie de doulon")
    reply = await dialogue.turn("call-b", "quels sont les horaires de la mairie")
    assert reply.texts == (dialogue.prompt("ask_quartier"),)
    await dialogue.end("call-a")
    await dialogue.end("call-b")


async def test_static_texts_cover_prompts_and_answers(dialogue: RasaDialogue) -> None:
    texts = dialogue.static_texts()
    assert dialogue.prompt("greeting") in texts and dialogue.prompt("dtmf_menu") in texts
    for entry in dialogue.kb.entries.values():
        assert entry.answer in texts


async def test_parse_gives_the_nlu_decision(dialogue: RasaDialogue) -> None:
    result = await dialogue.parse("je voudrais les horaires de la déchèterie de carquefou")
    assert result["intent"] == "decheterie"
    assert {"entity": "lieu", "value": "Carquefou"} in result["entities"]
    assert result["ranking"][0]["name"] == "decheterie"
    assert set(result) == {"text", "intent", "confidence", "entities", "ranking"}


async def test_words_read_during_the_pause_are_not_parsed_again_for_the_turn(
    dialogue: RasaDialogue, call_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end-of-turn rule has the NLU read the caller's words while they pause; when the
    final transcript has the same words, the turn reuses that reading (the answer starts at
    once); other words are parsed afresh."""
    understood = await dialogue.understand("c'est quoi les horaires de la mairie")
    assert understood.intent == "horaires_mairie" and understood.confidence > 0.5
    parses: list[str] = []
    real_parse = dialogue.agent.parse_message

    async def counted(text: str, *args: Any, **kwargs: Any) -> Any:
        parses.append(text)
        return await real_parse(text, *args, **kwargs)

    monkeypatch.setattr(dialogue.agent, "parse_message", counted)
    reply = await dialogue.turn(call_id, "C'est quoi les horaires de la mairie ?", understood)
    assert parses == []
    assert reply.intent == "horaires_mairie" and "quartier" in said(reply).lower()  # asks which
    other = await dialogue.turn(f"{call_id}-b", "je voudrais refaire mon passeport", understood)
    assert parses == ["je voudrais refaire mon passeport"]
    assert other.intent == "papiers_identite"

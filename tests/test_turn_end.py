"""The end-of-turn rule on words alone (voicebot.call.turn_end): how long a silence ends the
caller's turn, from the transcript so far, the NLU's reading of it, and the bot's question."""

from __future__ import annotations

import pytest

from voicebot.call.turn_end import (
    READ_AT_PAUSE_MS,
    TurnEnd,
    asks_a_question,
    settle_at_pause_ms,
    silence_needed,
    unfinished,
)
from voicebot.core.config import ConfigError, TurnSettings, load_settings
from voicebot.core.french import spoken_words
from voicebot.core.interfaces import Understanding

DEFAULT_MS = 650
SETTINGS = TurnSettings()


def needed(
    transcript: str,
    understood: Understanding | None = None,
    after_question: bool = False,
    pitch: float | None = None,
) -> TurnEnd:
    return silence_needed(SETTINGS, DEFAULT_MS, transcript, understood, after_question, pitch)


def test_a_complete_request_read_with_confidence_ends_after_the_short_silence() -> None:
    text = "c'est quoi les horaires de la mairie de Doulon"
    reading = Understanding(text, "horaires_mairie", 0.97)
    assert needed(text, reading) == TurnEnd(SETTINGS.complete_silence_ms, "complete")
    assert SETTINGS.complete_silence_ms < DEFAULT_MS


def test_a_reading_of_other_words_or_an_unsure_one_does_not_count() -> None:
    text = "c'est quoi les horaires de la mairie de Doulon"
    earlier = Understanding("c'est quoi les horaires", "horaires_mairie", 0.97)
    assert needed(text, earlier).why == "default"  # the caller said more since
    unsure = Understanding(text, "horaires_mairie", SETTINGS.complete_confidence - 0.01)
    assert needed(text, unsure) == TurnEnd(DEFAULT_MS, "default")
    assert needed(text, Understanding(text, "nlu_fallback", 0.99)).why == "default"
    # words read as off-topic or as a greeting say nothing about the request being complete
    # (Rasa reads fragments such as « la conférence » as hors_sujet with high confidence)
    assert needed("la conférence", Understanding("la conférence", "hors_sujet", 0.99)).why == (
        "default"
    )
    assert needed("bonjour", Understanding("bonjour", "saluer", 0.99)).why == "default"
    assert needed(text, Understanding(text, None, 0.99)).why == "default"
    # punctuation and case are the ASR's, not the words: the same transcript
    assert (
        needed(text, Understanding(text.upper() + " ?", "horaires_mairie", 0.9)).why == "complete"
    )


@pytest.mark.parametrize(
    "transcript",
    [
        "je voudrais",
        "je voudrais refaire mon",
        "les horaires de",
        "c'est pour",
        "je voudrais euh",
        "bonjour j'appelle pour",
        "la mairie de Doulon et",
    ],
)
def test_an_unfinished_sentence_waits_longer_even_when_the_nlu_is_sure(transcript: str) -> None:
    sure = Understanding(transcript, "papiers_identite", 0.99)
    result = needed(transcript, sure)
    assert result == TurnEnd(SETTINGS.unfinished_silence_ms, "unfinished")
    assert result.wait_ms > DEFAULT_MS
    assert unfinished(transcript)


def test_a_yes_or_no_after_a_question_ends_fast_and_not_without_the_question() -> None:
    for answer in ("oui", "Non.", "non merci", "d'accord", "Oui, merci"):
        assert needed(answer, after_question=True) == TurnEnd(
            SETTINGS.closed_answer_silence_ms, "closed_answer"
        ), answer
        assert needed(answer).why == "default", answer
    assert needed("oui je voudrais", after_question=True).why == "unfinished"
    assert needed("oui la mairie", after_question=True).why == "default"


def test_nothing_heard_or_the_rule_switched_off_waits_the_vad_default() -> None:
    assert needed("") == TurnEnd(DEFAULT_MS, "default")
    assert needed("  ... ") == TurnEnd(DEFAULT_MS, "default")
    off = TurnSettings(enabled=False)
    assert silence_needed(off, DEFAULT_MS, "je voudrais", None) == TurnEnd(DEFAULT_MS, "disabled")


def test_the_short_waits_never_exceed_and_the_long_never_undercut_the_vad_default() -> None:
    """A deployment that sets vad.end_silence_ms lower than the turn rule's short waits (or
    higher than its long one) keeps its own value."""
    quick = silence_needed(SETTINGS, 200, "je voudrais", None)
    assert quick.wait_ms == SETTINGS.unfinished_silence_ms
    slow = silence_needed(SETTINGS, 2000, "je voudrais", None)
    assert slow.wait_ms == 2000
    text = "les horaires de la piscine"
    short = silence_needed(SETTINGS, 200, text, Understanding(text, "horaires_mairie", 0.99))
    assert short.wait_ms == 200


def test_words_and_questions() -> None:
    assert spoken_words("J'appelle pour l'état-civil, euh…") == [
        "j",
        "appelle",
        "pour",
        "l",
        "état",
        "civil",
        "euh",
    ]
    assert asks_a_question(("Voici les horaires.", "Puis-je vous aider pour autre chose ? "))
    assert not asks_a_question(("Dans quel quartier ?", "Merci, au revoir."))
    assert not asks_a_question(())


def test_the_settings_are_validated_and_read_from_yaml(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="complete_confidence"):
        TurnSettings(complete_confidence=1.5).validate()
    with pytest.raises(ValueError, match="unfinished_silence_ms"):
        TurnSettings(unfinished_silence_ms=0).validate()
    with pytest.raises(ValueError, match="fall_semitones"):
        TurnSettings(fall_semitones=0).validate()
    with pytest.raises(ValueError, match="held_semitones"):
        TurnSettings(fall_semitones=2, held_semitones=-3).validate()
    config = tmp_path / "voicebot.yml"
    config.write_text("turn:\n  complete_silence_ms: 280\n  enabled: false\n")
    settings = load_settings(config, environ={})
    assert settings.turn.complete_silence_ms == 280 and settings.turn.enabled is False
    config.write_text("turn:\n  complete_confidence: 2\n")
    with pytest.raises(ConfigError, match="turn"):
        load_settings(config, environ={})


def test_when_the_words_say_nothing_the_voice_decides() -> None:
    """A voice that fell well below the caller's middle pitch ends the turn after the short
    silence; one held up waits longer; in between, or unknown, the default."""
    fallen, held = -SETTINGS.fall_semitones, SETTINGS.held_semitones
    assert needed("la conférence", pitch=fallen) == TurnEnd(SETTINGS.fallen_silence_ms, "fallen")
    assert needed("", pitch=fallen - 3).why == "fallen"  # no words yet (Whisper, a stand-in)
    assert needed("la conférence", pitch=held) == TurnEnd(SETTINGS.held_silence_ms, "held")
    assert needed("la conférence", pitch=held + 5).why == "held"
    assert needed("la conférence", pitch=(fallen + held) / 2).why == "default"
    assert needed("la conférence", pitch=None).why == "default"
    assert SETTINGS.fallen_silence_ms < DEFAULT_MS < SETTINGS.held_silence_ms


def test_the_words_win_over_the_voice() -> None:
    low = -SETTINGS.fall_semitones - 5
    assert needed("je voudrais les horaires de", pitch=low).why == "unfinished"
    assert needed("oui", after_question=True, pitch=SETTINGS.held_semitones + 3).why == (
        "closed_answer"
    )
    text = "les horaires de la mairie"
    sure = Understanding(text, "horaires_mairie", 0.99)
    assert needed(text, sure, pitch=-SETTINGS.fall_semitones - 3).why == "complete"
    assert needed(text, sure, pitch=None).why == "complete"
    # a request read as complete in a voice held up (more to come, or a rising question):
    # the clues disagree, the usual wait decides
    assert needed(text, sure, pitch=SETTINGS.held_semitones + 3) == TurnEnd(
        DEFAULT_MS, "complete_but_held"
    )


def test_the_recognizer_settles_ahead_of_the_end_of_the_turn() -> None:
    """lead_ms before the silence that ends the turn, never within the dips between
    syllables, and never with no lead."""
    assert settle_at_pause_ms(650, 450) == 200
    assert settle_at_pause_ms(1200, 450) == 750
    assert settle_at_pause_ms(300, 450) == READ_AT_PAUSE_MS
    assert settle_at_pause_ms(650, 0) is None

"""End of turn: how much silence ends the caller's turn, from what they have said so far.

A fixed wait after the last word (``vad.end_silence_ms``) is both too long for a complete
request (« c'est quoi les horaires de la mairie de Doulon », then 650 ms of nothing before
the bot even starts) and too short for a caller who pauses mid-sentence (« je voudrais…
euh… refaire mon passeport »). People hand the turn over in about 200 ms because they hear
that the sentence is finished. The bot has three clues, all offline and all French:

- the running transcript (the ASR's partial): a sentence that ends on « de », « pour »,
  « euh » or « je voudrais » is not finished, whatever the silence says;
- the NLU's reading of that transcript, computed once the caller pauses: a known request
  read with high confidence is complete;
- the bot's last words: after a question, « oui » or « non » is a whole answer;
- the caller's voice (voicebot.speech.intonation): a French statement ends low, a sentence
  broken off mid-way stays at mid pitch or rises. It needs no words, so it still speaks
  when the ASR's words are no use (a stand-in model, a strong accent); the words win over it.

``silence_needed`` is pure (text in, a wait in milliseconds out), so it is tested on words
alone; the listener asks it again whenever the transcript or its reading changes, and the
VAD ends the turn once the silence reaches the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicebot.core.config import TurnSettings
from voicebot.core.french import spoken_words
from voicebot.core.interfaces import Understanding

# Readings that say nothing about the request being complete: the NLU did not understand,
# read words from outside the city's topics (Rasa reads fragments such as « la conférence »
# or « vous avez » as hors_sujet with high confidence: measured with
# voicebot.tools.turn_eval), or heard a greeting, after which the request usually follows.
NOT_A_REQUEST = frozenset({"nlu_fallback", "hors_sujet", "saluer"})

# Words a French sentence does not end on: articles, prepositions, conjunctions, the
# subject and verbs of a request still to come, and hesitations. The NLU can read a
# request with confidence before its object is said (« je voudrais refaire mon »): these
# words win over it.
UNFINISHED_ENDINGS = frozenset(
    [
        "le",
        "la",
        "les",
        "l",
        "un",
        "une",
        "des",
        "du",
        "de",
        "d",
        "au",
        "aux",
        "à",
        "a",
        "pour",
        "par",
        "sur",
        "dans",
        "avec",
        "sans",
        "chez",
        "vers",
        "en",
        "entre",
        "sous",
        "après",
        "avant",
        "depuis",
        "pendant",
        "et",
        "ou",
        "mais",
        "donc",
        "car",
        "ni",
        "que",
        "qu",
        "qui",
        "quoi",
        "dont",
        "où",
        "comment",
        "quand",
        "si",
        "parce",
        "puisque",
        "je",
        "j",
        "me",
        "m",
        "mon",
        "ma",
        "mes",
        "ton",
        "ta",
        "tes",
        "son",
        "sa",
        "ses",
        "notre",
        "nos",
        "votre",
        "vos",
        "leur",
        "leurs",
        "ce",
        "cet",
        "cette",
        "ces",
        "voudrais",
        "veux",
        "voulais",
        "souhaite",
        "souhaiterais",
        "aimerais",
        "cherche",
        "appelle",
        "suis",
        "est",
        "c",
        "euh",
        "heu",
        "hum",
        "ben",
        "bah",
        "bon",
        "alors",
        "enfin",
        "genre",
        "voilà",
    ]
)

# Whole answers to a closed question (« Puis-je vous aider pour autre chose ? »).
CLOSED_ANSWERS = frozenset(
    {
        "oui",
        "non",
        "ouais",
        "si",
        "d accord",
        "exactement",
        "tout à fait",
        "oui merci",
        "non merci",
        "c est tout",
        "ça ira",
        "pas du tout",
    }
)


# The clues are read once the caller has been silent this long: the dips between syllables
# are shorter, and reading the NLU at each of them cost the busy bench server more than it
# saved. It leaves 150 ms to read them before the shortest wait (closed_answer_silence_ms).
READ_AT_PAUSE_MS = 100


def settle_at_pause_ms(wait_ms: int, lead_ms: int) -> int | None:
    """How long into the caller's pause the recognizer closes the utterance (``asr.settle``):
    ``lead_ms`` before the silence that ends the turn, so that its final result is ready
    then, and not before READ_AT_PAUSE_MS (the dips between syllables are shorter). None:
    only at the end of the turn."""
    if lead_ms <= 0:
        return None
    return max(READ_AT_PAUSE_MS, wait_ms - lead_ms)


@dataclass(frozen=True)
class TurnEnd:
    """The silence that ends the turn now, and why (logged, and counted by the bench)."""

    wait_ms: int
    # "unfinished", "closed_answer", "complete", "complete_but_held", "fallen", "held",
    # "default" or "disabled"
    why: str


def asks_a_question(bot_texts: tuple[str, ...]) -> bool:
    """Did the bot's last words end on a question?"""
    return bool(bot_texts) and bot_texts[-1].rstrip().endswith("?")


def unfinished(transcript: str) -> bool:
    """Does the transcript end on a word a French sentence does not end on?"""
    said = spoken_words(transcript)
    return bool(said) and said[-1] in UNFINISHED_ENDINGS


def silence_needed(
    settings: TurnSettings,
    default_ms: int,
    transcript: str,
    understood: Understanding | None = None,
    after_question: bool = False,
    final_pitch_st: float | None = None,
) -> TurnEnd:
    """How long a silence after ``transcript`` ends the turn.

    ``understood`` counts only if it was read in this very transcript (the caller may have
    said more since); ``after_question`` is true when the bot's last words asked one;
    ``final_pitch_st`` is where the voice ended, in semitones from its median (None: unknown).
    """
    if not settings.enabled:
        return TurnEnd(default_ms, "disabled")
    said = spoken_words(transcript)
    if said and unfinished(transcript):
        return TurnEnd(max(default_ms, settings.unfinished_silence_ms), "unfinished")
    if after_question and " ".join(said) in CLOSED_ANSWERS:
        return TurnEnd(min(default_ms, settings.closed_answer_silence_ms), "closed_answer")
    if (
        understood is not None
        and spoken_words(understood.text) == said
        and understood.intent is not None
        and understood.intent not in NOT_A_REQUEST
        and understood.confidence >= settings.complete_confidence
    ):
        if final_pitch_st is not None and final_pitch_st >= settings.held_semitones:
            # The words say finished, the voice says more is coming (or a rising question):
            # the two disagree, the usual wait decides. Measured: 16 % of mid-sentence pauses
            # cut instead of 19 % (voicebot.tools.turn_eval, 149 French recordings).
            return TurnEnd(default_ms, "complete_but_held")
        return TurnEnd(min(default_ms, settings.complete_silence_ms), "complete")
    if final_pitch_st is not None and final_pitch_st <= -settings.fall_semitones:
        return TurnEnd(min(default_ms, settings.fallen_silence_ms), "fallen")
    if final_pitch_st is not None and final_pitch_st >= settings.held_semitones:
        return TurnEnd(max(default_ms, settings.held_silence_ms), "held")
    return TurnEnd(default_ms, "default")

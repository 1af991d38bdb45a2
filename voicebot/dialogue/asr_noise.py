"""A sentence as a speech recogniser would write it: the noisy copy of the test sets.

``asr_noisy(text, seed)`` is deterministic: the same text and seed always give the same
result, whatever the order or the process (the random generator is seeded from the seed and
the text itself, never from Python's per-process string hash). It applies, in this order:

1. lowercase, numbers as French words (« 15 » → « quinze »), via num2words;
2. fixed ASR spellings of common phrases (« aujourd'hui » → « aujourd hui »,
   « s'il vous plaît » → « sil vous plait »);
3. every other apostrophe or hyphen split (« l'état » → « l état ») or merged
   (« qu'on » → « quon »), at random;
4. accents dropped, punctuation dropped;
5. a few long words split in two (« déchetterie » → « dech etterie »), a few short function
   words merged with the next word (« de la » → « dela »);
6. fillers « euh » / « ben » inserted.

No Rasa here: the transform is plain text, tested with literal strings.
"""

from __future__ import annotations

import random
import re
import unicodedata

from num2words import num2words

DEFAULT_SEED = 12
FILLERS = ("euh", "ben")
# Phrases an ASR writes its own way, applied before the generic apostrophe rule.
ASR_SPELLINGS = (
    ("aujourd'hui", "aujourd hui"),
    ("s'il vous plaît", "sil vous plait"),
    ("s'il vous plait", "sil vous plait"),
    ("s'il te plaît", "sil te plait"),
    ("qu'est-ce que", "qu est ce que"),
    ("quelqu'un", "quelqu un"),
    ("peut-être", "peut être"),
)
# Short words an ASR sometimes glues to the next one.
MERGEABLE = frozenset({"de", "la", "le", "les", "du", "des", "un", "une", "en", "au", "l", "d"})
SPLIT_MIN_LETTERS = 9
SPLIT_PROBABILITY = 0.15
MERGE_PROBABILITY = 0.08
APOSTROPHE_MERGE_PROBABILITY = 0.3
FIRST_FILLER_PROBABILITY = 0.5
SECOND_FILLER_PROBABILITY = 0.2

_NUMBER = re.compile(r"\d+")
_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
_NOT_WORD = re.compile(r"[^\w\s]|_")
_VOWELS = frozenset("aeiouy")


def strip_accents(text: str) -> str:
    """« Déchèterie Œuvre » → « Decheterie OEuvre »: accents and ligatures gone."""
    text = text.replace("œ", "oe").replace("Œ", "OE").replace("æ", "ae").replace("Æ", "AE")
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def numbers_in_words(text: str) -> str:
    """« le 15 mars » → « le quinze mars » (French, as an ASR writes numbers)."""
    return _NUMBER.sub(lambda m: str(num2words(int(m.group()), lang="fr")), text)


def asr_spellings(text: str) -> str:
    """The fixed ASR spellings of ASR_SPELLINGS (text already lowercase)."""
    text = text.replace("’", "'")
    for written, heard in ASR_SPELLINGS:
        text = text.replace(written, heard)
    return text


def split_word(word: str) -> tuple[str, str]:
    """A long word cut after a vowel near its middle (« ordures » → « ordu res »)."""
    middle = len(word) // 2
    for offset in range(len(word)):
        for cut in (middle + offset, middle - offset):
            if 2 <= cut <= len(word) - 2 and word[cut - 1] in _VOWELS:
                return word[:cut], word[cut:]
    return word[:middle], word[middle:]


def asr_noisy(text: str, seed: int = DEFAULT_SEED) -> str:
    """``text`` as an ASR would write it (see the module's docstring). Deterministic."""
    rng = random.Random(f"{seed}\0{text}")  # noqa: S311 - reproducible noise, not a secret
    text = asr_spellings(numbers_in_words(text.lower()))
    text = _APOSTROPHE.sub(
        lambda _: "" if rng.random() < APOSTROPHE_MERGE_PROBABILITY else " ", text
    )
    text = _HYPHEN.sub(" ", text)
    text = _NOT_WORD.sub(" ", strip_accents(text))
    words: list[str] = []
    for word in text.split():
        if len(word) >= SPLIT_MIN_LETTERS and rng.random() < SPLIT_PROBABILITY:
            words.extend(split_word(word))
        else:
            words.append(word)
    merged: list[str] = []
    skip = False
    for index, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word in MERGEABLE and index + 1 < len(words) and rng.random() < MERGE_PROBABILITY:
            merged.append(word + words[index + 1])
            skip = True
        else:
            merged.append(word)
    for probability in (FIRST_FILLER_PROBABILITY, SECOND_FILLER_PROBABILITY):
        if rng.random() < probability:
            merged.insert(rng.randint(0, len(merged)), rng.choice(FILLERS))
    return " ".join(merged)

"""French text normalisation and word error rate, for scoring speech recognition.

A reference transcript and an ASR hypothesis can say the same thing in different spellings:
"Appuyez sur 1." / "appuyez sur un", "s'il-vous-plaît" / "s'il vous plaît", "quatre-vingt" /
"80", "Désolé" / "Desole". ``normalize`` maps both to one canonical list of words, so that
the word error rate counts what was misheard, not how it was written:

- apostrophes: typographic ones become "'"; an elided word ("l'", "qu'", "jusqu'") becomes a
  word of its own ("l'heure" → "l'" "heure"); lexical ones stay inside ("aujourd'hui");
- hyphens and punctuation separate words; case is dropped;
- numbers are written out in French words: "23" → "vingt trois", "1er" → "premier",
  "14h30" → "quatorze heures trente", "2,5" → "deux virgule cinq", "1 000" → "mille";
  plural marks of number words ("quatre-vingts", "deux cents") and the gender of "un/une"
  are folded, since a digit carries neither;
- spelled letters in capitals are joined ("I A X", "A.M." → "iax", "am");
- "*", "#", "%", "€", "&", "+" are read out ("étoile", "dièse", "pour cent"...);
- accents are folded by default ("désolé" = "desole"): transcripts are often typed without
  them, and "a"/"à", "ou"/"où" sound the same. ``keep_accents=True`` keeps them.

Numbers are spelled as the speech side spells them (num2words, ``voicebot.speech.text_fr``).
The word error rate is the Levenshtein distance between the two word lists (substitutions,
deletions, insertions; counted by jiwer) divided by the number of reference words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

from voicebot.speech.text_fr import MAX_NUMBER, number_to_words, ordinal_to_words

# --- numbers in words ---------------------------------------------------------------------

_DIGITS = tuple(number_to_words(digit) for digit in range(10))


def _digits_to_words(digits: str) -> str:
    """A digit string as spoken: leading zeros one by one ("02" → "zéro deux")."""
    stripped = digits.lstrip("0")
    zeros = ["zéro"] * (len(digits) - len(stripped))
    if not stripped:
        return " ".join(zeros)
    if int(stripped) > MAX_NUMBER:  # a code, not an amount
        return " ".join(_DIGITS[int(d)] for d in digits)
    return " ".join([*zeros, number_to_words(int(stripped))])


# --- normalisation ------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "´": "'", "`": "'", "′": "'"})
# Spaces that separate thousands in French typography (regular, no-break, narrow no-break).
_THOUSANDS = re.compile(r"(?<![\d,])\d{1,3}(?:[ \u00a0\u202f.]\d{3})+(?![\d,]|\.\d)")
_DECIMAL = re.compile(r"(\d+),(\d+)")
_TIME = re.compile(r"(?<![\w])(\d{1,2}) ?h ?(\d{2})?(?![\w])")
_ORDINAL = re.compile(r"(?<![\w])(\d+)(ers?|res?|ères?|nde?s?|i?[eè]m?e?s?)(?![\w])")
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")
_INTEGER = re.compile(r"\d+")
_SYMBOLS = {
    "%": " pour cent ",
    "€": " euros ",
    "*": " étoile ",
    "#": " dièse ",
    "&": " et ",
    "+": " plus ",
}
_SYMBOL_RE = re.compile("|".join(re.escape(s) for s in _SYMBOLS))
# Anything that is not a letter, a digit or an apostrophe separates words.
_SEPARATORS = re.compile(r"[^\w']|_")
# Words that elide before a vowel: "l'heure" is two words; "aujourd'hui" is one.
_ELISION = re.compile(r"^(l|d|j|m|n|s|t|c|ç|qu|jusqu|lorsqu|puisqu|quoiqu)'(.*)$", re.IGNORECASE)
# Spellings of the same spoken number word (see module docstring).
_VARIANTS = {"vingts": "vingt", "cents": "cent", "une": "un"}
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae"})


def _time_words(match: re.Match[str]) -> str:
    hours = int(match.group(1))
    if hours > 24:
        return match.group(0)
    spoken = "une heure" if hours == 1 else f"{number_to_words(hours)} heures"
    minutes = match.group(2)
    return f" {spoken} {_digits_to_words(minutes) if minutes else ''} "


def _ordinal_words(match: re.Match[str]) -> str:
    suffix = match.group(2).lower()
    n = int(match.group(1))
    if suffix.startswith("nd"):
        return " seconde " if suffix.startswith("nde") else " second "
    if suffix.startswith(("r", "èr")):
        return f" {ordinal_to_words(n, feminine=True)} " if n == 1 else match.group(0)
    if suffix.startswith("er"):
        return " premier " if n == 1 else match.group(0)
    return f" {ordinal_to_words(n)} "


def _expand_numbers(text: str) -> str:
    text = _THOUSANDS.sub(lambda m: re.sub(r"\D", "", m.group(0)), text)
    text = _DECIMAL.sub(
        lambda m: f" {_digits_to_words(m.group(1))} virgule {_digits_to_words(m.group(2))} ", text
    )
    text = _TIME.sub(_time_words, text)
    text = _ORDINAL.sub(_ordinal_words, text)
    text = _DIGIT_LETTER.sub(" ", text)
    return _INTEGER.sub(lambda m: f" {_digits_to_words(m.group(0))} ", text)


def _split_word(token: str) -> list[str]:
    """One space-free token → words: elisions split off, stray apostrophes dropped."""
    token = token.lstrip("'")
    words: list[str] = []
    while token:
        match = _ELISION.match(token)
        if match is None:
            words.append(token.rstrip("'"))
            break
        words.append(match.group(1) + "'")
        token = match.group(2).lstrip("'")
    return [word for word in words if word]


def _join_spelled_letters(words: list[str]) -> list[str]:
    """Runs of single capital letters are one spelled word: "I A X" → "IAX"."""
    joined: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1 and word.isupper():
            run.append(word)
            continue
        if len(run) > 1:
            joined.append("".join(run))
        else:
            joined.extend(run)
        run = []
        if word:
            joined.append(word)
    return joined


def fold_accents(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.translate(_LIGATURES))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalize(text: str, keep_accents: bool = False) -> list[str]:
    """The canonical words of a French text, for scoring (see the module docstring)."""
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES)
    text = _expand_numbers(text)
    text = _SYMBOL_RE.sub(lambda m: _SYMBOLS[m.group(0)], text)
    words: list[str] = []
    for token in _SEPARATORS.sub(" ", text).split():
        words.extend(_split_word(token))
    canonical = []
    for word in _join_spelled_letters(words):
        lowered = word.lower()
        lowered = _VARIANTS.get(lowered, lowered)
        canonical.append(lowered if keep_accents else fold_accents(lowered))
    return canonical


def normalize_text(text: str, keep_accents: bool = False) -> str:
    return " ".join(normalize(text, keep_accents))


# --- word error rate ----------------------------------------------------------------------


@dataclass(frozen=True)
class WordErrors:
    """The edit operations that turn the reference words into the hypothesis words."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors per reference word (an empty reference counts each inserted word as 1)."""
        return self.errors / max(self.reference_words, 1)

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> WordErrors:
    """Minimum edit distance between two word lists, split into its three kinds of error.

    Counted by jiwer (``process_words``) on the words joined by spaces, so a word must not hold
    whitespace (``normalize`` never makes one). When several alignments have the same number of
    errors, jiwer's choice decides how they split into substitutions, deletions and insertions.
    """
    output = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return WordErrors(output.substitutions, output.deletions, output.insertions, len(reference))


def score(reference: str, hypothesis: str, keep_accents: bool = False) -> WordErrors:
    """Word errors of a hypothesis against a reference, both normalised."""
    return align(normalize(reference, keep_accents), normalize(hypothesis, keep_accents))

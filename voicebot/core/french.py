"""French words a person reads or hears: month names and dates (one list for the whole bot),
and the words of a transcript, as the bot compares them."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)  # fmt: skip


def date_fr(day: dt.date) -> str:
    """2026-12-01 → « 1er décembre 2026 »."""
    first = "1er" if day.day == 1 else str(day.day)
    return f"{first} {MONTHS[day.month - 1]} {day.year}"


_NOT_WORD = re.compile(r"[^\w]+")


def spoken_words(text: str) -> list[str]:
    """The words of a transcript, lower-case, apostrophes, hyphens and punctuation as spaces:
    « J'appelle pour l'état-civil, euh… » → j appelle pour l état civil euh. Two
    transcripts with the same words are the same sentence, whatever the ASR's punctuation."""
    return [w for w in _NOT_WORD.split(text.lower()) if w]


def search_form(text: str) -> str:
    """Lower case without accents, so that "etat civil" finds "État civil"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def sentence_key(text: str) -> str:
    """What makes two sentences "the same" for a trainer: case, accents, punctuation and
    spacing ignored (« Où est la DÉCHÈTERIE ? » and « ou est la decheterie » share one key).
    The review queue groups callers' sentences by it; relabelling compares training and
    test sentences by it."""
    return " ".join(spoken_words(search_form(text)))

"""French text normalisation before speech synthesis.

A voice reads letters and digits as the phonemizer guesses them: "8h30" comes out as
"huit h trente", "02 40 41 90 00" as "deux millions quarante...", "Bd" as a spelled word.
``normalize_for_speech`` rewrites what a caller must hear right — phone numbers (in pairs,
as the French read them), times, dates, amounts, ordinals, street abbreviations — into
plain French words. Numbers are spelled by num2words (``lang="fr"``), with the traditional
French rules (hyphens below one hundred, "et un", "quatre-vingts", "deux cents", invariable
"mille"); ``number_to_words`` and ``ordinal_to_words`` add what it lacks (see each).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import num2words

from voicebot.core.french import MONTHS

MAX_NUMBER = 999_999_999_999  # longer digit strings are codes, read digit by digit
_PLURAL_BEFORE_IEME = re.compile(r"(vingt|cent)sième$")


def number_to_words(n: int, feminine: bool = False) -> str:
    """An integer in French words: 21 → "vingt et un", 80 → "quatre-vingts", 2000 → "deux mille".

    ``feminine`` ends "un" as "une" (une heure, vingt et une minutes): num2words has no gender.
    Above MAX_NUMBER raises ValueError, as before num2words (which goes on with "billion"):
    such long digit strings are codes, read digit by digit.
    """
    if abs(n) > MAX_NUMBER:
        raise ValueError(f"number too large to read aloud: {n}")
    words: str = num2words(n, lang="fr")
    if feminine and (words == "un" or words.endswith((" un", "-un"))):
        words = words[:-2] + "une"
    return words


def ordinal_to_words(n: int, feminine: bool = False) -> str:
    """1 → "premier" ("première"), 2 → "deuxième", 21 → "vingt et unième", 80 → "quatre-vingtième".

    num2words keeps the plural mark of the cardinal ("quatre-vingtsième", "deux centsième"):
    the "s" of "vingts"/"cents" is dropped before "ième", as French spelling wants.
    """
    if n == 1:
        return "première" if feminine else "premier"
    if abs(n) > MAX_NUMBER:
        raise ValueError(f"number too large to read aloud: {n}")
    words: str = num2words(n, lang="fr", to="ordinal")
    return _PLURAL_BEFORE_IEME.sub(r"\1ième", words)


_DIGITS = tuple(number_to_words(digit) for digit in range(10))


# --- phone numbers ----------------------------------------------------------------------

_SEP = r"[ .\-\u00a0\u202f]?"
# 10-digit French numbers (0X XX XX XX XX, any separators) and +33 forms.
_PHONE_RE = re.compile(
    rf"(?<![\d+])(?:(?P<intl>\+33|0033){_SEP}(?:\(0\){_SEP})?(?P<first>[1-9])"
    rf"|(?P<zero>0)(?P<first0>[1-9]))"
    rf"(?P<rest>(?:{_SEP}\d\d){{4}})(?!\d)"
)


def _read_pair(pair: str) -> str:
    if pair[0] == "0":
        return f"zéro {_DIGITS[int(pair[1])]}"
    return number_to_words(int(pair))


def _phone(match: re.Match[str]) -> str:
    rest = re.sub(r"\D", "", match.group("rest"))
    pairs = [rest[i : i + 2] for i in range(0, 8, 2)]
    if match.group("intl"):
        head = ["plus trente-trois", _DIGITS[int(match.group("first"))]]
    else:
        head = [_read_pair("0" + match.group("first0"))]
    return ", ".join(head + [_read_pair(p) for p in pairs])


# --- amounts ----------------------------------------------------------------------------

_GROUPED_INT = r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+|\d+"
_AMOUNT_RE = re.compile(
    rf"(?<![\d,])(?P<int>{_GROUPED_INT})(?:,(?P<cents>\d{{1,2}}))?\s?(?:€|euros?\b|EUR\b)"
)


def _amount(match: re.Match[str]) -> str:
    euros = int(re.sub(r"\D", "", match.group("int")))
    cents_text = match.group("cents")
    cents = int(cents_text.ljust(2, "0")) if cents_text else 0
    if euros == 0 and cents:
        return f"{number_to_words(cents)} centime{'s' if cents > 1 else ''}"
    # "un million d'euros", "deux millions d'euros"
    noun = "d'euros" if euros >= 1_000_000 and euros % 1_000_000 == 0 else "euros"
    said = f"{number_to_words(euros)} {'euro' if euros == 1 else noun}"
    if cents:
        said += f" {number_to_words(cents)}"
    return said


# --- dates ------------------------------------------------------------------------------

_NUMERIC_DATE_RE = re.compile(
    r"(?<![\d/])(?P<d>[0-3]?\d)/(?P<m>[01]?\d)(?:/(?P<y>\d{4}|\d{2}))?(?![\d/])"
)
_MONTH_NAMES = "|".join(MONTHS)
_DAY_MONTH_RE = re.compile(
    rf"\b(?P<d>[0-3]?\d)(?P<er>er|ᵉʳ)?\s+(?P<m>{_MONTH_NAMES})\b(?:\s+(?P<y>\d{{4}})\b)?",
    re.IGNORECASE,
)


def _day(day: int) -> str:
    return "premier" if day == 1 else number_to_words(day)


def _year(year: int) -> str:
    return number_to_words(year)


def _numeric_date(match: re.Match[str]) -> str:
    day, month = int(match.group("d")), int(match.group("m"))
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return match.group(0)
    said = f"{_day(day)} {MONTHS[month - 1]}"
    year_text = match.group("y")
    if year_text:
        year = int(year_text) + (2000 if len(year_text) == 2 else 0)
        said += f" {_year(year)}"
    return said


def _day_month(match: re.Match[str]) -> str:
    day = int(match.group("d"))
    if not 1 <= day <= 31:
        return match.group(0)
    said = f"{_day(day)} {match.group('m').lower()}"
    if match.group("y"):
        said += f" {_year(int(match.group('y')))}"
    return said


# --- times ------------------------------------------------------------------------------

_AROUND_THE_CLOCK_RE = re.compile(r"\b24\s?h\s?/\s?24\b")
_EVERY_DAY_RE = re.compile(r"\b7\s?j\s?/\s?7\b")
_TIME_RE = re.compile(r"(?<![\d:])(?P<h>[0-2]?\d)\s?(?:h|H|:)\s?(?P<m>[0-5]\d)?(?![\d])(?!\w)")
_TIME_RANGE_RE = re.compile(
    r"(?P<a>\d{1,2}\s?h\s?(?:\d\d)?)\s?[-–]\s?(?P<b>\d{1,2}\s?h\s?(?:\d\d)?)(?!\w)"
)


def _time(match: re.Match[str]) -> str:
    hours = int(match.group("h"))
    minutes = int(match.group("m") or 0)
    if hours > 24 or (":" in match.group(0) and match.group("m") is None):
        return match.group(0)
    if hours == 0:
        said = "minuit"
    elif hours == 12:
        said = "midi"
    else:
        said = f"{number_to_words(hours, feminine=True)} heure{'s' if hours > 1 else ''}"
    if minutes:
        said += f" {number_to_words(minutes, feminine=True)}"
    return said


# --- ordinals, abbreviations, the rest ----------------------------------------------------

_ORDINAL_RE = re.compile(
    r"\b(?P<n>\d+)(?P<suffix>ères?|ère|res?|ers?|e|es|ème|èmes|nde?s?|ᵉ|ᵉʳ)(?!\w)"
)
_FEMININE_ORDINAL = ("re", "res", "ère", "ères", "nde", "ndes")

_ABBREVIATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), spoken)
    for pattern, spoken in (
        (r"\bSte\b\.?(?=[\s\-])", "Sainte"),
        (r"\bSt\b\.?(?=[\s\-])", "Saint"),
        (r"\b[Bb]d\b\.?", "boulevard"),
        (r"\b[Aa]v\.", "avenue"),
        (r"\b[Aa]ve?\b(?=\s+[A-ZÉ])", "avenue"),
        (r"\bPl\.", "place"),
        (r"\bpl\.(?=\s+[A-ZÉ])", "place"),
        (r"\bimp\.", "impasse"),
        (r"\bM\.(?=\s+[A-ZÉ])", "monsieur"),
        (r"\bMme\b\.?", "madame"),
        (r"\bMM\.(?=\s+[A-ZÉ])", "messieurs"),
        (r"\b[Nn]°\s?", "numéro "),
        (r"\b[Tt]él\.\s?:?", "téléphone"),
        (r"\betc\.", "et cetera"),
        (r"\bmn\b|\bmin\b\.?", "minutes"),
        (r"\bkm\b", "kilomètres"),
    )
)

_PERCENT_RE = re.compile(r"(?P<n>\d+(?:,\d+)?)\s?%")
_DECIMAL_RE = re.compile(r"(?<![\d,])(?P<i>\d+),(?P<f>\d+)(?![\d,])")
_INTEGER_RE = re.compile(r"(?<![\d])(?P<n>\d{1,3}(?:[\u00a0\u202f]\d{3})+|\d+)")


def _decimal_words(integer: str, fraction: str) -> str:
    # "2,05" → "deux virgule zéro cinq": leading zeros of the fraction are read out
    zeros = len(fraction) - len(fraction.lstrip("0"))
    tail = number_to_words(int(fraction)) if fraction.strip("0") else ""
    said = " ".join(["zéro"] * zeros + ([tail] if tail else []))
    return f"{number_to_words(int(integer))} virgule {said or 'zéro'}"


def _percent(match: re.Match[str]) -> str:
    integer, _, fraction = match.group("n").partition(",")
    number = _decimal_words(integer, fraction) if fraction else number_to_words(int(integer))
    return f"{number} pour cent"


def _integer(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group("n"))
    if len(digits) > 12:  # a long code: read digit by digit
        return " ".join(_DIGITS[int(d)] for d in digits)
    return number_to_words(int(digits))


def _ordinal(match: re.Match[str]) -> str:
    suffix = match.group("suffix")
    return ordinal_to_words(int(match.group("n")), feminine=suffix in _FEMININE_ORDINAL)


def _sub(pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str], text: str) -> str:
    return pattern.sub(replace, text)


def normalize_for_speech(text: str) -> str:
    """French text as it must be spoken: every number, time, date and abbreviation in words.

    >>> normalize_for_speech("Ouvert de 8h30 à 12h, au 02 40 41 90 00.")
    'Ouvert de huit heures trente à midi, au zéro deux, quarante, quarante et un, quatre-vingt-dix, zéro zéro.'
    """
    text = _sub(_PHONE_RE, _phone, text)
    text = _sub(_AMOUNT_RE, _amount, text)
    text = _sub(_NUMERIC_DATE_RE, _numeric_date, text)
    text = _sub(_DAY_MONTH_RE, _day_month, text)
    text = _AROUND_THE_CLOCK_RE.sub("vingt-quatre heures sur vingt-quatre", text)
    text = _EVERY_DAY_RE.sub("sept jours sur sept", text)
    text = _TIME_RANGE_RE.sub(lambda m: f"{m.group('a')} à {m.group('b')}", text)
    text = _sub(_TIME_RE, _time, text)
    text = _sub(_ORDINAL_RE, _ordinal, text)
    for pattern, spoken in _ABBREVIATIONS:
        text = pattern.sub(spoken, text)
    text = _sub(_PERCENT_RE, _percent, text)
    text = _DECIMAL_RE.sub(lambda m: _decimal_words(m.group("i"), m.group("f")), text)
    text = _sub(_INTEGER_RE, _integer, text)
    return re.sub(r"[ \t\u00a0\u202f]{2,}", " ", text).strip()


_SENTENCE_END_RE = re.compile(r"(?<=[.!?…])\s+(?=\S)")


def split_sentences(text: str) -> list[str]:
    """Sentences, so that the first one can be spoken while the next is being synthesised."""
    return [part.strip() for part in _SENTENCE_END_RE.split(text.strip()) if part.strip()]

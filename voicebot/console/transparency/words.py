"""Plain French for the card's figures: numbers, percentages, durations, dates, quotes."""

from __future__ import annotations

import datetime as dt
import re

from voicebot.core.french import date_fr

NBSP = "\u00a0"


def number_fr(value: float, decimals: int = 2) -> str:
    """0.45 → « 0,45 »; 8.0 → « 8 »."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{value:.0f}"
    return text.replace(".", ",")


def percent_fr(value: float) -> str:
    """0.45 → « 45 % » (no-break space)."""
    return f"{number_fr(100 * value, 1)}{NBSP}%"


def milliseconds_fr(ms: float) -> str:
    """650 → « 0,65 seconde »; 1200 → « 1,2 seconde »: a short wait, to the hundredth."""
    seconds = ms / 1000
    return f"{number_fr(seconds, 2)}{NBSP}seconde{'s' if seconds >= 2 else ''}"


def duration_fr(seconds: float) -> str:
    """300 → « 5 minutes »; 90 → « 1 minute 30 secondes »; 7.5 → « 7,5 secondes »."""
    minutes, rest = divmod(float(seconds), 60.0)
    parts = []
    if minutes:
        parts.append(f"{minutes:.0f}{NBSP}minute{'s' if minutes >= 2 else ''}")
    if rest or not parts:
        parts.append(f"{number_fr(rest, 1)}{NBSP}seconde{'s' if rest >= 2 else ''}")
    return " ".join(parts)


def datetime_fr(moment: dt.datetime) -> str:
    return f"{date_fr(moment.date())} à {moment.hour}{NBSP}h{NBSP}{moment.minute:02d}"


def times_fr(count: int) -> str:
    """2 → « 2 fois de suite »; 1 → « dès la première fois »."""
    return "dès la première fois" if count <= 1 else f"{count} fois de suite"


def quote_fr(text: str) -> str:
    return f"«{NBSP}{text}{NBSP}»"


def emergency_numbers_fr(text: str) -> str:
    numbers = re.findall(r"\b(1[5-8]|112)\b", text)
    unique = list(dict.fromkeys(numbers))
    if not unique:
        return "les numéros d'urgence"
    listed = ", ".join(unique[:-1]) + " et " + unique[-1] if len(unique) > 1 else unique[0]
    return f"les numéros d'urgence ({listed})"

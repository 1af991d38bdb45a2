"""``voicebot records export --caller NUMBER`` and ``voicebot records delete --caller NUMBER``.

Both hash the number with the same key as ``voicebot serve`` (``with_caller_hash_key``:
``VOICEBOT_CALLER_HASH_KEY``, else the key file) and refuse to run without it: with another
key, or none, nobody's calls could be found. The export prints JSON on standard output; the
delete erases the calls and their turns in one transaction, and asks for a confirmation
only when standard input is a terminal and ``--yes`` was not given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from voicebot.core.config import Settings, with_caller_hash_key
from voicebot.core.errors import ConfigError
from voicebot.records.rights import number_forms
from voicebot.records.store import CallRecords


def _keyed(settings: Settings, what: str) -> Settings:
    try:
        return with_caller_hash_key(settings)
    except ConfigError as exc:
        raise ConfigError(
            f"cannot {what}: numbers are kept only as a keyed hash, and the key that hashed "
            f"them is needed to find them. {exc}"
        ) from None


def _check_number(number: str) -> None:
    try:
        number_forms(number)
    except ValueError:
        raise ConfigError(f"--caller must be a phone number, not {number!r}") from None


def export_command(settings: Settings, number: str) -> int:
    """Print, as JSON, every call kept for ``number`` with its transcript."""
    _check_number(number)
    settings = _keyed(settings, "export a caller's calls")
    timezone = settings.report.timezone

    async def run() -> list[dict[str, Any]]:
        records = CallRecords.open(settings)
        try:
            return await records.export_caller(number, timezone)
        finally:
            await records.close()

    calls = asyncio.run(run())
    export = {
        "exported_at": dt.datetime.now(ZoneInfo(timezone)).isoformat(timespec="seconds"),
        "about": (
            "Ce qui est gardé des appels de ce numéro : chaque appel et sa transcription "
            "écrite (aucun enregistrement audio). Le numéro n'est pas gardé en clair, "
            "seulement son empreinte chiffrée (caller_hash). Ces données sont effacées "
            f"{settings.records.retention_days} jours après l'appel."
        ),
        "retention_days": settings.records.retention_days,
        "calls": calls,
    }
    json.dump(export, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 0


def _ask(question: str) -> bool:
    answer = input(question)
    return answer.strip().lower() in ("o", "oui", "y", "yes")


def delete_command(
    settings: Settings,
    number: str,
    yes: bool = False,
    ask: Callable[[str], bool] = _ask,
) -> int:
    """Erase every call kept for ``number`` and its turns; say how many."""
    _check_number(number)
    settings = _keyed(settings, "delete a caller's calls")
    confirm = not yes and sys.stdin.isatty()

    async def run() -> tuple[int, int] | None:
        records = CallRecords.open(settings)
        try:
            if confirm:
                calls, turns = await records.count_caller(number)
                if calls == 0:
                    return 0, 0
                question = (
                    f"Supprimer définitivement {calls} appel(s) et {turns} tour(s) de parole "
                    "de ce numéro ? [o/N] "
                )
                if not await asyncio.to_thread(ask, question):
                    return None
            return await records.delete_caller(number)
        finally:
            await records.close()

    deleted = asyncio.run(run())
    if deleted is None:
        print("Rien n'a été supprimé.")
        return 1
    calls, turns = deleted
    print(f"{calls} appel(s) et {turns} tour(s) de parole supprimé(s) pour ce numéro.")
    return 0

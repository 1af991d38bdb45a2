"""Deleting old call records: ``purge`` and ``voicebot records purge``."""

from __future__ import annotations

import asyncio
import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from voicebot.core.config import Settings
from voicebot.core.errors import ConfigError
from voicebot.records.database import RecordsDatabase, calls_table, open_engine, turns_table


class RecordsPurge(RecordsDatabase):
    """The purge of the call records (a part of ``voicebot.records.store.CallRecords``)."""

    async def purge(self, older_than_s: float) -> int:
        """Delete the calls (and their turns) started more than ``older_than_s`` ago."""
        if older_than_s <= 0:
            raise ValueError("older_than_s must be positive")
        cutoff = self._clock() - older_than_s

        def work(conn: Connection) -> int:
            old = sa.select(calls_table.c.call_id).where(calls_table.c.started_at < cutoff)
            conn.execute(turns_table.delete().where(turns_table.c.call_id.in_(old)))
            deleted = conn.execute(calls_table.delete().where(calls_table.c.started_at < cutoff))
            return int(deleted.rowcount or 0)

        return await self._run(work)


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhms]|j)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400.0, "j": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """ "30d", "12h", "90m", "45s" (also "30j") → seconds. Raises ConfigError."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: use a number and a unit, e.g. 30d, 12h, 90m")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise ConfigError(f"invalid duration {text!r}: it must be more than zero")
    return seconds


def purge_command(settings: Settings, older_than: str | None) -> int:
    """``voicebot records purge --older-than 30d`` (default: the retention setting)."""
    if older_than is None:
        days = settings.records.retention_days
        if days <= 0:
            raise ConfigError("records.retention_days must be positive to purge by default")
        seconds = days * 86400.0
        label = f"{days}d"
    else:
        seconds = parse_duration(older_than)
        label = older_than.strip()

    async def run() -> int:
        records = RecordsPurge(open_engine(settings))
        try:
            return await records.purge(seconds)
        finally:
            await records.close()

    deleted = asyncio.run(run())
    print(f"{deleted} appel(s) de plus de {label} supprimé(s) des enregistrements.")
    return 0

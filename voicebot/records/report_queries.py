"""What the ROI report reads from the call records (``ReportQueries.roi_report``).

The rows of the calls started in the period, the intents of their turns, and the start times
of every call made by the same hashed numbers up to the end of the repeat window of the
period's last call (a call back may come after the period). The figures themselves are
computed by ``voicebot.records.report.compute_report``, which does no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from voicebot.core.config import ReportSettings
from voicebot.records.database import RecordsDatabase, calls_table, turns_table
from voicebot.records.report import CallRow, RoiReport, call_end, compute_report, period_bounds


class ReportQueries(RecordsDatabase):
    """The ROI report's reads (a part of ``voicebot.records.store.CallRecords``)."""

    async def report_rows(
        self, start: float, end: float, repeat_window_s: float
    ) -> tuple[list[CallRow], list[tuple[str, float]]]:
        """The calls started in ``[start, end)``, and (caller hash, start) of every call with
        a number from ``start`` to the repeat window's end after the last of them."""

        def work(conn: Connection) -> tuple[list[CallRow], list[tuple[str, float]]]:
            c = calls_table.c
            in_period = sa.and_(c.started_at >= start, c.started_at < end)
            intents: dict[str, list[str]] = defaultdict(list)
            turns = conn.execute(
                sa.select(turns_table.c.call_id, turns_table.c.intent)
                .where(
                    turns_table.c.intent.is_not(None),
                    turns_table.c.call_id.in_(sa.select(c.call_id).where(in_period)),
                )
                .order_by(turns_table.c.id)
            )
            for call_id, intent in turns:
                intents[str(call_id)].append(str(intent))
            rows = [
                CallRow(
                    call_id=str(r.call_id),
                    started_at=float(r.started_at),
                    ended_at=None if r.ended_at is None else float(r.ended_at),
                    caller_hash=r.caller_hash,
                    outcome=r.outcome,
                    handoff_reason=r.handoff_reason,
                    duration_s=None if r.duration_s is None else float(r.duration_s),
                    last_intent=r.last_intent,
                    intents=tuple(intents.get(str(r.call_id), ())),
                )
                for r in conn.execute(
                    sa.select(
                        c.call_id,
                        c.started_at,
                        c.ended_at,
                        c.caller_hash,
                        c.outcome,
                        c.handoff_reason,
                        c.duration_s,
                        c.last_intent,
                    )
                    .where(in_period)
                    .order_by(c.started_at)
                )
            ]
            if not rows:
                return rows, []
            until = max(call_end(row) for row in rows) + repeat_window_s
            starts = conn.execute(
                sa.select(c.caller_hash, c.started_at).where(
                    c.caller_hash.is_not(None), c.started_at >= start, c.started_at <= until
                )
            )
            return rows, [(str(h), float(s)) for h, s in starts]

        return await self._run(work)

    async def roi_report(
        self,
        first_day: dt.date,
        last_day: dt.date,
        settings: ReportSettings,
        now: float | None = None,
    ) -> RoiReport:
        """The ROI report of the calls started from ``first_day`` to ``last_day`` (included,
        in the report's time zone). Raises ValueError when the period ends before it starts."""
        start, end = period_bounds(first_day, last_day, settings.timezone)
        rows, starts = await self.report_rows(start, end, settings.repeat_window_h * 3600.0)
        return compute_report(
            rows,
            starts,
            first_day,
            last_day,
            settings,
            now=self._clock() if now is None else now,
        )

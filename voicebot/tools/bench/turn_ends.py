"""The server's own end-of-turn decisions, read from its log.

The bench replays each call through the same VAD to find where the caller's voice ended and
when a fixed ``vad.end_silence_ms`` would have ended the turn. With the end-of-turn rule
(voicebot.call.turn_end) the server waits less or more, from words and pitch the bench does
not have; the listener logs each decision ("end of turn after N ms of silence (why)"): the replay
applies each call's waits in order (``server_waits``), and the report counts them.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

DECISION = re.compile(r"end of turn after (\d+) ms of silence \((\w+)\)")
CALL_DECISION = re.compile(r"\[call ([^\]]+)\] end of turn after (\d+) ms of silence")
RESUMED = "speech again after the recognizer settled"


def server_waits(server_log: Path) -> dict[str, list[int]]:
    """Each call's end-of-turn waits, in order (ms): the replay applies them (turns.py)."""
    try:
        text = server_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    waits: dict[str, list[int]] = {}
    for call_id, ms in CALL_DECISION.findall(text):
        waits.setdefault(call_id, []).append(int(ms))
    return waits


def end_of_turn_decisions(server_log: Path) -> dict[str, Any] | None:
    """Waits (ms) and reasons of the server's end-of-turn decisions; None without a log."""
    try:
        text = server_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = [(int(ms), why) for ms, why in DECISION.findall(text)]
    waits = sorted(ms for ms, _ in found)
    return {
        "turns": len(found),
        "wait_ms_p50": waits[len(waits) // 2] if waits else None,
        "wait_ms_max": waits[-1] if waits else None,
        "why": dict(Counter(why for _, why in found).most_common()),
        # pauses in which the recognizer settled (asr.settle_lead_ms) and the caller went on:
        # each cost one more final result, and split the utterance into one more segment
        "resumed_after_settle": text.count(RESUMED),
    }


def describe(decisions: dict[str, Any]) -> str:
    whys = ", ".join(f"{why} {n}" for why, n in decisions["why"].items()) or "none"
    return (
        f"{decisions['turns']} turns ended by the server: median wait "
        f"{decisions['wait_ms_p50']} ms, longest {decisions['wait_ms_max']} ms ({whys}); the "
        "endpoint/response split above assumes the fixed vad.end_silence_ms, the turn gap "
        "does not; the caller spoke again after the recognizer had settled in the pause "
        f"{decisions.get('resumed_after_settle', 0)} times"
    )

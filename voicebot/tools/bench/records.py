"""The per-stage split (ASR final, NLU, TTS first audio) from the call records the server
writes anyway (voicebot.records.store): no hook in the server."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from voicebot.core.errors import VoicebotError
from voicebot.tools.bench.turns import Turn


def match_records(turns: Sequence[Turn], rows: dict[str, list[tuple[float, str]]]) -> int:
    """Fill asr/nlu/tts of each answered turn from the call records; returns how many matched.

    ``rows``: per call id, (epoch seconds, speaker) of every recorded turn. The session stores
    the caller turn once the ASR final is there (or the key arrived) and the bot turn once
    the dialogue has answered, both before the speech starts, one turn at a time: so a
    turn's records are the first unused caller record after its decision, then the first
    bot record after that, both before its first bot audio."""
    by_call: dict[str, list[Turn]] = {}
    for turn in turns:
        if turn.barge_in != "ignored":  # speech over the bot that stayed no turn
            by_call.setdefault(turn.call_id, []).append(turn)
    matched = 0
    for call_id, call_turns in by_call.items():
        recorded = sorted(rows.get(call_id, []))
        callers = [at for at, who in recorded if who == "caller"]
        bots = [at for at, who in recorded if who == "bot"]
        next_caller = next_bot = 0
        for turn in sorted(call_turns, key=lambda t: t.wall_decision):
            while next_caller < len(callers) and callers[next_caller] < turn.wall_decision - 0.005:
                next_caller += 1
            voice = turn.wall_first_voice
            if voice is None or next_caller == len(callers) or callers[next_caller] > voice:
                continue
            caller = callers[next_caller]
            next_caller += 1
            while next_bot < len(bots) and bots[next_bot] < caller:
                next_bot += 1
            if next_bot == len(bots) or bots[next_bot] > voice:
                continue
            bot = bots[next_bot]
            next_bot += 1
            if turn.kind != "dtmf":
                turn.asr_ms = (caller - turn.wall_decision) * 1000
            turn.nlu_ms = (bot - caller) * 1000
            turn.tts_ms = (voice - bot) * 1000
            matched += 1
    return matched


def read_record_times(url: str, call_ids: Sequence[str]) -> dict[str, list[tuple[float, str]]]:
    """(at, speaker) of every recorded turn of these calls. Raises VoicebotError."""
    import sqlalchemy as sa

    from voicebot.records.store import turns_table

    rows: dict[str, list[tuple[float, str]]] = {}
    try:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
            raise VoicebotError(f"no call records database at {parsed.database}")
        engine = sa.create_engine(parsed, future=True)
    except VoicebotError:
        raise
    except Exception as exc:
        raise VoicebotError(f"cannot open the call records ({type(exc).__name__})") from None
    try:
        with engine.connect() as conn:
            for start in range(0, len(call_ids), 200):
                query = sa.select(
                    turns_table.c.call_id, turns_table.c.at, turns_table.c.speaker
                ).where(turns_table.c.call_id.in_(list(call_ids[start : start + 200])))
                for call_id, at, speaker in conn.execute(query):
                    rows.setdefault(str(call_id), []).append((float(at), str(speaker)))
    except sa.exc.SQLAlchemyError as exc:
        raise VoicebotError(f"cannot read the call records ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    return rows

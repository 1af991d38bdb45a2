"""Pacing of the bot's audio at the caller: underruns (and whether the bench's own stalls
explain them), jitter, and what the server was doing when its audio came late."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from voicebot.tools.bench.turns import Turn

# A frame may arrive this late after the previous one ended before it counts as an underrun:
# loopback TCP and two event loops on a shared 2-core machine add a few ms of noise.
UNDERRUN_TOLERANCE_S = 0.020


@dataclass
class Pacing:
    frames: int
    underruns: int  # late frames the bench's own stalls do not explain
    client_underruns: int  # late frames explained by a stall of the bench's event loop
    lateness_ms: list[float]  # per frame: arrival − (previous arrival + its duration)
    max_gap_ms: float
    late: list[tuple[float, float]] = field(default_factory=list)  # server-side: (due, arrival)


def pacing(
    arrivals: Sequence[tuple[float, float]],
    stalls: Sequence[tuple[float, float]] = (),
    tolerance_s: float = UNDERRUN_TOLERANCE_S,
) -> Pacing:
    """Underruns and jitter of one call's bot audio.

    ``arrivals``: (arrival time, audio duration) of each bot message, in order; ``stalls``:
    (start, end) of the bench's own loop stalls, on the same clock. A frame is late by
    ``arrival − (previous arrival + previous duration)``; beyond ``tolerance_s`` it is an
    underrun, attributed to the client when a stall covers the excess lateness."""
    starts = [s for s, _ in stalls]
    lateness: list[float] = []
    late_frames: list[tuple[float, float]] = []
    client = 0
    max_gap = 0.0
    for (t_prev, d_prev), (t, _) in itertools.pairwise(arrivals):
        due = t_prev + d_prev
        late = t - due
        lateness.append(late * 1000)
        max_gap = max(max_gap, t - t_prev)
        if late <= tolerance_s:
            continue
        covered = 0.0
        for index in range(bisect.bisect_left(starts, t) - 1, -1, -1):
            s, e = stalls[index]
            if e < due - 1.0:
                break
            covered = max(covered, min(e, t) - max(s, due))
        if covered >= late - tolerance_s:
            client += 1
        else:
            late_frames.append((due, t))
    return Pacing(len(arrivals), len(late_frames), client, lateness, max_gap * 1000, late_frames)


def underrun_stages(
    turns: Sequence[Turn],
    late: Sequence[tuple[float, float]],
    setups: Sequence[tuple[float, float]] = (),
) -> dict[str, int]:
    """What the server was doing when its audio was late: how many server-side underruns
    (``late``: (due, arrival), epoch seconds) overlap, in any call (they share one event
    loop), a call set-up (``setups``: connection → greeting), a caller speaking (listening),
    an ASR final, an NLU or a TTS stage; or none of these."""
    spans: list[tuple[str, float, float]] = [("setup", start, end) for start, end in setups]
    for turn in turns:
        if turn.kind != "dtmf":
            spans.append(("listening", turn.wall_start, turn.wall_decision))
        if turn.nlu_ms is None or turn.tts_ms is None or turn.wall_first_voice is None:
            continue
        bot = turn.wall_first_voice - turn.tts_ms / 1000
        caller = bot - turn.nlu_ms / 1000
        if turn.asr_ms is not None:
            spans.append(("asr", turn.wall_decision, caller))
        spans.append(("nlu", caller, bot))
        spans.append(("tts", bot, turn.wall_first_voice))
    counts = dict.fromkeys(("setup", "listening", "asr", "nlu", "tts", "none"), 0)
    for due, arrived in late:
        stages = {stage for stage, start, end in spans if start < arrived and end > due}
        for stage in stages:
            counts[stage] += 1
        if not stages:
            counts["none"] += 1
    return counts

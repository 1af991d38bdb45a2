"""One run's figures, machine-readable (what ``--json`` prints): per-stage distributions,
audio pacing, server and bench CPU/RSS (``server``: every watched server together;
``servers``: each one, with its calls, underruns and response p95); and whether the run is
broken."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from voicebot.tools.bench.traffic import RunData, Sample
from voicebot.tools.bench.turns import Turn
from voicebot.tools.bench.underruns import (
    UNDERRUN_TOLERANCE_S,
    Pacing,
    pacing,
    underrun_stages,
)

STAGES = (  # key in the summary, label, what it spans
    ("endpoint_wait", "Endpoint wait (VAD)", "last voiced caller frame → VAD decision"),
    ("asr", "ASR final", "VAD decision → caller turn recorded"),
    ("nlu", "NLU + dialogue (Rasa)", "caller turn → bot turn recorded"),
    ("tts", "TTS first audio", "bot turn recorded → first bot audio at the caller"),
    ("response", "Response latency", "VAD decision → first bot audio"),
    ("turn_gap", "Turn gap", "last voiced caller frame → first bot audio"),
    ("dtmf_response", "DTMF → first bot audio", "key sent → first bot audio"),
    ("barge_in_stop", "Barge-in → bot silent", "VAD barge-in decision → last bot audio"),
    ("greeting", "Greeting", "connection → first bot audio"),
)


def distribution(values: Sequence[float | None]) -> dict[str, float] | None:
    """n, p50, p95, max and mean of the values that exist (None when there are none)."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return None
    return {
        "n": int(present.size),
        "p50": round(float(np.percentile(present, 50)), 1),
        "p95": round(float(np.percentile(present, 95)), 1),
        "max": round(float(present.max()), 1),
        "mean": round(float(present.mean()), 1),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 1) if values else None


def _max(values: Sequence[float]) -> float | None:
    return round(float(np.max(values)), 1) if values else None


def per_server(
    data: RunData, turns: Sequence[Turn], pacings: Sequence[Pacing]
) -> list[dict[str, Any]]:
    """Each server of the run (``data.servers``, in order): what the watch saw of it (CPU
    mean and max at full load, its event loop's thread, RSS idle and peak; None when it is
    not visible from here) and what its callers got (calls placed on it, server-side
    underruns, response p95 over ``turns``). ``pacings``: one per ``data.results``."""
    loaded = loaded_samples(data)
    servers = []
    for index, described in enumerate(data.servers):
        readings = [s.servers[index] for s in loaded if index < len(s.servers)]
        cpu = [r.cpu_percent for r in readings if r.cpu_percent is not None]
        loop_cpu = [r.loop_percent for r in readings if r.loop_percent is not None]
        every = [s.servers[index] for s in data.samples if index < len(s.servers)]
        rss = [r.rss_mb for r in every if r.rss_mb is not None]  # the ramp-up included
        mine = [
            (result, p)
            for result, p in zip(data.results, pacings, strict=True)
            if result.target == described["target"]
        ]
        calls = {result.call_id for result, _ in mine}
        response = distribution(
            [t.response_ms for t in turns if t.kind != "dtmf" and t.call_id in calls]
        )
        servers.append(
            {
                "target": described["target"],
                "pid": described.get("pid"),
                "visible": bool(described.get("visible")),
                "calls_placed": len(mine),
                "cpu_percent_mean": _mean(cpu),
                "cpu_percent_max": _max(cpu),
                "loop_thread_cpu_percent_mean": _mean(loop_cpu),
                "loop_thread_cpu_percent_max": _max(loop_cpu),
                "rss_idle_mb": _rounded(described.get("rss_idle_mb")),
                "rss_peak_mb": _max(rss),
                "underruns": sum(p.underruns for _, p in mine),
                "response_p95_ms": response["p95"] if response else None,
            }
        )
    return servers


def loaded_samples(data: RunData) -> list[Sample]:
    """The samples taken once every call of the run was placed (all when there are none)."""
    return [s for s in data.samples if s.t >= data.full_load_s] or data.samples


def full_load(data: RunData) -> list[Turn]:
    """The turns decided once every call of the run was placed (all when there are none)."""
    loaded = [t for t in data.turns if t.at_s >= data.full_load_s]
    return loaded or list(data.turns)


def opening_and_later(data: RunData) -> dict[str, dict[str, dict[str, float] | None]]:
    """Each call's first spoken turn apart from the others (issue 14): a call's first
    utterance is where a cold recognizer shows, and it falls in the ramp-up for most calls,
    so the opening turns are taken from the whole run; the later ones at full load only."""
    spoken = [t for t in data.turns if t.kind != "dtmf"]
    opening: dict[str, Turn] = {}
    for turn in spoken:
        if turn.call_id not in opening or turn.wall_start < opening[turn.call_id].wall_start:
            opening[turn.call_id] = turn
    first = list(opening.values())
    firsts = {id(t) for t in first}
    later = [t for t in full_load(data) if t.kind != "dtmf" and id(t) not in firsts]
    return {
        name: {
            "asr": distribution([t.asr_ms for t in group]),
            "response": distribution([t.response_ms for t in group]),
            "turn_gap": distribution([t.turn_gap_ms for t in group]),
        }
        for name, group in (("opening", first), ("later", later))
    }


def summarize(data: RunData, idle_rss_mb: float | None) -> dict[str, Any]:
    """The machine-readable result of one run (what --json prints)."""
    turns = full_load(data)
    speech = [t for t in turns if t.kind != "dtmf"]
    dtmf = [t for t in turns if t.kind == "dtmf"]
    barge = [t for t in turns if t.kind == "barge_in"]
    stage_values: dict[str, list[float | None]] = {
        "endpoint_wait": [t.endpoint_wait_ms for t in speech if t.answered],
        "asr": [t.asr_ms for t in speech],
        "nlu": [t.nlu_ms for t in turns],
        "tts": [t.tts_ms for t in turns],
        "response": [t.response_ms for t in speech],
        "turn_gap": [t.turn_gap_ms for t in speech],
        "dtmf_response": [t.response_ms for t in dtmf],
        "barge_in_stop": [t.barge_in_stop_ms for t in barge],
        "greeting": [r.greeting_ms for r in data.results],
    }
    pacings = [
        pacing(r.arrivals, [(s - r.t0, e - r.t0) for s, e in data.stalls]) for r in data.results
    ]
    lateness = [v for p in pacings for v in p.lateness_ms]
    late_wall = [
        (r.wall0 + due, r.wall0 + arrived)
        for r, p in zip(data.results, pacings, strict=True)
        for due, arrived in p.late
    ]
    abs_late = np.abs(np.array(lateness)) if lateness else np.zeros(1)
    loaded = loaded_samples(data)
    cpu = [s.cpu_percent for s in loaded if s.cpu_percent is not None]
    loop_cpu = [s.loop_percent for s in loaded if s.loop_percent is not None]
    rss = [s.rss_mb for s in data.samples if s.rss_mb is not None]
    rss_peak = max(rss) if rss else None
    per_call = (
        round((rss_peak - idle_rss_mb) / data.calls, 1)
        if rss_peak is not None and idle_rss_mb is not None
        else None
    )
    ended_by: dict[str, int] = {}
    for result in data.results:
        key = result.ended_by or "caller"
        ended_by[key] = ended_by.get(key, 0) + 1
    return {
        "calls": data.calls,
        "duration_s": data.duration_s,
        "ramp_s": data.ramp_s,
        "transport": data.transport,
        "turns": {
            "measured": len(turns),
            "during_ramp": len(data.turns) - len(turns),
            "speech": sum(1 for t in turns if t.kind == "speech"),
            "barge_in": len(barge),
            "barge_in_stopped": sum(1 for t in barge if t.barge_in == "stopped"),
            "barge_in_ignored": sum(1 for t in barge if t.barge_in == "ignored"),
            "dtmf": len(dtmf),
            "unanswered": sum(1 for t in turns if not t.answered and t.barge_in != "ignored"),
            "with_stages": sum(1 for t in turns if t.nlu_ms is not None),
        },
        "latency_ms": {key: distribution(values) for key, values in stage_values.items()},
        "turns_by_position": opening_and_later(data),
        "audio": {
            "frames": sum(p.frames for p in pacings),
            "underruns": sum(p.underruns for p in pacings),
            "client_underruns": sum(p.client_underruns for p in pacings),
            "tolerance_ms": UNDERRUN_TOLERANCE_S * 1000,
            "jitter_ms": {
                "p50": round(float(np.percentile(abs_late, 50)), 1),
                "p95": round(float(np.percentile(abs_late, 95)), 1),
                "p99": round(float(np.percentile(abs_late, 99)), 1),
                "max": round(float(abs_late.max()), 1),
            },
            "max_gap_ms": round(max((p.max_gap_ms for p in pacings), default=0.0), 1),
            "underruns_during": underrun_stages(
                data.turns,
                late_wall,
                [(r.wall0, r.wall0 + (r.greeting_ms or 0.0) / 1000) for r in data.results],
            ),
        },
        # every watched server together (sums); each one in "servers"
        "server": {
            "cpu_percent_mean": _mean(cpu),
            "cpu_percent_max": _max(cpu),
            "cpu_percent_per_call": round(float(np.mean(cpu)) / data.calls, 1) if cpu else None,
            "rss_idle_mb": _rounded(idle_rss_mb),
            "rss_peak_mb": _rounded(rss_peak),
            "rss_per_call_mb": per_call,
            # the main thread, where every call's audio is paced: at most one core each
            "loop_thread_cpu_percent_mean": _mean(loop_cpu),
            "loop_thread_cpu_percent_max": _max(loop_cpu),
        },
        "servers": per_server(data, turns, pacings),
        "bench": {
            "cpu_percent_mean": _mean([s.bench_percent for s in loaded]),
            "machine_cpu_percent_mean": _mean([s.system_percent for s in loaded]),
            "loop_lag_ms": {
                "p99": round(float(np.percentile(data.lags_ms, 99)), 1) if data.lags_ms else None,
                "max": round(float(max(data.lags_ms)), 1) if data.lags_ms else None,
            },
        },
        "calls_placed": len(data.results),
        "calls_ended_by": ended_by,
        "violations": sorted({v for r in data.results for v in r.violations}),
        "errors": data.errors,
        "records": data.records_note,
    }


def broken_reasons(summary: dict[str, Any]) -> list[str]:
    """Why one run measured nothing at all (exit code 1). Only what no machine speed explains:
    a connected call gets a frame every 20 ms from the server's pacer, even a server that
    takes minutes to decode; unanswered turns and missed targets are findings, not breakage."""
    if summary["calls_placed"] == 0:
        why = f": {summary['errors'][0]}" if summary["errors"] else ""
        return [f"no call could be connected{why}"]
    if summary["audio"]["frames"] == 0:
        return [f"{summary['calls_placed']} call(s) connected but the server sent no audio"]
    return []

"""The report's PNG plots (matplotlib, Agg): latency per stage, latency against the number of
concurrent calls, the server's CPU and memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from voicebot.tools.bench.summary import full_load
from voicebot.tools.bench.traffic import RunData
from voicebot.tools.bench.verdict import CAPACITY_MAX_TURN_GAP_MS


def _reference(runs: list[tuple[RunData, dict[str, Any]]]) -> tuple[RunData, dict[str, Any]]:
    """The run the stage plot shows: 8 calls if measured, else the largest that held."""
    for data, summary in runs:
        if summary["calls"] == 8:
            return data, summary
    held = [run for run in runs if run[1].get("holds", True)]
    return (held or runs)[-1]


def write_plots(
    out_dir: Path, result: dict[str, Any], runs: list[tuple[RunData, dict[str, Any]]]
) -> list[Path]:
    """latency_stages.png, latency_vs_calls.png and cpu_memory.png in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, summary = _reference(runs)
    plots: tuple[tuple[str, tuple[float, float], Callable[[Any], None]], ...] = (
        ("latency_stages.png", (9, 4.5), lambda ax: _latency_stages(ax, data, summary)),
        ("latency_vs_calls.png", (8, 4.5), lambda ax: _latency_vs_calls(ax, result, data)),
        ("cpu_memory.png", (8, 4.5), lambda ax: _cpu_memory(ax, result, data)),
    )
    written = []
    for name, size, draw in plots:
        fig, ax = plt.subplots(figsize=size)
        draw(ax)
        fig.tight_layout()
        written.append(out_dir / name)
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def _latency_stages(ax: Any, data: RunData, summary: dict[str, Any]) -> None:
    """Box plots of each stage at full load of the reference run."""
    turns = full_load(data)
    series = {
        "Endpoint\n(VAD)": [t.endpoint_wait_ms for t in turns if t.kind != "dtmf" and t.answered],
        "ASR final": [t.asr_ms for t in turns],
        "NLU": [t.nlu_ms for t in turns],
        "TTS first\naudio": [t.tts_ms for t in turns],
        "Response": [t.response_ms for t in turns if t.kind != "dtmf"],
        "Turn gap": [t.turn_gap_ms for t in turns],
        "DTMF →\naudio": [t.response_ms for t in turns if t.kind == "dtmf"],
    }
    cleaned = {k: [v for v in vs if v is not None] for k, vs in series.items()}
    labels = [k for k, vs in cleaned.items() if vs]
    if labels:
        ax.boxplot([cleaned[k] for k in labels], labels=labels, whis=(5, 95), showfliers=True)
    ax.axhline(
        300, color="tab:red", linestyle="--", linewidth=0.8, label="response p95 target 300 ms"
    )
    ax.axhline(
        800, color="tab:orange", linestyle="--", linewidth=0.8, label="turn gap p95 target 800 ms"
    )
    ax.set_ylabel("ms")
    ax.set_title(f"Latency per stage at {summary['calls']} concurrent calls (whiskers p5–p95)")
    ax.legend(loc="upper left", fontsize=8)


def _latency_vs_calls(ax: Any, result: dict[str, Any], data: RunData) -> None:
    """Per capacity step (p50/p95), or per turn against the calls up when it was decided."""
    if result["mode"] == "capacity":
        steps = result["steps"]
        calls = [s["calls"] for s in steps]
        for key, label, style in (("response", "response", "-"), ("turn_gap", "turn gap", "--")):
            for pct in ("p50", "p95"):
                values = [
                    s["latency_ms"][key][pct] if s["latency_ms"][key] else np.nan for s in steps
                ]
                ax.plot(calls, values, style, marker="o", label=f"{label} {pct}")
        ax.axhline(
            CAPACITY_MAX_TURN_GAP_MS,
            color="tab:red",
            linewidth=0.8,
            label="capacity limit (turn gap p95)",
        )
        ax.set_xlabel("concurrent calls")
    else:
        spoken = [t for t in full_load(data) if t.kind != "dtmf" and t.answered]
        ax.scatter(
            [t.active_calls for t in spoken],
            [t.response_ms for t in spoken],
            label="response",
            s=14,
        )
        ax.scatter(
            [t.active_calls for t in spoken],
            [t.turn_gap_ms for t in spoken],
            label="turn gap",
            s=14,
            marker="x",
        )
        ax.set_xlabel("calls up when the turn was decided")
    ax.set_ylabel("ms")
    ax.set_title("Latency vs concurrent calls")
    ax.legend(fontsize=8)


def _cpu_memory(ax: Any, result: dict[str, Any], data: RunData) -> None:
    """The server's CPU and RSS per capacity step, or over the run's time."""
    memory_axis = ax.twinx()
    if result["mode"] == "capacity":
        steps = result["steps"]
        calls = [s["calls"] for s in steps]
        ax.plot(
            calls,
            [s["server"]["cpu_percent_mean"] or np.nan for s in steps],
            "o-",
            color="tab:blue",
            label="CPU mean",
        )
        memory_axis.plot(
            calls,
            [s["server"]["rss_peak_mb"] or np.nan for s in steps],
            "s--",
            color="tab:green",
            label="RSS peak",
        )
        ax.set_xlabel("concurrent calls")
    else:
        samples = data.samples
        ax.plot(
            [s.t for s in samples],
            [s.cpu_percent if s.cpu_percent is not None else np.nan for s in samples],
            color="tab:blue",
            label="CPU",
        )
        ax.plot(
            [s.t for s in samples],
            [s.calls * 10 for s in samples],
            color="tab:gray",
            linewidth=0.8,
            label="calls × 10",
        )
        memory_axis.plot(
            [s.t for s in samples],
            [s.rss_mb if s.rss_mb is not None else np.nan for s in samples],
            color="tab:green",
            label="RSS",
        )
        ax.set_xlabel("seconds since the first call")
    ax.set_ylabel("server CPU, % of one core")
    memory_axis.set_ylabel("server RSS, MB")
    handles = ax.get_legend_handles_labels()
    more = memory_axis.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title("Server CPU and memory")

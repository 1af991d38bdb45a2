"""The report of a run: report.md (markdown), results.json and the PNG plots (plots.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from voicebot.tools.bench.call import VOICE_PEAK
from voicebot.tools.bench.plots import write_plots
from voicebot.tools.bench.reload import report_lines
from voicebot.tools.bench.speed import describe
from voicebot.tools.bench.summary import STAGES
from voicebot.tools.bench.traffic import RunData
from voicebot.tools.bench.turn_ends import describe as describe_turn_ends
from voicebot.tools.bench.underruns import UNDERRUN_TOLERANCE_S
from voicebot.tools.bench.verdict import CAPACITY_MAX_TURN_GAP_MS


def _ms(value: Any) -> str:
    return "–" if value is None else f"{value:.0f}"


def _stage_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| Stage | What it spans | p50 ms | p95 ms | max ms | n |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, label, spans in STAGES:
        stats = summary["latency_ms"].get(key)
        bold = key in ("response", "turn_gap")
        name = f"**{label}**" if bold else label
        if stats is None:
            lines.append(f"| {name} | {spans} | – | – | – | 0 |")
        else:
            lines.append(
                f"| {name} | {spans} | {_ms(stats['p50'])} | {_ms(stats['p95'])} | "
                f"{_ms(stats['max'])} | {stats['n']} |"
            )
    return lines


def _run_section(summary: dict[str, Any]) -> list[str]:
    turns, audio, server, bench = (
        summary["turns"],
        summary["audio"],
        summary["server"],
        summary["bench"],
    )
    lines = [
        f"{summary['calls']} concurrent call(s) over {summary['transport']}, a new call every "
        f"{summary['ramp_s']:g} s, then {summary['duration_s']:g} s with all of them up. "
        f"Measured at full load: {turns['measured']} turns ({turns['speech']} spoken, "
        f"{turns['barge_in']} over the bot: {turns['barge_in_stopped']} stopped it, "
        f"{turns['barge_in_ignored']} too short to interrupt it and left without a turn; "
        f"{turns['dtmf']} DTMF), {turns['unanswered']} unanswered; "
        f"{turns['during_ramp']} more during the ramp-up are left out. "
        f"{summary['calls_placed']} calls placed.",
        "",
        *_stage_table(summary),
        "",
        *position_lines(summary),
        f"- Bot audio: {audio['frames']} frames; underruns (a frame more than "
        f"{audio['tolerance_ms']:.0f} ms late): **{audio['underruns']}** server-side, "
        f"{audio['client_underruns']} explained by stalls of the bench itself; lateness p95 "
        f"{audio['jitter_ms']['p95']} ms, p99 {audio['jitter_ms']['p99']} ms; longest gap "
        f"{audio['max_gap_ms']:.0f} ms. Server-side underruns while some call was in "
        + ", ".join(f"{k} {v}" for k, v in audio["underruns_during"].items())
        + " (one underrun may overlap several).",
        f"- {_servers_label(summary)}: CPU mean {_pct(server['cpu_percent_mean'])} "
        f"({_pct(server['cpu_percent_per_call'])} per call), max "
        f"{_pct(server['cpu_percent_max'])} (of one core, children included); RSS idle "
        f"{_mb(server['rss_idle_mb'])}, peak {_mb(server['rss_peak_mb'])} "
        f"({_mb(server['rss_per_call_mb'])} per call). Its event loop's thread (every "
        f"call's audio, VAD, pacing): CPU mean {_pct(server.get('loop_thread_cpu_percent_mean'))}, "
        f"max {_pct(server.get('loop_thread_cpu_percent_max'))} of one core.",
        *_server_lines(summary),
        f"- Bench process: CPU mean {_pct(bench['cpu_percent_mean'])}; whole machine "
        f"{_pct(bench['machine_cpu_percent_mean'])}; its event loop late by p99 "
        f"{_ms(bench['loop_lag_ms']['p99'])} ms, max {_ms(bench['loop_lag_ms']['max'])} ms.",
        f"- Calls ended by: {', '.join(f'{k} {v}' for k, v in sorted(summary['calls_ended_by'].items())) or '–'}.",
        f"- Per-stage split: {summary['records']}.",
    ]
    for violation in summary["violations"]:
        lines.append(f"- Asterisk would object: {violation}")
    for error in summary["errors"][:10]:
        lines.append(f"- Error: {error}")
    return lines


def position_lines(summary: dict[str, Any]) -> list[str]:
    """Each call's first spoken turn against its later ones: where a cold start shows."""
    by_position = summary.get("turns_by_position")
    if not by_position:
        return []

    def figures(stats: dict[str, Any]) -> str:
        parts = []
        for key, label in (
            ("asr", "ASR final"),
            ("response", "response"),
            ("turn_gap", "turn gap"),
        ):
            values = stats.get(key)
            if values:
                parts.append(f"{label} p50/p95 {_ms(values['p50'])}/{_ms(values['p95'])} ms")
        count = max((v["n"] for v in stats.values() if v), default=0)
        return f"{'; '.join(parts) or 'nothing measured'} (n = {count})"

    return [
        f"- Each call's first spoken turn (the ramp-up included): {figures(by_position['opening'])}.",
        f"- Later spoken turns, at full load: {figures(by_position['later'])}.",
    ]


def _servers_label(summary: dict[str, Any]) -> str:
    if len(summary.get("servers", [])) > 1:
        return "All watched servers together (sums over the visible processes)"
    return "Server process"


def _server_lines(summary: dict[str, Any]) -> list[str]:
    """One line per server when the calls went to several."""
    servers = summary.get("servers", [])
    if len(servers) < 2:
        return []
    lines = []
    for server in servers:
        p95 = server["response_p95_ms"]
        callers = (
            f"{server['calls_placed']} call(s) placed, {server['underruns']} server-side "
            "underruns, "
            + ("no spoken turn answered" if p95 is None else f"response p95 {p95:.0f} ms")
        )
        if not server["visible"]:
            lines.append(
                f"  - {server['target']}: {callers}; not visible from here (no CPU/RSS figures)"
            )
            continue
        lines.append(
            f"  - {server['target']} (pid {server['pid']}): {callers}; CPU mean "
            f"{_pct(server['cpu_percent_mean'])}, max {_pct(server['cpu_percent_max'])}; its "
            f"event loop's thread mean {_pct(server['loop_thread_cpu_percent_mean'])}, max "
            f"{_pct(server['loop_thread_cpu_percent_max'])}; RSS idle "
            f"{_mb(server['rss_idle_mb'])}, peak {_mb(server['rss_peak_mb'])}"
        )
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} %"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} MB"


def _target_lines(result: dict[str, Any]) -> list[str]:
    lines = ["| Target | Limit | Measured | Met |", "|---|---:|---:|---|"]
    missed = []
    for target in result["targets"]:
        value = target["value"]
        shown = "not measured" if value is None else f"{value:g} {target['unit']}"
        met = {True: "yes", False: "**no**", None: "–"}[target["met"]]
        comparison = "≥" if target["target"].startswith("concurrent") else "≤"
        lines.append(
            f"| {target['target']} | {comparison} {target['limit']:g} {target['unit']} | {shown} | {met} |"
        )
        if target["where_the_time_goes"]:
            missed.append(f"- {target['target']}: {target['where_the_time_goes']}.")
    if missed:
        lines += ["", "Where the time goes when a latency target is missed:", "", *missed]
    return lines


def markdown_report(result: dict[str, Any]) -> str:
    machine_info = result["machine"]
    server = result["server"]
    models = result["models"]
    lines = [
        "# Voicebot benchmark",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Command: `{result['command']}`",
        f"- Machine: {machine_info['cpu']}, {machine_info['cores']} cores; load average "
        f"{' / '.join(str(v) for v in machine_info['load_before'])} before, "
        f"{' / '.join(str(v) for v in machine_info['load_after'])} after",
        "- Server: "
        + (
            f"`voicebot serve --no-web` started by the bench (listening after "
            f"{server['listening_after_s']} s), with "
            + ", ".join(f"{k}={v}" for k, v in server["policy_overrides"].items())
            if server["started_by_bench"]
            else "running server(s) (--target): " + ", ".join(server.get("targets", []))
        ),
        f"- ASR: {models['asr']}; voice: {models['tts']}; VAD end of speech "
        f"{server['vad_end_silence_ms']} ms, level floor {server['vad_floor_dbfs']} dBFS",
        f"- Callers' line: white noise at {result['line_noise_dbfs']} dBFS under every frame",
    ]
    turn_ends = server.get("end_of_turn")
    if turn_ends:
        lines.append(f"- End of turn (voicebot.call.turn_end): {describe_turn_ends(turn_ends)}")
    speed = result.get("speed_reference")
    if speed:
        lines.append(
            f"- Speed reference before: {describe(speed['before'])}; after: "
            f"{describe(speed['after'])}"
        )
    for note in result["notes"]:
        lines.append(f"- Note: {note}")
    for reason in result["broken"]:
        lines.append(f"- **Broken run**: {reason}")
    lines.append("")
    if result["mode"] == "capacity":
        lines += [
            "## Capacity",
            "",
            "| Calls | Turns | Response p50 | Response p95 | Turn gap p50 | Turn gap p95 | "
            "Underruns (client) | Server CPU mean | RSS peak | Verdict |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for step in result["steps"]:
            response = step["latency_ms"]["response"] or {}
            gap = step["latency_ms"]["turn_gap"] or {}
            lines.append(
                f"| {step['calls']} | {step['turns']['measured']} | {_ms(response.get('p50'))} | "
                f"{_ms(response.get('p95'))} | {_ms(gap.get('p50'))} | {_ms(gap.get('p95'))} | "
                f"{step['audio']['underruns']} ({step['audio']['client_underruns']}) | "
                f"{_pct(step['server']['cpu_percent_mean'])} | {_mb(step['server']['rss_peak_mb'])} | "
                f"{step['verdict']} |"
            )
        lines += [
            "",
            f"**Capacity: {result['capacity_calls']} concurrent calls** (p95 turn gap ≤ "
            f"{CAPACITY_MAX_TURN_GAP_MS:.0f} ms and no server-side underrun); stopped at "
            f"{result['stopped_by']}. RSS per extra call (slope): {_mb(result['rss_per_call_mb'])}.",
            "",
        ]
        for step in result["steps"]:
            lines += [f"### {step['calls']} calls", "", *_run_section(step), ""]
    else:
        lines += ["## Run", "", *_run_section(result["run"]), ""]
        reload = result["run"].get("reload")
        if reload:
            lines += report_lines(reload)
    lines += ["## Targets", "", *_target_lines(result), ""]
    lines += [
        "## How it is measured",
        "",
        "Times are taken at the emulated Asterisk (telephony/emulator), on one clock: when each "
        "caller frame was sent, when each bot frame arrived (AudioSocket) or was played out "
        "(chan_websocket's queue). After each run the bench replays every call's exact caller "
        "audio through the project's VAD (Silero's scores depend on all the audio before), "
        "which gives the frame on which the server decided each end of speech. Response "
        "latency runs from the sending of that frame to the first bot frame whose peak "
        f"exceeds {VOICE_PEAK} (≈ -36 dBFS), so it includes the TTS audio's own leading "
        "silence; the turn gap adds the endpoint wait (stream time). ASR, NLU and TTS come "
        "from the times the server writes the caller and bot turns into its call records "
        "(the caller turn once the ASR final is there, the bot turn once the dialogue has "
        "answered); the ASR stage includes the server's receive path. An underrun is a bot "
        f"frame more than {UNDERRUN_TOLERANCE_S * 1000:.0f} ms later than the end of the "
        "previous one; it is put down to the bench itself when a stall of the bench's own "
        "event loop covers it. Plots: latency_stages.png, latency_vs_calls.png, "
        "cpu_memory.png.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    out_dir: Path, result: dict[str, Any], runs: list[tuple[RunData, dict[str, Any]]]
) -> None:
    """report.md, results.json and the three plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result["files"] = [p.name for p in write_plots(out_dir, result, runs)]
    (out_dir / "results.json").write_text(
        json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    (out_dir / "report.md").write_text(markdown_report(result), encoding="utf-8")

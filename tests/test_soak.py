"""The soak's mechanics on a one-minute run with two calls against the real `voicebot serve`
(Vosk stand-in): samples taken, calls ended and replaced, the summary's fields there and
adding up, its files written. Never the machine's speed nor the slope's verdict: a minute
is too short to judge a trend (the figures are scripts/soak.py's, in docs/fiabilite.md)."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from voicebot.core.config import Settings
from voicebot.tools.bench.call import CallResult
from voicebot.tools.bench.soak import (
    FD_SLOPE_MAX_PER_H,
    RSS_RISE_MAX_MB,
    RSS_SLOPE_MAX_MB_PER_H,
    SoakSample,
    bot_audio_by_interval,
    judge,
    report_lines,
    slope_per_hour,
    soak_async,
    soak_settings,
)
from voicebot.tools.bench.traffic import RunData


def _samples(values: list[tuple[float, float, int]]) -> list[SoakSample]:
    return [SoakSample(t, rss, rss, 0, fds, 10, 2, 0, 0.5) for t, rss, fds in values]


def test_the_slope_is_per_hour_and_the_warm_up_is_not_judged() -> None:
    # 100 MB in the first (warm-up) minute, then +1 MB every 6 minutes: 10 MB/h
    samples = _samples([(0.0, 100.0, 30), (30.0, 180.0, 40)])
    samples += _samples([(60.0 + 360 * i, 200.0 + i, 40) for i in range(12)])
    assert slope_per_hour(samples[2:], "rss_mb") == pytest.approx(10.0)
    assert slope_per_hour(samples[2:], "fds") == pytest.approx(0.0)
    result = judge(samples, 60.0, [10.0, 100.0, 200.0])
    assert result["verdict"] == "PASS" and result["judged_samples"] == 12
    assert result["rss_mb"]["start"] == 200.0 and result["rss_mb"]["end"] == 211.0
    assert (result["late_frames"], result["late_frames_warmup"]) == (3, 1)
    leaking = _samples([(60.0 * i, 200.0 + i, 40 + i) for i in range(12)])  # 60 MB/h, 60 fds/h
    why = judge(leaking, 0.0, [])["why"]
    assert len(why) == 2 and str(int(RSS_SLOPE_MAX_MB_PER_H)) in why[0]
    assert f"{FD_SLOPE_MAX_PER_H:g}" in why[1]
    assert judge(leaking[:3], 0.0, [])["verdict"] == "FAIL"  # too few samples to judge


def test_memory_that_comes_and_goes_in_large_pieces_passes_and_a_leak_under_it_does_not() -> None:
    """Recognizers grow by ~200 MB then are freed: a sawtooth whose teeth tilt a 20-minute
    slope far past 20 MB/h. Bounded, it passes; the same sawtooth over a leak fails."""

    def sawtooth(leak_mb_per_h: float) -> list[SoakSample]:
        # teeth of 6 minutes, 2,100 -> 2,500 MB, sampled every 5 s for 30 minutes
        return _samples(
            [
                (t, 2100.0 + 400.0 * ((t % 360) / 360) + leak_mb_per_h * t / 3600, 20)
                for t in range(0, 1800, 5)
            ]
        )

    # judged from 10 min 30 s: the window holds 3.25 teeth, so the slope is far from zero
    bounded = judge(sawtooth(0.0), 630.0, [])
    assert bounded["rss_mb"]["slope_mb_per_h"] > RSS_SLOPE_MAX_MB_PER_H
    assert bounded["verdict"] == "PASS", bounded["why"]
    assert abs(bounded["rss_mb"]["peak_rise_mb"]) < RSS_RISE_MAX_MB
    leaking = judge(sawtooth(600.0), 630.0, [])  # ~2.4 MB a call at 250 calls an hour
    assert leaking["verdict"] == "FAIL"
    assert "not bounded" in leaking["why"][0]
    assert leaking["rss_mb"]["floor_rise_mb"] > RSS_RISE_MAX_MB


def test_the_bot_audio_ratio_is_what_the_callers_heard_over_the_time_their_calls_were_up() -> None:
    # a call up from 1 s to 3 s of the run; its server sent 20 ms frames for its first second
    times = [0.02 * i for i in range(50)]
    call = CallResult(
        "c", 0, "audiosocket", 8000, 101.0, 0.0, 2.0, None, [], None, [], [], times,
        [0.02] * 50, [False] * 50,
    )  # fmt: skip
    data = RunData(1, 4.0, 0.0, "audiosocket", 0.0, results=[call], loop_t0=100.0)
    received, up = bot_audio_by_interval(data, [0.0, 2.0, 4.0])
    assert list(up) == pytest.approx([1.0, 1.0]) and list(received) == pytest.approx([1.0, 0.0])


@pytest.mark.slow
def test_a_one_minute_soak_samples_the_server_and_replaces_ended_calls(tmp_path: Path) -> None:
    settings = soak_settings(Settings(), max_call_seconds=20)  # the bot ends calls after 20 s
    out = tmp_path / "soak"
    result = asyncio.run(
        soak_async(
            settings,
            calls=2,
            minutes=1.0,
            out_dir=out,
            sample_every_s=2.0,
            caller_lengths=(12.0,),  # the callers of odd-numbered calls hang up after 12 s
        )
    )
    assert "vosk" in result["models"]["asr"].lower()
    assert not result["errors"] and not result["violations"], result["errors"]
    # samples every 2 s over the minute, the warm-up (a third) left out of the judgement
    assert 20 <= result["samples"] <= 31
    assert result["warmup_s"] == 20.0 and 0 < result["judged_samples"] < result["samples"]
    rows = list(csv.DictReader((out / "samples.csv").open(encoding="utf-8")))
    assert len(rows) == result["samples"]
    times = [float(r["t_s"]) for r in rows]
    assert times == sorted(times) and times[-1] <= 60.0
    assert all(float(r["rss_mb"]) >= float(r["server_rss_mb"]) > 100 for r in rows)
    assert all(int(r["fds"]) > 0 and int(r["threads"]) > 0 for r in rows)
    assert max(int(r["calls_up"]) for r in rows) == 2
    assert sum(int(r["late_frames"]) for r in rows) <= result["late_frames"]
    ratios = [float(r["bot_audio_ratio"]) for r in rows if r["bot_audio_ratio"]]
    assert ratios and min(ratios) >= 0  # a burst after a stall may exceed 1 in one interval
    assert 0 < result["bot_audio_ratio_judged"] <= 1.5
    # calls ended (by the caller and by the bot) and new ones placed in their lines
    assert result["calls_ended_during_run"] > 0 and result["calls_placed"] > 2
    assert result["calls_placed"] - result["calls_ended_during_run"] <= 2  # up at the end
    assert "caller" in result["calls_ended_by"]
    assert any(way.startswith("bot") for way in result["calls_ended_by"]), result["calls_ended_by"]
    assert sum(result["calls_ended_by"].values()) == result["calls_placed"]
    assert result["turns"] > 0 and result["audio_frames"] > 0
    assert result["late_frames"] == result["late_frames_warmup"] + result["late_frames_judged"]
    # the figures are there and consistent, whatever their size
    rss, fds = result["rss_mb"], result["fds"]
    assert rss["min"] <= rss["start"] <= rss["max"] and rss["min"] <= rss["end"] <= rss["max"]
    assert fds["min"] <= fds["start"] <= fds["max"] and fds["min"] <= fds["end"] <= fds["max"]
    assert rss["slope_mb_per_h"] is not None and fds["slope_per_h"] is not None
    assert rss["threshold_mb_per_h"] == RSS_SLOPE_MAX_MB_PER_H
    assert result["verdict"] in ("PASS", "FAIL")
    for when in ("before", "after"):
        assert result["speed_reference"][when]["seconds"] > 0
        assert result["idle"][when]["fds"] > 0
    assert result["machine"]["cores"] >= 1 and len(result["machine"]["load_after"]) == 3
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == result
    printed = "\n".join(report_lines(result))
    assert "MB/h" in printed and "Verdict: " + result["verdict"] in printed

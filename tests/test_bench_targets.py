"""`voicebot bench --target` given several times: the targets checked up front, the calls
spread round-robin, every server visible from this machine watched on its own, and the
figures per server (literal data), then a short real run against servers of three kinds: one
in this process, one in a subprocess, and one reached on an address whose process this
machine's view does not tie to it (a server "on another machine").

As in tests/test_bench.py, nothing here depends on how fast the machine is: the real run
checks where the calls went and which figures exist, never their size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from telephony.emulator.net import free_port
from tests.test_bench import _scripted_server_in_a_thread
from voicebot.core.config import Settings
from voicebot.core.errors import VoicebotError
from voicebot.tools.bench.call import CallResult
from voicebot.tools.bench.cli import run_bench
from voicebot.tools.bench.summary import per_server
from voicebot.tools.bench.targets import as_target_list, assign, parse_targets
from voicebot.tools.bench.traffic import RunData, Sample
from voicebot.tools.bench.turns import Turn
from voicebot.tools.bench.underruns import Pacing
from voicebot.tools.bench.watch import ServerReading, ServerWatch, Watch

# --- targets: parsing, checking, round-robin -------------------------------------------------


def test_every_target_is_parsed_in_order() -> None:
    assert parse_targets(["127.0.0.1:9092", "bot-2.example:9093", "::1:9094"]) == [
        ("127.0.0.1", 9092),
        ("bot-2.example", 9093),
        ("::1", 9094),
    ]
    assert parse_targets([]) == []
    assert as_target_list(None) == []
    assert as_target_list("a:1") == ["a:1"]
    assert as_target_list(("a:1", "b:2")) == ["a:1", "b:2"]


@pytest.mark.parametrize("bad", ["bot-2", "bot-2:", ":9092", "bot-2:0", "bot-2:65536", "b:x"])
def test_a_bad_target_is_named_in_the_error(bad: str) -> None:
    with pytest.raises(VoicebotError, match="host:port") as error:
        parse_targets(["127.0.0.1:9092", bad])
    assert repr(bad) in str(error.value)


def test_the_same_target_twice_is_refused() -> None:
    with pytest.raises(VoicebotError, match=r"'127\.0\.0\.1:9092' is given twice"):
        parse_targets(["127.0.0.1:9092", "127.0.0.1:9093", "127.0.0.1:9092"])


def test_a_bad_target_among_several_stops_the_bench_before_anything_starts(
    tmp_path: Path,
) -> None:
    with pytest.raises(VoicebotError, match="'nowhere'"):
        run_bench(
            Settings(),
            calls=2,
            duration_s=5.0,
            ramp_s=1.0,
            transport="audiosocket",
            find_capacity=False,
            target=["127.0.0.1:9092", "nowhere"],
            out_dir=tmp_path / "out",
            as_json=True,
        )
    assert not (tmp_path / "out").exists()


def test_calls_go_round_robin_over_the_targets() -> None:
    a, b, c = ("a", 1), ("b", 2), ("c", 3)
    assert assign(5, [a, b]) == [a, b, a, b, a]
    assert assign(2, [a, b, c]) == [a, b]  # fewer calls than targets: the last get none
    assert assign(3, [a]) == [a, a, a]
    with pytest.raises(ValueError):
        assign(1, [])


# --- per-server figures from literal samples -----------------------------------------------------


def _result(call_id: str, slot: int, target: str) -> CallResult:
    return CallResult(
        call_id=call_id, slot=slot, transport="audiosocket", rate=8000, t0=0.0, wall0=0.0,
        duration_s=10.0, ended_by=None, violations=[], greeting_ms=100.0, sent=[], spoken=[],
        times=[], durations=[], voiced=[], target=target,
    )  # fmt: skip


def _turn(call_id: str, response_ms: float, kind: str = "speech") -> Turn:
    return Turn(
        call_id=call_id, kind=kind, clip="x", active_calls=2, at_s=5.0, wall_start=1.0,
        wall_voice_end=2.0, wall_decision=2.5, wall_first_voice=3.0, response_ms=response_ms,
    )  # fmt: skip


def _pacing(underruns: int) -> Pacing:
    return Pacing(
        frames=100, underruns=underruns, client_underruns=0, lateness_ms=[], max_gap_ms=20.0
    )


def _sample(t: float, a: ServerReading, b: ServerReading) -> Sample:
    return Sample(t, 2, None, None, 50.0, 10.0, None, [a, b])


def test_each_server_gets_its_own_cpu_memory_calls_underruns_and_response() -> None:
    data = RunData(calls=3, duration_s=10.0, ramp_s=1.0, transport="audiosocket", full_load_s=2.0)
    data.servers = [
        {"target": "127.0.0.1:9092", "pid": 11, "visible": True, "rss_idle_mb": 300.04},
        {"target": "bot-2:9092", "pid": None, "visible": False, "rss_idle_mb": None},
    ]
    hidden = ServerReading(None, None, None)
    data.samples = [
        # during the ramp: left out of the CPU figures, not of the RSS peak
        _sample(1.0, ServerReading(190.0, 420.0, 90.0), hidden),
        _sample(2.5, ServerReading(40.0, 350.0, 10.0), hidden),
        _sample(3.0, ServerReading(60.0, 360.0, 30.0), hidden),
        _sample(3.5, ServerReading(None, 355.0, None), hidden),  # an unreadable interval
    ]
    data.results = [
        _result("c1", 0, "127.0.0.1:9092"),
        _result("c2", 1, "bot-2:9092"),
        _result("c3", 2, "127.0.0.1:9092"),
    ]
    pacings = [_pacing(2), _pacing(5), _pacing(1)]
    turns = [
        _turn("c1", 200.0),
        _turn("c3", 400.0),
        _turn("c3", 9000.0, kind="dtmf"),  # keys are not spoken responses
        _turn("c2", 700.0),
    ]
    local, remote = per_server(data, turns, pacings)
    assert local == {
        "target": "127.0.0.1:9092",
        "pid": 11,
        "visible": True,
        "calls_placed": 2,
        "cpu_percent_mean": 50.0,
        "cpu_percent_max": 60.0,
        "loop_thread_cpu_percent_mean": 20.0,
        "loop_thread_cpu_percent_max": 30.0,
        "rss_idle_mb": 300.0,
        "rss_peak_mb": 420.0,
        "underruns": 3,
        "response_p95_ms": 390.0,
    }
    assert remote == {
        "target": "bot-2:9092",
        "pid": None,
        "visible": False,
        "calls_placed": 1,
        "cpu_percent_mean": None,
        "cpu_percent_max": None,
        "loop_thread_cpu_percent_mean": None,
        "loop_thread_cpu_percent_max": None,
        "rss_idle_mb": None,
        "rss_peak_mb": None,
        "underruns": 5,
        "response_p95_ms": 700.0,
    }


def test_the_watch_sums_distinct_processes_and_lists_hidden_servers() -> None:
    """Two targets on one process (here, this test process) count once in the totals; a
    server with no visible process is listed without figures."""
    watch = Watch(
        [
            ServerWatch(os.getpid(), "127.0.0.1:1"),
            ServerWatch(os.getpid(), "127.0.0.1:2"),
            ServerWatch(None, "bot-2:9092"),
        ]
    )
    assert [w.target for w in watch.visible] == ["127.0.0.1:1"]
    first = watch.sample()
    assert first.cpu_percent is None  # no interval yet
    end = time.thread_time() + 0.05
    while time.thread_time() < end:
        pass
    reading = watch.sample()
    one, twin, hidden = reading.servers
    assert one is twin and hidden == ServerReading(None, None, None)
    assert reading.cpu_percent == one.cpu_percent and reading.rss_mb == one.rss_mb
    assert reading.rss_mb is not None and reading.rss_mb > 0
    idle = watch.mark_idle()
    assert idle is not None and idle > 0
    described = watch.describe()
    assert [d["visible"] for d in described] == [True, True, False]
    assert described[0]["pid"] == described[1]["pid"] == os.getpid()
    assert described[1]["rss_idle_mb"] == described[0]["rss_idle_mb"] is not None
    assert described[2]["rss_idle_mb"] is None


# --- a short real run against several servers -----------------------------------------------------

# A bot in its own process, on every address of this machine: it greets with a tone and
# then sends silence (no speech decoding: the bench's callers get no answers, which is a
# finding, not a broken run).
_TONE_BOT = """
import asyncio, sys
import numpy as np
from telephony.audiosocket.server import start_audiosocket_server
from voicebot.core.audio import SILENCE_FRAME, to_frames
from voicebot.core.interfaces import CallerHungUp

t = np.arange(8000) / 8000
TONE = to_frames((np.sin(2 * np.pi * 440 * t) * 0.3 * 32767).astype("<i2").tobytes())

async def bot(transport):
    async def pace():
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for frame in [*TONE] + [SILENCE_FRAME] * 10**6:
            await transport.send(frame)
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    pacer = asyncio.create_task(pace())
    try:
        async for event in transport.events():
            if isinstance(event, CallerHungUp):
                break
    finally:
        pacer.cancel()

async def main():
    await start_audiosocket_server("0.0.0.0", int(sys.argv[1]), bot)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _start_tone_bot(port: int) -> subprocess.Popen[str]:
    bot = subprocess.Popen(
        [sys.executable, "-c", _TONE_BOT, str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert bot.stdout is not None
    assert bot.stdout.readline().strip() == "ready", "the tone bot did not start"
    return bot


def test_voicebot_bench_spreads_the_calls_over_several_servers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    bot = _start_tone_bot(port)
    try:
        with _scripted_server_in_a_thread() as in_process:
            targets = [
                f"127.0.0.1:{in_process}",  # this test process
                f"127.0.0.1:{port}",  # the tone bot's process
                f"127.0.0.2:{port}",  # the same bot, but not tied to a process from here
            ]
            code = run_bench(
                Settings().replace("paths", data_dir=tmp_path / "var"),
                calls=3,
                duration_s=8.0,
                ramp_s=0.0,
                transport="audiosocket",
                find_capacity=False,
                target=targets,
                out_dir=tmp_path / "out",
                as_json=True,
            )
    finally:
        bot.terminate()
        bot.wait(30)
    result = json.loads(capsys.readouterr().out)
    run: dict[str, Any] = result["run"]
    assert code == 0 and result["broken"] == [], (result["broken"], run["errors"])
    servers = run["servers"]
    assert [s["target"] for s in servers] == targets
    # every target got its call (call i → target i mod 3), and every call a target
    assert all(s["calls_placed"] >= 1 for s in servers), servers
    assert sum(s["calls_placed"] for s in servers) == run["calls_placed"]
    here, subprocess_bot, unseen = servers
    assert here["pid"] == os.getpid() and subprocess_bot["pid"] == bot.pid
    for seen in (here, subprocess_bot):
        assert seen["visible"] and seen["rss_peak_mb"] > 0, seen
        assert seen["cpu_percent_mean"] is not None and seen["rss_idle_mb"] is not None, seen
    assert not unseen["visible"] and unseen["cpu_percent_mean"] is None
    assert unseen["rss_peak_mb"] is None
    # the totals are the visible processes together
    assert run["server"]["rss_peak_mb"] >= max(here["rss_peak_mb"], subprocess_bot["rss_peak_mb"])
    assert result["server"]["targets"] == targets
    assert any(f"127.0.0.2:{port} not visible from here" in note for note in result["notes"])
    assert any("3 targets" in note for note in result["notes"])
    assert all(f"--target {t}" in result["command"] for t in targets)
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "All watched servers together" in report
    for target in targets:
        assert f"  - {target}" in report
    assert f"  - 127.0.0.1:{port} (pid {bot.pid})" in report
    saved = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert [s["target"] for s in saved["run"]["servers"]] == targets

"""The benchmark: its measurements on known inputs, then the real thing against `voicebot serve`.

The calibration tests put a scripted bot behind the real AudioSocket and chan_websocket
servers (the bot is the system under test's stand-in at the process boundary: it uses the
real Silero VAD and answers with a tone after a known delay, with one known stall in its
pacing), so that the bench's figures can be checked against what really happened. The smoke
test runs `voicebot bench` end to end on the real server with the stand-in models, and checks
structure and sanity, never speed.

No test here depends on how fast this machine is: the calibration bounds are the bot's known
delay plus what the transport adds by construction plus the scheduling lateness the bench
measured on its own event loop during that very run; the real server's figures are checked
for shape and for the relations their definitions imply, not for their size (the figures
themselves are the benchmark's: docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import yaml

from telephony.audiosocket.server import start_audiosocket_server
from telephony.chan_websocket.server import start_websocket_server
from telephony.emulator.net import free_port
from tests.speech_helpers import espeak_pcm, french_prompt_pcm, silence
from voicebot.core.audio import SILENCE_FRAME, AudioFrame, to_frames
from voicebot.core.config import Settings, VadSettings, load_settings
from voicebot.core.errors import AudioInputError, VoicebotError
from voicebot.core.interfaces import (
    AudioIn,
    BargeIn,
    CallerHungUp,
    DtmfIn,
    MediaTransport,
    SpeechEnded,
)
from voicebot.speech import standins
from voicebot.speech.vad import SileroVad
from voicebot.tools.bench.call import CallResult, Spoken
from voicebot.tools.bench.cli import run_bench
from voicebot.tools.bench.clips import (
    ESPEAK_WPM,
    Clip,
    analyse_clip,
    audio_cache_dir,
    prepare_clips,
)
from voicebot.tools.bench.lines import NOISE_LOOP_FRAMES, LineNoise
from voicebot.tools.bench.records import match_records
from voicebot.tools.bench.report import position_lines
from voicebot.tools.bench.script import CYCLE, FIRST_STEP, QUESTIONS, call_script
from voicebot.tools.bench.server import ServerProcess, settings_file_data
from voicebot.tools.bench.summary import STAGES, broken_reasons, distribution, summarize
from voicebot.tools.bench.traffic import CallRunner, RunData
from voicebot.tools.bench.turn_ends import server_waits
from voicebot.tools.bench.turns import Turn, replay_vad
from voicebot.tools.bench.underruns import pacing, underrun_stages
from voicebot.tools.bench.verdict import TARGETS, evaluate_targets, holds

END_SILENCE_FRAMES = math.ceil(VadSettings().end_silence_ms / 20)


@pytest.fixture(scope="module")
def clips() -> dict[str, Clip]:
    # the bench's own cache (bench-out/audio-cache): the VAD analysis runs once per machine
    return prepare_clips(VadSettings(), audio_cache_dir())


@pytest.fixture(scope="module")
def wideband_clips() -> dict[str, Clip]:
    return prepare_clips(VadSettings(), audio_cache_dir(), rate=16000)


# --- pacing: underruns and who caused them -------------------------------------------------


def _steady(count: int, start: float = 0.0) -> list[tuple[float, float]]:
    return [(start + i * 0.02, 0.02) for i in range(count)]


def test_a_frame_later_than_the_tolerance_is_one_underrun() -> None:
    arrivals = [*_steady(10), (0.2 + 0.07, 0.02), *_steady(5, 0.29)]
    result = pacing(arrivals)
    assert result.frames == 16
    assert result.underruns == 1
    assert result.client_underruns == 0
    assert max(result.lateness_ms) == pytest.approx(70.0, abs=0.01)
    assert result.max_gap_ms == pytest.approx(90.0, abs=0.01)


def test_lateness_within_the_tolerance_is_jitter_not_an_underrun() -> None:
    arrivals = [*_steady(10), (0.2 + 0.015, 0.02), *_steady(5, 0.235)]
    result = pacing(arrivals)
    assert result.underruns == 0
    assert max(result.lateness_ms) == pytest.approx(15.0, abs=0.01)


def test_a_late_frame_explained_by_a_stall_of_the_bench_is_the_clients() -> None:
    arrivals = [*_steady(10), (0.2 + 0.07, 0.02), *_steady(5, 0.29)]
    covering = pacing(arrivals, stalls=[(0.19, 0.27)])
    assert (covering.underruns, covering.client_underruns) == (0, 1)
    # a short stall does not explain 70 ms of lateness: the server is late
    short = pacing(arrivals, stalls=[(0.2, 0.215)])
    assert (short.underruns, short.client_underruns) == (1, 0)
    # nor does a stall at another time
    elsewhere = pacing(arrivals, stalls=[(0.05, 0.15)])
    assert (elsewhere.underruns, elsewhere.client_underruns) == (1, 0)


def test_late_frames_are_put_down_to_the_stage_the_server_was_in() -> None:
    # a turn decided at 100.0: ASR final until 100.3, NLU until 100.5, TTS until 100.6
    turn = Turn(
        call_id="c1", kind="speech", clip="x", active_calls=1, at_s=0.0, wall_start=98.0,
        wall_voice_end=99.34, wall_decision=100.0, wall_first_voice=100.6,
        asr_ms=300.0, nlu_ms=200.0, tts_ms=100.0,
    )  # fmt: skip
    late = [(99.0, 99.05), (100.1, 100.15), (100.35, 100.4), (100.45, 100.55), (103.0, 103.05)]
    counts = underrun_stages([turn], late, setups=[(90.0, 90.5)])
    assert counts == {"setup": 0, "listening": 1, "asr": 1, "nlu": 2, "tts": 1, "none": 1}
    assert underrun_stages([], [(90.2, 90.3)], setups=[(90.0, 90.5)])["setup"] == 1


def test_distribution_of_values_ignores_missing_ones() -> None:
    stats = distribution([10.0, None, 20.0, 30.0, 40.0])
    assert stats == {"n": 4, "p50": 25.0, "p95": 38.5, "max": 40.0, "mean": 25.0}
    assert distribution([None, None]) is None


# --- caller clips, analysed by the project's VAD -----------------------------------------


def test_a_real_french_prompt_is_one_utterance_with_a_known_end() -> None:
    speech = french_prompt_pcm("vm-sorry")
    clip = analyse_clip("asterisk:vm-sorry", "Désolé", speech, VadSettings())
    speech_frames = len(speech) // 320
    assert clip.decision - clip.voice_end == END_SILENCE_FRAMES
    # the last voiced frame lies near the end of the recording (the VAD's 32 ms windows and
    # its hysteresis can carry it a few frames past)
    assert speech_frames - 15 <= clip.voice_end <= speech_frames + 8
    assert clip.barge_in is not None and 10 < clip.barge_in < clip.voice_end
    assert len(clip.frames) == clip.decision + 15
    assert b"".join(clip.frames)[: len(speech)] == speech


def _call_result(spoken: list[Spoken], frames: int, rate: int = 8000) -> CallResult:
    return CallResult(
        call_id="c1", slot=0, transport="audiosocket", rate=rate, t0=0.0, wall0=1000.0,
        duration_s=frames * 0.02, ended_by="caller", violations=[], greeting_ms=None,
        sent=[i * 0.02 for i in range(frames)], spoken=spoken, times=[], durations=[], voiced=[],
    )  # fmt: skip


@pytest.mark.parametrize("frames_before", [40, 57, 203])
def test_the_replay_finds_the_frame_a_vad_that_heard_the_whole_call_decides_on(
    clips: dict[str, Clip], frames_before: int
) -> None:
    # Silero's scores depend on all the audio before: the decision frame moves with the
    # amount of silence before the clip, and only a replay of the whole call finds it.
    clip = clips["espeak:naissance"]
    total = frames_before + len(clip.frames) + 20
    stream = to_frames(silence(frames_before * 0.02) + b"".join(clip.frames) + silence(0.4))
    detector = SileroVad(VadSettings())
    expected = None
    for index, frame in enumerate(stream):
        event = detector.feed(frame)
        if isinstance(event, SpeechEnded):
            expected = (index, round(event.at_s / 0.02) - 1)
            break
    spoken = [Spoken("speech", "espeak:naissance", frames_before, False, 1)]
    heard = replay_vad(_call_result(spoken, total), clips, VadSettings())
    assert heard[0] is not None
    assert (heard[0].decision_line, heard[0].voice_end) == expected
    assert heard[0].decision == heard[0].decision_line  # an 8 kHz line: the same frames


def test_the_replay_applies_the_servers_end_of_turn_waits(clips: dict[str, Clip]) -> None:
    """With the end-of-turn rule the server waits less or more than vad.end_silence_ms; the
    replay takes each call's waits from its log, in order, and decides where it did."""
    clip = clips["espeak:naissance"]
    before = 57
    total = before + len(clip.frames) + 60
    spoken = [Spoken("speech", "espeak:naissance", before, False, 1)]
    call = _call_result(spoken, total)
    fixed, quick, slow = (
        replay_vad(call, clips, VadSettings(), waits)[0] for waits in (None, [300], [1000, 300])
    )
    assert fixed is not None and quick is not None and slow is not None
    assert fixed.voice_end == quick.voice_end == slow.voice_end  # where the voice ended
    assert (fixed.decision - fixed.voice_end) * 20 == 660  # 650 ms in whole 20 ms frames
    assert (quick.decision - quick.voice_end) * 20 == 300
    assert (slow.decision - slow.voice_end) * 20 == 1000  # the first wait is this turn's


def test_line_noise_is_at_its_level_and_the_same_for_the_same_frame() -> None:
    noise = LineNoise(-65.0, 320, seed=4)
    quiet = np.frombuffer(noise.over(bytes(320), 7), dtype="<i2").astype(np.float64) / 32768
    assert -67.0 < 10 * np.log10(np.mean(quiet**2)) < -63.0
    assert noise.over(bytes(320), 7) == noise.over(bytes(320), 7 + NOISE_LOOP_FRAMES)
    assert noise.over(bytes(320), 7) != noise.over(bytes(320), 8)
    loud = np.full(160, 32767, dtype="<i2").tobytes()
    assert np.frombuffer(noise.over(loud, 0), dtype="<i2").max() == 32767  # clipped, no wrap
    assert LineNoise(float("-inf"), 320, seed=4).over(loud, 3) == loud


def test_the_replay_hears_the_line_noise_the_call_sent(clips: dict[str, Clip]) -> None:
    clip = clips["espeak:naissance"]
    before = 60
    total = before + len(clip.frames) + 20
    noise = LineNoise(-50.0, 320, seed=1)  # loud enough for Silero to hear it
    line = [bytes(320)] * before + list(clip.frames) + [bytes(320)] * 20
    detector = SileroVad(VadSettings())
    expected = None
    for index, frame in enumerate(line):
        event = detector.feed(AudioFrame(noise.over(frame, index)))
        if isinstance(event, SpeechEnded):
            expected = (index, round(event.at_s / 0.02) - 1)
            break
    spoken = [Spoken("speech", "espeak:naissance", before, False, 1)]
    result = dataclasses.replace(_call_result(spoken, total), noise=noise)
    heard = replay_vad(result, clips, VadSettings())
    assert heard[0] is not None and expected is not None
    assert (heard[0].decision_line, heard[0].voice_end) == expected


def test_a_clip_with_two_utterances_is_refused() -> None:
    speech = french_prompt_pcm("hello")
    twice = speech + silence(1.5) + speech
    with pytest.raises(AudioInputError, match="2 utterance"):
        analyse_clip("double", "Allo Allo", twice, VadSettings())


def test_the_call_script_starts_with_a_barge_in_and_rotates() -> None:
    first = list(zip(range(4), call_script(0), strict=False))
    second = list(zip(range(4), call_script(1), strict=False))
    assert first[0][1] == second[0][1] == FIRST_STEP
    assert first[2][1] == second[1][1]
    kinds = {step.kind for step in (FIRST_STEP, *CYCLE)}
    assert kinds == {"speech", "barge_in", "dtmf"}


# --- the per-stage split from the call records -------------------------------------------------


def _turn(kind: str, start: float, voice_end: float, decision: float, voice: float) -> Turn:
    return Turn(
        call_id="c1",
        kind=kind,
        clip="x",
        active_calls=1,
        at_s=0.0,
        wall_start=start,
        wall_voice_end=voice_end,
        wall_decision=decision,
        wall_first_voice=voice,
    )


def test_record_times_split_a_turn_into_asr_nlu_and_tts() -> None:
    spoken = _turn("speech", 100.0, 102.0, 102.66, 103.5)
    key = _turn("dtmf", 110.0, 110.0, 110.0, 110.4)
    rows = {
        "c1": [
            (99.0, "bot"),  # the greeting
            (103.0, "caller"),
            (103.2, "bot"),
            (110.01, "caller"),
            (110.3, "bot"),
        ]
    }
    assert match_records([spoken, key], rows) == 2
    assert spoken.asr_ms == pytest.approx(340.0)
    assert spoken.nlu_ms == pytest.approx(200.0)
    assert spoken.tts_ms == pytest.approx(300.0)
    assert key.asr_ms is None
    assert key.nlu_ms == pytest.approx(290.0)
    assert key.tts_ms == pytest.approx(100.0)


def test_records_of_another_turn_are_not_matched() -> None:
    spoken = _turn("speech", 100.0, 102.0, 102.66, 103.5)
    rows = {"c1": [(101.0, "caller"), (101.2, "bot")], "c2": [(103.0, "caller"), (103.1, "bot")]}
    assert match_records([spoken], rows) == 0
    assert spoken.asr_ms is None and spoken.nlu_ms is None


def test_each_record_serves_one_turn_and_only_after_its_decision() -> None:
    first = _turn("speech", 100.0, 102.0, 102.66, 104.0)
    second = _turn("speech", 106.0, 108.0, 108.66, 109.5)
    late = _turn("speech", 112.0, 114.0, 114.66, 115.0)
    rows = {
        "c1": [
            (103.5, "caller"),
            (103.6, "bot"),
            (109.0, "caller"),
            (109.1, "bot"),
            # the third utterance was heard as nothing: no record before its audio
            (116.0, "caller"),
            (116.1, "bot"),
        ]
    }
    assert match_records([late, second, first], rows) == 2
    assert first.asr_ms == pytest.approx(840.0) and first.tts_ms == pytest.approx(400.0)
    assert second.asr_ms == pytest.approx(340.0) and second.nlu_ms == pytest.approx(100.0)
    assert late.asr_ms is None and late.nlu_ms is None


# --- verdicts --------------------------------------------------------------------------------


def _summary(
    response: tuple[float, float], gap_p95: float, stages: dict[str, float], underruns: int
) -> dict[str, Any]:
    latency: dict[str, Any] = {
        key: {"n": 10, "p50": value / 2, "p95": value, "max": value, "mean": value / 2}
        for key, value in stages.items()
    }
    latency["response"] = {"n": 10, "p50": response[0], "p95": response[1], "max": 0, "mean": 0}
    latency["turn_gap"] = {"n": 10, "p50": gap_p95 / 2, "p95": gap_p95, "max": 0, "mean": 0}
    return {"calls": 8, "latency_ms": latency, "audio": {"underruns": underruns}}


def test_a_missed_target_names_the_stage_that_costs_the_time() -> None:
    summary = _summary(
        (400.0, 900.0), 1500.0, {"asr": 700.0, "nlu": 80.0, "tts": 60.0, "endpoint_wait": 660.0}, 0
    )
    verdicts = {v["target"]: v for v in evaluate_targets(summary, 12, 35.0)}
    p50 = verdicts["response latency p50 at 8 calls"]
    assert p50["met"] is False and p50["value"] == 400.0
    assert p50["where_the_time_goes"].startswith("most time in ASR final p95 700 ms")
    assert verdicts["concurrent calls with zero underruns"]["met"] is True
    assert verdicts["RSS per extra call"]["met"] is True
    fast = _summary((100.0, 250.0), 800.0, {"asr": 50.0, "nlu": 30.0, "tts": 20.0}, 0)
    assert all(v["met"] for v in evaluate_targets(fast, 16, 20.0))
    slow_turns = {
        v["target"]: v for v in evaluate_targets(_summary((100.0, 250.0), 1100.0, {}, 0), 16, 20.0)
    }
    assert slow_turns["turn gap p50 at 8 calls"]["met"] is False  # 550 > 500
    assert slow_turns["turn gap p95 at 8 calls"]["met"] is False
    unmeasured = evaluate_targets(None, None, None)
    assert all(v["met"] is None for v in unmeasured)


def test_a_capacity_step_holds_only_without_underruns_and_under_a_second() -> None:
    assert holds(_summary((100, 200), 950.0, {}, 0)) == (True, "holds")
    assert holds(_summary((100, 200), 1200.0, {}, 0))[0] is False
    assert holds(_summary((100, 200), 500.0, {}, 1)) == (False, "1 underrun(s)")


# --- the server the bench starts ------------------------------------------------------------------


def test_the_bench_server_gets_free_ports_its_own_records_and_no_secrets_in_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEBOT_AMI_SECRET", "s3cret")
    monkeypatch.setenv("VOICEBOT_SERVER_AUDIOSOCKET_PORT", "9092")
    settings = load_settings(
        environ={"VOICEBOT_AMI_SECRET": "s3cret", "VOICEBOT_VAD_END_SILENCE_MS": "700"}
    )
    server = ServerProcess(settings, tmp_path)
    data = settings_file_data(settings)
    text = yaml.safe_dump(data)
    assert "s3cret" not in text and "secret" not in data["ami"]
    config = tmp_path / "settings.yml"
    config.write_text(text, encoding="utf-8")
    env = server.environment()
    child = load_settings(
        config, environ={k: v for k, v in env.items() if k.startswith("VOICEBOT_")}
    )
    assert child.vad.end_silence_ms == 700
    assert child.server.audiosocket_port == server.audiosocket_port != 9092
    assert child.server.websocket_port == server.websocket_port
    assert child.server.host == "127.0.0.1"
    assert child.records.database_url == f"sqlite:///{tmp_path / 'records.sqlite3'}"
    assert child.ami.host == "" and child.ami.secret == "s3cret"
    assert child.policy.min_asr_confidence == 0.0
    assert server.command(config)[-3:] == ["--config", str(config), "serve", "--no-web"][-3:]


def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path) -> None:
    settings = Settings()
    base: dict[str, Any] = dict(
        calls=2,
        duration_s=5.0,
        ramp_s=1.0,
        transport="audiosocket",
        find_capacity=False,
        target=None,
        out_dir=tmp_path,
        as_json=True,
    )
    for change, message in (
        ({"calls": 0}, "--calls"),
        ({"duration_s": 0.0}, "--duration"),
        ({"ramp_s": -1.0}, "--ramp"),
        ({"target": "nowhere"}, "host:port"),
        ({"noise_dbfs": 3.0}, "--line-noise"),
    ):
        with pytest.raises(VoicebotError, match=message):
            run_bench(settings, **{**base, **change})


# --- calibration: a scripted bot with known latencies ----------------------------------------------

REPLY_DELAY_S = 0.2
STALL_AT_FRAME = 125  # 2.5 s into the call, during the greeting
STALL_S = 0.1


def _tone(seconds: float) -> list[AudioFrame]:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (np.sin(2 * np.pi * 440 * t) * 0.3 * 32767).astype("<i2").tobytes()
    return to_frames(pcm)


class ScriptedBot:
    """Greets with 4 s of tone, answers each end of speech and each key with 0.5 s of tone
    exactly ``reply_delay_s`` after the VAD's decision, stops at a barge-in, and stalls once."""

    def __init__(self, reply_delay_s: float = REPLY_DELAY_S) -> None:
        self.reply_delay_s = reply_delay_s
        self.decisions = 0
        self.barge_ins = 0
        self.keys: list[str] = []

    async def __call__(self, transport: MediaTransport) -> None:
        loop = asyncio.get_running_loop()
        vad = SileroVad(VadSettings())
        speech: deque[AudioFrame] = deque(_tone(4.0))
        pacer = asyncio.create_task(self._pace(transport, speech))

        def answer() -> None:
            speech.extend(_tone(0.5))

        try:
            events: AsyncIterator[Any] = transport.events()
            async for event in events:
                if isinstance(event, AudioIn):
                    decided = vad.feed(event.frame, bot_speaking=bool(speech))
                    if isinstance(decided, BargeIn):
                        self.barge_ins += 1
                        speech.clear()
                    elif isinstance(decided, SpeechEnded):
                        self.decisions += 1
                        loop.call_later(self.reply_delay_s, answer)
                elif isinstance(event, DtmfIn):
                    self.keys.append(event.digit)
                    speech.clear()
                    loop.call_later(self.reply_delay_s, answer)
                elif isinstance(event, CallerHungUp):
                    break
        finally:
            pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacer

    @staticmethod
    async def _pace(transport: MediaTransport, speech: deque[AudioFrame]) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        sent = 0
        while True:
            await transport.send(speech.popleft() if speech else SILENCE_FRAME)
            sent += 1
            next_at += 0.02 + (STALL_S if sent == STALL_AT_FRAME else 0.0)
            await asyncio.sleep(max(0.0, next_at - loop.time()))


def _scheduling_slack_ms(data: RunData) -> float:
    """How late this machine ran the calibration's event loop, as the bench itself measured it
    during the run (``lags_ms``: its 5 ms probe's lateness). An answer crosses four wake-ups of
    that loop (the bot's reader hears the deciding frame, its timer, its pacer's tick, the
    caller's reader), each late by at most the worst lateness seen: the bounds below grow with
    the machine's load instead of assuming a fast one."""
    assert data.lags_ms, "the bench's loop probe recorded nothing"
    return 4 * max(data.lags_ms) + 5.0


def _check_calibrated(
    data: RunData, bot: ScriptedBot, transport_ms: float = 0.0, input_ms: float = 0.0
) -> dict[str, Any]:
    """``transport_ms``/``input_ms``: what the transport itself adds on the way out and on
    the way in (its resamplers), by construction."""
    summary = summarize(data, None)
    answered = [t for t in data.turns if t.answered]
    assert answered, f"no turn answered: {data.errors}"
    delay_ms = REPLY_DELAY_S * 1000
    slack_ms = _scheduling_slack_ms(data)
    for turn in answered:
        assert turn.response_ms is not None
        # never before the bot's answer; late by its 20 ms tick, the transport, and what the
        # run measured of its own scheduling lateness
        assert delay_ms - 5 <= turn.response_ms <= delay_ms + 20 + transport_ms + slack_ms, (
            turn,
            slack_ms,
        )
        if turn.kind != "dtmf":
            assert turn.endpoint_wait_ms == pytest.approx(END_SILENCE_FRAMES * 20, abs=2)
            assert turn.turn_gap_ms is not None and turn.endpoint_wait_ms is not None
            incoming = turn.turn_gap_ms - turn.endpoint_wait_ms - turn.response_ms
            assert -0.5 <= incoming <= input_ms + 0.5, turn
    typical = float(np.median([t.response_ms for t in answered if t.response_ms is not None]))
    assert delay_ms <= typical <= delay_ms + 20 + transport_ms + slack_ms
    stopped = [t for t in data.turns if t.barge_in == "stopped"]
    assert stopped and bot.barge_ins >= 1
    for turn in stopped:
        assert turn.barge_in_stop_ms is not None
        # the bot clears its queue on the barge-in: what is still heard was in flight
        assert 0 <= turn.barge_in_stop_ms < 100 + transport_ms + slack_ms
    assert summary["latency_ms"]["greeting"]["n"] == len(data.results)
    return summary


async def test_the_bench_measures_a_scripted_bot_over_audiosocket(
    clips: dict[str, Clip],
) -> None:
    bot = ScriptedBot()
    server = await start_audiosocket_server("127.0.0.1", 0, bot)
    port = cast(asyncio.Server, server).sockets[0].getsockname()[1]
    try:
        runner = CallRunner([("127.0.0.1", port)], "audiosocket", clips, VadSettings(), None)
        data = await runner.run(calls=2, duration_s=13.0, ramp_s=0.0)
    finally:
        server.close()
        await server.wait_closed()
    summary = _check_calibrated(data, bot)
    # every call had the bot's one 100 ms stall: a hole of its own (AudioSocket plays what
    # arrives; chan_websocket's queue may absorb it)
    assert summary["audio"]["underruns"] + summary["audio"]["client_underruns"] >= len(data.results)
    assert summary["audio"]["max_gap_ms"] >= STALL_S * 1000
    assert not data.errors
    assert summary["turns"]["dtmf"] >= 1 and bot.keys
    assert summary["latency_ms"]["dtmf_response"] is not None
    assert {r.ended_by for r in data.results} == {"caller"}


async def _scripted_websocket_run(
    transport: str, clips: dict[str, Clip]
) -> tuple[RunData, ScriptedBot]:
    bot = ScriptedBot()
    server = await start_websocket_server("127.0.0.1", 0, bot)
    port = next(iter(server.sockets)).getsockname()[1]
    try:
        runner = CallRunner([("127.0.0.1", port)], transport, clips, VadSettings(), None)
        data = await runner.run(calls=2, duration_s=13.0, ramp_s=0.0)
    finally:
        server.close()
        await server.wait_closed()
    return data, bot


@pytest.fixture(scope="module")
async def slin16_run(
    wideband_clips: dict[str, Clip],
) -> tuple[RunData, ScriptedBot]:
    # one run serves the slin16 test and the slin test's comparison with it
    return await _scripted_websocket_run("websocket", wideband_clips)


def test_the_bench_measures_a_scripted_bot_over_chan_websocket(
    slin16_run: tuple[RunData, ScriptedBot],
) -> None:
    data, bot = slin16_run
    # The WebSocket transport resamples the bot's 8 kHz to slin16 with a soxr stream, which
    # hands out audio in ~100 ms blocks, and chan_websocket plays it from its queue: the
    # caller hears the bot 140-250 ms after it spoke (AudioSocket at 8 kHz: ≤ 20 ms).
    # On the way in, its resampler delays the VAD's decision by up to a block.
    _check_calibrated(data, bot, transport_ms=280.0, input_ms=120.0)
    assert {r.transport for r in data.results} == {"websocket"}
    # a spoken turn's response and a key's response cross the same path: when the VAD's
    # decision frame is right, they agree (within the run's own scheduling lateness)
    keys = [t.response_ms for t in data.turns if t.kind == "dtmf" and t.response_ms]
    spoken = [t.response_ms for t in data.turns if t.kind != "dtmf" and t.response_ms]
    assert keys and spoken
    difference = abs(float(np.median(spoken)) - float(np.median(keys)))
    assert difference < 60 + _scheduling_slack_ms(data)


def _median_response_ms(data: RunData) -> float:
    return float(np.median([t.response_ms for t in data.turns if t.response_ms is not None]))


async def test_chan_websocket_in_slin_answers_without_the_resampling_delay(
    clips: dict[str, Clip], slin16_run: tuple[RunData, ScriptedBot]
) -> None:
    """Dialled with c(slin), chan_websocket carries the bot's own 8 kHz: no resampler, so no
    ~100 ms blocks on either side; only the play-out queue's 20 ms tick remains."""
    data, bot = await _scripted_websocket_run("websocket-slin", clips)
    # On the way in, the server hears the caller's frames one for one: the VAD decides on the
    # very frame that completed the end of speech (input_ms=0: frame arithmetic, no clock).
    _check_calibrated(data, bot, transport_ms=40.0, input_ms=0.0)
    assert {r.transport for r in data.results} == {"websocket-slin"}
    assert {r.rate for r in data.results} == {8000}
    # On the way out, relative to the same bot dialled in slin16 on this same machine: the
    # resampler's blocks are gone, whatever the machine's speed.
    assert _median_response_ms(data) < _median_response_ms(slin16_run[0])


@contextlib.contextmanager
def _scripted_server_in_a_thread(reply_delay_s: float = REPLY_DELAY_S) -> Iterator[int]:
    """The scripted bot behind a real AudioSocket server, on its own loop and thread (the
    way a running server is targeted: ``run_bench`` runs its own event loop)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            start_audiosocket_server("127.0.0.1", 0, ScriptedBot(reply_delay_s))
        )
        port.append(cast(asyncio.Server, server).sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_voicebot_bench_targets_a_running_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings().replace("paths", data_dir=tmp_path / "var")
    with _scripted_server_in_a_thread() as port:
        code = run_bench(
            settings,
            calls=1,
            duration_s=8.0,
            ramp_s=0.0,
            transport="audiosocket",
            find_capacity=False,
            target=f"127.0.0.1:{port}",
            out_dir=tmp_path / "out",
            as_json=True,
        )
    result = json.loads(capsys.readouterr().out)
    run = result["run"]
    assert code == 0 and result["broken"] == []
    assert result["server"]["started_by_bench"] is False
    # the listening process is found by its port: here, this very test process
    assert result["server"]["pid"] == os.getpid()
    assert run["server"]["rss_peak_mb"] > 0
    response = run["latency_ms"]["response"]
    assert response["n"] >= 1
    # never faster than the bot answered (how much slower is the calibration tests' business:
    # the bot's own thread shares this machine with the bench)
    assert response["p50"] >= REPLY_DELAY_S * 1000 - 5
    # no records database where these settings point: the split is said to be missing
    assert run["records"].startswith("per-stage split unavailable: no call records database")
    assert run["turns"]["with_stages"] == 0
    assert not (tmp_path / "var").exists()
    assert "--target 127.0.0.1:" in result["command"]


def test_a_slow_server_is_a_finding_not_a_broken_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Engines slower than the run (Whisper on a slow CPU): every turn goes unanswered, the
    report says so, and the bench still exits with 0."""
    settings = Settings().replace("paths", data_dir=tmp_path / "var")
    with _scripted_server_in_a_thread(reply_delay_s=60.0) as port:
        code = run_bench(
            settings,
            calls=1,
            duration_s=6.0,
            ramp_s=0.0,
            transport="audiosocket",
            find_capacity=False,
            target=f"127.0.0.1:{port}",
            out_dir=tmp_path / "out",
            as_json=True,
        )
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert code == 0 and result["broken"] == [] and "broken" not in captured.err
    assert result["run"]["calls_placed"] == 1 and result["run"]["audio"]["frames"] > 0
    assert result["run"]["latency_ms"]["response"] is None
    assert any("no caller turn was answered" in note for note in result["notes"])
    assert "Broken run" not in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_a_run_where_no_call_connects_is_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # a port nothing listens on
    code = run_bench(
        Settings().replace("paths", data_dir=tmp_path / "var"),
        calls=1,
        duration_s=5.0,
        ramp_s=0.0,
        transport="audiosocket",
        find_capacity=False,
        target=f"127.0.0.1:{port}",
        out_dir=tmp_path / "out",
        as_json=True,
    )
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert code == 1
    assert len(result["broken"]) == 1
    assert result["broken"][0].startswith(
        f"no call could be connected: slot 0: cannot connect to 127.0.0.1:{port}"
    )
    assert "voicebot bench: broken run: no call could be connected" in captured.err
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "**Broken run**: no call could be connected" in report


def test_only_what_no_machine_speed_explains_breaks_a_run() -> None:
    slow = _summary((0.0, 0.0), 0.0, {}, 0)
    slow.update(calls_placed=2, errors=[], latency_ms={"response": None, "turn_gap": None})
    slow["audio"]["frames"] = 900
    assert broken_reasons(slow) == []  # nothing answered: a finding, not breakage
    mute = {**slow, "audio": {"frames": 0}}
    assert broken_reasons(mute) == ["2 call(s) connected but the server sent no audio"]
    unreachable = {**slow, "calls_placed": 0, "errors": ["slot 0: cannot connect"]}
    assert broken_reasons(unreachable) == ["no call could be connected: slot 0: cannot connect"]


# --- the real thing -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_voicebot_bench_runs_against_the_real_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`voicebot bench` end to end on `voicebot serve`, with the Vosk stand-in (streaming: its
    cost per turn is small and known, docs/benchmarks.md). What is checked is the report's
    shape and the relations its definitions imply, never the size of a latency figure nor a
    target's verdict: how fast this machine decodes is what the bench measures."""
    settings = Settings().replace(
        "asr", engine="vosk", model=str(standins.vosk_ko_model_dir()), warm_recognizers=2
    )
    out = tmp_path / "bench"
    code = run_bench(
        settings,
        calls=2,
        duration_s=10.0,
        ramp_s=1.0,
        transport="audiosocket",
        find_capacity=False,
        target=None,
        out_dir=out,
        as_json=True,
    )
    result = json.loads(capsys.readouterr().out)
    run = result["run"]
    assert code == 0 and result["broken"] == [], (result["broken"], run["errors"])
    assert result["mode"] == "run" and run["calls"] == 2 and run["calls_placed"] >= 2
    assert "vosk" in result["models"]["asr"].lower()
    assert not run["violations"], run["violations"]
    # every section, and every per-stage field whether measured or not
    assert set(run) >= {"turns", "latency_ms", "audio", "server", "bench", "records", "errors"}
    assert set(run["latency_ms"]) == {key for key, _, _ in STAGES}
    for key, stats in run["latency_ms"].items():
        if stats is not None:
            assert set(stats) == {"n", "p50", "p95", "max", "mean"}, key
            assert stats["n"] >= 1 and 0 <= stats["p50"] <= stats["p95"] <= stats["max"], key
    # turns and calls counted, and adding up
    turns = run["turns"]
    assert turns["measured"] == turns["speech"] + turns["barge_in"] + turns["dtmf"]
    assert 0 <= turns["unanswered"] <= turns["measured"]
    assert 0 <= turns["with_stages"] <= turns["measured"]
    assert sum(run["calls_ended_by"].values()) == run["calls_placed"]
    # the server greeted the callers (a cached prompt: nothing to decode)
    assert run["latency_ms"]["greeting"]["n"] >= 2
    # frames counted: the server's pacer sends one every 20 ms, however slowly it decodes
    audio = run["audio"]
    assert audio["frames"] > 0
    assert 0 <= audio["underruns"] + audio["client_underruns"] <= audio["frames"]
    # the figures there are obey their definitions, whatever their size
    latency = run["latency_ms"]
    if latency["endpoint_wait"] is not None:  # stream time: frames, not the machine's clock
        # the server's own end-of-turn waits (its log), which the replay applies
        logged = {w for waits in server_waits(out / "server.log").values() for w in waits}
        # (a p50 over an even number of turns lies between two of them: not always one)
        assert logged and min(logged) <= latency["endpoint_wait"]["p50"] <= max(logged)
        assert latency["endpoint_wait"]["max"] <= max(logged)
    if latency["response"] is not None:  # the same turns: the gap adds the endpoint wait
        assert latency["turn_gap"]["p50"] >= latency["response"]["p50"]
    # the per-stage split came from the server's own call records
    assert re.fullmatch(r"\d+ of \d+ answered turns matched in the call records", run["records"])
    assert result["server"]["started_by_bench"] and result["server"]["pid"]
    assert run["server"]["rss_peak_mb"] > 100 and run["server"]["cpu_percent_mean"] is not None
    # the event loop's thread is part of the process, and one thread uses one core at most
    loop_mean = run["server"]["loop_thread_cpu_percent_mean"]
    assert 0 < loop_mean <= run["server"]["cpu_percent_mean"] + 5
    assert run["server"]["loop_thread_cpu_percent_max"] <= 110
    assert "Its event loop's thread" in (out / "report.md").read_text(encoding="utf-8")
    assert [t["target"] for t in result["targets"]] == [t.label for t in TARGETS]
    assert all(t["met"] in (True, False, None) for t in result["targets"])
    assert result["machine"]["cores"] >= 1
    # the machine's speed beside the figures, before and after the run
    for when in ("before", "after"):
        speed = result["speed_reference"][when]
        assert speed["cold_seconds"] > 0 and speed["seconds"] > 0 and speed["rtf"] > 0, speed
    # the server's own end-of-turn decisions, counted from its log
    turn_ends = result["server"]["end_of_turn"]
    assert turn_ends["turns"] >= 1 and sum(turn_ends["why"].values()) == turn_ends["turns"]
    assert set(turn_ends["why"]) <= {
        "unfinished",
        "closed_answer",
        "complete",
        "complete_but_held",
        "fallen",
        "held",
        "default",
    }
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Response latency" in report and result["command"] in report
    assert "Speed reference before" in report and "turns ended by the server" in report
    for name in ("latency_stages.png", "latency_vs_calls.png", "cpu_memory.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["run"]["calls"] == 2
    # nothing went wrong inside the bot: a crash would be handed to a person and logged
    server_log = (out / "server.log").read_text(encoding="utf-8", errors="replace")
    assert " ERROR " not in server_log and "Traceback" not in server_log, server_log[-3000:]


def test_speech_helpers_agree_with_the_bench_clips(clips: dict[str, Clip]) -> None:
    # the bench's espeak audio is the same French speech the other tests use
    clip = clips["espeak:horaires"]
    reference = espeak_pcm(QUESTIONS["horaires"], "fr", words_per_minute=ESPEAK_WPM)
    assert b"".join(clip.frames)[: len(reference)] == reference


def test_the_watch_counts_the_main_thread_apart_from_the_others() -> None:
    """The server's event loop runs in its main thread: its CPU is read apart from the
    engines' threads (here this very process stands for the server)."""
    import threading
    import time

    from voicebot.tools.bench.watch import ServerWatch

    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    watch = ServerWatch(os.getpid())
    start = watch.loop_thread_seconds()
    assert start is not None
    burn(0.2)  # the main thread computes
    after_main = watch.loop_thread_seconds()
    assert after_main is not None and after_main - start >= 0.15
    other = threading.Thread(target=burn, args=(0.3,))
    other.start()
    other.join()  # the main thread waits, another computes
    after_other = watch.loop_thread_seconds()
    assert after_other is not None and after_other - after_main < 0.1
    assert watch.loop_thread_percent() is None  # the first reading: no interval yet
    burn(0.1)
    percent = watch.loop_thread_percent()
    assert percent is not None and 0 < percent <= 110


CHILD_AT_WORK = """
import sys, time
block = bytearray(200 * 2**20)
block[::4096] = b"x" * len(range(0, len(block), 4096))  # every page resident
end = time.process_time() + 0.6
while time.process_time() < end:
    pass
print("ready", flush=True)
sys.stdin.read()
"""


def test_the_watch_counts_the_servers_live_children() -> None:
    """The dialogue runs in a child of the server: its CPU and memory are the server's. The
    kernel's children_* times count only children that have ended, so a live child must be
    read on its own (here this test process stands for the server)."""
    import subprocess
    import sys

    from voicebot.tools.bench.watch import ServerWatch

    watch = ServerWatch(os.getpid())
    assert watch.process is not None
    rss_alone = watch.rss_mb()
    cpu_alone = watch.cpu_seconds(watch.process)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_AT_WORK], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        rss_with_child = watch.rss_mb()
        cpu_with_child = watch.cpu_seconds(watch.process)
    finally:
        child.communicate(b"")
    assert rss_alone is not None and rss_with_child is not None
    assert rss_with_child >= rss_alone + 150
    assert cpu_with_child - cpu_alone >= 0.5


def test_each_calls_first_spoken_turn_is_reported_apart_from_the_later_ones() -> None:
    data = RunData(calls=2, duration_s=10.0, ramp_s=2.0, transport="audiosocket", full_load_s=2.0)

    def turn(call_id: str, kind: str, start: float, at_s: float, response: float) -> Turn:
        made = dataclasses.replace(_turn(kind, start, start, start, start + 1), call_id=call_id)
        made.at_s, made.response_ms, made.asr_ms = at_s, response, response / 2
        return made

    data.turns = [
        turn("c1", "barge_in", 100.0, 1.0, 1500.0),  # c1's first, during the ramp-up
        turn("c1", "dtmf", 101.0, 3.0, 90.0),  # a key is never a spoken turn
        turn("c1", "speech", 105.0, 5.0, 200.0),
        turn("c2", "speech", 104.0, 4.0, 1300.0),  # c2's first, at full load
        turn("c2", "speech", 108.0, 8.0, 300.0),
    ]
    split = summarize(data, None)["turns_by_position"]
    assert split["opening"]["response"] == distribution([1500.0, 1300.0])
    assert split["opening"]["asr"] == distribution([750.0, 650.0])
    assert split["later"]["response"] == distribution([200.0, 300.0])
    lines = position_lines(summarize(data, None))
    assert "response p50/p95 1400/1490 ms" in lines[0] and "(n = 2)" in lines[0]

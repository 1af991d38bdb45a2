"""The recognizer settles in the caller's pause (``asr.settle_lead_ms``), through the real
call session in lockstep: the Vosk stand-in, Silero, the Rasa model and the voice. The
caller is a script at the media boundary; the only other addition is a recorder of what
the listener asks of the real recognizer, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.speech_helpers import french_prompt_pcm
from tests.test_session import run_call
from tests.test_turn_timeline import caller_texts
from voicebot.call.runtime import Runtime
from voicebot.call.session import SessionServices
from voicebot.core.audio import FRAME_BYTES, AudioFrame
from voicebot.core.config import AsrSettings
from voicebot.core.interfaces import AsrStream, Utterance
from voicebot.speech.asr_vosk import VoskAsr
from voicebot.speech.standins import vosk_ko_model_dir


class RecordingStream:
    def __init__(self, real: AsrStream, calls: list[str], settled: list[str | None]) -> None:
        self.real = real
        self.calls = calls
        self.settled = settled

    async def push(self, frame: AudioFrame) -> str | None:
        self.calls.append("push")
        return await self.real.push(frame)

    async def settle(self) -> str | None:
        self.calls.append("settle")
        text = await self.real.settle()
        self.settled.append(text)
        return text

    async def finalize(self) -> Utterance:
        self.calls.append("finalize")
        return await self.real.finalize()

    def close(self) -> None:
        self.real.close()


class RecordingAsr:
    """The real recognizer; what each call's listener asked of it, in order."""

    def __init__(self, real: VoskAsr) -> None:
        self.real = real
        self.name = real.name
        self.calls: list[str] = []
        self.settled: list[str | None] = []

    def start_stream(self, call_id: str) -> AsrStream:
        return RecordingStream(self.real.start_stream(call_id), self.calls, self.settled)


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def with_vosk(
    runtime: Runtime, executor: ThreadPoolExecutor, settle_lead_ms: int
) -> tuple[SessionServices, RecordingAsr]:
    """The call services on the Vosk stand-in, with the fixed end-of-turn silence
    (vad.end_silence_ms): the recognizer then settles settle_lead_ms before it."""
    settings = runtime.services.settings.replace("turn", enabled=False)
    settings = settings.replace("asr", settle_lead_ms=settle_lead_ms)
    asr_settings = dataclasses.replace(AsrSettings(), settle_lead_ms=settle_lead_ms)
    asr = RecordingAsr(VoskAsr.load(vosk_ko_model_dir(), asr_settings, executor))
    return dataclasses.replace(runtime.services, settings=settings, asr=asr), asr


def first_turn(calls: list[str]) -> list[str]:
    """What the listener asked for the first utterance, pushes run together."""
    end = calls.index("finalize")
    squeezed: list[str] = []
    for call in calls[: end + 1]:
        if not squeezed or call != "push" or squeezed[-1] != "push":
            squeezed.append(call)
    return squeezed


async def test_the_final_result_is_computed_in_the_pause(
    call_runtime: Runtime, executor: ThreadPoolExecutor
) -> None:
    """One sentence, then silence: the recognizer settles in the pause and nothing reaches
    it after that, so the end of the turn has nothing left to decode, and the caller's turn
    is the settled words. Without a lead the final result is computed at the end of the turn.
    (The words may differ from those of a final taken 450 ms of silence later: Vosk's
    minimum-Bayes-risk reading weighs the whole lattice, silence included.)"""
    sentence = french_prompt_pcm("agent-loginok")
    script: list[tuple[str, Any]] = [
        ("wait_bot", None),
        ("audio", sentence),
        ("wait_bot", None),
        ("hangup", None),
    ]
    for lead_ms in (450, 0):
        services, asr = with_vosk(call_runtime, executor, lead_ms)
        report, _ = await run_call(services, script)
        texts = caller_texts(report.turns)
        assert len(texts) == 1 and texts[0]
        if lead_ms:
            assert first_turn(asr.calls) == ["push", "settle", "finalize"]
            assert caller_texts([{"speaker": "caller", "text": asr.settled[0]}]) == texts
        else:
            assert first_turn(asr.calls) == ["push", "finalize"]
            assert "settle" not in asr.calls


async def test_a_caller_who_goes_on_after_the_settle_loses_nothing(
    call_runtime: Runtime, executor: ThreadPoolExecutor
) -> None:
    """« Veuillez composer votre numéro de conférence, … suivi du dièse. » with 0.4 s of
    silence after « conférence »: past the settle point (200 ms into the pause), short of
    the 650 ms that end the turn. The pause's held frames and the rest reach the recognizer,
    and the caller's turn is one utterance: the settled words, then the rest."""
    recording = french_prompt_pcm("conf-getconfno")
    cut = int(2.58 / 0.02) * FRAME_BYTES  # in the natural 160 ms pause after « conférence »
    script: list[tuple[str, Any]] = [
        ("wait_bot", None),
        ("audio", recording[:cut]),
        ("silence", 0.4),
        ("audio", recording[cut:]),
        ("wait_bot", None),
        ("hangup", None),
    ]
    services, asr = with_vosk(call_runtime, executor, 450)
    report, _ = await run_call(services, script)
    texts = [t["text"] for t in report.turns if t.get("speaker") == "caller" and t.get("text")]
    assert len(texts) == 1
    turn = first_turn(asr.calls)
    assert turn[:4] == ["push", "settle", "push", "settle"] and turn[-1] == "finalize"
    first_part = asr.settled[0]
    assert first_part and texts[0].startswith(first_part) and len(texts[0]) > len(first_part)

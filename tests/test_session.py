"""The call session on scripted timelines, through the real engines and the real Rasa model.

The caller is a script at the media boundary (the only fake); the session runs in lockstep
(one bot frame per caller frame, the caller's time waiting while the bot computes), so each
timeline is exact and fast. French recognition is judged on real recordings only.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from tests.phone_helpers import BrokenDialogue
from tests.speech_helpers import french_prompt_pcm
from voicebot.call.runtime import Runtime
from voicebot.call.session import FRAME_S, CallReport, CallSession, SessionServices
from voicebot.core.audio import FRAME_BYTES, SILENCE_FRAME, AudioFrame, to_frames
from voicebot.core.interfaces import (
    AudioIn,
    CallerActive,
    CallerHungUp,
    CallStarted,
    DtmfIn,
    TextIn,
    TransportEvent,
)
from voicebot.tools.asr_eval import builtin_corpus, transcribe

Step = tuple[str, Any]


class ScriptedCaller:
    """A caller following a script: ("wait_bot", None) waits for the bot to be quiet,
    ("audio", pcm), ("silence", seconds), ("dtmf", "0"), ("text", "…"), ("hangup", None),
    ("typing", seconds): silence on the line while the caller types (a CallerActive every
    0.5 s, as the softphone sends)."""

    name = "script"
    dialplan_continues = False

    def __init__(self, script: list[Step], tail_s: float = 30.0) -> None:
        self.script = script
        self.tail_s = tail_s
        self.bot_frames: list[bytes] = []
        self.ended = False
        self.flushes = 0
        self.session: CallSession | None = None
        self.sent_at: dict[str, int] = {}  # step label → bot frame index when it was sent

    async def _tick(self) -> None:
        assert self.session is not None
        await self.session.lockstep_ready()

    def _bot_quiet(self) -> bool:
        session = self.session
        return (
            session is not None and not session.bot_speaking and session.state.name == "LISTENING"
        )

    async def events(self) -> AsyncIterator[TransportEvent]:
        yield CallStarted(call_id="test-call", caller_number="0240419000")
        for kind, value in self.script:
            if self.ended:
                return
            self.sent_at[kind] = len(self.bot_frames)
            if kind == "wait_bot":  # until the bot has replied and gone quiet again
                start = len(self.bot_frames)
                quiet = 0
                while not self.ended:
                    await self._tick()
                    yield AudioIn(SILENCE_FRAME)
                    replied = any(voiced(f) for f in self.bot_frames[start:])
                    quiet = quiet + 1 if replied and self._bot_quiet() else 0
                    if quiet >= 10:
                        break
            elif kind == "audio":
                for frame in to_frames(value):
                    if self.ended:
                        return
                    await self._tick()
                    yield AudioIn(frame)
            elif kind == "silence":
                for _ in range(int(value / FRAME_S)):
                    if self.ended:
                        return
                    await self._tick()
                    yield AudioIn(SILENCE_FRAME)
            elif kind == "typing":
                for n in range(int(value / FRAME_S)):
                    if self.ended:
                        return
                    if n % 25 == 0:
                        yield CallerActive()
                    await self._tick()
                    yield AudioIn(SILENCE_FRAME)
            elif kind == "dtmf":
                yield DtmfIn(value)
            elif kind == "text":
                yield TextIn(value)
            elif kind == "hangup":
                yield CallerHungUp()
                return
        for _ in range(int(self.tail_s / FRAME_S)):
            if self.ended:
                return
            await self._tick()
            yield AudioIn(SILENCE_FRAME)
        yield CallerHungUp("fin du script")

    async def send(self, frame: AudioFrame) -> None:
        assert len(frame.pcm) == FRAME_BYTES
        self.bot_frames.append(frame.pcm)

    async def flush(self) -> None:
        self.flushes += 1

    async def end(self) -> None:
        self.ended = True


async def run_call(
    services: SessionServices, script: list[Step], tail_s: float = 30.0
) -> tuple[CallReport, ScriptedCaller]:
    caller = ScriptedCaller(script, tail_s)
    session = CallSession(services, caller, lockstep=True)
    caller.session = session
    report = await asyncio.wait_for(session.run(), timeout=120)
    pending = [t for t in session.tasks if not t.done()]
    assert not pending, f"tasks left running after the call: {pending}"
    return report, caller


def voiced(frame: bytes, threshold: int = 300) -> bool:
    return int(np.abs(np.frombuffer(frame, dtype="<i2")).max(initial=0)) > threshold


def bot_texts(report: CallReport) -> list[str]:
    return [t["text"] for t in report.turns if t.get("speaker") == "bot"]


def with_policy(services: SessionServices, **changes: Any) -> SessionServices:
    settings = services.settings.replace("policy", **changes)
    return dataclasses.replace(services, settings=settings)


async def test_greeting_comes_first_and_says_what_the_caller_must_know(
    call_runtime: Runtime,
) -> None:
    report, caller = await run_call(call_runtime.services, [("wait_bot", None), ("hangup", None)])
    greeting = bot_texts(report)[0]
    assert "automatique" in greeting
    assert "0" in greeting and "conseiller" in greeting
    assert "enregistré" in greeting  # says truthfully what is kept
    first_voice = next(i for i, f in enumerate(caller.bot_frames) if voiced(f))
    assert first_voice * FRAME_S < 0.5
    assert report.outcome == "abandoned"


async def test_real_french_goodbye_is_understood_and_ends_the_call(call_runtime: Runtime) -> None:
    report, caller = await run_call(
        call_runtime.services, [("wait_bot", None), ("audio", french_prompt_pcm("vm-goodbye"))]
    )
    caller_turns = [t for t in report.turns if t.get("speaker") == "caller"]
    assert "revoir" in caller_turns[0]["text"].lower()
    bot_turns = [t for t in report.turns if t.get("speaker") == "bot"]
    assert bot_turns[-1]["intent"] == "au_revoir"
    assert report.outcome == "resolved" and caller.ended
    assert report.channel_end == "hung_up_by_bot"
    timing = report.timings[0]
    assert timing["asr_ms"] > 0 and timing["nlu_ms"] > 0 and timing["response_ms"] > 0


async def test_a_question_gets_its_answer_then_anything_else(call_runtime: Runtime) -> None:
    report, _ = await run_call(
        call_runtime.services,
        [
            ("wait_bot", None),
            ("text", "je voudrais refaire ma carte d'identité"),
            ("wait_bot", None),
            ("hangup", None),
        ],
    )
    answer = [t for t in report.turns if t.get("speaker") == "bot"][1]
    assert answer["intent"] == "papiers_identite"
    assert "autre chose" in answer["text"]


async def test_dtmf_zero_hands_off_with_context(call_runtime: Runtime) -> None:
    report, caller = await run_call(
        call_runtime.services,
        [
            ("wait_bot", None),
            ("text", "c'est quand le ramassage des poubelles"),
            ("wait_bot", None),
            ("dtmf", "0"),
        ],
    )
    assert report.outcome == "transferred"
    assert report.handoff is not None and report.handoff.reason == "dtmf"
    assert report.channel_end == "queued"
    assert caller.ended  # the media session ended: the dialplan continues to the queue


# Real French prompts that make no sense to a city switchboard (Asterisk's own instructions).
NONSENSE_PROMPTS = (
    "agent-pass",
    "agent-user",
    "confbridge-pin-bad",
    "agent-incorrect",
    "vm-helpexit",
    "confbridge-pin",
    "tt-allbusy",
)


async def test_two_unintelligible_recordings_hand_off_without_dtmf(call_runtime: Runtime) -> None:
    # The trainers change the model: pick the prompts that the current model does not
    # understand as this ASR writes them (not by their reference transcripts: a word heard
    # differently can make sense to the model), then speak the recordings themselves.
    entries = {e.key: e for e in builtin_corpus().entries}
    dialogue = call_runtime.services.dialogue
    chosen = []
    for name in NONSENSE_PROMPTS:
        utterance, *_ = await transcribe(call_runtime.services.asr, entries[name])
        parsed = await dialogue.parse(utterance.text)  # type: ignore[attr-defined]
        if parsed["intent"] == "nlu_fallback":
            chosen.append(name)
    assert len(chosen) >= 2, "the model understands every nonsense prompt: widen the list"
    report, caller = await run_call(
        call_runtime.services,
        [
            ("wait_bot", None),
            ("audio", french_prompt_pcm(chosen[0])),
            ("wait_bot", None),
            ("audio", french_prompt_pcm(chosen[1])),
        ],
    )
    assert report.handoff is not None, report.turns
    assert report.handoff.reason == "incompréhension"
    assert len(report.handoff.last_utterances) >= 2
    assert report.outcome == "transferred" and caller.ended


async def test_emergency_gives_the_numbers_then_hands_off(call_runtime: Runtime) -> None:
    report, caller = await run_call(
        call_runtime.services,
        [("wait_bot", None), ("text", "au secours il y a le feu chez mon voisin")],
    )
    said = " ".join(bot_texts(report))
    for number in ("15", "17", "18", "112"):
        assert number in said
    assert report.handoff is not None and report.handoff.reason == "urgence"
    # the numbers were spoken before the media session ended
    assert sum(voiced(f) for f in caller.bot_frames[caller.sent_at["text"] :]) * FRAME_S > 3.0


async def test_barge_in_stops_the_greeting_at_once(call_runtime: Runtime) -> None:
    # The caller talks over the greeting from the very start: a real 10-second French prompt.
    prompt = french_prompt_pcm("dir-intro")
    report, caller = await run_call(
        call_runtime.services,
        [("silence", 1.0), ("audio", prompt), ("silence", 3.0), ("hangup", None)],
    )
    assert "interruption (barge-in)" in report.decisions
    caller_voiced = [False] * int(1.0 / FRAME_S) + [voiced(f.pcm) for f in to_frames(prompt)]
    speech_start = caller_voiced.index(True)
    bot_voiced = [voiced(f) for f in caller.bot_frames]
    assert any(bot_voiced[:speech_start]), "the greeting had started before the caller spoke"
    # Whenever both speak (the greeting, or an answer the bot started at one of the caller's
    # pauses: a full stop said with a falling voice), the bot falls silent within 0.8 s.
    overlap = [i for i, v in enumerate(caller_voiced[: len(bot_voiced)]) if v and bot_voiced[i]]
    assert overlap and overlap[0] == speech_start
    episodes = [[overlap[0]]]
    for i in overlap[1:]:
        if i - episodes[-1][-1] > int(0.3 / FRAME_S):
            episodes.append([])
        episodes[-1].append(i)
    assert all((e[-1] - e[0]) * FRAME_S <= 0.8 for e in episodes), episodes
    # the interruption's first words reached the ASR too (the barge-in carries its pre-roll)
    heard = " ".join(
        t["text"] for t in report.turns if t.get("speaker") == "caller" and t.get("text")
    )
    assert "bienvenue" in heard.lower(), report.turns


async def test_caller_hangs_up_mid_sentence(call_runtime: Runtime) -> None:
    report, caller = await run_call(call_runtime.services, [("silence", 2.0), ("hangup", None)])
    assert report.outcome == "abandoned"
    assert report.channel_end == "caller_hung_up"
    assert "raccroché par l'appelant" in report.decisions
    assert not caller.ended  # the bot did not need to end a line that is gone


@pytest.mark.parametrize(
    ("action", "answered", "ends_with"),
    [
        ("hangup", False, "hangup"),
        ("transfer", True, "transfer"),
        ("hangup_if_answered", True, "hangup"),
        ("hangup_if_answered", False, "transfer"),
    ],
)
async def test_silence_prompts_then_the_policy_decides_how_the_call_ends(
    call_runtime: Runtime, action: str, answered: bool, ends_with: str
) -> None:
    services = with_policy(
        call_runtime.services,
        silence_prompt_s=2.0,
        silence_prompts_before_end=2,
        silence_action=action,
    )
    question = [("text", "quels sont les horaires de la mairie de Doulon"), ("wait_bot", None)]
    script = [("wait_bot", None), *(question if answered else [])]
    report, caller = await run_call(services, script, tail_s=60)
    prompts = [t.get("prompt") for t in report.turns if t.get("speaker") == "bot"]
    assert prompts.count("silence_check") == 2
    assert caller.ended
    if ends_with == "hangup":  # the goodbye matches what happens: the line is hung up
        assert prompts[-1] == "silence_goodbye"
        assert report.channel_end == "hung_up_by_bot"
        assert report.outcome == ("resolved" if answered else "abandoned")
        assert report.handoff is None
    else:  # a silent line may be a caller who cannot speak: a person takes over
        assert prompts[-1] == "silence_transfer"
        assert report.channel_end == "queued"
        assert report.outcome == "transferred"
        assert report.handoff is not None and report.handoff.reason == "silence"


@pytest.mark.parametrize("typing", [True, False], ids=["typing", "silent"])
async def test_a_caller_who_types_is_not_asked_if_still_there(
    call_runtime: Runtime, typing: bool
) -> None:
    # The real policy (8 s): a trainer types a question for 10 s in the softphone's text box.
    services = call_runtime.services
    quiet_s = services.settings.policy.silence_prompt_s + 2.0
    report, _ = await run_call(
        services,
        [("wait_bot", None), ("typing" if typing else "silence", quiet_s), ("hangup", None)],
    )
    prompts = [t.get("prompt") for t in report.turns if t.get("speaker") == "bot"]
    if typing:
        assert "silence_check" not in prompts, report.decisions
    else:  # the same time without a sign of life: the bot asks « Êtes-vous toujours là ? »
        assert prompts.count("silence_check") == 1, report.decisions


async def test_low_asr_confidence_twice_hands_off(call_runtime: Runtime) -> None:
    services = with_policy(call_runtime.services, min_asr_confidence=0.999)
    merci = french_prompt_pcm("auth-thankyou")
    report, _ = await run_call(
        services, [("wait_bot", None), ("audio", merci), ("wait_bot", None), ("audio", merci)]
    )
    assert report.handoff is not None and report.handoff.reason == "confiance_asr"
    assert any(t.get("prompt") == "not_heard" for t in report.turns)
    # the "pardon ?" answer to the first unheard turn is timed like any other answer
    assert report.timings and report.timings[0]["response_ms"] > 0, report.timings


async def test_maximum_time_with_the_bot_hands_off(call_runtime: Runtime) -> None:
    services = with_policy(call_runtime.services, max_call_seconds=3)
    report, _ = await run_call(services, [("wait_bot", None)], tail_s=20)
    assert report.handoff is not None and report.handoff.reason == "durée"


async def test_internal_error_hands_the_caller_to_a_human(call_runtime: Runtime) -> None:
    services = dataclasses.replace(
        call_runtime.services, dialogue=BrokenDialogue(call_runtime.services.dialogue)
    )
    report, caller = await run_call(services, [("wait_bot", None), ("text", "bonjour")])
    assert report.handoff is not None and report.handoff.reason == "erreur"
    assert report.outcome == "error"
    assert caller.ended
    assert any(t.get("prompt") == "transfer_error" for t in report.turns)


async def test_other_calls_are_unaffected_by_a_failing_one(call_runtime: Runtime) -> None:
    broken = dataclasses.replace(
        call_runtime.services, dialogue=BrokenDialogue(call_runtime.services.dialogue)
    )
    results = await asyncio.gather(
        run_call(broken, [("wait_bot", None), ("text", "bonjour")]),
        run_call(call_runtime.services, [("wait_bot", None), ("text", "au revoir")]),
    )
    assert results[0][0].outcome == "error"
    assert results[1][0].outcome == "resolved"


@pytest.mark.parametrize("digit", ["0"])
async def test_dtmf_during_the_greeting_interrupts_it(call_runtime: Runtime, digit: str) -> None:
    report, caller = await run_call(call_runtime.services, [("silence", 0.5), ("dtmf", digit)])
    assert caller.flushes >= 1
    assert report.handoff is not None and report.handoff.reason == "dtmf"

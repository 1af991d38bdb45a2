"""Every caller turn, measured after the calls from what was sent and received: the server's
exact VAD decisions from a replay of each call (``replay_vad``), then the endpoint wait,
response latency, turn gap and barge-ins (``measure_turns``)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from voicebot.core.config import VadSettings
from voicebot.tools.bench.call import CallResult, Spoken, last_voice_before
from voicebot.tools.bench.clips import FRAME_S, Clip, as_the_server_hears, frame_index
from voicebot.tools.bench.script import REPLY_TIMEOUT_S


@dataclass
class Turn:
    """One caller turn measured from the caller's side (times in ms unless stated)."""

    call_id: str
    kind: str  # "speech", "barge_in" or "dtmf"
    clip: str
    active_calls: int
    at_s: float  # run clock of the decision (or the key press)
    wall_start: float  # epoch seconds: first frame of the utterance sent (or the key)
    wall_voice_end: float  # epoch seconds: end of the last voiced frame on a 20 ms line
    wall_decision: float  # epoch seconds: the VAD's decision frame sent (or the key)
    wall_first_voice: float | None = None
    endpoint_wait_ms: float | None = None
    response_ms: float | None = None
    turn_gap_ms: float | None = None
    barge_in: str | None = None  # "stopped", "not_needed" (bot already quiet), "ignored"
    barge_in_stop_ms: float | None = None
    asr_ms: float | None = None
    nlu_ms: float | None = None
    tts_ms: float | None = None

    @property
    def answered(self) -> bool:
        return self.wall_first_voice is not None


@dataclass(frozen=True)
class Heard:
    """What the server's VAD decided on one utterance.

    ``voice_end`` and ``decision`` count the server's own 20 ms frames (stream time, as the
    VAD does); ``decision_line`` and ``barge_in`` are the caller's line frames whose arrival
    made the VAD decide (later on a wideband line: the transport resamples in blocks)."""

    voice_end: int
    decision: int
    decision_line: int
    barge_in: int | None


def replay_vad(
    result: CallResult,
    clips: dict[str, Clip],
    vad: VadSettings,
    waits: Sequence[int] | None = None,
) -> list[Heard | None]:
    """The server's VAD decisions on each utterance of a call, by replaying the exact caller
    stream through the same VAD (and the transport's resampler on a wideband line). Silero's
    scores depend on all the audio before, so nothing short of the whole call gives the
    server's frame. The bot is taken as speaking during an utterance that started over it,
    until the barge-in. None for a key, or an utterance the VAD never closed.

    ``waits``: the server's end-of-turn waits for this call, in order (its log: the rule of
    voicebot.call.turn_end decides them from words and pitch the bench does not have); each
    is applied once its turn's pause reaches READ_AT_PAUSE_MS, as the server does. Without
    them every turn waits ``vad.end_silence_ms``."""
    from voicebot.call.turn_end import READ_AT_PAUSE_MS
    from voicebot.core.interfaces import BargeIn, SpeechEnded, SpeechStarted
    from voicebot.speech.vad import SileroVad

    frame_bytes = result.rate * 20 // 1000 * 2
    line = [bytes(frame_bytes)] * len(result.sent)
    owner = [-1] * len(line)
    for index, spoken in enumerate(result.spoken):
        if spoken.kind == "dtmf" or spoken.first_frame < 0:
            continue  # a key, or an utterance the call ended before
        frames = clips[spoken.clip].frames
        end = min(len(line), spoken.first_frame + len(frames))
        line[spoken.first_frame : end] = frames[: end - spoken.first_frame]
        owner[spoken.first_frame : end] = [index] * (end - spoken.first_frame)
    if result.noise is not None:
        line = [result.noise.over(frame, index) for index, frame in enumerate(line)]
    heard, source = as_the_server_hears(line, result.rate)
    detector = SileroVad(vad)
    ended: dict[int, tuple[int, int, int]] = {}
    barged: dict[int, int] = {}
    pending = list(waits or ())
    turn_wait: int | None = None
    for index, frame in enumerate(heard):
        current = owner[source[index]]
        over_bot = current >= 0 and result.spoken[current].over_bot and current not in barged
        event = detector.feed(frame, bot_speaking=over_bot)
        if isinstance(event, (SpeechStarted, BargeIn)):
            turn_wait = pending.pop(0) if pending else None
        if turn_wait is not None and detector.pause_ms == READ_AT_PAUSE_MS:
            detector.end_silence_ms = turn_wait
        if isinstance(event, BargeIn):
            barged[current] = source[index]
        elif isinstance(event, SpeechEnded):
            voice_end = frame_index(event.at_s)
            utterance = owner[source[max(0, min(len(source) - 1, voice_end))]]
            if utterance >= 0 and utterance not in ended:
                ended[utterance] = (voice_end, frame_index(event.decided_at_s), source[index])
    found: list[Heard | None] = []
    for index in range(len(result.spoken)):
        if index in ended:
            voice_end, decision, decision_line = ended[index]
            found.append(Heard(voice_end, decision, decision_line, barged.get(index)))
        elif index in barged:
            found.append(Heard(-1, -1, -1, barged[index]))
        else:
            found.append(None)
    return found


def measure_turns(
    results: Sequence[CallResult],
    clips: dict[str, Clip],
    vad: VadSettings,
    loop_t0: float,
    waits: dict[str, list[int]] | None = None,
) -> list[Turn]:
    """Every turn of these calls, with the server's exact VAD decisions (replay_vad; with
    ``waits``, the server's end-of-turn waits by call id)."""
    turns: list[Turn] = []
    for result in results:
        heard = replay_vad(result, clips, vad, (waits or {}).get(result.call_id))
        starts = [
            s.key_sent if s.kind == "dtmf" else _sent_at(result, s.first_frame)
            for s in result.spoken
        ]
        for index, spoken in enumerate(result.spoken):
            window_end = starts[index + 1] if index + 1 < len(starts) else float("inf")
            turn = _measure_turn(result, spoken, heard[index], starts[index], window_end, loop_t0)
            if turn is not None:
                turns.append(turn)
    return turns


def _sent_at(result: CallResult, frame: int) -> float | None:
    return result.sent[frame] if 0 <= frame < len(result.sent) else None


def _measure_turn(
    result: CallResult,
    spoken: Spoken,
    heard: Heard | None,
    start: float | None,
    window_end: float | None,
    loop_t0: float,
) -> Turn | None:
    if start is None:
        return None  # the call ended before the utterance was sent
    window_end = float("inf") if window_end is None else window_end
    turn = Turn(
        call_id=result.call_id,
        kind=spoken.kind,
        clip=spoken.clip,
        active_calls=spoken.active_calls,
        at_s=result.t0 + start - loop_t0,
        wall_start=result.wall0 + start,
        wall_voice_end=result.wall0 + start,
        wall_decision=result.wall0 + start,
    )
    if spoken.kind == "dtmf":
        decision = start
    else:
        if spoken.over_bot:
            _judge_barge_in(result, heard, turn)
        if heard is None or heard.decision < 0:
            if result.sent[-1] - start > REPLY_TIMEOUT_S:
                return turn  # the VAD never took it as a turn: unanswered
            return None  # cut off by the end of the call
        decision = result.sent[heard.decision_line]
        # The endpoint is stream time (frames, as the VAD counts). The turn gap starts at
        # the last voiced frame as a real 20 ms line would have sent it: counted back from
        # the frame that let the server decide, so that a late tick of this emulated caller
        # does not bend it, and a wideband transport's resampling delay is in it.
        turn.endpoint_wait_ms = (heard.decision - heard.voice_end) * FRAME_S * 1000
        turn.wall_voice_end = (
            result.wall0 + decision - (heard.decision_line - heard.voice_end) * FRAME_S
        )
        turn.wall_decision = result.wall0 + decision
    turn.at_s = result.t0 + decision - loop_t0
    first = bisect.bisect_right(result.times, decision)
    if spoken.kind == "dtmf" and spoken.over_bot:
        # a key over the bot: what still arrives of the old reply is not the answer
        while first < len(result.times) and result.voiced[first]:
            first += 1
    for index in range(first, len(result.times)):
        if result.times[index] >= window_end:
            break
        if result.voiced[index]:
            voice = result.times[index]
            turn.wall_first_voice = result.wall0 + voice
            turn.response_ms = (voice - decision) * 1000
            if spoken.kind != "dtmf":
                turn.turn_gap_ms = (turn.wall_first_voice - turn.wall_voice_end) * 1000
            break
    reply_window = min(window_end, result.duration_s) - decision
    if turn.wall_first_voice is None and reply_window < REPLY_TIMEOUT_S:
        return None  # cut off by the end of the call before the reply could come
    return turn


def _judge_barge_in(result: CallResult, heard: Heard | None, turn: Turn) -> None:
    """Did the bot stop when the caller talked over it, and how fast."""
    if heard is None or heard.barge_in is None:
        turn.barge_in = "ignored"  # the VAD did not take it as a barge-in: no turn
        return
    barge_at = result.sent[heard.barge_in]
    until = result.sent[heard.decision_line] if heard.decision_line >= 0 else result.sent[-1]
    last_bot = last_voice_before(result.times, result.voiced, until)
    if last_bot is None or last_bot + FRAME_S < barge_at - 0.1:
        turn.barge_in = "not_needed"  # it fell silent by itself before the barge-in
    else:
        turn.barge_in = "stopped"
        turn.barge_in_stop_ms = max(0.0, (last_bot + FRAME_S - barge_at) * 1000)

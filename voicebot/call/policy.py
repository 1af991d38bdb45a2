"""Turn policy: the conversation, one turn at a time, and when the bot stops it.

ASR final (or a key, or typed text) → dialogue → speech → decision. The rules (``policy``
section of the settings): a caller who is not heard twice, a call too long with the bot, a
silent line, a server shutdown, each ends in a decision carried out by ``Decisions``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from voicebot.call.context import CallContext, State
from voicebot.call.decisions import Decisions
from voicebot.call.listener import Listener
from voicebot.call.playout import Playout
from voicebot.call.report import TurnRecord, TurnTiming
from voicebot.core.interfaces import BotReply, Handoff, Utterance


class TurnPolicy:
    """Takes the turns of one call in order and decides what each one leads to."""

    def __init__(
        self, ctx: CallContext, listener: Listener, playout: Playout, decisions: Decisions
    ) -> None:
        self.ctx = ctx
        self.listener = listener
        self.playout = playout
        self.decisions = decisions
        self._low_confidence_turns = 0
        self._silence_prompts = 0

    async def converse(self) -> None:
        """From the greeting to the end of the call for the bot."""
        ctx = self.ctx
        reply = await ctx.services.dialogue.greet(ctx.call_id)
        if await self.deliver(reply, started=time.perf_counter(), timing=None):
            return
        while True:
            get_turn = asyncio.ensure_future(ctx.turns.get())
            hung_up = asyncio.ensure_future(ctx.hung_up.wait())
            done, _ = await asyncio.wait({get_turn, hung_up}, return_when=asyncio.FIRST_COMPLETED)
            if get_turn not in done:
                get_turn.cancel()
                self.decisions.mark_abandoned()
                return
            hung_up.cancel()
            kind, value, arrived = get_turn.result()
            if kind == "error":  # a part of the call failed off this path (the ASR)
                raise value
            if kind == "tick":
                if await self._on_tick():
                    return
                continue
            if kind == "shutdown":
                self.playout.stop()
                await self.decisions.handoff(
                    Handoff(
                        reason="arrêt", summary=str(value), last_utterances=ctx.book.caller_texts()
                    ),
                    prompt="transfer",
                )
                return
            self._silence_prompts = 0
            ended = await self.handle_turn(kind, value, arrived)
            ctx.done_thinking()
            if ended:
                return

    # ----- time: call duration and silence -----------------------------------------------

    async def _on_tick(self) -> bool:
        """Every 0.5 s of call time. Returns True when the call is over for the bot."""
        ctx = self.ctx
        policy = ctx.settings.policy
        if ctx.clock() >= policy.max_call_seconds:
            await self.decisions.handoff(
                Handoff(
                    reason="durée",
                    summary="Durée maximale d'un appel avec le robot atteinte.",
                    last_utterances=ctx.book.caller_texts(),
                ),
                prompt="max_duration",
            )
            return True
        quiet_for = ctx.clock() - ctx.quiet_since
        silent = not self._caller_busy() and quiet_for >= policy.silence_prompt_s
        return silent and await self._on_silence()

    def _caller_busy(self) -> bool:
        """True while the caller speaks, the bot computes a reply or still talks: the caller
        waiting for the bot is not a silence."""
        return self.playout.active or self.ctx.state is State.THINKING or self.listener.busy

    async def _on_silence(self) -> bool:
        self._silence_prompts += 1
        ctx = self.ctx
        policy = ctx.settings.policy
        if self._silence_prompts > policy.silence_prompts_before_end:
            answered = ctx.report.outcome == "resolved"
            action = policy.silence_action
            if action == "hangup" or (action == "hangup_if_answered" and answered):
                await self.playout.say_prompt("silence_goodbye")
                await self.decisions.hang_up("fin: silence prolongé")
                return True
            await self.decisions.handoff(
                Handoff(
                    reason="silence",
                    summary="L'appelant ne répond plus : ligne silencieuse.",
                    last_utterances=ctx.book.caller_texts(),
                ),
                prompt="silence_transfer",
            )
            return True
        ctx.report.decisions.append(f"relance silence {self._silence_prompts}")
        await self.playout.say_prompt("silence_check")
        return False

    # ----- turns ---------------------------------------------------------------------------

    async def handle_turn(self, kind: str, value: Any, arrived: float) -> bool:
        """One caller turn. Returns True when the call is over for the bot."""
        ctx = self.ctx
        dialogue = ctx.services.dialogue
        # the model about to read the turn (a live swap may come between: then the reply's
        # record says which model really answered)
        version: str | None = getattr(dialogue, "model_version", None)
        timing = TurnTiming()
        if kind == "utterance":
            utterance: Utterance = value
            timing.asr_ms = utterance.decode_s * 1000.0
            timing.endpoint_wait_ms = self.listener.endpoint_wait_ms
            await ctx.book.turn(TurnRecord.heard(utterance, version))
            if utterance.confidence < ctx.settings.policy.min_asr_confidence:
                return await self._not_heard(utterance, timing, arrived)
            self._low_confidence_turns = 0
            started = time.perf_counter()
            reply = await dialogue.turn(
                ctx.call_id, utterance.text, self.listener.understood_for(utterance.text)
            )
        elif kind == "dtmf":
            await ctx.book.turn(TurnRecord.key(value, version))
            self.playout.stop()
            started = time.perf_counter()
            reply = await dialogue.dtmf(ctx.call_id, value)
        else:
            text = str(value)
            await ctx.book.turn(TurnRecord.typed(text, version))
            started = time.perf_counter()
            reply = await dialogue.turn(ctx.call_id, text)
        timing.nlu_ms = (time.perf_counter() - started) * 1000.0
        return await self.deliver(
            reply, started=arrived, timing=timing, tts_from=time.perf_counter()
        )

    async def _not_heard(self, utterance: Utterance, timing: TurnTiming, arrived: float) -> bool:
        """Recognised with too little confidence: « pardon ? », or an operator the 2nd time."""
        ctx = self.ctx
        policy = ctx.settings.policy
        self._low_confidence_turns += 1
        ctx.report.decisions.append(
            f"confiance ASR faible ({utterance.confidence:.2f} < {policy.min_asr_confidence})"
        )
        if self._low_confidence_turns >= policy.max_low_confidence_turns:
            await self.decisions.handoff(
                Handoff(
                    reason="confiance_asr",
                    summary="La reconnaissance vocale n'a pas compris l'appelant à deux reprises.",
                    last_utterances=ctx.book.caller_texts(),
                ),
                prompt="transfer",
            )
            return True
        tts_from = time.perf_counter()
        first_frame = await self.playout.say_prompt("not_heard")
        self._close_timing(timing, arrived, tts_from, first_frame)
        return False

    async def deliver(
        self,
        reply: BotReply,
        started: float,
        timing: TurnTiming | None,
        tts_from: float | None = None,
    ) -> bool:
        """Speak a reply, then act on its decision. Returns True when the call is over."""
        ctx = self.ctx
        await ctx.book.turn(TurnRecord.reply(reply))
        first_frame = await self.playout.speak(reply.texts)
        if timing is not None:
            self._close_timing(timing, started, tts_from or started, first_frame)
        if reply.handoff is not None:
            await self.decisions.handoff(reply.handoff, prompt=None)
            return True
        if reply.end_call:
            ctx.report.outcome = "resolved"
            await self.decisions.hang_up("fin: au revoir")
            return True
        if reply.intent not in (None, "nlu_fallback"):
            ctx.report.outcome = "resolved"  # answered at least once; a later hangup keeps it
        ctx.set_state(State.LISTENING)
        return False

    def _close_timing(
        self, timing: TurnTiming, started: float, tts_from: float, first_frame: float | None
    ) -> None:
        """Every caller turn that gets an answer is timed, a "pardon ?" included."""
        if first_frame is not None:
            timing.response_ms = (first_frame - started) * 1000.0
            timing.tts_first_ms = (first_frame - tts_from) * 1000.0
        self.ctx.book.timing(timing)

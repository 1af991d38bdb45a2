"""How a call ends: every end is a decision of the bot that Asterisk carries out.

Over Asterisk, the decision (hang up, or queue with context) reaches the caller's channel
through ``CallControl`` (AMI) before the media session ends; the dialplan carries it out. If
it cannot be delivered, the dialplan queues the caller: the fail-safe is always a person.
Without Asterisk (softphone, simulations), the end of the media is the end of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from voicebot.call.context import CallContext, State
from voicebot.call.playout import Playout
from voicebot.core.interfaces import Handoff

# Without a decision on the caller's channel, the dialplan (deploy/asterisk/extensions.conf)
# tells a bot that took the call from a host that failed by the media session's length: more
# than 3 s by EPOCH, which counts whole seconds. 4 s of call time is always more than that.
TAKEN_SESSION_S = 4.0


class Decisions:
    """Hand-off, hang-up, the caller's own hang-up, and the end of the media session."""

    def __init__(self, ctx: CallContext, playout: Playout) -> None:
        self.ctx = ctx
        self.playout = playout

    async def handoff(self, handoff: Handoff, prompt: str | None) -> None:
        """Hand the caller to a human: context on the channel, then end the media session."""
        ctx, report = self.ctx, self.ctx.report
        ctx.set_state(State.HANDOFF)
        report.handoff = handoff
        report.outcome = "transferred" if handoff.reason != "erreur" else "error"
        report.decisions.append(f"transfert: {handoff.reason}")
        ctx.log.info("handoff to an operator: %s", handoff.reason)
        if prompt is not None:
            with contextlib.suppress(Exception):
                await self.playout.say_prompt(prompt)
        await self.playout.wait_spoken()
        delivered = False
        control = ctx.asterisk_control()
        if control is not None:
            delivered = await self._carry_out(control.handoff(ctx.call_id, ctx.channel, handoff))
        report.context_delivered = delivered if control is not None else None
        if control is not None and not delivered:
            report.decisions.append("contexte non transmis (AMI indisponible)")
        ctx.book.publish("handoff", **handoff.as_dict(), context_delivered=delivered)
        report.channel_end = "queued"
        if not delivered:
            await self._outlast_a_failed_connection()
        await self.end_media()

    async def hang_up(self, decision: str) -> None:
        """The call ends here for the caller: once the goodbye is spoken, Asterisk hangs up.

        Over Asterisk the decision must reach the dialplan through AMI before the media ends;
        if it cannot, the dialplan queues the caller (the fail-safe), and the record says so."""
        ctx, report = self.ctx, self.ctx.report
        report.decisions.append(decision)
        await self.playout.wait_spoken()
        if ctx.hung_up.is_set():
            self.mark_abandoned()
            return
        control = ctx.asterisk_control()
        if not ctx.transport.dialplan_continues:
            report.channel_end = "hung_up_by_bot"  # the end of the media ends the call
        elif control is not None and await self._carry_out(
            control.hang_up(ctx.call_id, ctx.channel)
        ):
            report.channel_end = "hung_up_by_bot"
        else:
            ctx.log.warning("hang-up not delivered to Asterisk: the caller goes to the queue")
            await self.handoff(
                Handoff(
                    reason="fin_non_transmise",
                    summary=(
                        "Le robot avait terminé l'appel mais n'a pas pu demander à Asterisk "
                        "de raccrocher (AMI indisponible) : l'appelant arrive dans la file."
                    ),
                    intent=ctx.book.last_intent(),
                    last_utterances=ctx.book.caller_texts(),
                ),
                prompt=None,
            )
            return
        ctx.set_state(State.ENDING)
        ctx.book.publish("hangup", decision=decision)
        await self.end_media()

    async def fail_to_human(self, exc: BaseException) -> None:
        """Any exception inside a call ends in a handoff with reason "erreur"."""
        handoff = Handoff(
            reason="erreur",
            summary=f"Incident technique pendant l'appel ({type(exc).__name__}).",
            last_utterances=self.ctx.book.caller_texts(),
        )
        self.playout.stop()
        try:
            await asyncio.wait_for(self.handoff(handoff, prompt="transfer_error"), timeout=10.0)
        except Exception:
            self.ctx.log.exception("handoff after an error failed; ending the media session")
            with contextlib.suppress(Exception):
                await self.end_media()

    def mark_abandoned(self) -> None:
        report = self.ctx.report
        if report.outcome != "resolved":
            report.outcome = "abandoned"
        report.channel_end = "caller_hung_up"
        report.decisions.append("raccroché par l'appelant")

    async def end_media(self) -> None:
        self.ctx.set_state(State.ENDING)
        if not self.ctx.hung_up.is_set():
            await self.ctx.transport.end()

    async def learn_caller_number(self) -> None:
        """AudioSocket carries no number: AMI knows it (off the greeting's path)."""
        ctx = self.ctx
        control = ctx.asterisk_control()
        if control is None:
            return
        try:
            number = await asyncio.wait_for(control.caller_number(ctx.call_id), timeout=5.0)
        except Exception:
            ctx.log.warning("caller number unavailable from AMI")
            return
        if number is not None:
            await ctx.book.record("set_caller", ctx.call_id, number)

    async def _outlast_a_failed_connection(self) -> None:
        """Keep an undecided media session up to TAKEN_SESSION_S of call time: ended sooner
        (the caller pressed 0 during the greeting, AMI down), the dialplan would take it for
        a host that never answered and offer the caller to the next one, greeting and all."""
        ctx = self.ctx
        if not ctx.transport.dialplan_continues:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TAKEN_SESSION_S  # bounded in real time, whatever the clock
        while not ctx.hung_up.is_set() and (remaining := TAKEN_SESSION_S - ctx.clock()) > 0:
            if loop.time() >= deadline:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ctx.hung_up.wait(), min(remaining, 0.1))

    async def _carry_out(self, decision: Awaitable[bool]) -> bool:
        """Await a CallControl decision, bounded: a slow AMI must not hold the caller."""
        try:
            return await asyncio.wait_for(decision, timeout=3.0)
        except Exception:
            self.ctx.log.warning("AMI decision failed: the caller reaches the queue")
            return False

"""``python -m voicebot.tools.dialogue_speed``: what the dialogue (Rasa) costs per turn, and
how long it keeps the calls' audio loop waiting for the GIL.

With ``dialogue.own_process`` false, the server runs Rasa on a thread of its own, in the
process whose event loop paces every call's audio, one frame every 20 ms
(voicebot/call/playout.py). Rasa's NLU, policies,
actions and tracker store are Python: while they run, the loop gets the GIL back only at the
interpreter's switch interval, or later when a C call (JSON encoding, TensorFlow) holds it.
In the bench's twelve-call runs of 2026-12-03 afternoon, all 8 late audio frames of the
fastest run fell while some call was in its dialogue stage, and 9-63 of 23-87 in the others
(docs/benchmarks.md).

Measured through the same ``RasaDialogue`` methods as a call uses, from an asyncio loop as
the server does, on the bench callers' sentences (voicebot/tools/bench/script.py) with
their trackers kept as long as a bench call's (``--turns-per-call``):

- **CPU per operation**: the process's CPU time divided by the operations, Rasa's thread,
  TensorFlow's and the loop's hand-offs included (mean of ``--seconds`` of operations);
  with ``--own-process``, Rasa runs in its own process as the server runs it by default
  (voicebot.dialogue.process) and this is what is left in the calls' process: the requests
  and answers through the pipe;
- **beside it** (voicebot/tools/gil_probe.py): a thread that sleeps 1 ms in a loop, its
  wake-ups per second and its longest gap, against the same thread beside an idle loop.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from voicebot.core.config import load_settings
from voicebot.tools.bench.script import QUESTIONS, REAL_PROMPTS
from voicebot.tools.gil_probe import Beside, beside

SENTENCES = (*QUESTIONS.values(), *REAL_PROMPTS.values())


@dataclass(frozen=True)
class Cost:
    """One kind of dialogue operation, measured."""

    name: str
    operations: int
    cpu_ms: float  # per operation
    wall_ms: float  # per operation
    beside: Beside


class Caller:
    """Turns of bench-like calls: the sentences in turn, a new call every ``turns`` turns
    (the finished call's conversation dropped, as the server does)."""

    def __init__(self, dialogue: Any, loop: asyncio.AbstractEventLoop, turns: int) -> None:
        self.dialogue = dialogue
        self.loop = loop
        self.turns = turns
        self.sentences = itertools.cycle(SENTENCES)
        self.calls = itertools.count()
        self.call_id = ""
        self.done = turns

    def _next_call_id(self) -> str:
        if self.done >= self.turns:
            if self.call_id:
                self.loop.run_until_complete(self.dialogue.end(self.call_id))
            self.call_id = f"dialogue-speed-{next(self.calls)}"
            self.done = 0
        self.done += 1
        return self.call_id

    def understand(self) -> None:
        self.loop.run_until_complete(self.dialogue.understand(next(self.sentences)))

    def turn_on_reading(self) -> None:
        text = next(self.sentences)
        read = self.loop.run_until_complete(self.dialogue.understand(text))
        call_id = self._next_call_id()
        self.loop.run_until_complete(self.dialogue.turn(call_id, text, read))

    def turn(self) -> None:
        call_id = self._next_call_id()
        self.loop.run_until_complete(self.dialogue.turn(call_id, next(self.sentences)))

    def dtmf(self) -> None:
        call_id = self._next_call_id()
        self.loop.run_until_complete(self.dialogue.dtmf(call_id, "1"))

    def close(self) -> None:
        if self.call_id:
            self.loop.run_until_complete(self.dialogue.end(self.call_id))


def measure(name: str, operation: Callable[[], None], seconds: float) -> Cost:
    """Run ``operation`` for ``seconds`` with the sleeper beside it."""
    count = 0

    def counted() -> None:
        nonlocal count
        operation()
        count += 1

    cpu, wall = time.process_time(), time.perf_counter()
    seen = beside(counted, seconds)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Cost(name, count, cpu * 1000 / count, wall * 1000 / count, seen)


def measure_dialogue(dialogue: Any, seconds: float, turns_per_call: int) -> list[Cost]:
    """Every kind of operation a call makes, measured one after the other. The turn on a
    reading also reads (the reading a pause makes, then the turn that reuses it): its cost
    less the reading's is the policies', actions' and tracker's."""
    loop = asyncio.new_event_loop()
    caller = Caller(dialogue, loop, turns_per_call)
    try:
        kinds = {
            "idle loop (10 ms sleeps)": lambda: loop.run_until_complete(asyncio.sleep(0.01)),
            "NLU reading at a pause (understand)": caller.understand,
            "reading + turn on it (understand, turn)": caller.turn_on_reading,
            "turn with its own parse (turn)": caller.turn,
            "DTMF turn (dtmf)": caller.dtmf,
        }
        for operation in kinds.values():
            operation()  # warm-up: first-run allocations, TensorFlow's first calls
        return [measure(name, operation, seconds) for name, operation in kinds.items()]
    finally:
        caller.close()
        loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measure")
    parser.add_argument(
        "--turns-per-call", type=int, default=8, help="turns before a call's tracker is dropped"
    )
    parser.add_argument(
        "--own-process",
        action="store_true",
        help="Rasa in a process of its own, as `voicebot serve` runs it by default",
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    dialogue: Any
    if args.own_process:
        from voicebot.dialogue.process import DialogueProcess

        dialogue = DialogueProcess.start(settings, "WARNING")
        dialogue.wait_ready()
        where = "in its own process; CPU below: the calls' process's share"
    else:
        from voicebot.dialogue.agent import RasaDialogue

        dialogue = RasaDialogue.load(settings)
        where = "in this process"
    print(f"dialogue: Rasa model {dialogue.model_version}, {where}")
    for cost in measure_dialogue(dialogue, args.seconds, args.turns_per_call):
        print(
            f"{cost.name}: {cost.cpu_ms:.1f} ms of CPU, {cost.wall_ms:.1f} ms per "
            f"operation ({cost.operations}); sleeper beside it: "
            f"{cost.beside.wake_ups_per_s:.0f} wake-ups/s, longest gap "
            f"{cost.beside.longest_gap_ms:.1f} ms"
        )
    close = getattr(dialogue, "close", None)
    if close is not None:
        close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

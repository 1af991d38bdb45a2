"""Benchmark of the dialogue brain: model load time and per-turn latency.

    .venv/bin/python scripts/bench_nlu.py [--turns 300]

Prints the import and load times of the Rasa agent and the latency of full dialogue turns
(NLU + rules + in-process action + knowledge base), median and p95. Targets: load <= 8 s,
turn p95 <= 25 ms. A benchmark, not a test: the figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import numpy as np

os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# A realistic mix of caller turns, several calls long.
CONVERSATION = [
    "bonjour",
    "quels sont les horaires de la mairie",
    "doulon",
    "oui j'ai une autre question",
    "comment refaire ma carte d'identité",
    "pardon vous pouvez répéter",
    "et la déchetterie de la prairie de mauves elle ouvre quand",
    "merci beaucoup",
    "non merci au revoir",
]


async def run_turns(dialogue: object, turns: int) -> list[float]:
    from voicebot.dialogue.agent import RasaDialogue

    assert isinstance(dialogue, RasaDialogue)
    latencies: list[float] = []
    call = 0
    while len(latencies) < turns:
        call_id = f"bench-{call}"
        for text in CONVERSATION:
            started = time.perf_counter()
            await dialogue.turn(call_id, text)
            latencies.append((time.perf_counter() - started) * 1000.0)
        await dialogue.end(call_id)
        call += 1
    return latencies[:turns]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()

    started = time.perf_counter()
    from voicebot.dialogue.rasa_runtime import preload_rasa, quiet_rasa

    preload_rasa()  # timed here: RasaDialogue.load would import it
    from voicebot.core.config import load_settings
    from voicebot.dialogue.agent import RasaDialogue

    quiet_rasa()

    imported = time.perf_counter() - started
    settings = load_settings()
    started = time.perf_counter()
    dialogue = RasaDialogue.load(settings)
    loaded = time.perf_counter() - started

    asyncio.run(run_turns(dialogue, len(CONVERSATION)))  # warm-up: first TF calls are slow
    latencies = asyncio.run(run_turns(dialogue, args.turns))
    median = statistics.median(latencies)
    p95 = float(np.percentile(latencies, 95, method="nearest"))
    print(f"import (rasa, tensorflow): {imported:.2f} s")
    print(f"model load (RasaDialogue.load): {loaded:.2f} s   target <= 8 s")
    print(
        f"turns: {len(latencies)}   median {median:.1f} ms   p95 {p95:.1f} ms   "
        f"max {max(latencies):.1f} ms   target p95 <= 25 ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Calibrate the NLU fallback threshold on the test sets (every nlu/tests/*.yml).

    .venv/bin/python scripts/calibrate_fallback.py

For each candidate threshold, prints what the FallbackClassifier would decide on the
test sentences: the share answered right, the share of in-scope sentences sent to
the fallback (the bot asks to rephrase), and the share of off-topic sentences kept away
from a wrong answer (hors_sujet or fallback). Then it suggests the threshold with the most
right decisions (ties: the highest, the
cautious choice for sentences unlike any seen). Put it in nlu/config.yml (FallbackClassifier) and
retrain. The test sets must never be trained on, or these figures mean nothing.
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FALLBACK = "nlu_fallback"
OFF_TOPIC = "hors_sujet"


async def raw_predictions(agent: object, texts: list[str]) -> list[tuple[str, float]]:
    """Top intent and confidence before the FallbackClassifier replaced it."""
    predictions = []
    for text in texts:
        parsed = await agent.parse_message(text)  # type: ignore[attr-defined]
        ranking = [r for r in parsed.get("intent_ranking") or [] if r["name"] != FALLBACK]
        top = ranking[0] if ranking else {"name": FALLBACK, "confidence": 0.0}
        predictions.append((str(top["name"]), float(top["confidence"])))
    return predictions


def decide(gold: str, predicted: str, confidence: float, threshold: float) -> tuple[bool, bool]:
    """(right decision, sent to fallback) for one sentence at one threshold."""
    fallback = confidence < threshold
    if gold == OFF_TOPIC:
        return (fallback or predicted == OFF_TOPIC), fallback
    return (not fallback and predicted == gold), fallback


def main() -> int:
    from voicebot.core.config import load_settings
    from voicebot.dialogue.agent import load_agent
    from voicebot.dialogue.nlu_eval import load_test_sets

    settings = load_settings()
    # all the test sets: the held-out set alone had 30 off-topic sentences and 9-10 per intent
    examples = [(e.text, e.intent) for e in load_test_sets(settings.paths.nlu_dir)]
    agent = load_agent(settings)
    predictions = asyncio.run(raw_predictions(agent, [text for text, _ in examples]))
    in_scope = [i for i, (_, gold) in enumerate(examples) if gold != OFF_TOPIC]
    off_topic = [i for i, (_, gold) in enumerate(examples) if gold == OFF_TOPIC]
    print(f"test sets: {len(examples)} sentences ({len(off_topic)} off-topic)")
    print("threshold  right  in-scope->fallback  off-topic kept away")
    best: tuple[int, float] = (-1, 0.0)
    for step in range(20, 86, 5):
        threshold = step / 100
        decisions = [
            decide(gold, *predictions[i], threshold) for i, (_, gold) in enumerate(examples)
        ]
        right = sum(ok for ok, _ in decisions)
        fallback_in_scope = sum(decisions[i][1] for i in in_scope)
        kept_away = sum(decisions[i][0] for i in off_topic)
        print(
            f"   {threshold:.2f}    {right / len(examples):6.1%}      "
            f"{fallback_in_scope / max(1, len(in_scope)):6.1%}            "
            f"{kept_away / max(1, len(off_topic)):6.1%}"
        )
        if right >= best[0]:
            best = (right, threshold)
    print(f"suggested threshold: {best[1]:.2f} ({best[0]}/{len(examples)} right)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

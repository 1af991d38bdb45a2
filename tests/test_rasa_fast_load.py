"""The fast load of a Rasa model (voicebot.dialogue.rasa_runtime.install_fast_model_load)
predicts exactly what Rasa's own load predicts: the same intents, the same confidences, the
same ranking and entities, on every sentence of the test sets. The real trained model, loaded
both ways in this process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voicebot.core.config import PROJECT_ROOT, Settings
from voicebot.dialogue.agent import RasaDialogue, load_agent, model_path
from voicebot.dialogue.nlu_eval import load_test_sets

pytestmark = pytest.mark.slow


def parses(agent: Any, texts: list[str]) -> list[dict[str, Any]]:
    async def parse_all() -> list[dict[str, Any]]:
        return [await agent.parse_message(text) for text in texts]

    return asyncio.run(parse_all())


def decision(parse_data: dict[str, Any]) -> tuple[Any, ...]:
    return (
        parse_data["intent"]["name"],
        round(parse_data["intent"]["confidence"], 5),
        [(r["name"], round(r["confidence"], 5)) for r in parse_data["intent_ranking"]],
        [(e["entity"], e["value"], e["start"], e["end"]) for e in parse_data["entities"]],
    )


def test_the_fast_load_predicts_what_rasas_own_load_predicts(
    rasa_dialogue: RasaDialogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rasa.core.agent import Agent
    from rasa.utils.tensorflow.models import RasaModel

    settings = Settings()
    texts = [example.text for example in load_test_sets(PROJECT_ROOT / "nlu")]
    fast = load_agent(settings)  # installs the fast load (rasa_dialogue did already)
    fast_load = RasaModel.load.__func__  # type: ignore[attr-defined]
    assert getattr(fast_load, "fast_load", False), "the fast load is not installed"

    monkeypatch.setattr(RasaModel, "load", classmethod(fast_load.rasa_load))
    rasas_own = Agent.load(str(model_path(settings)))

    assert len(texts) > 500
    assert [decision(p) for p in parses(fast, texts)] == [
        decision(p) for p in parses(rasas_own, texts)
    ]

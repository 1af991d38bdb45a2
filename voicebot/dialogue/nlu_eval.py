"""Evaluating a trained model on the test sets (``voicebot evaluate``, the training gate).

Every sentence of ``nlu/tests/*.yml`` is parsed by the model as written (clean) and as a
speech recogniser would write it (noisy: voicebot.dialogue.asr_noise); the figures come
from voicebot.dialogue.evaluation. Test sentences are never trained on.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebot.core.config import Settings
from voicebot.core.errors import NluDataError
from voicebot.dialogue.agent import clean_text, load_agent
from voicebot.dialogue.asr_noise import DEFAULT_SEED, asr_noisy
from voicebot.dialogue.evaluation import FALLBACK, Prediction, Scores, score
from voicebot.dialogue.gate import Figures
from voicebot.dialogue.model_store import ModelVersion, read_version


@dataclass(frozen=True)
class LabelledSentence:
    test_set: str  # the file's name without .yml
    text: str
    intent: str


@dataclass(frozen=True)
class ModelEvaluation:
    model: Path
    version: ModelVersion
    clean: Scores
    noisy: Scores
    seconds: float

    def figures(self) -> Figures:
        return Figures(
            clean_accuracy=self.clean.accuracy,
            noisy_accuracy=self.noisy.accuracy,
            clean_f1={k: v.f1 for k, v in self.clean.per_intent.items()},
            noisy_f1={k: v.f1 for k, v in self.noisy.per_intent.items()},
        )


def evaluation_files(nlu_dir: Path) -> list[Path]:
    folder = nlu_dir / "tests"
    files = sorted(p for p in folder.glob("*.yml") if p.is_file())
    if not files:
        raise NluDataError(f"aucun jeu de test : {folder} ne contient aucun fichier .yml")
    return files


def load_examples(path: Path) -> list[tuple[str, str]]:
    """(text, intent) pairs of a Rasa NLU file, entity markup removed. Raises NluDataError."""
    from voicebot.dialogue.rasa_runtime import quiet_rasa

    quiet_rasa()
    from rasa.shared.nlu.training_data.loading import load_data

    try:
        data = load_data(str(path))
    except Exception as exc:  # Rasa raises its own kinds for bad YAML and bad structure
        raise NluDataError(f"{path} : fichier illisible ({exc})") from None
    return [(str(m.get("text")), str(m.get("intent"))) for m in data.intent_examples]


def load_test_sets(nlu_dir: Path) -> list[LabelledSentence]:
    examples = [
        LabelledSentence(path.stem, text, intent)
        for path in evaluation_files(nlu_dir)
        for text, intent in load_examples(path)
    ]
    if not examples:
        raise NluDataError(f"les jeux de test de {nlu_dir / 'tests'} ne contiennent aucune phrase")
    return examples


def prediction(parse_data: dict[str, Any], example: LabelledSentence, text: str) -> Prediction:
    """A Prediction from Rasa's parse result (the raw top intent skips nlu_fallback)."""
    intent = parse_data.get("intent") or {}
    ranking = [r for r in parse_data.get("intent_ranking") or [] if r.get("name") != FALLBACK]
    top: dict[str, Any] = ranking[0] if ranking else {"name": FALLBACK, "confidence": 0.0}
    return Prediction(
        text=text,
        expected=example.intent,
        predicted=str(intent.get("name") or FALLBACK),
        top_intent=str(top.get("name")),
        confidence=float(top.get("confidence") or 0.0),
        test_set=example.test_set,
    )


async def predict(
    agent: Any, examples: list[LabelledSentence], noisy: bool, seed: int
) -> list[Prediction]:
    predictions = []
    for example in examples:
        text = asr_noisy(example.text, seed) if noisy else example.text
        parsed = await agent.parse_message(clean_text(text))
        predictions.append(prediction(parsed, example, text))
    return predictions


async def _clean_and_noisy(
    agent: Any, examples: list[LabelledSentence], seed: int
) -> tuple[list[Prediction], list[Prediction]]:
    return (
        await predict(agent, examples, noisy=False, seed=seed),
        await predict(agent, examples, noisy=True, seed=seed),
    )


def evaluate_model(
    settings: Settings,
    model: Path,
    examples: list[LabelledSentence] | None = None,
    seed: int = DEFAULT_SEED,
) -> ModelEvaluation:
    """Load ``model`` and score it on the test sets, clean and noisy (blocking: seconds)."""
    started = time.perf_counter()
    if examples is None:
        examples = load_test_sets(settings.paths.nlu_dir)
    agent = load_agent(settings, model=model)

    clean, noisy = asyncio.run(_clean_and_noisy(agent, examples, seed))
    del agent
    gc.collect()  # two models in a row (the gate): free the first before the second loads
    return ModelEvaluation(
        model=model,
        version=read_version(model),
        clean=score(clean),
        noisy=score(noisy),
        seconds=time.perf_counter() - started,
    )

"""The evaluation's figures, from predictions: plain data in, plain data out (no Rasa).

A ``Prediction`` is one test sentence: its expected intent, the model's final decision
(``nlu_fallback`` below the model's threshold) and the raw top intent with its confidence
(before the FallbackClassifier, for the threshold curve).

Rules, the same as tests/test_nlu.py's:

- an off-topic sentence (``hors_sujet``) is handled right when it ends in ``hors_sujet``
  or in the fallback (the bot asks to rephrase, never answers it): for the figures, such
  a fallback counts as ``hors_sujet``;
- any other fallback is a miss: the caller's valid request was not answered.

The threshold curve replays the fallback at each threshold on the raw top intent: a
sentence is kept (answered) when its confidence reaches the threshold, otherwise handed
to a person; it gives the accuracy of the kept answers and the share handed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FALLBACK = "nlu_fallback"
OFF_TOPIC = "hors_sujet"
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(13))  # 0.30 .. 0.90


@dataclass(frozen=True)
class Prediction:
    text: str
    expected: str
    predicted: str  # the final decision, nlu_fallback included
    top_intent: str  # the raw best intent (never nlu_fallback)
    confidence: float  # the raw best intent's confidence
    test_set: str = ""


@dataclass(frozen=True)
class IntentScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ThresholdPoint:
    threshold: float
    kept_accuracy: float  # right answers among the kept ones (1.0 when none is kept)
    handed_over: float  # share of all sentences below the threshold


@dataclass(frozen=True)
class Scores:
    """The figures of one model on one set of sentences (clean or noisy)."""

    total: int
    correct: int
    per_intent: dict[str, IntentScores]
    labels: list[str]  # rows of the confusion matrix (expected intents)
    columns: list[str]  # its columns: the labels, then nlu_fallback
    confusion: list[list[int]]
    curve: list[ThresholdPoint]
    per_set: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (correct, total)
    errors: list[Prediction] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def effective(prediction: Prediction) -> str:
    """The decision as scored: an off-topic sentence's fallback counts as hors_sujet."""
    if prediction.expected == OFF_TOPIC and prediction.predicted == FALLBACK:
        return OFF_TOPIC
    return prediction.predicted


def is_right(prediction: Prediction) -> bool:
    return effective(prediction) == prediction.expected


def score(predictions: Sequence[Prediction], thresholds: Sequence[float] = THRESHOLDS) -> Scores:
    """Accuracy, per-intent precision/recall/F1, confusion matrix and threshold curve."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = sorted({p.expected for p in predictions})
    columns = [*labels, *sorted({effective(p) for p in predictions} - set(labels))]
    expected = [p.expected for p in predictions]
    decided = [effective(p) for p in predictions]
    per_intent: dict[str, IntentScores] = {}
    if predictions:
        precision, recall, f1, support = precision_recall_fscore_support(
            expected, decided, labels=labels, zero_division=0
        )
        per_intent = {
            label: IntentScores(
                float(precision[i]), float(recall[i]), float(f1[i]), int(support[i])
            )
            for i, label in enumerate(labels)
        }
        matrix = confusion_matrix(expected, decided, labels=columns)[: len(labels)].tolist()
    else:
        matrix = []
    per_set: dict[str, tuple[int, int]] = {}
    for p in predictions:
        right, total = per_set.get(p.test_set, (0, 0))
        per_set[p.test_set] = (right + is_right(p), total + 1)
    errors = [p for p in predictions if not is_right(p)]
    return Scores(
        total=len(predictions),
        correct=len(predictions) - len(errors),
        per_intent=per_intent,
        labels=labels,
        columns=columns,
        confusion=[[int(n) for n in row] for row in matrix],
        curve=threshold_curve(predictions, thresholds),
        per_set=per_set,
        errors=errors,
    )


def threshold_curve(
    predictions: Sequence[Prediction], thresholds: Sequence[float] = THRESHOLDS
) -> list[ThresholdPoint]:
    """For each fallback threshold: accuracy of the kept answers, share handed over."""
    points = []
    for threshold in thresholds:
        kept = [p for p in predictions if p.confidence >= threshold]
        right = sum(p.top_intent == p.expected for p in kept)
        points.append(
            ThresholdPoint(
                threshold=threshold,
                kept_accuracy=right / len(kept) if kept else 1.0,
                handed_over=1 - len(kept) / len(predictions) if predictions else 0.0,
            )
        )
    return points


def scores_json(scores: Scores) -> dict[str, Any]:
    """The JSON shape of one Scores (report.json, ``voicebot evaluate --json``)."""
    return {
        "accuracy": round(scores.accuracy, 4),
        "correct": scores.correct,
        "total": scores.total,
        "per_set": {
            name: {"accuracy": round(right / total, 4), "correct": right, "total": total}
            for name, (right, total) in sorted(scores.per_set.items())
        },
        "per_intent": {
            label: {
                "precision": round(s.precision, 4),
                "recall": round(s.recall, 4),
                "f1": round(s.f1, 4),
                "support": s.support,
            }
            for label, s in scores.per_intent.items()
        },
        "confusion": {
            "labels": scores.labels,
            "columns": scores.columns,
            "matrix": scores.confusion,
        },
        "threshold_curve": [
            {
                "threshold": p.threshold,
                "kept_accuracy": round(p.kept_accuracy, 4),
                "handed_over": round(p.handed_over, 4),
            }
            for p in scores.curve
        ],
        "errors": [
            {
                "text": p.text,
                "expected": p.expected,
                "predicted": p.predicted,
                "confidence": round(p.confidence, 4),
                "test_set": p.test_set,
            }
            for p in scores.errors
        ],
    }

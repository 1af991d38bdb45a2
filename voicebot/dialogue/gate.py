"""The retraining gate: does a candidate model replace the current one?

A pure function over two models' figures on the same test sets (clean and noisy):
the candidate is accepted only if it loses no accuracy, clean or noisy, and no intent's F1
(clean or noisy) drops by more than ``max_f1_drop_points`` (points of percentage).
The reasons are written for the trainers, in French.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Accuracies are ratios of counts: anything below this is float noise, not a lost sentence.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Figures:
    """What the gate reads of one model's evaluation."""

    clean_accuracy: float
    noisy_accuracy: float
    clean_f1: Mapping[str, float]
    noisy_f1: Mapping[str, float]


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reasons: list[str] = field(default_factory=list)  # why refused, in French (empty if accepted)

    def summary(self) -> str:
        if self.accepted:
            return "Modèle accepté : aucune baisse sur les jeux de test."
        return "Modèle refusé : " + " ; ".join(self.reasons) + "."


def _points(ratio: float) -> str:
    return f"{ratio * 100:.1f}".replace(".", ",")


def _drop(points: float, tolerated: float) -> str:
    """The drop in points, with one more decimal when one would show the tolerance itself."""
    shown = f"{points:.1f}"
    if float(shown) <= tolerated:
        shown = f"{points:.2f}"
    return shown.replace(".", ",")


def gate(current: Figures, candidate: Figures, max_f1_drop_points: float = 2.0) -> GateDecision:
    """Accept the candidate only if it is no worse than the current model (see module doc)."""
    reasons: list[str] = []
    for label, before, after in (
        ("phrases propres", current.clean_accuracy, candidate.clean_accuracy),
        ("phrases bruitées", current.noisy_accuracy, candidate.noisy_accuracy),
    ):
        if after < before - _EPSILON:
            reasons.append(
                f"taux de bonnes réponses en baisse sur les {label} "
                f"({_points(before)} % → {_points(after)} %)"
            )
    for label, before_f1, after_f1 in (
        ("phrases propres", current.clean_f1, candidate.clean_f1),
        ("phrases bruitées", current.noisy_f1, candidate.noisy_f1),
    ):
        for intent in sorted(before_f1):
            before = before_f1[intent]
            after = after_f1.get(intent, 0.0)
            if (before - after) * 100 > max_f1_drop_points + _EPSILON:
                reasons.append(
                    f"F1 de l'intention « {intent} » en baisse de "
                    f"{_drop((before - after) * 100, max_f1_drop_points)} "
                    f"points sur les {label} ({_points(before)} → {_points(after)}, "
                    f"baisse tolérée : {max_f1_drop_points:g} points)"
                )
    return GateDecision(accepted=not reasons, reasons=reasons)

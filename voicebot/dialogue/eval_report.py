"""The evaluation report: report.json, report.html (in French) and PNG charts.

One or two models (``voicebot evaluate --compare``), each scored on the clean and the noisy
test sentences; with the gate's decision when the report comes from ``voicebot train``.
Charts are drawn with matplotlib without pyplot (no global state, no display needed).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voicebot.dialogue.asr_noise import DEFAULT_SEED
from voicebot.dialogue.evaluation import Scores, scores_json
from voicebot.dialogue.gate import GateDecision
from voicebot.dialogue.nlu_eval import ModelEvaluation

KINDS = (
    ("clean", "phrases propres"),
    ("noisy", "phrases bruitées (comme la reconnaissance vocale les écrit)"),
)
CURVE_FILE = "seuils.png"
# The page's style sheet, a file beside it: the console serves the report under a
# Content-Security-Policy that forbids inline styles, and the folder still opens on its own.
STYLE_FILE = "report.css"
REPORT_CSS = """\
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #eef3f8; }
td.n { text-align: right; }
.ok { color: #1d6b2f; }
.ko { color: #a4161a; }
img { max-width: 100%; }
"""


def confusion_file(index: int, kind: str) -> str:
    return f"confusion-{kind}{'' if index == 0 else f'-{index + 1}'}.png"


def report_json(
    evaluations: Sequence[ModelEvaluation],
    test_sets: Sequence[str],
    gate: GateDecision | None = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """The whole report as JSON; the first model's headline figures at the top level."""
    first = evaluations[0]
    data: dict[str, Any] = {
        "model": str(first.model),
        "version": first.version.version,
        "clean_accuracy": round(first.clean.accuracy, 4),
        "noisy_accuracy": round(first.noisy.accuracy, 4),
        "per_intent_f1": {
            "clean": {k: round(v.f1, 4) for k, v in first.clean.per_intent.items()},
            "noisy": {k: round(v.f1, 4) for k, v in first.noisy.per_intent.items()},
        },
        "test_sets": list(test_sets),
        "noise_seed": seed,
        "models": [
            {
                "model": str(e.model),
                **e.version.as_dict(),
                "seconds": round(e.seconds, 1),
                "clean": scores_json(e.clean),
                "noisy": scores_json(e.noisy),
            }
            for e in evaluations
        ],
        "images": {
            "threshold_curve": CURVE_FILE,
            "confusion": [
                {kind: confusion_file(i, kind) for kind, _ in KINDS}
                for i in range(len(evaluations))
            ],
        },
    }
    if gate is not None:
        data["gate"] = {
            "accepted": gate.accepted,
            "reasons": gate.reasons,
            "summary": gate.summary(),
        }
    return data


def write_report(
    out_dir: Path,
    evaluations: Sequence[ModelEvaluation],
    test_sets: Sequence[str],
    gate: GateDecision | None = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Write report.json, report.html and the PNGs into ``out_dir``; returns the JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report_json(evaluations, test_sets, gate, seed)
    for index, evaluation in enumerate(evaluations):
        for kind, label in KINDS:
            scores: Scores = getattr(evaluation, kind)
            title = f"Matrice de confusion, {label.split(' (')[0]} — {evaluation.version.version}"
            draw_confusion(scores, title, out_dir / confusion_file(index, kind))
    draw_curves(evaluations, out_dir / CURVE_FILE)
    (out_dir / STYLE_FILE).write_text(REPORT_CSS, encoding="utf-8")
    (out_dir / "report.json").write_text(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "report.html").write_text(render_html(evaluations, data), encoding="utf-8")
    return data


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def draw_confusion(scores: Scores, title: str, path: Path) -> None:
    """Rows: the expected intent; columns: the decision (nlu_fallback last)."""
    import numpy as np

    rows, cols = len(scores.labels), len(scores.columns)
    fig = _figure((max(6.0, 0.45 * cols + 3), max(5.0, 0.4 * rows + 2.5)))
    ax = fig.add_subplot()
    matrix = np.array(scores.confusion or [[0]], dtype=float)
    ax.imshow(matrix, cmap="Blues", aspect="auto")
    ax.set_xticks(range(cols))
    ax.set_xticklabels(scores.columns, rotation=90, fontsize=8)
    ax.set_yticks(range(rows))
    ax.set_yticklabels(scores.labels, fontsize=8)
    ax.set_xlabel("Intention comprise par le robot")
    ax.set_ylabel("Intention attendue")
    high = matrix.max() if matrix.size else 0
    for r in range(rows):
        for c in range(cols):
            value = int(matrix[r, c])
            if value:
                colour = "white" if value > high / 2 else "black"
                ax.text(c, r, str(value), ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def draw_curves(evaluations: Sequence[ModelEvaluation], path: Path) -> None:
    """Accuracy of the kept answers against the share handed to a person, per threshold."""
    fig = _figure((10, 4.5))
    left, right = fig.subplots(1, 2)
    for evaluation in evaluations:
        for kind, style in (("clean", "-"), ("noisy", "--")):
            curve = getattr(evaluation, kind).curve
            label = f"{evaluation.version.version} ({'propres' if kind == 'clean' else 'bruitées'})"
            x = [p.threshold for p in curve]
            left.plot(x, [100 * p.kept_accuracy for p in curve], style, marker="o", label=label)
            right.plot(x, [100 * p.handed_over for p in curve], style, marker="o", label=label)
    left.set_title("Bonnes réponses parmi les réponses données (%)", fontsize=10)
    right.set_title("Part passée à un conseiller (%)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("Seuil d'incompréhension")
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.1f} %".replace(".", ",")


def render_html(evaluations: Sequence[ModelEvaluation], data: dict[str, Any]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="fr"><head><meta charset="utf-8">',
        "<title>Évaluation du modèle de compréhension</title>",
        f'<link rel="stylesheet" href="{STYLE_FILE}"></head><body>',
        "<h1>Évaluation du modèle de compréhension</h1>",
        "<p>Chaque phrase des jeux de test (<code>nlu/tests/</code>, jamais apprises) est "
        "analysée telle qu'écrite (<b>phrases propres</b>) puis telle que la reconnaissance "
        "vocale l'écrirait : sans accents ni ponctuation, en minuscules, avec des « euh », "
        "des mots coupés ou collés (<b>phrases bruitées</b>). Une phrase hors sujet est "
        "bien traitée si le robot répond « hors sujet » ou demande de reformuler.</p>",
    ]
    gate = data.get("gate")
    if gate is not None:
        css = "ok" if gate["accepted"] else "ko"
        parts.append(f'<h2 class="{css}">{esc(gate["summary"])}</h2>')
        if gate["reasons"]:
            parts.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in gate["reasons"]) + "</ul>")
    parts.append("<h2>Résultats</h2><table><tr><th>Modèle</th><th>Version</th>")
    parts.append(
        "<th>Bonnes réponses (propres)</th><th>Bonnes réponses (bruitées)</th><th>Phrases</th></tr>"
    )
    for e in evaluations:
        parts.append(
            f"<tr><td>{esc(e.model.name)}</td><td>{esc(e.version.version)}</td>"
            f'<td class="n">{_pct(e.clean.accuracy)}</td><td class="n">{_pct(e.noisy.accuracy)}</td>'
            f'<td class="n">{e.clean.total}</td></tr>'
        )
    parts.append("</table>")
    parts.append(_per_set_table(evaluations))
    parts.append(_intent_table(evaluations))
    parts.append("<h2>Seuil d'incompréhension</h2>")
    parts.append(
        "<p>Pour chaque seuil de 0,3 à 0,9 : la part de bonnes réponses parmi celles que le "
        "robot donne, et la part des phrases qu'il ne comprend pas assez pour répondre "
        "(passées à un conseiller après reformulation).</p>"
    )
    parts.append(f'<img src="{CURVE_FILE}" alt="Courbe des seuils d\'incompréhension">')
    parts.append("<h2>Matrices de confusion</h2>")
    for index, evaluation in enumerate(evaluations):
        for kind, label in KINDS:
            alt = f"Matrice de confusion, {label}, {evaluation.version.version}"
            parts.append(f'<p><img src="{confusion_file(index, kind)}" alt="{esc(alt)}"></p>')
    parts.append(_errors(evaluations))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _per_set_table(evaluations: Sequence[ModelEvaluation]) -> str:
    rows = ["<h2>Par jeu de test</h2><table><tr><th>Jeu de test</th>"]
    rows += [
        f"<th>{html.escape(e.version.version)} propres</th><th>bruitées</th>" for e in evaluations
    ]
    rows.append("</tr>")
    for name in sorted(evaluations[0].clean.per_set):
        cells = ""
        for e in evaluations:
            for scores in (e.clean, e.noisy):
                right, total = scores.per_set.get(name, (0, 0))
                cells += f'<td class="n">{_pct(right / total) if total else "—"}</td>'
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return "".join(rows) + "</table>"


def _intent_table(evaluations: Sequence[ModelEvaluation]) -> str:
    rows = [
        "<h2>Par intention</h2><p>Précision : parmi les phrases que le robot range dans "
        "l'intention, la part juste. Rappel : parmi les phrases de l'intention, la part "
        "reconnue. F1 : la moyenne des deux.</p><table><tr><th>Intention</th><th>Phrases</th>"
    ]
    for e in evaluations:
        version = html.escape(e.version.version)
        rows.append(
            f"<th>{version} précision</th><th>rappel</th><th>F1 propres</th><th>F1 bruitées</th>"
        )
    rows.append("</tr>")
    for label in evaluations[0].clean.labels:
        support = evaluations[0].clean.per_intent[label].support
        cells = ""
        for e in evaluations:
            clean = e.clean.per_intent.get(label)
            noisy = e.noisy.per_intent.get(label)
            values = (
                (clean.precision, clean.recall, clean.f1, noisy.f1 if noisy else 0.0)
                if clean
                else (0.0, 0.0, 0.0, 0.0)
            )
            cells += "".join(f'<td class="n">{_pct(v)}</td>' for v in values)
        rows.append(f'<tr><td>{html.escape(label)}</td><td class="n">{support}</td>{cells}</tr>')
    return "".join(rows) + "</table>"


def _errors(evaluations: Sequence[ModelEvaluation]) -> str:
    e = evaluations[0]
    rows = [
        f"<h2>Phrases mal comprises ({html.escape(e.version.version)})</h2>",
        "<table><tr><th>Phrase</th><th>Attendue</th><th>Comprise</th><th>Confiance</th><th>Version</th></tr>",
    ]
    for kind, scores in (("propre", e.clean), ("bruitée", e.noisy)):
        for p in scores.errors:
            rows.append(
                f"<tr><td>{html.escape(p.text)}</td><td>{html.escape(p.expected)}</td>"
                f"<td>{html.escape(p.predicted)}</td>"
                f'<td class="n">{p.confidence:.2f}</td><td>{kind}</td></tr>'
            )
    return "".join(rows) + "</table>"

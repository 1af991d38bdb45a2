"""``voicebot evaluate``: one model (or two side by side) on the test sets, clean and noisy."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from voicebot.core.config import Settings
from voicebot.dialogue.agent import model_path
from voicebot.dialogue.eval_report import write_report
from voicebot.dialogue.nlu_eval import evaluate_model, load_test_sets


def default_out_dir(settings: Settings) -> Path:
    return settings.paths.data_dir / "evaluations" / time.strftime("%Y%m%d-%H%M%S")


def evaluate_command(
    settings: Settings,
    model: Path | None = None,
    compare: Path | None = None,
    out_dir: Path | None = None,
    as_json: bool = False,
) -> int:
    """Evaluate ``model`` (default: the current one), and ``compare`` beside it."""
    examples = load_test_sets(settings.paths.nlu_dir)  # a broken test file fails first, fast
    models = [model if model is not None else model_path(settings)]
    if compare is not None:
        models.append(compare)
    evaluations = [evaluate_model(settings, m, examples) for m in models]
    out = out_dir if out_dir is not None else default_out_dir(settings)
    test_sets = sorted({e.test_set for e in examples})
    data = write_report(out, evaluations, test_sets)
    if as_json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    for e in evaluations:
        print(
            f"{e.version.version} : {e.clean.accuracy:.1%} de bonnes réponses sur les phrases "
            f"propres, {e.noisy.accuracy:.1%} sur les phrases bruitées ({e.clean.total} phrases)"
        )
    print(f"Rapport : {out / 'report.html'}")
    return 0

"""The card's evaluation: the newest saved ``voicebot asr eval --json`` report."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from voicebot.console.transparency.model import Evaluation
from voicebot.core.config import Settings

log = logging.getLogger(__name__)

EVALUATIONS_DIR = "evaluations"  # under paths.data_dir, unless transparency.evaluation_dir


def evaluation_dir(settings: Settings) -> Path:
    configured = settings.transparency.evaluation_dir
    return (
        Path(configured).expanduser() if configured else settings.paths.data_dir / EVALUATIONS_DIR
    )


def gather_evaluation(settings: Settings) -> tuple[Evaluation | None, str]:
    """The newest saved `voicebot asr eval --json` report, if any (other files are ignored)."""
    folder = evaluation_dir(settings)
    try:
        candidates = sorted(
            (p for p in folder.glob("*.json") if p.is_file()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        candidates = []
    for path in candidates:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(report, dict) or not isinstance(report.get("wer"), (int, float)):
                continue
            rtf = report.get("rtf")
            words = report.get("reference_words")
            return (
                Evaluation(
                    file=path.name,
                    saved_on=dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone(),
                    engine=str(report.get("engine", "")),
                    model=str(report.get("model", "")),
                    corpus=str(report.get("corpus", "")),
                    utterances=int(report.get("utterances", 0)),
                    reference_words=int(words) if isinstance(words, int) else None,
                    wer=float(report["wer"]),
                    rtf=float(rtf) if isinstance(rtf, (int, float)) else None,
                ),
                str(folder),
            )
        except (OSError, ValueError, TypeError) as exc:
            log.warning("transparency: evaluation report %s unreadable: %s", path, exc)
    return None, str(folder)

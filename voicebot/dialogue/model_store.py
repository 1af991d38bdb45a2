"""Where trained models live, and their versions.

Layout of ``nlu/models/``::

    allonantes-<date>.tar.gz      the current model (the one the bot loads)
    allonantes-<date>.json        its version record: version, fingerprint, trained_at
    fingerprint.json              the fingerprint and name of the current model
    evaluations/<name>/           the evaluation report that let a model in
    candidate/                    a model being trained (never loaded by the bot)
    refused/<name>/               a refused candidate with the report that says why
    refused/last.json             the fingerprint of the last refused training data

A model's version is ``<date>-<first 12 hex digits of the fingerprint>``: the date it was
trained and the hash of everything it was trained on (config, domain, nlu/data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebot.core.config import Settings

MODEL_PREFIX = "allonantes-"
MODEL_SUFFIX = ".tar.gz"
FINGERPRINT_FILE = "fingerprint.json"
CANDIDATE_DIR = "candidate"
REFUSED_DIR = "refused"
EVALUATIONS_DIR = "evaluations"
LAST_REFUSED_FILE = "last.json"


@dataclass(frozen=True)
class ModelVersion:
    model: str  # the archive's file name
    version: str
    fingerprint: str
    trained_at: str  # ISO 8601, UTC

    def as_dict(self) -> dict[str, str]:
        return {
            "model": self.model,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "trained_at": self.trained_at,
        }


def models_dir(settings: Settings) -> Path:
    return settings.paths.nlu_dir / "models"


def model_name(model: Path) -> str:
    """``allonantes-20261202-141339`` for ``…/allonantes-20261202-141339.tar.gz``."""
    return model.name.removesuffix(MODEL_SUFFIX)


def version_file(model: Path) -> Path:
    return model.with_name(model_name(model) + ".json")


def make_version(model: Path, fingerprint: str, trained_at: str) -> ModelVersion:
    stamp = model_name(model).removeprefix(MODEL_PREFIX)
    return ModelVersion(model.name, f"{stamp}-{fingerprint[:12]}", fingerprint, trained_at)


def write_version(model: Path, version: ModelVersion) -> None:
    version_file(model).write_text(json.dumps(version.as_dict(), indent=2) + "\n", "utf-8")


def read_version(model: Path) -> ModelVersion:
    """The model's version record; for a model trained before versions, one made from its
    name and the folder's fingerprint.json (or an unknown fingerprint)."""
    record = _read_json(version_file(model))
    if record is None:
        current = _read_json(model.parent / FINGERPRINT_FILE) or {}
        fingerprint = (
            str(current.get("fingerprint", "")) if current.get("model") == model.name else ""
        )
        return make_version(model, fingerprint or "inconnu", "")
    return ModelVersion(
        model=model.name,
        version=str(record.get("version", "")),
        fingerprint=str(record.get("fingerprint", "")),
        trained_at=str(record.get("trained_at", "")),
    )


def recorded_current(folder: Path) -> tuple[str, Path] | None:
    """(fingerprint, model) of the current model per fingerprint.json, if readable."""
    record = _read_json(folder / FINGERPRINT_FILE)
    try:
        return str(record["fingerprint"]), folder / str(record["model"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None


def write_current(folder: Path, version: ModelVersion) -> None:
    record = {
        "fingerprint": version.fingerprint,
        "model": version.model,
        "version": version.version,
    }
    (folder / FINGERPRINT_FILE).write_text(json.dumps(record, indent=2) + "\n", "utf-8")


def last_refused(folder: Path) -> dict[str, str] | None:
    record = _read_json(folder / REFUSED_DIR / LAST_REFUSED_FILE)
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else None


def write_last_refused(folder: Path, fingerprint: str, report: Path, reason: str) -> None:
    path = folder / REFUSED_DIR / LAST_REFUSED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"fingerprint": fingerprint, "report": str(report), "reason": reason}
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", "utf-8")


def clear_last_refused(folder: Path) -> None:
    (folder / REFUSED_DIR / LAST_REFUSED_FILE).unlink(missing_ok=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None

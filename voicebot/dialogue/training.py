"""Training the Rasa model from ``nlu/`` (``voicebot train``).

The model is written to ``nlu/models/allonantes-<date>.tar.gz`` next to a
``fingerprint.json`` that records a hash of everything training reads (config, domain,
training data). ``train(..., if_needed=True)`` skips training when that hash still matches,
so ``make test`` and ``make run`` only retrain after a trainer changed something.

Only ``nlu/data/`` is trained on: the held-out test set (``nlu/tests/``) and the knowledge
base (``nlu/knowledge/``, read at run time) stay out of the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from voicebot.core.config import Settings
from voicebot.core.errors import ModelError

log = logging.getLogger(__name__)

MODEL_PREFIX = "allonantes-"
FINGERPRINT_FILE = "fingerprint.json"


def training_files(nlu_dir: Path) -> list[Path]:
    """The data files training reads: every YAML file under nlu/data, in a stable order."""
    data_dir = nlu_dir / "data"
    files = sorted(p for p in data_dir.rglob("*.yml") if p.is_file())
    if not files:
        raise ModelError(f"no training data: {data_dir} holds no .yml file")
    return files


def fingerprint(nlu_dir: Path) -> str:
    """A hash of the config, the domain and every training file (names and contents)."""
    import rasa

    digest = hashlib.sha256(f"rasa {rasa.__version__}\n".encode())
    for path in [nlu_dir / "config.yml", nlu_dir / "domain.yml", *training_files(nlu_dir)]:
        if not path.is_file():
            raise ModelError(f"missing Rasa project file: {path}")
        digest.update(str(path.relative_to(nlu_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def models_dir(settings: Settings) -> Path:
    return settings.paths.nlu_dir / "models"


def latest_model(settings: Settings) -> Path | None:
    """The model the bot loads: settings.dialogue.model, else the newest trained one."""
    if settings.dialogue.model:
        return Path(settings.dialogue.model)
    folder = models_dir(settings)
    models = sorted(folder.glob(f"{MODEL_PREFIX}*.tar.gz")) if folder.is_dir() else []
    return models[-1] if models else None


def _recorded(folder: Path) -> tuple[str, Path] | None:
    try:
        record = json.loads((folder / FINGERPRINT_FILE).read_text(encoding="utf-8"))
        return str(record["fingerprint"]), folder / str(record["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def train(settings: Settings, if_needed: bool = False) -> Path:
    """Train nlu/ into nlu/models/; returns the model archive. Raises ModelError."""
    nlu_dir = settings.paths.nlu_dir
    folder = models_dir(settings)
    current = fingerprint(nlu_dir)
    if if_needed:
        recorded = _recorded(folder)
        if recorded is not None and recorded[0] == current and recorded[1].is_file():
            print(f"Modèle à jour, pas de ré-entraînement : {recorded[1]}")
            log.info("model up to date (fingerprint %s): %s", current[:12], recorded[1])
            return recorded[1]

    from voicebot.dialogue.rasa_runtime import quiet_rasa

    quiet_rasa()
    from rasa.model_training import train as rasa_train

    folder.mkdir(parents=True, exist_ok=True)
    name = MODEL_PREFIX + time.strftime("%Y%m%d-%H%M%S")
    print(f"Entraînement du modèle Rasa à partir de {nlu_dir} …")
    started = time.perf_counter()
    result = rasa_train(
        domain=str(nlu_dir / "domain.yml"),
        config=str(nlu_dir / "config.yml"),
        training_files=[str(p) for p in training_files(nlu_dir)],
        output=str(folder),
        fixed_model_name=name,
        force_training=True,
    )
    model = Path(result.model) if result.model else None
    if result.code != 0 or model is None or not model.is_file():
        raise ModelError(
            f"Rasa training failed (code {result.code}); see the messages above "
            f"and check the files under {nlu_dir}"
        )
    elapsed = time.perf_counter() - started
    for old in folder.glob(f"{MODEL_PREFIX}*.tar.gz"):
        if old != model:
            old.unlink()
    (folder / FINGERPRINT_FILE).write_text(
        json.dumps({"fingerprint": current, "model": model.name}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"Modèle entraîné en {elapsed:.0f} s : {model}")
    log.info("trained a model in %.1f s (fingerprint %s)", elapsed, current[:12])
    return model


def labelled_examples(path: Path) -> list[tuple[str, str]]:
    """(text, intent) pairs of a Rasa NLU file, entity markup removed (held-out sets)."""
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(path))
    return [(str(m.get("text")), str(m.get("intent"))) for m in data.intent_examples]


def heldout_path(settings: Settings) -> Path:
    return settings.paths.nlu_dir / "tests" / "heldout.yml"

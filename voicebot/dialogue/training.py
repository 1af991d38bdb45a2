"""Training the Rasa model from ``nlu/`` (``voicebot train``), behind a quality gate.

A new model is first trained as a *candidate* (``nlu/models/candidate/``, never loaded by
the bot). If there is no current model it is accepted as is. Otherwise both models are
evaluated on the test sets, clean and noisy (voicebot.dialogue.nlu_eval), and the candidate
replaces the current model only if the gate (voicebot.dialogue.gate) accepts it; a refused
candidate goes to ``nlu/models/refused/<name>/`` with the report that says why, and
``GateRefusedError`` is raised (the command exits non-zero). Layout and versions:
voicebot.dialogue.model_store.

``fingerprint.json`` records a hash of everything training reads (config, domain, training
data). ``train(..., if_needed=True)`` skips training when that hash still matches the
current model, and fails fast when it matches the last refused candidate (training the same
data again would be refused again), so ``make test`` and ``make run`` only retrain after a
trainer changed something.

Only ``nlu/data/`` is trained on: the test sets (``nlu/tests/``) and the knowledge base
(``nlu/knowledge/``, read at run time) stay out of the model.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from voicebot.core.config import Settings
from voicebot.core.errors import GateRefusedError, ModelError
from voicebot.dialogue.gate import GateDecision, gate
from voicebot.dialogue.model_store import (
    CANDIDATE_DIR,
    EVALUATIONS_DIR,
    MODEL_PREFIX,
    MODEL_SUFFIX,
    REFUSED_DIR,
    ModelVersion,
    clear_last_refused,
    last_refused,
    make_version,
    model_name,
    models_dir,
    recorded_current,
    version_file,
    write_current,
    write_last_refused,
    write_version,
)

if TYPE_CHECKING:
    from voicebot.dialogue.nlu_eval import ModelEvaluation

log = logging.getLogger(__name__)

# `voicebot train` begins the line of each stage, and the line of its outcome, with one of
# these markers: the trainer at the terminal sees where it is, and the console's training
# job (voicebot.dialogue.training_job) follows the same lines in the command's output.
STAGE_TRAINING = "[étape 1/2]"
STAGE_EVALUATION = "[étape 2/2]"
OUTCOME_ACCEPTED = "[résultat : accepté]"
OUTCOME_REFUSED = "[résultat : refusé]"
OUTCOME_UP_TO_DATE = "[résultat : à jour]"

__all__ = [
    "MODEL_PREFIX",
    "fingerprint",
    "heldout_path",
    "labelled_examples",
    "latest_model",
    "models_dir",
    "train",
    "training_files",
]


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


def latest_model(settings: Settings) -> Path | None:
    """The model the bot loads: settings.dialogue.model, else the newest trained one."""
    if settings.dialogue.model:
        return Path(settings.dialogue.model)
    folder = models_dir(settings)
    models = sorted(folder.glob(f"{MODEL_PREFIX}*{MODEL_SUFFIX}")) if folder.is_dir() else []
    return models[-1] if models else None


def train(settings: Settings, if_needed: bool = False) -> Path:
    """Train nlu/ and let the result through the gate; returns the current model archive.

    Raises ModelError (training failed), NluDataError (a broken test file) or
    GateRefusedError (the candidate would have made the bot worse: kept aside).
    """
    nlu_dir = settings.paths.nlu_dir
    folder = models_dir(settings)
    current_fp = fingerprint(nlu_dir)
    if if_needed:
        recorded = recorded_current(folder)
        if recorded is not None and recorded[0] == current_fp and recorded[1].is_file():
            print(f"{OUTCOME_UP_TO_DATE} Modèle à jour, pas de ré-entraînement : {recorded[1]}")
            log.info("model up to date (fingerprint %s): %s", current_fp[:12], recorded[1])
            return recorded[1]
        refused = last_refused(folder)
        if refused is not None and refused.get("fingerprint") == current_fp:
            print(f"{OUTCOME_REFUSED} Ces données ont déjà donné un modèle refusé.")
            raise GateRefusedError(
                "ces données d'entraînement ont déjà donné un modèle refusé "
                f"({refused.get('reason', '')}) ; rapport : {refused.get('report', '')}. "
                "Corrigez nlu/data puis relancez `voicebot train`"
            )

    current = latest_model(settings)
    candidate, version = train_candidate(settings, current_fp)
    if current is None or not current.is_file():
        print("Premier modèle : accepté sans comparaison.")
        return accept(folder, candidate, version)
    return gated(settings, current, candidate, version)


def train_candidate(settings: Settings, current_fp: str) -> tuple[Path, ModelVersion]:
    """Train nlu/ into nlu/models/candidate/ (emptied first); returns it and its version."""
    nlu_dir = settings.paths.nlu_dir
    out = models_dir(settings) / CANDIDATE_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    from voicebot.dialogue.rasa_runtime import quiet_rasa

    quiet_rasa()
    from rasa.model_training import train as rasa_train

    name = MODEL_PREFIX + time.strftime("%Y%m%d-%H%M%S")
    print(f"{STAGE_TRAINING} Entraînement du modèle Rasa à partir de {nlu_dir} …")
    started = time.perf_counter()
    result = rasa_train(
        domain=str(nlu_dir / "domain.yml"),
        config=str(nlu_dir / "config.yml"),
        training_files=[str(p) for p in training_files(nlu_dir)],
        output=str(out),
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
    trained_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    version = make_version(model, current_fp, trained_at)
    write_version(model, version)
    print(f"Modèle candidat entraîné en {elapsed:.0f} s : version {version.version}")
    # the model name, not the bare version: a dated version reads as a phone number to the
    # log redaction
    log.info("trained a candidate in %.1f s (%s)", elapsed, MODEL_PREFIX + version.version)
    return model, version


def accept(folder: Path, candidate: Path, version: ModelVersion) -> Path:
    """Move the candidate in as the current model; older models are deleted."""
    model = folder / candidate.name
    candidate.replace(model)
    version_file(candidate).replace(version_file(model))
    for old in folder.glob(f"{MODEL_PREFIX}*{MODEL_SUFFIX}"):
        if old != model:
            old.unlink()
            version_file(old).unlink(missing_ok=True)
    write_current(folder, version)
    clear_last_refused(folder)
    shutil.rmtree(folder / CANDIDATE_DIR, ignore_errors=True)
    print(f"{OUTCOME_ACCEPTED} Nouveau modèle en service : {model} (version {version.version})")
    return model


def gated(settings: Settings, current: Path, candidate: Path, version: ModelVersion) -> Path:
    """Evaluate both models; accept the candidate or keep it aside and raise."""
    from voicebot.dialogue.eval_report import write_report
    from voicebot.dialogue.nlu_eval import evaluate_model, load_test_sets

    folder = models_dir(settings)
    print(f"{STAGE_EVALUATION} Évaluation du modèle actuel et du candidat sur les jeux de test …")
    examples = load_test_sets(settings.paths.nlu_dir)
    before = evaluate_model(settings, current, examples)
    after = evaluate_model(settings, candidate, examples)
    decision = gate(before.figures(), after.figures(), settings.dialogue.gate_max_f1_drop)
    test_sets = sorted({e.test_set for e in examples})
    print(
        f"Actuel {before.version.version} : {before.clean.accuracy:.1%} (propres), "
        f"{before.noisy.accuracy:.1%} (bruitées) ; candidat {version.version} : "
        f"{after.clean.accuracy:.1%}, {after.noisy.accuracy:.1%}"
    )
    if decision.accepted:
        report_dir = folder / EVALUATIONS_DIR / model_name(candidate)
        write_report(report_dir, [after, before], test_sets, decision)
        print(decision.summary())
        print(f"Rapport : {report_dir / 'report.html'}")
        return accept(folder, candidate, version)
    return refuse(folder, candidate, version, decision, [after, before], test_sets)


def refuse(
    folder: Path,
    candidate: Path,
    version: ModelVersion,
    decision: GateDecision,
    evaluations: list[ModelEvaluation],
    test_sets: list[str],
) -> NoReturn:
    """Keep the candidate aside with its report, remember its fingerprint, raise."""
    from voicebot.dialogue.eval_report import write_report

    kept = folder / REFUSED_DIR / model_name(candidate)
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    candidate.replace(kept / candidate.name)
    version_file(candidate).replace(version_file(kept / candidate.name))
    evaluations[0] = dataclasses.replace(evaluations[0], model=kept / candidate.name)
    write_report(kept, evaluations, test_sets, decision)
    shutil.rmtree(folder / CANDIDATE_DIR, ignore_errors=True)
    report = kept / "report.html"
    write_last_refused(folder, version.fingerprint, report, "; ".join(decision.reasons))
    print(f"{OUTCOME_REFUSED} Candidat {version.version} mis de côté : {report}")
    raise GateRefusedError(
        f"{decision.summary()} Le modèle actuel reste en service ; le candidat "
        f"{version.version} est mis de côté dans {kept} (rapport : {report})"
    )


def labelled_examples(path: Path) -> list[tuple[str, str]]:
    """(text, intent) pairs of a Rasa NLU file, entity markup removed (held-out sets)."""
    from voicebot.dialogue.nlu_eval import load_examples

    return load_examples(path)


def heldout_path(settings: Settings) -> Path:
    return settings.paths.nlu_dir / "tests" / "heldout.yml"

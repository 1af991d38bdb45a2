"""Retraining (and evaluating) from the console: `voicebot train` as a background job.

The job runs the command in a *subprocess*, never in the server: Rasa's training keeps
TensorFlow busy on every core for minutes, and the calls' audio must not wait for it. The
command line is fixed (``python -m voicebot.cli train --if-needed``, or ``evaluate`` of the
current model into its evaluation folder): nothing a trainer types goes into it. It runs at
the lowest CPU priority (``nice -n 19``; the server's real-time audio thread starts its
children at normal priority, voicebot.core.realtime), in a session of its own so that
cancelling or a server shutdown ends it with everything it started, and with the server's
own settings (``child_environment``).

One job at a time per process (``JobBusyError`` for a second one). Its progress comes from
the stage markers `voicebot train` prints (voicebot.dialogue.training: ``STAGE_*``,
``OUTCOME_*``) and the last lines of its output; its result from its exit code, its outcome
marker and what it left on disk (voicebot.dialogue.model_store), read by ``conclude_*``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from voicebot.core.config import LAYOUT, SECRET_ENV, Settings
from voicebot.core.errors import VoicebotError
from voicebot.dialogue.model_store import (
    EVALUATIONS_DIR,
    last_refused,
    model_name,
    models_dir,
    read_version,
)
from voicebot.dialogue.training import (
    OUTCOME_ACCEPTED,
    OUTCOME_REFUSED,
    OUTCOME_UP_TO_DATE,
    STAGE_EVALUATION,
    STAGE_TRAINING,
    latest_model,
)

log = logging.getLogger(__name__)

TRAINING = "entrainement"
EVALUATION = "evaluation"
# What the console shows while a stage runs, per marker of `voicebot train`.
STAGE_LABELS = {
    STAGE_TRAINING: "Étape 1/2 : entraînement du nouveau modèle",
    STAGE_EVALUATION: "Étape 2/2 : évaluation du nouveau modèle face au modèle actuel",
}
OUTCOMES = (OUTCOME_ACCEPTED, OUTCOME_REFUSED, OUTCOME_UP_TO_DATE)
TAIL_LINES = 20
MAX_LINE_CHARS = 300
TERMINATE_GRACE_S = 5.0
REFUSED_EXIT_CODE = 2  # voicebot.cli: any VoicebotError, the gate's refusal among them


class JobBusyError(VoicebotError):
    """A job is already running in this process (or none can start now); French message."""


@dataclass(frozen=True)
class Outcome:
    """How a finished job ended, for the trainer."""

    state: str  # accepted, refused, unchanged, evaluated, failed, cancelled
    message: str  # French
    reasons: tuple[str, ...] = ()
    report: Path | None = None  # the report.html that explains it
    version: str = ""  # the model in service afterwards, when it changed


@dataclass(frozen=True)
class JobSpec:
    """A job to run: its command (fixed arguments), first stage, and how to read its end."""

    kind: str  # TRAINING or EVALUATION
    command: tuple[str, ...]
    environment: Mapping[str, str]
    first_stage: str
    # (exit code, outcome marker seen or "") → Outcome; reads the disk, never the output text
    conclude: Callable[[int, str], Outcome]


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of the process's job (the last one, once finished)."""

    state: str = "idle"  # idle, running, then the Outcome's state
    kind: str = ""
    stage: str = ""
    who: str = ""
    started_at: float | None = None  # wall clock (epoch seconds)
    elapsed_s: float = 0.0
    lines: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()  # the stage markers passed (training.STAGE_*)
    exit_code: int | None = None
    outcome: Outcome | None = None


class OutputLines:
    """Splits a subprocess's output into lines (on \\n and \\r: progress bars redraw with \\r),
    keeps the last ``TAIL_LINES`` and the last stage and outcome markers seen."""

    def __init__(self) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stages: list[str] = []  # the stage markers seen, in order
        self.outcome = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> None:
        text = self._partial + self._decoder.decode(data, final=not data)
        pieces = text.replace("\r", "\n").split("\n")
        self._partial = pieces.pop() if data else ""
        if len(self._partial) > 4 * MAX_LINE_CHARS:  # a line that never ends stays bounded
            pieces.append(self._partial)
            self._partial = ""
        for piece in pieces:
            self._line(piece.strip())

    def _line(self, line: str) -> None:
        if not line:
            return
        self.tail.append(line[:MAX_LINE_CHARS])
        for marker in STAGE_LABELS:
            if line.startswith(marker):
                self.stages.append(marker)
        for marker in OUTCOMES:
            if line.startswith(marker):
                self.outcome = marker


@dataclass
class _Run:
    spec: JobSpec
    who: str
    started_at: float
    started: float  # monotonic
    output: OutputLines = field(default_factory=OutputLines)
    process: _Child | None = None
    task: asyncio.Task[None] | None = None
    finished: float | None = None
    exit_code: int | None = None
    outcome: Outcome | None = None
    cancelled: bool = False


class JobRunner:
    """The process's one background job. All methods run on the event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._run: _Run | None = None
        # The child's start, output and exit are waited for here (never on the loop's default
        # executor, which may be the speech engines'): a reader, a waiter, a starter.
        self._threads = ThreadPoolExecutor(max_workers=3, thread_name_prefix="training-job")

    @property
    def running(self) -> bool:
        return self._run is not None and self._run.outcome is None

    def ensure_free(self) -> None:
        """Raises JobBusyError when a job is running."""
        if self.running:
            raise JobBusyError(
                "Un entraînement ou une évaluation est déjà en cours : attendez qu'il se "
                "termine (ou annulez-le) avant d'en lancer un autre."
            )

    def start(self, spec: JobSpec, who: str = "") -> JobStatus:
        """Start ``spec`` now; raises JobBusyError when a job is running."""
        self.ensure_free()
        run = _Run(spec, who, time.time(), self._clock())
        self._run = run
        run.task = asyncio.get_running_loop().create_task(self._execute(run))
        log.info("%s job started by %s", spec.kind, who or "(anonyme)")
        return self.status()

    def status(self) -> JobStatus:
        run = self._run
        if run is None:
            return JobStatus()
        end = run.finished if run.finished is not None else self._clock()
        stages = run.output.stages
        stage = STAGE_LABELS[stages[-1]] if stages else run.spec.first_stage
        return JobStatus(
            state=run.outcome.state if run.outcome else "running",
            kind=run.spec.kind,
            stage=stage if run.outcome is None else "",
            who=run.who,
            started_at=run.started_at,
            elapsed_s=max(0.0, end - run.started),
            lines=tuple(run.output.tail),
            stages=tuple(run.output.stages),
            exit_code=run.exit_code,
            outcome=run.outcome,
        )

    async def finished(self) -> JobStatus:
        """The status once the current job (if any) has ended."""
        if self._run is not None and self._run.task is not None:
            await asyncio.wait({self._run.task})  # the job goes on if the caller is cancelled
        return self.status()

    async def cancel(self) -> bool:
        """End the running job (its whole process group); False when none runs."""
        run = self._run
        if run is None or run.outcome is not None:
            return False
        run.cancelled = True
        if run.process is not None:
            await _terminate(run.process)
        if run.task is not None:
            await asyncio.wait({run.task})
        return True

    async def shutdown(self) -> None:
        """The server stops: a running job is ended, nothing is left behind."""
        if await self.cancel():
            log.info("training job ended by the server's shutdown")

    async def _execute(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        try:
            # subprocess.Popen in a thread, not asyncio's subprocesses: importing Rasa (sanic)
            # sets uvloop's event-loop policy, whose get_child_watcher() the standard loop
            # the server runs on cannot use (NotImplementedError).
            popen = await loop.run_in_executor(self._threads, _spawn, run.spec)
            run.process = child = _Child(popen, self._threads)
            _lower_priority(child.pid)
            if run.cancelled:  # cancelled while it was being started
                await _terminate(child)
            while data := await child.read():
                run.output.feed(data)
            run.output.feed(b"")
            run.exit_code = await child.wait()
        except OSError as exc:
            log.error("%s job could not start: %s", run.spec.kind, exc)
            run.outcome = Outcome("failed", f"La commande n'a pas pu démarrer : {exc.strerror}.")
        except asyncio.CancelledError:
            if run.process is not None:
                await _terminate(run.process)
            raise
        except Exception:  # a bug here must not leave a job "running" with no trace
            log.exception("%s job failed in the server", run.spec.kind)
            if run.process is not None:
                await _terminate(run.process)
            run.outcome = Outcome("failed", "Erreur interne du serveur : voir son journal.")
        finally:
            run.finished = self._clock()
            if run.outcome is None:
                run.outcome = self._conclude(run)
            log.info(
                "%s job ended: %s (exit code %s, %.0f s)",
                run.spec.kind,
                run.outcome.state,
                run.exit_code,
                run.finished - run.started,
            )

    @staticmethod
    def _conclude(run: _Run) -> Outcome:
        if run.cancelled:
            return Outcome("cancelled", "Annulé : le modèle en service n'a pas changé.")
        if run.exit_code is None:
            return Outcome("failed", "Interrompu avant la fin.")
        try:
            return run.spec.conclude(run.exit_code, run.output.outcome)
        except (OSError, ValueError) as exc:
            log.exception("%s job: its result cannot be read", run.spec.kind)
            return Outcome("failed", f"Résultat illisible : {exc}.")


def _spawn(spec: JobSpec) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 — a fixed command line: no trainer text in it
        list(spec.command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(spec.environment),
        start_new_session=True,  # its own process group: ended as a whole
    )


class _Child:
    """A job's subprocess, waited for on the runner's threads."""

    def __init__(self, popen: subprocess.Popen[bytes], threads: ThreadPoolExecutor) -> None:
        self._popen = popen
        self._threads = threads
        assert popen.stdout is not None  # noqa: S101 — PIPE was asked for
        self._stdout = popen.stdout.fileno()

    @property
    def pid(self) -> int:
        return self._popen.pid

    async def read(self) -> bytes:
        """What the child wrote since the last read (b"" once its output is closed). Only
        the reader closes the pipe, at its end: a descriptor closed under a blocked read
        could be reused by the next one."""
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(self._threads, os.read, self._stdout, 4096)
        if not data and self._popen.stdout is not None:
            self._popen.stdout.close()
        return data

    async def wait(self) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._popen.wait)


async def _terminate(process: _Child) -> None:
    """SIGTERM to the job's process group, SIGKILL if it is still there after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), TERMINATE_GRACE_S)
            return
        except asyncio.TimeoutError:
            continue


def _lower_priority(pid: int) -> None:
    """Nice 19 for the child: already so under `nice`; without it on the PATH, from just
    after the start (the threads it makes later inherit it)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, 19)


# ---- the commands -------------------------------------------------------------------------


def child_environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment with every (non-secret) setting as ``VOICEBOT_<SECTION>_<FIELD>``:
    the child loads exactly the server's settings, however they were given (a settings file,
    the environment, or built by a test). No secret goes to it: training needs none."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in SECRET_ENV}
    secret_fields = set(SECRET_ENV.values())
    for section in dataclasses.fields(settings):
        values = getattr(settings, section.name)
        for item in dataclasses.fields(values):
            if (section.name, item.name) not in secret_fields:
                value = getattr(values, item.name)
                env[f"VOICEBOT_{section.name.upper()}_{item.name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"  # stage lines arrive as they are printed
    if LAYOUT.source_checkout:  # the child runs this checkout's code, whatever the cwd
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(LAYOUT.root), env.get("PYTHONPATH", "")) if p
        )
    return env


def voicebot_command(*arguments: str) -> tuple[str, ...]:
    """``nice -n 19 python -m voicebot.cli <arguments>`` (without nice when it is missing)."""
    command = (sys.executable, "-m", "voicebot.cli", *arguments)
    return ("nice", "-n", "19", *command) if shutil.which("nice") else command


def current_model(settings: Settings) -> Path | None:
    model = latest_model(settings)
    return model if model is not None and model.is_file() else None


def evaluation_folder(settings: Settings, model: Path) -> Path:
    """Where the report of ``model`` is: the gate's, or `voicebot evaluate`'s from here."""
    return models_dir(settings) / EVALUATIONS_DIR / model_name(model)


def training_spec(settings: Settings, base_env: Mapping[str, str] | None = None) -> JobSpec:
    """`voicebot train --if-needed`: nothing to do when nlu/ has not changed since the
    current model, and an immediate refusal when it is the data of the last refused one."""
    return JobSpec(
        kind=TRAINING,
        command=voicebot_command("train", "--if-needed"),
        environment=child_environment(settings, base_env),
        first_stage="Préparation de l'entraînement",
        conclude=lambda code, marker: conclude_training(settings, code, marker),
    )


def evaluation_spec(settings: Settings, base_env: Mapping[str, str] | None = None) -> JobSpec:
    """`voicebot evaluate` of the current model into its evaluation folder, when it has no
    report yet (a report the gate wrote is never overwritten). Raises JobBusyError."""
    model = current_model(settings)
    if model is None:
        raise JobBusyError("Aucun modèle en service : réentraînez d'abord le robot.")
    out = evaluation_folder(settings, model)
    if (out / "report.html").is_file():
        raise JobBusyError("Le modèle en service a déjà son évaluation.")
    return JobSpec(
        kind=EVALUATION,
        command=voicebot_command("evaluate", "--model", str(model), "--out", str(out)),
        environment=child_environment(settings, base_env),
        first_stage="Évaluation du modèle en service sur les jeux de test",
        conclude=lambda code, marker: conclude_evaluation(out, code),
    )


def conclude_training(settings: Settings, exit_code: int, marker: str) -> Outcome:
    """Accepted, unchanged or refused per the outcome marker and the exit code; the details
    from disk (the model in service, the refused candidate's report)."""
    if exit_code == 0 and marker in (OUTCOME_ACCEPTED, OUTCOME_UP_TO_DATE):
        model = current_model(settings)
        version = read_version(model).version if model else ""
        if marker == OUTCOME_UP_TO_DATE:
            return Outcome(
                "unchanged",
                "Rien à réentraîner : les données n'ont pas changé depuis le modèle en "
                f"service (version {version}).",
                version=version,
            )
        report = evaluation_folder(settings, model) / "report.html" if model else None
        return Outcome(
            "accepted",
            f"Nouveau modèle accepté : version {version}.",
            report=report if report and report.is_file() else None,
            version=version,
        )
    if exit_code == REFUSED_EXIT_CODE and marker == OUTCOME_REFUSED:
        refused = last_refused(models_dir(settings)) or {}
        report = Path(refused["report"]) if refused.get("report") else None
        return Outcome(
            "refused",
            "Nouveau modèle refusé : le modèle en service reste en place.",
            reasons=refusal_reasons(report, refused.get("reason", "")),
            report=report if report and report.is_file() else None,
        )
    return Outcome("failed", f"L'entraînement a échoué (code de sortie {exit_code}).")


def refusal_reasons(report: Path | None, reason: str) -> tuple[str, ...]:
    """The gate's reasons, from the refused candidate's report.json (else refused/last.json)."""
    if report is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(report.with_name("report.json").read_text(encoding="utf-8"))
            return tuple(str(r) for r in data["gate"]["reasons"])
    return tuple(r for r in reason.split("; ") if r)


def conclude_evaluation(out: Path, exit_code: int) -> Outcome:
    report = out / "report.html"
    if exit_code == 0 and report.is_file():
        return Outcome("evaluated", "Évaluation terminée.", report=report)
    return Outcome("failed", f"L'évaluation a échoué (code de sortie {exit_code}).")


__all__ = [
    "EVALUATION",
    "TRAINING",
    "JobBusyError",
    "JobRunner",
    "JobSpec",
    "JobStatus",
    "Outcome",
    "child_environment",
    "current_model",
    "evaluation_folder",
    "evaluation_spec",
    "training_spec",
]

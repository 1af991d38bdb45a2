"""Retraining from the console: the job runner (real subprocesses: stand-in commands for its
mechanics, and one real `voicebot train`), its API and the evaluation pages."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from tests.test_hardening import _Resources
from voicebot.console.app import make_app
from voicebot.console.training_api import TRAINING_JOBS, TrainingJobs
from voicebot.core.config import PROJECT_ROOT, Settings, load_settings
from voicebot.core.events import CallHub
from voicebot.core.interfaces import MediaTransport
from voicebot.dialogue.eval_report import STYLE_FILE
from voicebot.dialogue.model_store import (
    FINGERPRINT_FILE,
    make_version,
    recorded_current,
    write_last_refused,
    write_version,
)
from voicebot.dialogue.training import (
    OUTCOME_ACCEPTED,
    OUTCOME_REFUSED,
    STAGE_EVALUATION,
    STAGE_TRAINING,
)
from voicebot.dialogue.training_job import (
    STAGE_LABELS,
    JobBusyError,
    JobRunner,
    JobSpec,
    Outcome,
    OutputLines,
    child_environment,
    conclude_training,
    evaluation_spec,
    training_spec,
)
from voicebot.records.store import CallRecords

TOKEN = "jeton-de-test-entrainement"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "allonantes-20261202-141339"
VERSION = "20261202-141339-59cc2b4b0f93"
ACCEPTED_MESSAGE = f"Nouveau modèle accepté : version {VERSION}."
CHROMIUM = Path("/usr/bin/chromium")


# ---- helpers ----------------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    """Poll ``condition`` (a generous bound: never a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# A stand-in for `voicebot train`: prints what it is told, signals "ready", waits for "go"
# (a file), then exits with the code it is given. It may start a grandchild (its pid in a file).
STAND_IN = r"""
import os, subprocess, sys, time
folder, code = sys.argv[1], int(sys.argv[2])
print("priorité", os.getpriority(os.PRIO_PROCESS, 0))
for line in sys.argv[3:]:
    print(line)
if os.path.exists(os.path.join(folder, "grandchild")):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.path.join(folder, "grandchild.pid"), "w").write(str(child.pid))
open(os.path.join(folder, "ready"), "w").close()
while not os.path.exists(os.path.join(folder, "go")):
    time.sleep(0.02)
sys.exit(code)
"""


def stand_in(
    folder: Path,
    code: int,
    *lines: str,
    conclude: Callable[[int, str], Outcome] | None = None,
) -> JobSpec:
    folder.mkdir(parents=True, exist_ok=True)
    return JobSpec(
        kind="entrainement",
        command=(
            "nice",
            "-n",
            "19",
            sys.executable,
            "-c",
            STAND_IN,
            str(folder),
            str(code),
            *lines,
        ),
        environment={**os.environ, "PYTHONUNBUFFERED": "1"},
        first_stage="Préparation",
        conclude=conclude or (lambda c, m: Outcome("accepted" if c == 0 else "failed", m)),
    )


def fake_nlu(tmp_path: Path) -> Settings:
    """An nlu/ folder with a (fake) current model and its version: no Rasa needed."""
    nlu = tmp_path / "nlu"
    models = nlu / "models"
    models.mkdir(parents=True)
    model = models / f"{MODEL}.tar.gz"
    model.write_bytes(b"pas un vrai modele")
    version = make_version(model, "59cc2b4b0f93" + "0" * 52, "2026-12-02T14:13:39+00:00")
    write_version(model, version)
    return Settings().replace("paths", nlu_dir=nlu, data_dir=tmp_path / "data")


# ---- the runner's mechanics ---------------------------------------------------------------


async def test_progress_from_stage_markers_then_the_outcome(tmp_path: Path) -> None:
    runner = JobRunner()
    spec = stand_in(tmp_path, 0, f"{STAGE_TRAINING} Entraînement …", "une ligne", OUTCOME_ACCEPTED)
    started = runner.start(spec, who="Camille")
    assert started.state == "running" and started.who == "Camille"
    await wait_until(lambda: (tmp_path / "ready").exists())
    await wait_until(lambda: runner.status().stages == (STAGE_TRAINING,))
    running = runner.status()
    assert running.state == "running" and running.stage == STAGE_LABELS[STAGE_TRAINING]
    assert running.lines[-1] == OUTCOME_ACCEPTED and "priorité 19" in running.lines
    (tmp_path / "go").touch()
    done = await runner.finished()
    assert done.state == "accepted" and done.exit_code == 0 and done.stage == ""
    assert done.outcome is not None and done.outcome.message == OUTCOME_ACCEPTED
    assert done.elapsed_s > 0 and runner.status().elapsed_s == done.elapsed_s  # stopped


async def test_runs_under_uvloop_s_policy_as_in_the_server(tmp_path: Path) -> None:
    """Importing Rasa (sanic) sets uvloop's event-loop policy while the server's loop is
    asyncio's own: asyncio's subprocesses then fail (no child watcher). The job must not."""
    import uvloop

    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        runner = JobRunner()
        runner.start(stand_in(tmp_path, 0, OUTCOME_ACCEPTED))
        await wait_until(lambda: (tmp_path / "ready").exists())
        (tmp_path / "go").touch()
        done = await runner.finished()
    finally:
        asyncio.set_event_loop_policy(previous)
    assert done.state == "accepted" and done.exit_code == 0, done


async def test_one_job_at_a_time(tmp_path: Path) -> None:
    runner = JobRunner()
    runner.start(stand_in(tmp_path / "a", 0))
    with pytest.raises(JobBusyError, match="déjà en cours"):
        runner.start(stand_in(tmp_path / "b", 0))
    (tmp_path / "a" / "go").touch()
    assert (await runner.finished()).state == "accepted"
    runner.start(stand_in(tmp_path / "c", 0))  # free again
    (tmp_path / "c" / "go").touch()
    assert (await runner.finished()).state == "accepted"


async def test_a_failure_reports_its_exit_code_and_last_lines(tmp_path: Path) -> None:
    settings = fake_nlu(tmp_path)
    lines = [f"ligne {i}" for i in range(30)] + ["voicebot: error: quelque chose a cassé"]
    spec = stand_in(
        tmp_path / "job", 3, *lines, conclude=lambda c, m: conclude_training(settings, c, m)
    )
    runner = JobRunner()
    runner.start(spec)
    (tmp_path / "job" / "go").touch()
    done = await runner.finished()
    assert done.state == "failed" and done.exit_code == 3
    assert done.outcome is not None and "code de sortie 3" in done.outcome.message
    assert len(done.lines) == 20 and done.lines[-1] == "voicebot: error: quelque chose a cassé"


async def test_exit_code_2_without_the_refusal_marker_is_a_failure(tmp_path: Path) -> None:
    settings = fake_nlu(tmp_path)
    assert conclude_training(settings, 2, "").state == "failed"
    assert conclude_training(settings, 2, OUTCOME_REFUSED).state == "refused"
    assert conclude_training(settings, 1, OUTCOME_ACCEPTED).state == "failed"
    accepted = conclude_training(settings, 0, OUTCOME_ACCEPTED)
    assert accepted.state == "accepted" and accepted.version == "20261202-141339-59cc2b4b0f93"


def test_a_refusal_reads_the_gates_reasons_and_report_from_disk(tmp_path: Path) -> None:
    settings = fake_nlu(tmp_path)
    models = settings.paths.nlu_dir / "models"
    kept = models / "refused" / "allonantes-20261202-150000"
    kept.mkdir(parents=True)
    reasons = ["F1 de l'intention « saluer » en baisse", "taux en baisse"]
    gate = {"gate": {"accepted": False, "reasons": reasons}}
    (kept / "report.json").write_text(json.dumps(gate), encoding="utf-8")
    (kept / "report.html").write_text("<p>refusé</p>", encoding="utf-8")
    write_last_refused(models, "f" * 64, kept / "report.html", "; ".join(reasons))
    outcome = conclude_training(settings, 2, OUTCOME_REFUSED)
    assert outcome.state == "refused" and outcome.reasons == tuple(reasons)
    assert outcome.report == kept / "report.html" and "reste en place" in outcome.message
    (kept / "report.json").unlink()  # the reasons from refused/last.json then
    assert conclude_training(settings, 2, OUTCOME_REFUSED).reasons == tuple(reasons)


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
async def test_cancel_and_shutdown_end_the_whole_process_group(tmp_path: Path, how: str) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "grandchild").touch()
    runner = JobRunner()
    runner.start(stand_in(tmp_path, 0))
    await wait_until(lambda: (tmp_path / "ready").exists())
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert alive(grandchild)
    if how == "cancel":
        assert await runner.cancel()
    else:
        await runner.shutdown()
    status = runner.status()
    assert status.state == "cancelled" and not runner.running
    await wait_until(lambda: not alive(grandchild), timeout=30)
    assert not await runner.cancel()  # nothing left to cancel


async def test_a_job_cancelled_as_it_starts_is_ended_too(tmp_path: Path) -> None:
    runner = JobRunner()
    runner.start(stand_in(tmp_path, 0))
    assert await asyncio.wait_for(runner.cancel(), 60)  # before its process even exists
    assert runner.status().state == "cancelled" and not (tmp_path / "go").exists()


async def test_a_command_that_cannot_start_fails_cleanly(tmp_path: Path) -> None:
    runner = JobRunner()
    spec = stand_in(tmp_path, 0)
    runner.start(JobSpec("entrainement", (str(tmp_path / "absent"),), {}, "", spec.conclude))
    done = await runner.finished()
    assert done.state == "failed" and done.outcome is not None
    assert "n'a pas pu démarrer" in done.outcome.message


def test_output_lines_split_on_returns_and_stay_bounded() -> None:
    output = OutputLines()
    text = "Epochs: 10%\rEpochs: 20%\r\nété\n".encode()
    output.feed(text[:20])  # in the middle of « é »
    output.feed(text[20:])
    output.feed(b"x" * 10_000)
    output.feed(b"")
    assert list(output.tail)[:3] == ["Epochs: 10%", "Epochs: 20%", "été"]
    assert all(len(line) <= 300 for line in output.tail)


# ---- the command and its settings --------------------------------------------------------


def test_the_child_loads_exactly_the_servers_settings_and_no_secret(tmp_path: Path) -> None:
    settings = (
        Settings()
        .replace("paths", nlu_dir=tmp_path / "nlu", data_dir=tmp_path / "données")
        .replace("dialogue", gate_max_f1_drop=3.5)
        .replace("vad", floor_dbfs=float("-inf"))
        .replace("console", token="secret-console")
    )
    env = child_environment(settings, base={"VOICEBOT_CONSOLE_TOKEN": "x", "LANG": "fr_FR"})
    assert "VOICEBOT_CONSOLE_TOKEN" not in env and "secret-console" not in env.values()
    assert env["LANG"] == "fr_FR" and env["PYTHONUNBUFFERED"] == "1"
    assert load_settings(environ=env) == settings.replace("console", token="")


def test_the_commands_are_fixed(tmp_path: Path) -> None:
    settings = fake_nlu(tmp_path)
    command = training_spec(settings).command
    assert command[-4:] == ("-m", "voicebot.cli", "train", "--if-needed")
    assert command[:3] == ("nice", "-n", "19") or command[0] == sys.executable
    evaluation = evaluation_spec(settings).command
    out = settings.paths.nlu_dir / "models" / "evaluations" / MODEL
    assert evaluation[-5:] == ("evaluate", "--model", str(out.parents[1] / f"{MODEL}.tar.gz"),
                               "--out", str(out))  # fmt: skip
    (out).mkdir(parents=True)
    (out / "report.html").write_text("<p>déjà là</p>", encoding="utf-8")
    with pytest.raises(JobBusyError, match="déjà son évaluation"):
        evaluation_spec(settings)


# ---- the API and the evaluation pages ------------------------------------------------------


@dataclass
class Console:
    client: TestClient
    settings: Settings
    folder: Path  # the stand-in job's folder


async def _no_call(transport: MediaTransport) -> None:
    raise AssertionError("no call here")


SERVICE = {
    "model_version": "20261202-141339-59cc2b4b0f93",
    "last_reload": {"ok": False, "message": "base de connaissances refusée : mairie.yml"},
}


async def _console(tmp_path: Path, token: str) -> Console:
    settings = fake_nlu(tmp_path).replace("console", token=token)
    app = make_app(
        settings, CallHub(), CallRecords.open(settings), _no_call, service_status=lambda: SERVICE
    )
    folder = tmp_path / "job"

    report = settings.paths.nlu_dir / "models" / "evaluations" / MODEL / "report.html"
    accepted = Outcome("accepted", ACCEPTED_MESSAGE, report=report, version=VERSION)

    def job(_: Settings) -> JobSpec:
        return stand_in(
            folder,
            0,
            f"{STAGE_EVALUATION} Évaluation …",
            OUTCOME_ACCEPTED,
            conclude=lambda code, marker: accepted,
        )

    app[TRAINING_JOBS] = TrainingJobs(app[TRAINING_JOBS].runner, training=job)
    client = TestClient(TestServer(app))
    await client.start_server()
    return Console(client, settings, folder)


@pytest_asyncio.fixture(loop_scope="function")
async def guarded(tmp_path: Path) -> AsyncIterator[Console]:
    console = await _console(tmp_path, TOKEN)
    yield console
    await console.client.close()


@pytest_asyncio.fixture(loop_scope="function")
async def open_console(tmp_path: Path) -> AsyncIterator[Console]:
    console = await _console(tmp_path, "")
    yield console
    await console.client.close()


async def test_the_api_needs_the_token(guarded: Console) -> None:
    client = guarded.client
    assert (await client.get("/api/training")).status == 401
    assert (await client.post("/api/training")).status == 401
    assert (await client.post("/api/evaluation")).status == 401
    page = await client.get("/ameliorer/evaluation", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"].startswith("/login")
    files = await client.get(f"/ameliorer/evaluation/{MODEL}/report.html", allow_redirects=False)
    assert files.status == 303
    status = await client.get("/api/training", headers=BEARER)
    assert status.status == 200
    data = await status.json()
    assert data["state"] == "idle"
    assert data["model"] == {
        "name": MODEL,
        "version": "20261202-141339-59cc2b4b0f93",
        "evaluation_url": None,
    }
    # What the server answers with, and its last reload (voicebot.dialogue.live_reload).
    assert data["service"] == SERVICE


async def test_start_progress_refusal_of_a_second_job_and_cancel(guarded: Console) -> None:
    client = guarded.client
    started = await client.post("/api/training", json={"who": "Camille\x07 Martin"}, headers=BEARER)
    assert started.status == 202
    data = await started.json()
    assert data["state"] == "running" and data["who"] == "Camille Martin"
    again = await client.post("/api/training", headers=BEARER)
    assert again.status == 409 and "déjà en cours" in (await again.json())["error"]
    evaluation = await client.post("/api/evaluation", headers=BEARER)
    assert evaluation.status == 409
    await wait_until(lambda: (guarded.folder / "ready").exists())

    async def stage() -> str:
        return str((await (await client.get("/api/training", headers=BEARER)).json())["stage"])

    deadline = time.monotonic() + 60
    while await stage() != STAGE_LABELS[STAGE_EVALUATION]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    cancelled = await client.post("/api/training/cancel", headers=BEARER)
    assert cancelled.status == 200 and (await cancelled.json())["state"] == "cancelled"
    assert (await client.post("/api/training/cancel", headers=BEARER)).status == 409


async def test_a_bad_body_is_refused(open_console: Console) -> None:
    client = open_console.client
    for body in ("[1, 2]", '{"who": 3}', "pas du json"):
        response = await client.post(
            "/api/training", data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status == 400
    assert (await (await client.get("/api/training")).json())["state"] == "idle"


async def test_a_foreign_origin_cannot_start_a_training(open_console: Console) -> None:
    response = await open_console.client.post(
        "/api/training", headers={"Origin": "https://ailleurs.example"}
    )
    assert response.status == 403


async def test_no_evaluation_yet_gives_a_french_page_without_inline_code(
    open_console: Console,
) -> None:
    response = await open_console.client.get("/ameliorer/evaluation")
    assert response.status == 200
    text = await response.text()
    assert "Aucune évaluation" in text and 'id="entrainement"' in text
    page = _Resources()
    page.feed(text)
    assert "/static/entrainement.js" in page.loaded and page.inline == []


def write_fake_report(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "report.html").write_text(
        '<link rel="stylesheet" href="report.css"><img src="seuils.png">', encoding="utf-8"
    )
    (folder / STYLE_FILE).write_text("body { margin: 0; }", encoding="utf-8")
    (folder / "seuils.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "report.json").write_text("{}", encoding="utf-8")


async def test_the_current_models_report_and_its_files(open_console: Console) -> None:
    client = open_console.client
    models = open_console.settings.paths.nlu_dir / "models"
    write_fake_report(models / "evaluations" / MODEL)
    page = await client.get("/ameliorer/evaluation", allow_redirects=False)
    assert page.status == 303
    assert page.headers["Location"] == f"/ameliorer/evaluation/{MODEL}/report.html"
    report = await client.get(page.headers["Location"])
    assert report.status == 200 and report.content_type == "text/html"
    assert "style-src 'self'" in report.headers["Content-Security-Policy"]
    for name, kind in (("seuils.png", "image/png"), ("report.css", "text/css")):
        served = await client.get(f"/ameliorer/evaluation/{MODEL}/{name}")
        assert served.status == 200 and served.content_type == kind
    data = await (await client.get("/api/training")).json()
    assert data["model"]["evaluation_url"] == "/ameliorer/evaluation"


async def test_a_refused_candidates_report(open_console: Console) -> None:
    client = open_console.client
    refused = "allonantes-20261202-150000"
    folder = open_console.settings.paths.nlu_dir / "models" / "refused" / refused
    write_fake_report(folder)
    (folder / f"{refused}.tar.gz").write_bytes(b"archive")
    page = await client.get(f"/ameliorer/evaluation?refused={refused}", allow_redirects=False)
    assert page.headers["Location"] == f"/ameliorer/evaluation/refused/{refused}/report.html"
    assert (await client.get(page.headers["Location"])).status == 200
    archive = await client.get(f"/ameliorer/evaluation/refused/{refused}/{refused}.tar.gz")
    assert archive.status == 404  # a report's files only, never the model
    missing = await client.get("/ameliorer/evaluation?refused=allonantes-inconnu")
    assert missing.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/ameliorer/evaluation/..%2F..%2F..%2Fetc/passwd",
        f"/ameliorer/evaluation/{MODEL}/..%2F..%2Ffingerprint.json",
        f"/ameliorer/evaluation/{MODEL}/%2E%2E",
        "/ameliorer/evaluation/refused/..%2Fevaluations/report.html",
        f"/ameliorer/evaluation/refused/..%2Fevaluations%2F{MODEL}/report.html",
        "/ameliorer/evaluation/..%2Fmodels/fingerprint.json",
        f"/ameliorer/evaluation/{MODEL}/report.html%00.png",
    ],
)
async def test_path_traversal_is_refused(open_console: Console, path: str) -> None:
    models = open_console.settings.paths.nlu_dir / "models"
    write_fake_report(models / "evaluations" / MODEL)
    (models / FINGERPRINT_FILE).write_text('{"secret": 1}', encoding="utf-8")
    response = await open_console.client.get(path)
    assert response.status in (400, 404)
    assert "secret" not in await response.text() and "root:" not in await response.text()
    query = await open_console.client.get("/ameliorer/evaluation?refused=../evaluations/" + MODEL)
    assert query.status == 404


async def test_the_page_in_a_browser_starts_a_training_and_shows_its_result(
    open_console: Console,
) -> None:
    from playwright.async_api import async_playwright

    assert CHROMIUM.exists(), "install Debian's chromium: apt-get install chromium"
    url = str(open_console.client.make_url("/ameliorer/evaluation"))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(locale="fr-FR")
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(url)
            version = page.get_by_test_id("version-modele")
            await version.get_by_text(VERSION, exact=False).wait_for()
            assert await page.get_by_test_id("evaluer").is_visible()  # no evaluation yet
            button = page.get_by_test_id("reentrainer")
            await button.click()
            state = page.get_by_test_id("etat-entrainement")
            await state.get_by_text("Entraînement en cours", exact=False).wait_for()
            assert await button.is_disabled()
            await wait_until(lambda: (open_console.folder / "ready").exists())
            await state.get_by_text(STAGE_LABELS[STAGE_EVALUATION], exact=False).wait_for()
            (open_console.folder / "go").touch()
            result = page.get_by_test_id("resultat-entrainement")
            await result.get_by_text(ACCEPTED_MESSAGE).wait_for()
            link = page.get_by_test_id("lien-evaluation")
            assert await link.get_attribute("href") == f"/ameliorer/evaluation/{MODEL}/report.html"
            assert await link.text_content() == "Voir l'évaluation"
            assert await button.is_enabled()
            assert errors == []  # no script error, nothing the Content-Security-Policy blocked
        finally:
            await browser.close()


# ---- one real `voicebot train` through the job ------------------------------------------------

NLU_DIR = PROJECT_ROOT / "nlu"
EXTRA_EXAMPLES = """version: "3.1"
nlu:
- intent: saluer
  examples: |
    - bonjour à vous
    - bien le bonjour
    - bonjour bonjour
"""


@pytest.mark.slow
async def test_a_real_training_through_the_job_agrees_with_the_disk(tmp_path: Path) -> None:
    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("candidate", "refused"))
    (copy / "data" / "exemples-console.yml").write_text(EXTRA_EXAMPLES, encoding="utf-8")
    models = copy / "models"
    before = recorded_current(models)
    assert before is not None, "train the repository's model first (make test does)"
    settings = Settings().replace("paths", nlu_dir=copy, data_dir=tmp_path / "data")

    runner = JobRunner()
    runner.start(training_spec(settings), who="test")
    done = await runner.finished()

    assert done.outcome is not None, done.lines
    print(f"real `voicebot train` through the job: {done.state} after {done.elapsed_s:.0f} s")
    assert done.state in ("accepted", "refused"), (done.state, done.exit_code, done.lines)
    assert done.stages == (STAGE_TRAINING, STAGE_EVALUATION)
    assert not (models / "candidate").exists()
    after = recorded_current(models)
    assert after is not None
    if done.state == "accepted":
        assert done.exit_code == 0 and after[1] != before[1] and after[1].is_file()
        assert not before[1].exists()
        version = json.loads(after[1].with_suffix("").with_suffix(".json").read_text("utf-8"))
        assert done.outcome.version == version["version"]
        report = done.outcome.report
        assert report == models / "evaluations" / after[1].name.removesuffix(".tar.gz") / (
            "report.html"
        )
    else:
        assert done.exit_code == 2 and after == before and before[1].is_file()
        report = done.outcome.report
        assert report is not None and report.parent.parent == models / "refused"
        gate = json.loads(report.with_name("report.json").read_text("utf-8"))["gate"]
        assert gate["accepted"] is False and list(done.outcome.reasons) == gate["reasons"]
        assert done.outcome.reasons
    # the report passes the console's Content-Security-Policy: no inline style or script
    assert report is not None and report.is_file() and (report.parent / STYLE_FILE).is_file()
    page = _Resources()
    page.feed(report.read_text(encoding="utf-8"))
    assert page.inline == [] and STYLE_FILE in page.loaded
    assert all(not url.startswith(("/", "http")) for url in page.loaded)
    assert all((report.parent / url).is_file() for url in page.loaded)


@pytest.mark.slow
async def test_a_sabotaged_training_through_the_job_is_refused_with_the_gates_reasons(
    tmp_path: Path,
) -> None:
    from tests.test_evaluate_gate import SWAPPED, sabotage

    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("candidate", "refused"))
    sabotage(copy / "data", *SWAPPED)
    models = copy / "models"
    before = recorded_current(models)
    assert before is not None, "train the repository's model first (make test does)"
    settings = Settings().replace("paths", nlu_dir=copy, data_dir=tmp_path / "data")

    runner = JobRunner()
    runner.start(training_spec(settings))
    done = await runner.finished()

    assert done.state == "refused" and done.exit_code == 2, (done.state, done.lines)
    assert done.outcome is not None and done.outcome.report is not None
    print(f"sabotaged `voicebot train` through the job: refused after {done.elapsed_s:.0f} s")
    assert recorded_current(models) == before
    for intent in SWAPPED:
        assert any(f"« {intent} » en baisse" in reason for reason in done.outcome.reasons)
    assert done.outcome.report.parent.parent == models / "refused"

    # the same data again: refused at once, with the same report, without training
    runner.start(training_spec(settings))
    again = await runner.finished()
    assert again.state == "refused" and again.stages == ()
    assert again.outcome is not None and again.outcome.report == done.outcome.report


@pytest.mark.slow
async def test_a_real_evaluation_of_the_model_in_service_through_the_job(tmp_path: Path) -> None:
    copy = tmp_path / "nlu"
    shutil.copytree(
        NLU_DIR, copy, ignore=shutil.ignore_patterns("candidate", "refused", "evaluations")
    )
    settings = Settings().replace("paths", nlu_dir=copy, data_dir=tmp_path / "data")
    current = recorded_current(copy / "models")
    assert current is not None

    runner = JobRunner()
    runner.start(evaluation_spec(settings))
    done = await runner.finished()

    assert done.state == "evaluated" and done.exit_code == 0, (done.state, done.lines)
    folder = copy / "models" / "evaluations" / current[1].name.removesuffix(".tar.gz")
    assert done.outcome is not None and done.outcome.report == folder / "report.html"
    print(f"`voicebot evaluate` through the job: {done.elapsed_s:.0f} s")
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["model"] == str(current[1]) and "gate" not in report
    with pytest.raises(JobBusyError, match="déjà son évaluation"):
        evaluation_spec(settings)  # never over a report already there

"""`voicebot evaluate` on the real model, and the training gate refusing a sabotaged candidate
(one real Rasa training: minutes on a slow machine; no speed assertion)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voicebot.core.config import PROJECT_ROOT, Settings
from voicebot.dialogue.agent import RasaDialogue, load_agent
from voicebot.dialogue.model_store import FINGERPRINT_FILE, version_file
from voicebot.dialogue.training import latest_model

NLU_DIR = PROJECT_ROOT / "nlu"
SWAPPED = ("decheterie", "encombrants")


def voicebot(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicebot.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def png_size(path: Path) -> tuple[int, int]:
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    return image.shape[1], image.shape[0]


@pytest.mark.slow
def test_evaluate_json_on_the_current_model(rasa_dialogue: RasaDialogue, tmp_path: Path) -> None:
    out = tmp_path / "rapport"
    result = voicebot("evaluate", "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert 0.5 < data["clean_accuracy"] <= 1 and 0.5 < data["noisy_accuracy"] <= 1
    model = latest_model(rasa_dialogue.settings)
    assert model is not None and data["model"] == str(model)
    assert data["test_sets"] == ["complement", "heldout", "unseen"]
    for kind in ("clean", "noisy"):
        f1 = data["per_intent_f1"][kind]
        assert {"decheterie", "hors_sujet", "urgence"} <= set(f1)
        assert all(0 <= value <= 1 for value in f1.values())
    first = data["models"][0]
    assert first["clean"]["total"] == first["noisy"]["total"] >= 400
    assert len(first["clean"]["threshold_curve"]) == 13
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["confusion-clean.png", "confusion-noisy.png", "seuils.png"]
    for png in pngs:
        width, height = png_size(png)
        assert width > 300 and height > 300
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Évaluation du modèle de compréhension" in page and "phrases bruitées" in page
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == data


def sabotage(data_dir: Path, first: str, second: str) -> None:
    """Swap the examples of two intents in every training file (rules untouched)."""
    for path in data_dir.glob("*.yml"):
        if path.name == "rules.yml":
            continue
        text = path.read_text(encoding="utf-8")
        swapped = re.sub(
            rf"^- intent: ({first}|{second})$",
            lambda m: f"- intent: {second if m.group(1) == first else first}",
            text,
            flags=re.MULTILINE,
        )
        path.write_text(swapped, encoding="utf-8")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_sabotaged_candidate_is_refused_and_the_current_model_stays(
    rasa_dialogue: RasaDialogue, tmp_path: Path
) -> None:
    current = latest_model(rasa_dialogue.settings)
    assert current is not None
    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("models"))
    models = copy / "models"
    models.mkdir()
    shutil.copy2(current, models / current.name)
    shutil.copy2(current.parent / FINGERPRINT_FILE, models / FINGERPRINT_FILE)
    if version_file(current).is_file():
        shutil.copy2(version_file(current), version_file(models / current.name))
    sabotage(copy / "data", *SWAPPED)
    before = digest(models / current.name)
    fingerprint_before = (models / FINGERPRINT_FILE).read_text(encoding="utf-8")

    env = {"VOICEBOT_PATHS_NLU_DIR": str(copy)}
    result = voicebot("train", env=env, timeout=3600)

    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Modèle refusé" in result.stderr and "reste en service" in result.stderr
    # the current model is untouched and still the one the bot loads
    assert sorted(p.name for p in models.glob("*.tar.gz")) == [current.name]
    assert digest(models / current.name) == before
    assert (models / FINGERPRINT_FILE).read_text(encoding="utf-8") == fingerprint_before
    assert not (models / "candidate").exists()
    # the candidate is kept aside with the report that says why, in French
    [kept] = [p for p in (models / "refused").iterdir() if p.is_dir()]
    assert len(list(kept.glob("allonantes-*.tar.gz"))) == 1
    report = json.loads((kept / "report.json").read_text(encoding="utf-8"))
    assert report["gate"]["accepted"] is False
    reasons = " ".join(report["gate"]["reasons"])
    for intent in SWAPPED:
        assert f"« {intent} » en baisse" in reasons
    assert "Modèle refusé" in (kept / "report.html").read_text(encoding="utf-8")
    assert report["models"][1]["model"].endswith(current.name)  # compared with the current one

    # the same data again: refused at once, without training again
    again = voicebot("train", "--if-needed", env=env, timeout=600)
    assert again.returncode == 2 and "déjà donné un modèle refusé" in again.stderr

    # the bot still answers with the current model
    agent = load_agent(Settings().replace("paths", nlu_dir=copy))
    import asyncio

    parsed = asyncio.run(agent.parse_message("je voudrais jeter un vieux canapé"))
    assert parsed["intent"]["name"] == "encombrants"

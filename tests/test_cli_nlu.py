"""The CLI of the dialogue part, as a user runs it: `voicebot chat --text`, `voicebot nlu parse`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from voicebot.core.config import PROJECT_ROOT
from voicebot.dialogue.agent import RasaDialogue
from voicebot.dialogue.nlu_parse import parse_lines

ENV = {
    **os.environ,
    "RASA_TELEMETRY_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
    "PYTHONWARNINGS": "ignore",
}
KEYS = {"text", "intent", "confidence", "entities", "ranking"}


def voicebot(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "voicebot.cli", *args],
        cwd=PROJECT_ROOT,
        env=ENV,
        input=stdin,
        capture_output=True,
        timeout=240,
        check=False,
    )


def test_chat_text_prints_the_reply_and_the_handoff_signal(rasa_dialogue: RasaDialogue) -> None:
    done = voicebot("chat", "--text", "je voudrais parler à un conseiller s'il vous plaît")
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().strip().splitlines()
    assert lines[0] == rasa_dialogue.prompt("transfer")
    signal = json.loads(lines[-1])["handoff"]
    assert signal["reason"] == "demande"
    assert signal["last_utterances"] == ["je voudrais parler à un conseiller s'il vous plaît"]
    assert signal["summary"].startswith("Transfert")


def test_nlu_parse_file_json_survives_bad_lines(tmp_path: Path) -> None:
    lines = [
        b"quels sont les horaires de la mairie de doulon",
        b"",
        ("passeport " * 1000).encode(),  # 10,000 characters
        b"je voudrais un acte de naissance \xff\xfe invalide",
        "😀😀 🎉".encode(),
        "je veux jeter mon canapé 🛋️".encode(),
        b"quel temps fait-il demain",
    ]
    path = tmp_path / "phrases.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = voicebot("nlu", "parse", "--file", str(path), "--json")
    assert done.returncode == 0, done.stderr.decode()
    results = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(results) == len(lines)  # one result per input line, aligned
    for result in results:
        assert set(result) >= KEYS
    first = results[0]
    assert first["intent"] == "horaires_mairie"
    assert {"entity": "quartier", "value": "Doulon-Bottière"} in first["entities"]
    assert first["ranking"][0]["name"] == "horaires_mairie"
    assert 0.0 < first["confidence"] <= 1.0
    assert results[1]["intent"] is None and "vide" in results[1]["error"]
    assert results[2]["intent"] == "papiers_identite" and "tronqué" in results[2]["warning"]
    assert results[3]["intent"] is None and "UTF-8" in results[3]["error"]
    assert results[3]["line"] == 4
    assert "error" not in results[4]  # emoji only: a clean (fallback) decision
    assert results[5]["intent"] == "encombrants"
    assert results[6]["intent"] in ("hors_sujet", "nlu_fallback")


def test_nlu_parse_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    done = voicebot("nlu", "parse", "--file", str(tmp_path / "absent.txt"), "--json")
    assert done.returncode == 2
    assert "cannot read" in done.stderr.decode()


async def test_parse_lines_human_output(rasa_dialogue: RasaDialogue) -> None:
    out = io.StringIO()
    errors = await parse_lines(
        rasa_dialogue.agent, ["ma poubelle n'a pas été ramassée".encode(), b""], False, out
    )
    printed = out.getvalue().splitlines()
    assert errors == 1
    assert printed[0].startswith("collecte_dechets (")
    assert printed[1].startswith("ERREUR ligne 2")

"""Citizens' data rights: `voicebot records export --caller NUMBER` and
`voicebot records delete --caller NUMBER`, through the keyed hash of the number.

The records are seeded through the store as a call session writes them; what the commands
must find or erase is known from the seed (which call was made by which number), and what
is left is read back from the database tables directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from voicebot import cli
from voicebot.core.config import PROJECT_ROOT, Settings
from voicebot.records import rights_commands
from voicebot.records.store import CallRecords, calls_table, database_url, turns_table

KEY = "clé-des-droits-des-appelants"
# (call id, the number as the telephony passed it, the caller's words)
SEED = (
    ("x1", "0612345678", "Je cherche les horaires de la mairie de Doulon."),
    ("x2", "+33 6 12 34 56 78", "Ma carte d'identité est perdue."),  # same line, other form
    ("y1", "0698765432", "Quand passe le camion des encombrants ?"),
    ("z1", None, "Bonjour, c'est pour la cantine."),  # no number passed
    ("z2", "0712345678", "Un lampadaire est cassé rue de Strasbourg."),  # a near neighbour
)
OURS = {"x1", "x2"}
ASKED = "06.12.34.56.78"  # how the citizen writes their number in the request


def _settings(data_dir: Path) -> Settings:
    return Settings().replace("paths", data_dir=data_dir).replace("records", caller_hash_key=KEY)


async def _seed(settings: Settings) -> None:
    store = CallRecords.open(settings, clock=lambda: time.time() - 3600)
    try:
        for call_id, number, words in SEED:
            await store.start_call(call_id, "audiosocket", number)
            await store.add_turn(call_id, "bot", "Bonjour, ici AlloNantes.", "saluer", 1.0)
            await store.add_turn(call_id, "caller", words, asr_confidence=0.8)
            await store.add_turn(call_id, "bot", "Voici la réponse.", "horaires_mairie", 0.9)
            await store.end_call(call_id, "resolved")
    finally:
        await store.close()


def _table_rows(settings: Settings) -> tuple[set[str], dict[str, int]]:
    """The call ids kept, and the number of turns of each call id (read directly)."""
    engine = sa.create_engine(database_url(settings))
    try:
        with engine.connect() as conn:
            calls = {row.call_id for row in conn.execute(sa.select(calls_table.c.call_id))}
            turns: dict[str, int] = {}
            for (call_id,) in conn.execute(sa.select(turns_table.c.call_id)):
                turns[call_id] = turns.get(call_id, 0) + 1
    finally:
        engine.dispose()
    return calls, turns


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    data_dir = tmp_path / "data"
    settings = _settings(data_dir)
    asyncio.run(_seed(settings))
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("VOICEBOT_CALLER_HASH_KEY", KEY)
    for name in ("VOICEBOT_CONFIG", "VOICEBOT_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return settings


def _export(capsys: pytest.CaptureFixture[str], number: str = ASKED) -> dict[str, Any]:
    assert cli.main(["records", "export", "--caller", number]) == 0
    exported: dict[str, Any] = json.loads(capsys.readouterr().out)
    return exported


def test_export_then_delete_one_number(
    seeded: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    before_calls, before_turns = _table_rows(seeded)
    assert before_calls == {call_id for call_id, _, _ in SEED}

    exported = _export(capsys)
    # that number's calls only: both its forms, nobody else's
    assert [call["call_id"] for call in exported["calls"]] == ["x1", "x2"]
    said = {words for call_id, _, words in SEED if call_id in OURS}
    others = {words for call_id, _, words in SEED if call_id not in OURS}
    text = json.dumps(exported, ensure_ascii=False)
    for words in said:
        assert words in text
    for words in others:
        assert words not in text
    for call in exported["calls"]:
        assert [t["speaker"] for t in call["turns"]] == ["bot", "caller", "bot"]
        assert call["outcome"] == "resolved" and call["started_at"].startswith("20")
        assert len(call["caller_hash"]) == 64  # the pseudonym kept, never the number
    assert "0612345678" not in text and "12 34 56 78" not in text
    assert exported["retention_days"] == seeded.records.retention_days

    # erasure, with standard input not a terminal: no question asked
    done = subprocess.run(
        [sys.executable, "-m", "voicebot.cli", "records", "delete", "--caller", ASKED],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "2 appel(s) et 6 tour(s) de parole supprimé(s)" in done.stdout

    calls, turns = _table_rows(seeded)
    assert calls == before_calls - OURS  # the others, numberless included, are all there
    assert not OURS & set(turns)  # the deleted calls' turns are gone
    assert turns == {k: v for k, v in before_turns.items() if k not in OURS}  # others intact
    assert _export(capsys)["calls"] == []
    assert [c["call_id"] for c in _export(capsys, "06 98 76 54 32")["calls"]] == ["y1"]

    # again: nothing left to delete
    assert cli.main(["records", "delete", "--caller", ASKED, "--yes"]) == 0
    assert "0 appel(s)" in capsys.readouterr().out


def test_without_the_key_nothing_is_read_nor_deleted(
    seeded: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOICEBOT_CALLER_HASH_KEY")
    monkeypatch.setenv("VOICEBOT_CALLER_HASH_KEY_FILE", str(Path(seeded.paths.data_dir) / "none"))
    assert cli.main(["records", "export", "--caller", ASKED]) == 2
    err = capsys.readouterr().err
    assert "cannot export" in err and "VOICEBOT_CALLER_HASH_KEY" in err
    assert cli.main(["records", "delete", "--caller", ASKED, "--yes"]) == 2
    assert "cannot delete" in capsys.readouterr().err
    # another key finds nobody: the number is only known through its keyed hash
    monkeypatch.setenv("VOICEBOT_CALLER_HASH_KEY", "une-autre-clé")
    assert _export(capsys)["calls"] == []
    assert len(_table_rows(seeded)[0]) == len(SEED)
    # not a number
    monkeypatch.setenv("VOICEBOT_CALLER_HASH_KEY", KEY)
    assert cli.main(["records", "export", "--caller", "Mme Dupont"]) == 2
    assert "phone number" in capsys.readouterr().err


def test_on_a_terminal_the_delete_asks_first(
    seeded: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    questions: list[str] = []

    def refuse(question: str) -> bool:
        questions.append(question)
        return False

    assert rights_commands.delete_command(seeded, ASKED, ask=refuse) == 1
    assert "Rien n'a été supprimé" in capsys.readouterr().out
    assert questions and "2 appel(s) et 6 tour(s)" in questions[0]
    assert len(_table_rows(seeded)[0]) == len(SEED)

    assert rights_commands.delete_command(seeded, ASKED, ask=lambda _: True) == 0
    assert _table_rows(seeded)[0] == {call_id for call_id, _, _ in SEED} - OURS

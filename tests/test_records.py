"""Call records on SQLite and on a real PostgreSQL server started for these tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa

from telephony.emulator.net import free_port
from tests.pg_helpers import fresh_postgres_database as _fresh_postgres_database
from voicebot import cli
from voicebot.core.config import PROJECT_ROOT, Settings, load_settings, with_caller_hash_key
from voicebot.core.errors import ConfigError, VoicebotError
from voicebot.records.store import CallRecords, database_url, parse_duration, search_form

HASH_KEY = "clé-de-test-pour-les-numéros"
# The same number as Asterisk passes it and as callers say it.
NUMBER = "0612345678"
NUMBER_FORMS = ("0612345678", "06 12 34 56 78", "06.12.34.56.78", "612345678", "12345678")


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    base = Settings().replace("paths", data_dir=tmp_path / "data")
    base = base.replace("records", caller_hash_key=HASH_KEY)
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        base = base.replace("records", database_url=_fresh_postgres_database(server))
    return base


@pytest_asyncio.fixture(loop_scope="function")
async def records(settings: Settings) -> AsyncIterator[CallRecords]:
    store = CallRecords.open(settings)
    try:
        yield store
    finally:
        await store.close()


def _all_rows_as_text(settings: Settings) -> str:
    """Every value of every table, as one text: what someone reading the database sees."""
    engine = sa.create_engine(database_url(settings))
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            return "\n".join(
                repr(tuple(row))
                for table in tables
                for row in conn.execute(sa.text(f"SELECT * FROM {table}"))  # noqa: S608 — table names from the database's own schema
            )
    finally:
        engine.dispose()


async def test_a_call_is_recorded_turn_by_turn(records: CallRecords) -> None:
    await records.start_call("appel-1", "audiosocket", None)
    await records.add_turn("appel-1", "bot", "Bonjour, ici AlloNantes.", "greet", 1.0)
    await records.add_turn(
        "appel-1", "caller", "je voudrais un acte de naissance", None, None, 0.81
    )
    await records.add_turn(
        "appel-1", "bot", "Vous pouvez le demander en ligne.", "etat_civil", 0.93, None, 412.5
    )
    handoff = {
        "reason": "demande",
        "intent": "etat_civil",
        "entities": {"document": "acte de naissance"},
        "summary": "L'appelant veut un acte de naissance.",
        "last_utterances": ["je voudrais un acte de naissance"],
    }
    await records.end_call("appel-1", "transferred", "demande", handoff, context_delivered=True)

    call = await records.get_call("appel-1")
    assert call is not None
    assert call["transport"] == "audiosocket"
    assert call["outcome"] == "transferred"
    assert call["handoff_reason"] == "demande"
    assert call["context_delivered"] is True
    assert call["handoff"] == handoff
    assert call["intent"] == "etat_civil"
    assert call["turn_count"] == 3
    assert call["excerpt"] == "je voudrais un acte de naissance"
    assert call["duration_s"] is not None and call["duration_s"] >= 0
    assert call["ended_at"] >= call["started_at"]
    speakers = [t["speaker"] for t in call["turns"]]
    assert speakers == ["bot", "caller", "bot"]
    assert call["turns"][1]["asr_confidence"] == pytest.approx(0.81)
    assert call["turns"][2]["confidence"] == pytest.approx(0.93)
    assert call["turns"][2]["latency_ms"] == pytest.approx(412.5)
    assert await records.get_call("inconnu") is None


async def test_duration_is_the_time_with_the_bot(settings: Settings) -> None:
    now = [1_000_000.0]
    store = CallRecords.open(settings, clock=lambda: now[0])
    try:
        await store.start_call("appel-d", "websocket", None)
        now[0] += 42.5
        await store.end_call("appel-d", "resolved")
        call = await store.get_call("appel-d")
    finally:
        await store.close()
    assert call is not None
    assert call["duration_s"] == pytest.approx(42.5)


async def test_caller_number_is_only_a_keyed_hash(
    records: CallRecords, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await records.start_call("appel-n", "audiosocket", NUMBER)
    await records.add_turn("appel-n", "caller", "rappelez-moi au 06 12 34 56 78 s'il vous plaît")
    await records.add_turn("appel-n", "bot", "Je note le 06.12.34.56.78.", "rappel", 0.9)
    await records.end_call(
        "appel-n",
        "transferred",
        "demande",
        {"reason": "demande", "summary": "Rappeler le 0612345678", "entities": {"tel": NUMBER}},
    )
    await records.start_call("appel-n2", "audiosocket", "06 12 34 56 78")

    expected = hmac.new(HASH_KEY.encode(), NUMBER.encode(), hashlib.sha256).hexdigest()
    stored = _all_rows_as_text(settings)
    assert expected in stored  # the hash is there (the same caller can be recognised) ...
    assert stored.count(expected) == 2  # ... whichever way the number was written
    for form in NUMBER_FORMS:  # ... and the number is nowhere, in no form
        assert form not in stored
    assert "<numéro>" in stored
    assert NUMBER not in caplog.text and "06 12 34 56 78" not in caplog.text
    call = await records.get_call("appel-n")
    assert call is not None and call["caller_known"] is True
    assert "<numéro>" in call["turns"][0]["text"]
    assert call["handoff"]["entities"]["tel"] == "<numéro>"


async def test_sqlite_files_hold_no_number(tmp_path: Path) -> None:
    settings = Settings().replace("paths", data_dir=tmp_path)
    settings = settings.replace("records", caller_hash_key=HASH_KEY)
    store = CallRecords.open(settings)
    await store.start_call("appel-f", "audiosocket", NUMBER)
    await store.add_turn("appel-f", "caller", f"mon numéro est le {NUMBER}")
    await store.end_call("appel-f", "abandoned")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("records.sqlite3*"))
    await store.close()
    assert b"appel-f" in raw  # the raw files do hold the records...
    for form in NUMBER_FORMS:  # ...but no number, not even in the WAL
        assert form.encode() not in raw


async def test_without_a_key_no_number_is_stored_and_why_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings().replace("paths", data_dir=tmp_path)
    store = CallRecords.open(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="voicebot.records.store"):
            await store.start_call("appel-a", "audiosocket", NUMBER)
            await store.start_call("appel-b", "audiosocket", NUMBER)
        call = await store.get_call("appel-a")
    finally:
        await store.close()
    warnings = [r for r in caplog.records if "VOICEBOT_CALLER_HASH_KEY" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].call_id == "appel-a"  # the formatter writes it as "[call appel-a]"
    assert call is not None and call["caller_known"] is False
    assert NUMBER not in _all_rows_as_text(settings)


def _records_keyed_by_file(tmp_path: Path, key: str) -> CallRecords:
    """A store whose key comes from a key file, as `voicebot serve` gets it after `make setup`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    key_file = tmp_path / "caller-hash.key"
    key_file.write_text(key + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    env = {"VOICEBOT_CALLER_HASH_KEY_FILE": str(key_file), "VOICEBOT_DATA_DIR": str(tmp_path)}
    return CallRecords.open(with_caller_hash_key(load_settings(environ=env), env))


async def test_the_hash_is_hmac_sha256_of_the_normalised_number_with_the_files_key(
    tmp_path: Path,
) -> None:
    key = "4b" * 32  # what make setup writes: 32 random bytes in hex
    store = _records_keyed_by_file(tmp_path, key)
    try:
        expected = hmac.new(key.encode(), b"+33612345678", hashlib.sha256).hexdigest()
        for written in ("+33 6 12 34 56 78", "+33612345678", "+33.6.12.34.56.78"):
            assert store.caller_hash(written) == expected  # digits and the + only
        assert store.caller_hash("+33 6 12 34 56 79") != expected
        local = hmac.new(key.encode(), NUMBER.encode(), hashlib.sha256).hexdigest()
        assert [store.caller_hash(form) for form in NUMBER_FORMS[:3]] == [local] * 3
        assert store.caller_hash("") is None and store.caller_hash("anonymous") is None
    finally:
        await store.close()


async def test_different_keys_give_different_hashes(tmp_path: Path) -> None:
    first = _records_keyed_by_file(tmp_path / "a", "4b" * 32)
    second = _records_keyed_by_file(tmp_path / "b", "4c" * 32)
    try:
        assert first.caller_hash(NUMBER) != second.caller_hash(NUMBER)
        assert first.caller_hash(NUMBER) == first.caller_hash("06 12 34 56 78")
    finally:
        await first.close()
        await second.close()


async def test_search_past_calls(records: CallRecords) -> None:
    await records.start_call("c-etat-civil", "audiosocket", None)
    await records.add_turn("c-etat-civil", "caller", "Je cherche l'État civil")
    await records.add_turn("c-etat-civil", "bot", "L'état civil est ouvert.", "etat_civil", 0.9)
    await records.end_call("c-etat-civil", "resolved")
    await records.start_call("c-dechets", "websocket", None)
    await records.add_turn("c-dechets", "caller", "ramassage des déchets 100% bloqué")
    await records.end_call(
        "c-dechets",
        "transferred",
        "incompréhension",
        {"reason": "incompréhension", "summary": "Le robot n'a pas compris."},
    )
    await records.start_call("c-vide", "navigateur", None)

    async def ids(query: str = "", **kwargs: object) -> list[str]:
        return [c["call_id"] for c in await records.search(query, **kwargs)]  # type: ignore[arg-type]

    assert await ids() == ["c-vide", "c-dechets", "c-etat-civil"]  # newest first
    assert await ids("etat CIVIL") == ["c-etat-civil"]  # case and accents ignored
    assert await ids("dechets") == ["c-dechets"]
    assert await ids("etat_civil") == ["c-etat-civil"]  # by intent
    assert await ids("incomprehension") == ["c-dechets"]  # by handoff reason
    assert await ids("c-de") == ["c-dechets"]  # call id prefix
    assert await ids("100%") == ["c-dechets"]  # LIKE wildcards are plain characters
    assert await ids("%") == ["c-dechets"]
    assert await ids("_") == ["c-etat-civil"]  # the intent etat_civil has one
    assert await ids("mairie annexe") == []
    assert await ids(outcome="resolved") == ["c-etat-civil"]
    assert await ids(limit=1) == ["c-vide"]
    listed = (await records.search("dechets"))[0]
    assert listed["outcome"] == "transferred"
    assert listed["excerpt"] == "ramassage des déchets 100% bloqué"
    with pytest.raises(ValueError, match="outcome"):
        await records.search(outcome="perdu")


async def test_stats_for_the_city(records: CallRecords) -> None:
    for call_id, outcome, reason in [
        ("s1", "resolved", None),
        ("s2", "resolved", None),
        ("s3", "transferred", "demande"),
        ("s4", "abandoned", None),
    ]:
        await records.start_call(call_id, "audiosocket", None)
        await records.end_call(call_id, outcome, reason)
    await records.start_call("s5", "audiosocket", None)
    stats = await records.stats()
    assert stats["calls"] == 5
    assert stats["in_progress"] == 1
    assert (stats["resolved"], stats["transferred"], stats["abandoned"], stats["error"]) == (
        2,
        1,
        1,
        0,
    )
    assert stats["handoff_reasons"] == {"demande": 1}
    assert stats["mean_duration_s"] is not None and stats["mean_duration_s"] >= 0
    future = await records.stats(since=time.time() + 3600)
    assert future["calls"] == 0 and future["mean_duration_s"] is None


async def test_purge_deletes_old_calls_and_their_turns(settings: Settings) -> None:
    now = [2_000_000_000.0]
    store = CallRecords.open(settings, clock=lambda: now[0])
    try:
        await store.start_call("ancien", "audiosocket", None)
        await store.add_turn("ancien", "caller", "bonjour")
        await store.end_call("ancien", "resolved")
        now[0] += 31 * 86400
        await store.start_call("recent", "audiosocket", None)
        await store.add_turn("recent", "caller", "bonsoir")
        assert await store.purge(30 * 86400) == 1
        assert await store.get_call("ancien") is None
        recent = await store.get_call("recent")
        assert recent is not None and len(recent["turns"]) == 1
        assert await store.purge(30 * 86400) == 0
        with pytest.raises(ValueError):
            await store.purge(0)
    finally:
        await store.close()
    assert "bonjour" not in _all_rows_as_text(settings)  # the old turns are gone too


def _seed_old_call(settings: Settings, call_id: str, age_days: float) -> None:
    import asyncio

    async def seed() -> None:
        store = CallRecords.open(settings, clock=lambda: time.time() - age_days * 86400)
        try:
            await store.start_call(call_id, "audiosocket", None)
            await store.add_turn(call_id, "caller", "texte")
            await store.end_call(call_id, "resolved")
        finally:
            await store.close()

    asyncio.run(seed())


def test_purge_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VOICEBOT_RECORDS_RETENTION_DAYS", "10")
    monkeypatch.delenv("VOICEBOT_CONFIG", raising=False)
    monkeypatch.delenv("VOICEBOT_DATABASE_URL", raising=False)
    settings = Settings().replace("paths", data_dir=tmp_path)
    _seed_old_call(settings, "quarante-jours", 40)
    _seed_old_call(settings, "quinze-jours", 15)
    _seed_old_call(settings, "deux-heures", 2 / 24)

    assert cli.main(["records", "purge", "--older-than", "30d"]) == 0
    assert "1 appel(s) de plus de 30d supprimé(s)" in capsys.readouterr().out
    assert cli.main(["records", "purge"]) == 0  # the retention setting: 10 days
    assert "1 appel(s) de plus de 10d" in capsys.readouterr().out
    assert cli.main(["records", "purge", "--older-than", "3x"]) == 2
    assert "invalid duration" in capsys.readouterr().err
    assert cli.main(["records", "purge", "--older-than", "90m"]) == 0
    assert "1 appel(s)" in capsys.readouterr().out
    assert "deux-heures" not in _all_rows_as_text(settings)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("90m", 5400),
        ("45s", 45),
        ("7j", 7 * 86400),
        (" 1.5h ", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "-3d", "0d", "3 jours", "3w"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


async def test_bad_input_is_refused_and_writes_nothing(
    records: CallRecords, settings: Settings
) -> None:
    await records.start_call("appel-x", "audiosocket", None)
    with pytest.raises(ValueError, match="speaker"):
        await records.add_turn("appel-x", "opérateur", "bonjour")
    with pytest.raises(ValueError, match="outcome"):
        await records.end_call("appel-x", "perdu")
    call = await records.get_call("appel-x")
    assert call is not None and call["turns"] == [] and call["outcome"] is None


async def test_nothing_is_lost_for_a_call_never_started(records: CallRecords) -> None:
    await records.add_turn("orphelin", "caller", "allô ?")
    await records.end_call("orphelin", "error", "erreur")
    await records.start_call("orphelin", "audiosocket", None)  # late: continues the same record
    call = await records.get_call("orphelin")
    assert call is not None
    assert call["transport"] == "inconnu"
    assert [t["text"] for t in call["turns"]] == ["allô ?"]
    assert call["outcome"] == "error"


async def test_concurrent_calls_keep_every_turn(records: CallRecords) -> None:
    import asyncio

    async def one_call(n: int) -> None:
        await records.start_call(f"simultane-{n}", "audiosocket", None)
        for i in range(8):
            await records.add_turn(f"simultane-{n}", "caller" if i % 2 else "bot", f"tour {i}")
        await records.end_call(f"simultane-{n}", "resolved")

    await asyncio.gather(*(one_call(n) for n in range(12)))
    for n in range(12):
        call = await records.get_call(f"simultane-{n}")
        assert call is not None
        assert [t["text"] for t in call["turns"]] == [f"tour {i}" for i in range(8)]


async def test_a_closed_store_refuses_writes(settings: Settings) -> None:
    store = CallRecords.open(settings)
    await store.close()
    await store.close()  # twice is harmless
    with pytest.raises(VoicebotError, match="closed"):
        await store.start_call("tard", "audiosocket", None)


def test_bad_database_urls_get_a_clear_error(tmp_path: Path) -> None:
    base = Settings().replace("paths", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a database URL"):
        CallRecords.open(base.replace("records", database_url="n'importe quoi"))
    with pytest.raises(ConfigError, match="unsupported database"):
        CallRecords.open(base.replace("records", database_url="mysql://x@127.0.0.1/db"))
    closed_port = free_port()
    with pytest.raises(VoicebotError, match="cannot open the call records database") as error:
        CallRecords.open(
            base.replace(
                "records", database_url=f"postgresql://u:motdepasse@127.0.0.1:{closed_port}/x"
            )
        )
    assert "motdepasse" not in str(error.value)


def test_search_form() -> None:
    assert search_form("État Civil à Nantes") == "etat civil a nantes"


# --- a crash in the middle of a call --------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from voicebot.core.config import Settings
    from voicebot.records.store import CallRecords

    async def main() -> None:
        settings = Settings().replace("paths", data_dir=sys.argv[1])
        settings = settings.replace("records", database_url=sys.argv[2])
        records = CallRecords.open(settings)
        await records.start_call("crash", "audiosocket", None)
        for i in range(100000):
            await records.add_turn("crash", "caller" if i % 2 else "bot", f"tour {i}")
            print(i, flush=True)  # printed only once the turn is committed

    asyncio.run(main())
    """
)


def test_a_killed_server_keeps_every_committed_turn(settings: Settings) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(settings.paths.data_dir), settings.records.database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert child.stdout is not None
    acknowledged: list[int] = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        acknowledged.append(int(line))
    child.send_signal(signal.SIGKILL)  # mid-call, mid-write: no clean-up runs
    rest, errors = child.communicate(timeout=30)
    acknowledged += [int(x) for x in rest.split()]
    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 40, errors

    engine = sa.create_engine(database_url(settings))
    try:
        with engine.connect() as conn:
            texts = [
                row.text
                for row in conn.execute(
                    sa.text("SELECT text FROM turns WHERE call_id = 'crash' ORDER BY id")
                )
            ]
    finally:
        engine.dispose()
    # Every acknowledged turn is there, in order; at most the one in flight is extra.
    assert texts[: len(acknowledged)] == [f"tour {i}" for i in acknowledged]
    assert len(texts) - len(acknowledged) in (0, 1)


def test_records_json_handoff_round_trip_is_plain_json(tmp_path: Path) -> None:
    """The handoff column is JSON that other tools (the city's reports) can read."""
    import asyncio

    settings = Settings().replace("paths", data_dir=tmp_path)

    async def run() -> None:
        store = CallRecords.open(settings)
        try:
            await store.start_call("j", "audiosocket", None)
            await store.end_call(
                "j", "transferred", "urgence", {"reason": "urgence", "entities": {}}
            )
        finally:
            await store.close()

    asyncio.run(run())
    engine = sa.create_engine(database_url(settings))
    try:
        with engine.connect() as conn:
            raw = conn.execute(sa.text("SELECT handoff FROM calls WHERE call_id = 'j'")).scalar()
    finally:
        engine.dispose()
    assert json.loads(raw) == {"reason": "urgence", "entities": {}}


def test_hosts_starting_together_create_the_records_tables_once(postgres_server: str) -> None:
    """Bot hosts opening a new PostgreSQL database at the same moment (systemd starting its
    instances together, two servers booted at once) all open it and join the hosts table:
    the tables are created by one of them, the others wait for it (an advisory lock)
    instead of failing on PostgreSQL's catalogue."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from voicebot.records.database import open_engine
    from voicebot.records.live_hosts import HostTable

    hosts = 4
    for _ in range(5):  # the race is one of timing: several new databases
        settings = Settings().replace(
            "records", database_url=_fresh_postgres_database(postgres_server)
        )
        together = threading.Barrier(hosts)

        def start_a_host(
            host: int, settings: Settings = settings, together: threading.Barrier = together
        ) -> None:
            together.wait()
            engine = open_engine(settings)
            try:
                HostTable(engine, f"hote-{host}", dead_after_s=30.0).register()
            finally:
                engine.dispose()

        with ThreadPoolExecutor(hosts) as pool:
            for started in [pool.submit(start_a_host, host) for host in range(hosts)]:
                started.result()  # an error here is a host that failed to start

"""Shared pytest fixtures. Each section is self-contained; add yours as a new section."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import sqlalchemy as sa

    from voicebot.dialogue.agent import RasaDialogue

# --- dialogue (Rasa) --------------------------------------------------------------------
# The Rasa agent takes seconds to load: one per test session. If nlu/ changed since the
# last training (or nothing was trained yet), the model is trained first, so that a plain
# `pytest` works on a fresh clone too.

os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")


@pytest.fixture(scope="session")
def rasa_dialogue() -> RasaDialogue:
    from voicebot.core.config import Settings
    from voicebot.dialogue.agent import RasaDialogue
    from voicebot.dialogue.training import train

    settings = Settings()
    train(settings, if_needed=True)
    return RasaDialogue.load(settings)


# --- call sessions (real dialogue, real engines) -------------------------------------------
# One set of engines per test session: Whisper base stand-in (French-capable) for the ASR,
# the voice the settings resolve to (espeak-ng French unless an official Piper voice was
# pulled), Silero for the VAD. The TTS cache lives in a temporary data directory.

if TYPE_CHECKING:
    from voicebot.call.runtime import Runtime
    from voicebot.core.config import Settings


@pytest.fixture(scope="session")
def call_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from voicebot.core.config import Settings
    from voicebot.speech.standins import whisper_base_dir

    data_dir = tmp_path_factory.mktemp("voicebot-data")
    settings = Settings()
    settings = settings.replace("paths", data_dir=data_dir)
    settings = settings.replace("asr", engine="whisper", model=str(whisper_base_dir()))
    # A server's settings as `voicebot serve` makes them: with the caller-number key (this
    # test session's, set below), so that the records keep the callers' keyed hashes.
    settings = settings.replace("records", caller_hash_key=os.environ["VOICEBOT_CALLER_HASH_KEY"])
    return settings.replace("server", audiosocket_port=0, websocket_port=0, http_port=0)


@pytest.fixture(scope="session")
def call_runtime(call_settings: Settings, rasa_dialogue: RasaDialogue) -> Runtime:
    from voicebot.call.runtime import Runtime, make_executor
    from voicebot.call.session import SessionServices
    from voicebot.core.events import CallHub
    from voicebot.speech.engines import load_engines

    executor = make_executor(call_settings)
    engines = load_engines(call_settings, executor)
    services = SessionServices(
        settings=call_settings,
        dialogue=rasa_dialogue,
        tts=engines.tts,
        vad_factory=engines.vad_factory,
        asr=engines.asr,
        hub=CallHub(),
        prompt=rasa_dialogue.prompt,
    )
    return Runtime(services, executor, engines.asr_description, engines.tts_description, 0.0)


# --- the caller-number hashing key ---------------------------------------------------------
# `voicebot serve` refuses to start without one (`make setup` writes the developer's under
# ~/.config). The test session has its own, in the environment, which the servers tests start
# as subprocesses inherit; the key file setting points where no file is, so that a test that
# removes the variable meets "no key", never the developer's key file.
os.environ["VOICEBOT_CALLER_HASH_KEY"] = secrets.token_hex(32)
os.environ["VOICEBOT_CALLER_HASH_KEY_FILE"] = os.path.join(
    tempfile.gettempdir(), f"voicebot-tests-{os.getpid()}-no-key-file", "caller-hash.key"
)


# --- PostgreSQL ------------------------------------------------------------------------------
# A real PostgreSQL 15 (scripts/postgres-test.sh) for the records tests and the multi-host
# tests: one server per test session, one fresh database per test
# that asks for one (tests/pg_helpers.py).


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL 15 on 127.0.0.1 for this test session; stopped at the end."""
    import subprocess

    from telephony.emulator.net import free_port
    from voicebot.core.config import PROJECT_ROOT

    script = PROJECT_ROOT / "scripts" / "postgres-test.sh"
    # Not under pytest's tmp_path: that folder is private to root and the server runs as
    # the postgres user.
    directory = tempfile.mkdtemp(prefix="voicebot-pg-")
    started = subprocess.run(
        [str(script), "start", directory, str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        pytest.fail(f"could not start PostgreSQL: {started.stderr}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(script), "stop", directory], timeout=60, check=False)


@pytest.fixture
def database(postgres_server: str) -> Iterator[sa.engine.Engine]:
    """A fresh database on the session's PostgreSQL, as an engine (its URL: ``.url``)."""
    import sqlalchemy as sa

    from tests.pg_helpers import fresh_postgres_database

    engine = sa.create_engine(fresh_postgres_database(postgres_server), future=True)
    try:
        yield engine
    finally:
        engine.dispose()

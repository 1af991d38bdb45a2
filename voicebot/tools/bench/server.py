"""The server under test: a `voicebot serve --no-web` subprocess the bench starts on free
loopback ports (its own records database and caller hash key, no AMI, the bench's policy),
after `voicebot train --if-needed` (``train_if_needed``). Running servers given with
``--target`` are in targets.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from telephony.emulator.net import free_port
from voicebot.core.config import LAYOUT, SECRET_ENV, Settings
from voicebot.core.errors import VoicebotError
from voicebot.tools.bench.lines import WEBSOCKET_CODECS

log = logging.getLogger(__name__)

SERVER_START_TIMEOUT_S = 600.0  # Rasa and TensorFlow load slowly on a busy 2-core machine


# Settings of a server the bench starts itself: the stand-in models hear French badly (the
# Vosk stand-in is Korean), and two misunderstood turns would hand every call to a person.
# The benchmark measures the pipeline, so every utterance goes through NLU and TTS.
BENCH_POLICY_ENV = {
    "VOICEBOT_POLICY_MIN_ASR_CONFIDENCE": "0",
    "VOICEBOT_POLICY_MAX_CONSECUTIVE_FALLBACKS": "1000",
    "VOICEBOT_POLICY_MAX_LOW_CONFIDENCE_TURNS": "1000",
}


def write_settings_file(settings: Settings, folder: Path) -> Path:
    """``folder/server-settings.yml``: the settings the bench's own subprocesses load."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "server-settings.yml"
    config.write_text(yaml.safe_dump(settings_file_data(settings)), encoding="utf-8")
    return config


def child_cwd(settings: Settings) -> Path:
    """Where the bench's subprocesses run: in a checkout, the checkout (`python -m
    voicebot.cli` is then the checkout's code, and Rasa's training cache is ``.rasa/`` there,
    as with `make train`); installed, the data folder (never the installed share folder)."""
    if LAYOUT.source_checkout:
        return LAYOUT.root
    settings.paths.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.paths.data_dir


def train_if_needed(settings: Settings, out_dir: Path) -> None:
    """`voicebot train --if-needed` before the bench starts its server, which loads the
    trained Rasa model: trained when there is none yet (a fresh install) or nlu/ changed
    since, as `make run` does; skipped when the settings name a model. A subprocess, like
    the server (TensorFlow stays out of the bench); its messages go to stderr, stdout is the
    report's (``--json``). Raises VoicebotError if training fails."""
    if settings.dialogue.model:
        return
    config = write_settings_file(settings, out_dir)
    command = [sys.executable, "-m", "voicebot.cli", "--config", str(config)]
    command += ["train", "--if-needed"]
    note = "voicebot bench: `voicebot train --if-needed` first (the server loads the Rasa model)"
    print(note, file=sys.stderr, flush=True)
    with subprocess.Popen(  # noqa: S603 — this interpreter and fixed arguments, no shell
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(child_cwd(settings)),
    ) as process:
        assert process.stdout is not None  # noqa: S101 — stdout=PIPE above; narrows the type
        # newline="": Rasa's progress bars keep their carriage returns
        output = io.TextIOWrapper(process.stdout, encoding="utf-8", errors="replace", newline="")
        for line in output:
            print(line, end="", file=sys.stderr, flush=True)
    if process.returncode != 0:
        raise VoicebotError(
            f"training the Rasa model failed (exit code {process.returncode}), see above; "
            "run `voicebot train` to retry"
        )


def settings_file_data(settings: Settings) -> dict[str, Any]:
    """The settings as a YAML mapping for the child server, secrets left out (they stay in
    the environment the child inherits)."""
    secret_fields = set(SECRET_ENV.values())
    data: dict[str, Any] = {}
    for section in dataclasses.fields(settings):
        values = {}
        for f in dataclasses.fields(getattr(settings, section.name)):
            if (section.name, f.name) in secret_fields:
                continue
            value = getattr(getattr(settings, section.name), f.name)
            values[f.name] = str(value) if isinstance(value, Path) else value
        data[section.name] = values
    return data


class ServerProcess:
    """A `voicebot serve --no-web` subprocess on free loopback ports, for the bench only:
    its own records database, no AMI, the bench's policy (BENCH_POLICY_ENV). The emulated
    callers' numbers are hashed with a throwaway key: the bench needs no key file (a fresh
    install has none) and never uses the operators' key."""

    def __init__(self, settings: Settings, out_dir: Path) -> None:
        self.settings = settings
        self.out_dir = out_dir
        self.host = "127.0.0.1"
        self.audiosocket_port = free_port()
        self.websocket_port = free_port()
        self.records_path = out_dir / "records.sqlite3"
        self.log_path = out_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0
        self.caller_hash_key = secrets.token_hex(32)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def records_url(self) -> str:
        return f"sqlite:///{self.records_path}"

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VOICEBOT_CONFIG", "VOICEBOT_DATABASE_URL")
        }
        env.update(
            {
                "VOICEBOT_SERVER_HOST": self.host,
                "VOICEBOT_SERVER_AUDIOSOCKET_PORT": str(self.audiosocket_port),
                "VOICEBOT_SERVER_WEBSOCKET_PORT": str(self.websocket_port),
                "VOICEBOT_RECORDS_DATABASE_URL": self.records_url,
                "VOICEBOT_AMI_HOST": "",
                "VOICEBOT_CALLER_HASH_KEY": self.caller_hash_key,
                **BENCH_POLICY_ENV,
            }
        )
        return env

    def command(self, config: Path) -> list[str]:
        return [sys.executable, "-m", "voicebot.cli", "--config", str(config), "serve", "--no-web"]

    async def start(self, port_of: str, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        config = write_settings_file(self.settings, self.out_dir)
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(  # noqa: S603 — this interpreter and fixed arguments, no shell
                self.command(config),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(child_cwd(self.settings)),
                start_new_session=True,  # Ctrl-C on the bench reaches us, and we stop it
            )
        port = self.websocket_port if port_of in WEBSOCKET_CODECS else self.audiosocket_port
        log.info("bench: starting voicebot serve (pid %d), waiting for port %d", self.pid, port)
        started = time.monotonic()
        next_note = started + 30
        while True:
            code = self.process.poll()
            if code is not None:
                raise VoicebotError(
                    f"the server exited with code {code} while starting; end of {self.log_path}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, port), 1.0)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                break
            if time.monotonic() - started > timeout_s:
                await self.stop()
                raise VoicebotError(
                    f"the server did not listen within {timeout_s:.0f} s; see {self.log_path}"
                )
            if time.monotonic() > next_note:
                log.info("bench: still loading the server (%.0f s)", time.monotonic() - started)
                next_note += 30
            await asyncio.sleep(0.5)
        self.ready_s = time.monotonic() - started
        log.info("bench: server listening after %.1f s", self.ready_s)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace_s: float = 15.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if process.poll() is None:
            process.kill()
            process.wait(5)

#!/usr/bin/env python3
"""The fault matrix (issue 15), full version: a real `voicebot serve` subprocess, 20 calls
through the emulated Asterisk (AMI and deploy/asterisk/extensions.conf, AudioSocket), and one
fault per row injected while they are live. Prints a Markdown table: fault, calls, reached
the queue, kept talking, other calls disturbed (longest stop of the bot's audio after the
fault; underruns in equal windows before and after it), committed turns lost, log line found
(with the call id), calls lost before the fault.

The first call waits for the server's preparation (pre-rendering) to end; a fault is injected
only once every call has heard its whole greeting and the bot listens. A call that dies
before the fault is not counted against it: it is set aside, replaced, and reported.

    nice -n 10 .venv/bin/python scripts/fault_matrix.py [--calls 20] [--out DIR]

The server is started as `voicebot serve` is, through the bench's ServerProcess, but by this
script's own ``--serve-with-faults FILE`` mode: it wraps the real dialogue, recognizer, voice
and records store with ``voicebot.tools.faults`` (switched by FILE, which this script writes
with the targeted call ids), then runs `voicebot serve` unchanged. The normal `voicebot
serve` never loads any of it. The records database is locked from a second sqlite
connection; the full disk is simulated at the records boundary (OSError ENOSPC from each
write); SIGTERM is a real signal to the server process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from voicebot.tools.bench.paced_line import PacedCallerLine

SECRET = "fault-matrix-secret"  # noqa: S105 (the emulated Asterisk's, on loopback)
GUARD_S = 120.0  # hang guards only
# A stop this long in the bot's audio (silence frames included: the bot sends them all the
# time it listens, so its normal silence is no gap) is the line going dead for the caller.
DEAD_LINE_S = 1.5
UNDERRUN_WINDOW_S = 6.0  # at most: the same length before and after the fault, call up in both
# The greeting's voiced frames are the same for every call (one cached synthesis); a call
# short of them by more than this is still being greeted (a pause between two sentences).
GREETING_SLACK_FRAMES = 5
QUIET_S = 1.0  # and the bot has been quiet this long since: it is listening
# The full greeting's length is learnt once, from calls all quiet this long (no pause between
# two sentences lasts that long on a prepared server), then every later call must reach it.
REFERENCE_QUIET_S = 3.0


# --- the server side: `voicebot serve` with the fault wrappers ------------------------------


def serve_with_faults(switch_file: Path, argv: list[str]) -> int:
    """`voicebot serve`, with the real parts wrapped by voicebot.tools.faults (test-only)."""
    import voicebot.call.server as server_module
    import voicebot.records.store as store
    from voicebot.tools.faults import (
        FaultyAsr,
        FaultyDialogue,
        FaultyTts,
        FileFaultSwitch,
        FullDiskRecords,
    )

    kinds = {
        kind: FileFaultSwitch(switch_file.with_name(f"{switch_file.name}.{kind}"))
        for kind in ("dialogue", "asr_raise", "asr_hang", "tts", "records")
    }
    real_load = server_module.load_runtime

    def load_runtime(*args: Any, **kwargs: Any) -> Any:
        runtime = real_load(*args, **kwargs)
        services = runtime.services
        services.dialogue = FaultyDialogue(services.dialogue, kinds["dialogue"])
        if services.asr is not None:
            asr = FaultyAsr(services.asr, kinds["asr_raise"])
            services.asr = FaultyAsr(asr, kinds["asr_hang"], hang=True)  # type: ignore[arg-type]
        services.tts = FaultyTts(services.tts, kinds["tts"])
        return runtime

    real_open = store.CallRecords.open.__func__  # type: ignore[attr-defined]

    def open_records(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return FullDiskRecords(real_open(cls, *args, **kwargs), kinds["records"])

    server_module.load_runtime = load_runtime  # type: ignore[assignment]
    store.CallRecords.open = classmethod(open_records)  # type: ignore[method-assign,assignment]
    from voicebot.cli import main

    return main(argv)


def set_switch(base: Path, kind: str, calls: list[str] = (), everyone: bool = False) -> None:  # type: ignore[assignment]
    path = base.with_name(f"{base.name}.{kind}")
    path.write_text(json.dumps({"calls": list(calls), "everyone": everyone}), encoding="utf-8")


def clear_switches(base: Path) -> None:
    for path in base.parent.glob(f"{base.name}.*"):
        path.unlink()


@dataclass
class Row:
    fault: str
    calls: int = 0
    lost_before: list[str] = field(default_factory=list)  # calls that died before the fault
    queued: int = 0
    talking: int = 0
    caller_gone: int = 0
    disturbed: str = ""
    lost: int = 0
    log_found: str = ""
    notes: list[str] = field(default_factory=list)


# --- one row --------------------------------------------------------------------------------


class Matrix:
    def __init__(self, calls: int, out: Path) -> None:
        from voicebot.core.config import Settings
        from voicebot.tools.bench.server import ServerProcess

        self.count = calls
        self.out = out
        self.switch = out / "faults.json"
        settings = Settings().replace("paths", data_dir=out / "data")
        matrix = self

        class FaultServer(ServerProcess):
            def environment(self) -> dict[str, str]:
                env = super().environment()
                env.update(
                    {
                        "VOICEBOT_AMI_HOST": "127.0.0.1",
                        "VOICEBOT_AMI_PORT": str(matrix.ami_port),
                        "VOICEBOT_AMI_SECRET": SECRET,
                        "VOICEBOT_SERVER_HTTP_PORT": str(matrix.http_port),
                        "VOICEBOT_POLICY_SILENCE_PROMPT_S": "60",
                    }
                )
                return env

            def command(self, config: Path) -> list[str]:
                return [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--serve-with-faults",
                    str(matrix.switch),
                    "--config",
                    str(config),
                    "serve",
                ]

        from telephony.emulator.net import free_port

        self.http_port = free_port()
        self.ami_port = 0
        self.server = FaultServer(settings, out)
        self.ami: Any = None
        self.pbx: Any = None
        self.greeting_frames = 0  # voiced frames of the full greeting, learnt from the calls
        self.greeting_known = False

    async def start(self) -> None:
        from telephony.emulator import AmiEmulator, EmulatedPbx

        self.ami = AmiEmulator(secret=SECRET)
        self.ami_port = await self.ami.start()
        clear_switches(self.switch)
        await self.server.start("slin")
        await self.prepared()
        self.pbx = EmulatedPbx(
            ami=self.ami,
            extensions=ROOT / "deploy" / "asterisk" / "extensions.conf",
            globals_override={"ALLO_AUDIOSOCKET_1": f"127.0.0.1:{self.server.audiosocket_port}"},
        )

    async def prepared(self) -> None:
        """Until the server has pre-rendered its answers (and warmed its recognizers, with
        Vosk): that start-up work runs after « ready » and competes with the first calls, it
        is not a fault."""
        for _ in range(int(600 / 0.5)):
            text = self.server.log_path.read_text(encoding="utf-8", errors="replace")
            vosk = "ASR: Vosk" in text
            if "pre-rendered" in text and (not vosk or "recognizers warmed" in text):
                return
            await asyncio.sleep(0.5)
        print("  warning: the server's preparation never finished", file=sys.stderr)

    async def place(self) -> tuple[list[PacedCallerLine], dict[str, asyncio.Task[Any]], list[str]]:
        """``count`` calls up, each greeted in full and listening; a call that died on the
        way (before any fault) is set aside, reported, and replaced (three rounds at most)."""
        lines: list[PacedCallerLine] = []
        results: dict[str, asyncio.Task[Any]] = {}
        lost: list[str] = []
        for _ in range(3):
            missing = self.count - len(lines)
            if missing <= 0:
                break
            new, new_results = await self.dial(missing)
            results.update(new_results)
            await self.until_listening(new)
            for line in new:
                if line.media.ended:
                    why = "; ".join(line.media.violations) or str(line.media.ended_by)
                    lost.append(f"{line.call_id[:8]} ({why})")
                else:
                    lines.append(line)
        # Right before the fault: every kept call is still up and listening.
        await self.until_listening(lines)
        for line in [line for line in lines if line.media.ended]:
            lines.remove(line)
            why = "; ".join(line.media.violations) or str(line.media.ended_by)
            lost.append(f"{line.call_id[:8]} ({why})")
        if lost:
            print(f"  calls lost before the fault (set aside): {lost}", file=sys.stderr)
        return lines, results, lost

    async def until_listening(self, lines: list[PacedCallerLine]) -> None:
        """Until each line has heard the whole greeting and the bot has been quiet QUIET_S
        since (or the line ended). The whole greeting: as many voiced frames as the most any
        call heard (the same cached audio for all); 1 s of quiet alone is not enough, a
        loaded server can pause that long between two sentences of the greeting."""
        for _ in range(int(GUARD_S / 0.2)):
            quiet_s = QUIET_S if self.greeting_known else REFERENCE_QUIET_S
            live = [line for line in lines if not line.media.ended]
            heard = {line.call_id: line.quiet_after_voice(quiet_s) for line in live}
            if all(n is not None for n in heard.values()):
                counts = [n for n in heard.values() if n is not None]
                self.greeting_frames = max([self.greeting_frames, *counts])
                self.greeting_known = self.greeting_known or bool(counts)
                wanted = self.greeting_frames - GREETING_SLACK_FRAMES
                if all((n or 0) >= wanted for n in heard.values()):
                    return
            await asyncio.sleep(0.2)
        print("  warning: some calls never finished their greeting", file=sys.stderr)

    async def dial(self, count: int) -> tuple[list[PacedCallerLine], dict[str, asyncio.Task[Any]]]:
        from voicebot.tools.bench.paced_line import PacedCallerLine

        lines: list[PacedCallerLine] = []
        results: dict[str, asyncio.Task[Any]] = {}
        for _ in range(count):
            arrived = asyncio.Event()

            async def caller(media: Any, arrived: asyncio.Event = arrived) -> None:
                line = PacedCallerLine(media)
                lines.append(line)
                arrived.set()
                await line.stream()

            task = asyncio.ensure_future(
                self.pbx.call("3939", caller=caller, caller_number="0240419000", timeout_s=600)
            )
            await asyncio.wait_for(arrived.wait(), GUARD_S)
            results[lines[-1].call_id] = task
            await asyncio.sleep(0.1)
        return lines, results

    def turns(self, call_id: str) -> list[tuple[str, str]]:
        with contextlib.closing(sqlite3.connect(self.server.records_path, timeout=60)) as db:
            rows = db.execute(
                "SELECT speaker, text FROM turns WHERE call_id = ? ORDER BY id", (call_id,)
            ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def logged(self, call_id: str, pattern: str) -> bool:
        text = self.server.log_path.read_text(encoding="utf-8", errors="replace")
        return any(
            f"[call {call_id}]" in line and re.search(pattern, line) for line in text.splitlines()
        )

    async def run_row(self, name: str) -> Row:
        from tests.speech_helpers import french_prompt_pcm

        row = Row(name)
        lines, results, row.lost_before = await self.place()
        row.calls = len(lines)
        half = len(lines) // 2
        targets, others = lines[:half], lines[half:]
        ids = [line.call_id for line in targets]
        before = {line.call_id: self.turns(line.call_id) for line in lines}
        at = {line.call_id: line.now() for line in lines}
        expect_queue = True
        log_pattern = ""
        stuck: socket.socket | None = None
        lock: sqlite3.Connection | None = None
        probe_during = False
        if name == "AMI connection cut mid-handoff":
            self.ami.cut_on = lambda m: m.get("Action", "").lower() == "setvar"
            for line in targets:
                await line.media.send_dtmf("0")
            log_pattern = "non transmise|not delivered|AMI decision failed"
        elif name == "Asterisk closes half the connections at once":
            await asyncio.gather(*(line.media.hangup() for line in targets))
            expect_queue = False
            log_pattern = "caller hung up"
        elif name == "the dialogue raises":
            set_switch(self.switch, "dialogue", ids)
            for line in targets:
                await line.media.send_dtmf("1")
            log_pattern = "internal error"
        elif name in ("the ASR engine raises", "the ASR engine hangs"):
            set_switch(self.switch, "asr_raise" if "raises" in name else "asr_hang", ids)
            speech = french_prompt_pcm("auth-thankyou")
            for line in targets:
                line.say(speech)
            log_pattern = "ASR failed"
        elif name == "TTS fails":
            set_switch(self.switch, "tts", everyone=True)
            for line in targets:
                await line.media.send_dtmf("1")
            log_pattern = "internal error"
        elif name == "records database locked":
            lock = sqlite3.connect(self.server.records_path, timeout=30, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            expect_queue, probe_during = False, True
            log_pattern = "database busy or locked"
        elif name == "records disk full (ENOSPC at the records boundary)":
            set_switch(self.switch, "records", ids)
            expect_queue, probe_during = False, True
            log_pattern = "call records: .* failed"
        elif name == "console client that never reads":
            from voicebot.tools.faults import never_reading_console

            stuck = await asyncio.to_thread(never_reading_console, self.http_port)
            expect_queue, probe_during = False, True
            log_pattern = ""
        elif name == "SIGTERM during the load":
            assert self.server.process is not None
            self.server.process.send_signal(signal.SIGTERM)
            targets, others = lines, []
            log_pattern = "handoff to an operator"
        if probe_during:
            sent = {line.call_id: line.now() for line in lines}
            for line in lines:
                await line.media.send_dtmf("1")
            answers = await asyncio.gather(
                *(line.voice_after(sent[line.call_id], GUARD_S) for line in lines)
            )
            row.talking = sum(a is not None for a in answers)
            if lock is not None:
                await asyncio.sleep(3.0)
                lock.execute("ROLLBACK")
                lock.close()
            targets, others = [], lines
            if name.startswith("records disk"):
                targets, others = lines[:half], lines[half:]
        else:
            for line in targets:
                with contextlib.suppress(Exception):
                    result = await asyncio.wait_for(asyncio.shield(results[line.call_id]), GUARD_S)
                    if result.ending == "queue":
                        row.queued += 1
                    elif result.ending == "caller_hangup":
                        row.caller_gone += 1
            clear_switches(self.switch)
            for line in others:
                pressed = line.now()
                await line.media.send_dtmf("2")
                if await line.voice_after(pressed, GUARD_S) is not None and not line.media.ended:
                    row.talking += 1
        clear_switches(self.switch)
        # Pacing of the calls the fault did not target: their longest stop of audio since
        # the fault, and underruns in windows of the same length before and after it, both
        # while the call was up (a row hangs up a few seconds after its probe: a fixed 6 s
        # window after the fault held less audio than the one before).
        disturbed = 0
        after_total = base_total = 0
        longest = 0.0
        windows: list[float] = []
        for line in others:
            start = at[line.call_id]
            length = max(0.0, min(UNDERRUN_WINDOW_S, line.end_or_now() - start))
            windows.append(length)
            after_total += line.underruns(start, start + length)
            base_total += line.underruns(start - length, start)
            gap = line.longest_gap(start)
            longest = max(longest, gap)
            if gap >= DEAD_LINE_S or line.media.violations:
                disturbed += 1
        row.disturbed = (
            f"{disturbed} (longest gap {longest:.2f} s; underruns {after_total} after vs "
            f"{base_total} before, {min(windows):.1f}-{max(windows):.1f} s windows)"
            if others
            else "n/a (all targeted)"
        )
        for line in lines:
            if not line.media.ended:
                await line.media.hangup()
        await asyncio.gather(*results.values(), return_exceptions=True)
        if stuck is not None:
            stuck.close()
        await asyncio.sleep(3.0)  # the server writes the ends of the calls
        for line in lines:
            after_turns = self.turns(line.call_id)
            row.lost += sum(1 for t in before[line.call_id] if t not in after_turns)
        if log_pattern:
            found = sum(self.logged(line.call_id, log_pattern) for line in targets or lines)
            row.log_found = f"{found}/{len(targets or lines)}"
        else:
            row.log_found = "n/a (nothing failed)"
        if not expect_queue:
            row.notes.append("no queue expected")
        self.ami.cut_on = None
        return row


ROWS = [
    "AMI connection cut mid-handoff",
    "Asterisk closes half the connections at once",
    "the dialogue raises",
    "the ASR engine raises",
    "the ASR engine hangs",
    "TTS fails",
    "records database locked",
    "records disk full (ENOSPC at the records boundary)",
    "console client that never reads",
    "SIGTERM during the load",  # last: the server stops
]


async def run(calls: int, out: Path, only: list[str]) -> list[Row]:
    matrix = Matrix(calls, out)
    await matrix.start()
    rows: list[Row] = []
    try:
        for name in ROWS:
            if only and not any(o.lower() in name.lower() for o in only):
                continue
            started = time.monotonic()
            print(f"row: {name}", file=sys.stderr, flush=True)
            rows.append(await matrix.run_row(name))
            print(f"  done in {time.monotonic() - started:.0f} s: {rows[-1]}", file=sys.stderr)
    finally:
        await matrix.server.stop()
        await matrix.ami.stop()
    return rows


def table(rows: list[Row]) -> str:
    out = [
        "| fault | calls at the fault | reached queue | kept talking | other calls disturbed "
        "(longest audio gap; underruns after vs before) | committed turns lost "
        "| log line with call id | calls lost before the fault (not counted) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        queued = str(r.queued) + (f" (+{r.caller_gone} hung up)" if r.caller_gone else "")
        out.append(
            f"| {r.fault} | {r.calls} | {queued} | {r.talking} | {r.disturbed} | {r.lost} "
            f"| {r.log_found} | {len(r.lost_before)} |"
        )
    return "\n".join(out)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-with-faults":
        return serve_with_faults(Path(sys.argv[2]), sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", action="append", default=[], help="rows whose name has this")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fault-matrix-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VOICEBOT_CALLER_HASH_KEY", os.urandom(32).hex())
    rows = asyncio.run(run(args.calls, out, args.only))
    print(table(rows))
    print(f"\nserver log: {out / 'server.log'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long `voicebot serve` takes to be ready, cold and warm (issue 14: ready in ≤ 15 s).

Starts `voicebot serve --no-web` the way `voicebot bench` does (voicebot.tools.bench.server:
free loopback ports, its own records database, a throwaway caller hash key), waits until its
AudioSocket port accepts a connection, prints the time from the spawn to then and the
server's own « ready in » line (with its breakdown by stage), then stops it. ``--cold``
drops the page cache before each start (root only: ``/proc/sys/vm/drop_caches``), so the
models, the Python packages and TensorFlow are read from the disk again.

    PYTHONPATH=. .venv/bin/python scripts/start_time.py --runs 3 [--cold]

The engines come from the settings as for `voicebot serve` (VOICEBOT_ASR_ENGINE,
VOICEBOT_ASR_MODEL, VOICEBOT_TTS_VOICE).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from voicebot.core.config import load_settings
from voicebot.tools.bench.server import ServerProcess

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> None:
    os.sync()
    DROP_CACHES.write_text("3\n", encoding="ascii")


def ready_line(log_path: Path) -> str:
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "ready in" in line and "AudioSocket" in line:
            return line.split(" - ")[-1] if " - " in line else line
    return "(no ready line)"


async def one_start(cold: bool, out: Path, index: int) -> float:
    if cold:
        drop_page_cache()
    load = os.getloadavg()[0]
    run_dir = out / f"run-{index}"
    run_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(load_settings(), run_dir)
    try:
        await server.start("audiosocket")
    finally:
        await asyncio.sleep(0.5)  # the ready line follows the listening by a few ms
        await server.stop()
    print(
        f"{'cold' if cold else 'warm'} start {index}: listening after {server.ready_s:.1f} s "
        f"(load average before: {load:.2f}) — {ready_line(server.log_path)}",
        flush=True,
    )
    return server.ready_s


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each")
    parser.add_argument("--out", type=Path, default=None, help="keep the servers' logs here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="start-time-"))
    times = [await one_start(args.cold, out, i + 1) for i in range(args.runs)]
    print(f"min {min(times):.1f} s, max {max(times):.1f} s; logs in {out}")


if __name__ == "__main__":
    asyncio.run(main())

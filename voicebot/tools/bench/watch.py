"""The server process seen from outside: its CPU (children included) and RSS, sampled with
psutil; waiting for it to settle; finding the process behind a port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

SETTLE_TIMEOUT_S = 300.0  # pre-rendering of the fixed answers on a cold TTS cache
SETTLE_CPU_PERCENT = 20.0


class ServerWatch:
    """CPU (with children) and RSS of the server process, from psutil."""

    def __init__(self, pid: int | None) -> None:
        import psutil

        self._psutil = psutil
        self.process = None
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                self.process = psutil.Process(pid)
        self.me = psutil.Process()
        self._last: tuple[float, float, float] | None = None
        self._last_loop: tuple[float, float] | None = None
        psutil.cpu_percent(None)

    @staticmethod
    def _cpu_seconds(process: Any) -> float:
        times = process.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def sample(self) -> tuple[float | None, float | None, float, float]:
        """(server CPU %, server RSS MB, machine CPU %, bench CPU %) since the last sample."""
        now = time.monotonic()
        mine = self._cpu_seconds(self.me)
        server_cpu = None
        rss = None
        theirs = 0.0
        if self.process is not None:
            try:
                theirs = self._cpu_seconds(self.process)
                rss = self.process.memory_info().rss / 2**20
            except self._psutil.Error:
                self.process = None
        bench = 0.0
        if self._last is not None:
            elapsed = max(now - self._last[0], 1e-6)
            bench = (mine - self._last[1]) / elapsed * 100
            if self.process is not None:
                server_cpu = (theirs - self._last[2]) / elapsed * 100
        self._last = (now, mine, theirs)
        return server_cpu, rss, float(self._psutil.cpu_percent(None)), bench

    def loop_thread_percent(self) -> float | None:
        """CPU % of one core used by the server's main thread, where its event loop runs
        every call's audio, since the last call; None the first time or when unknown.
        Beside the whole process's figure it says whether the loop itself is the
        bottleneck (it cannot use more than one core) or the engines' threads are."""
        seconds = self.loop_thread_seconds()
        if seconds is None:
            return None
        now = time.monotonic()
        last, self._last_loop = self._last_loop, (now, seconds)
        if last is None:
            return None
        return (seconds - last[1]) / max(now - last[0], 1e-6) * 100

    def loop_thread_seconds(self) -> float | None:
        """CPU seconds the server's main thread has used (on Linux its id is the pid)."""
        if self.process is None:
            return None
        try:
            threads = self.process.threads()
        except self._psutil.Error:
            return None
        main = self.process.pid
        return next((t.user_time + t.system_time for t in threads if t.id == main), None)

    def rss_mb(self) -> float | None:
        if self.process is None:
            return None
        try:
            return float(self.process.memory_info().rss / 2**20)
        except self._psutil.Error:
            return None


async def wait_until_idle(watch: ServerWatch, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Until the server uses less than SETTLE_CPU_PERCENT of a core for 2 s in a row (it
    pre-renders the fixed answers after start-up)."""
    if watch.process is None:
        return True
    deadline = time.monotonic() + timeout_s
    quiet = 0
    watch.sample()
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        cpu = watch.sample()[0]
        if cpu is None:
            return False
        quiet = quiet + 1 if cpu < SETTLE_CPU_PERCENT else 0
        if quiet >= 2:
            return True
    return False


def listening_pid(host: str, port: int) -> int | None:
    """The pid of a local process listening on the port (None if remote or not visible)."""
    import psutil

    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):  # noqa: S104 — compares an address, binds nothing
        return None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return int(conn.pid) if conn.pid is not None else None
    except (psutil.Error, OSError):
        return None
    return None

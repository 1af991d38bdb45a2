"""The servers seen from outside: each visible server process's CPU (children included), RSS
and event-loop thread, sampled with psutil (``ServerWatch``); all of them together with the
whole machine and the bench itself (``Watch``); waiting for them to settle; finding the
process behind a port. A server on another machine is not visible from here: it is listed,
without figures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SETTLE_TIMEOUT_S = 300.0  # pre-rendering of the fixed answers on a cold TTS cache
SETTLE_CPU_PERCENT = 20.0


@dataclass
class ServerReading:
    """One server over one sample interval (None: not visible, or the first sample)."""

    cpu_percent: float | None  # the process and its children, % of one core
    rss_mb: float | None
    loop_percent: float | None  # its event-loop (main) thread, % of one core


@dataclass
class Reading:
    """Every watched server together (sums over distinct processes), the machine, the bench."""

    cpu_percent: float | None
    rss_mb: float | None
    system_percent: float  # the whole machine, % of all cores
    bench_percent: float  # this process, % of one core
    loop_percent: float | None
    servers: list[ServerReading] = field(default_factory=list)  # in Watch.servers' order


def _total(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


class ServerWatch:
    """CPU (with children), RSS and main-thread CPU of one server process, from psutil.
    ``target``: the host:port the calls reach it on."""

    def __init__(self, pid: int | None, target: str = "") -> None:
        import psutil

        self._psutil = psutil
        self.target = target
        self.pid = pid
        self.process = None
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                self.process = psutil.Process(pid)
        self.rss_idle_mb: float | None = None
        self._last: tuple[float, float] | None = None
        self._last_loop: tuple[float, float] | None = None

    def _family(self, process: Any) -> list[Any]:
        """The server process and its live descendants (the dialogue's process): the
        kernel's children_* times count only children that have ended."""
        try:
            return [process, *process.children(recursive=True)]
        except self._psutil.Error:
            return [process]

    @staticmethod
    def own_cpu_seconds(process: Any) -> float:
        """CPU seconds of the process and of its children that have ended (the bench's own:
        the server it started is a live child, watched on its own)."""
        times = process.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def cpu_seconds(self, process: Any) -> float:
        """CPU seconds of the process, its ended children and its live descendants."""
        total = self.own_cpu_seconds(process)
        for member in self._family(process)[1:]:
            with contextlib.suppress(self._psutil.Error):  # a child that just ended
                times = member.cpu_times()
                total += times.user + times.system
        return total

    def family_rss_mb(self, process: Any) -> float:
        """RSS of the process and its live descendants, summed (a child started with its own
        interpreter shares little with its parent beyond the libraries' code)."""
        total = 0
        for member in self._family(process):
            if member is process:
                total += member.memory_info().rss  # the server itself gone: the caller's error
                continue
            with contextlib.suppress(self._psutil.Error):
                total += member.memory_info().rss
        return total / 2**20

    def sample(self) -> tuple[float | None, float | None]:
        """(CPU % of one core since the last sample, RSS MB), the server's live children
        included; None when not visible (the CPU also the first time)."""
        if self.process is None:
            return None, None
        now = time.monotonic()
        try:
            seconds = self.cpu_seconds(self.process)
            rss = self.family_rss_mb(self.process)
        except self._psutil.Error:
            self.process = None
            return None, None
        last, self._last = self._last, (now, seconds)
        if last is None:
            return None, rss
        # a child that died takes its CPU seconds with it: never a negative share
        return max(0.0, seconds - last[1]) / max(now - last[0], 1e-6) * 100, rss

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
            return self.family_rss_mb(self.process)
        except self._psutil.Error:
            return None


class Watch:
    """Every server of a run (one per target, or the one the bench started), the whole
    machine and the bench process. Two targets served by one process (the same pid) are
    watched once: the totals count each process once."""

    def __init__(self, servers: Sequence[ServerWatch]) -> None:
        import psutil

        self._psutil = psutil
        self.servers = list(servers)
        self.me = psutil.Process()
        self._last_me: tuple[float, float] | None = None
        psutil.cpu_percent(None)

    @property
    def visible(self) -> list[ServerWatch]:
        """The servers seen from here, one per process."""
        seen: set[int] = set()
        distinct = []
        for server in self.servers:
            if server.process is not None and server.process.pid not in seen:
                seen.add(server.process.pid)
                distinct.append(server)
        return distinct

    def sample(self) -> Reading:
        """Every server's CPU and RSS since the last sample, their sums, the machine's CPU
        and the bench's."""
        readings: dict[int, ServerReading] = {}
        per_server = []
        for server in self.servers:
            pid = server.process.pid if server.process is not None else None
            if pid is None or pid not in readings:
                cpu, rss = server.sample()
                reading = ServerReading(cpu, rss, server.loop_thread_percent())
                if pid is not None:
                    readings[pid] = reading
            else:
                reading = readings[pid]  # the same process as an earlier target
            per_server.append(reading)
        now = time.monotonic()
        mine = ServerWatch.own_cpu_seconds(self.me)
        last, self._last_me = self._last_me, (now, mine)
        bench = 0.0 if last is None else (mine - last[1]) / max(now - last[0], 1e-6) * 100
        distinct = list(readings.values())
        return Reading(
            cpu_percent=_total([r.cpu_percent for r in distinct]),
            rss_mb=_total([r.rss_mb for r in distinct]),
            system_percent=float(self._psutil.cpu_percent(None)),
            bench_percent=bench,
            loop_percent=_total([r.loop_percent for r in distinct]),
            servers=per_server,
        )

    def rss_mb(self) -> float | None:
        """The visible servers' RSS together."""
        return _total([server.rss_mb() for server in self.visible])

    def mark_idle(self) -> float | None:
        """Each visible server's RSS now, kept as its idle RSS (a second target on the same
        process gets the same); their sum, each process once."""
        idle = {server.pid: server.rss_mb() for server in self.visible}
        for server in self.servers:
            server.rss_idle_mb = idle.get(server.pid) if server.process is not None else None
        return _total(list(idle.values()))

    def describe(self) -> list[dict[str, Any]]:
        """Each server as results.json lists it, before its figures."""
        return [
            {
                "target": server.target,
                "pid": server.process.pid if server.process is not None else server.pid,
                "visible": server.process is not None,
                "rss_idle_mb": round(server.rss_idle_mb, 1)
                if server.rss_idle_mb is not None
                else None,
            }
            for server in self.servers
        ]


async def wait_until_idle(watch: Watch, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Until every visible server uses less than SETTLE_CPU_PERCENT of a core for 2 s in a
    row (a server pre-renders the fixed answers after start-up). False when the time is out
    or every server vanished."""
    if not watch.visible:
        return True
    deadline = time.monotonic() + timeout_s
    quiet = 0
    watch.sample()
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        cpus = [r.cpu_percent for r in watch.sample().servers if r.cpu_percent is not None]
        if not cpus:
            return False
        quiet = quiet + 1 if max(cpus) < SETTLE_CPU_PERCENT else 0
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

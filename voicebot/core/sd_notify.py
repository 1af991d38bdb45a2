"""systemd's notification protocol (sd_notify(3)), for `voicebot serve` under a unit with
``Type=notify`` and ``WatchdogSec=``.

Why: a bot process that hangs (alive, its sockets open, its event loop stuck) keeps its
callers in silence. Asterisk does not give up on it while the caller's phone sends audio
(seen on a real Asterisk 20.14.0: over a minute with a bot that never answered), so nothing
but the process's own supervisor can end it. The calls' event loop pings systemd every half
watchdog period; when the pings stop, systemd kills the process (``WatchdogSignal``), its
sockets close, Asterisk's dialplan sends its callers to the operators' queue, and
``Restart=on-failure`` starts it again.

Without systemd (no ``NOTIFY_SOCKET``), every method does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class ServiceNotifier:
    """READY=1, STOPPING=1 and WATCHDOG=1 to the datagram socket named by ``NOTIFY_SOCKET``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace (sd_notify(3)).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s = _watchdog_period_s(env)

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value``) as one message; False when not under systemd or
        when the message could not be sent (logged: it must never stop the bot)."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never wait: this runs on the calls' event loop, and a datagram socket whose
                # reader has fallen behind would block the sender until it reads.
                sock.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            log.warning("systemd notification %s not sent: %s", fields, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def keep_alive(self) -> None:
        """Ping the watchdog every half period, from the loop that runs the calls: if that
        loop stops turning, the pings stop. Returns at once without a watchdog."""
        if not self.address or self.watchdog_s is None:
            return
        period = self.watchdog_s / 2
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(period)


def _watchdog_period_s(env: Mapping[str, str]) -> float | None:
    """``WATCHDOG_USEC`` in seconds, when it is meant for this process (``WATCHDOG_PID``)."""
    with contextlib.suppress(ValueError):
        pid = env.get("WATCHDOG_PID")
        if pid is not None and int(pid) != os.getpid():
            return None
        usec = int(env.get("WATCHDOG_USEC", ""))
        if usec > 0:
            return usec / 1_000_000
    return None

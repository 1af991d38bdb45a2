"""systemd's notification protocol (voicebot/core/sd_notify.py) against a real datagram
socket: what READY, STOPPING and the watchdog send, and that a stuck event loop stops
feeding the watchdog (which is the point: systemd then kills the hung bot)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicebot.core.sd_notify import ServiceNotifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, list[tuple[float, str]]]]:
    """A datagram socket as systemd's, and what it received, with the receipt times."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    received: list[tuple[float, str]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError, socket.timeout):
                received.append((time.monotonic(), sock.recv(4096).decode()))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    yield path, received
    done.set()
    thread.join(2)
    sock.close()


def wait_for(received: list[tuple[float, str]], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_without_systemd_nothing_is_sent() -> None:
    notifier = ServiceNotifier({})
    assert notifier.address == "" and notifier.watchdog_s is None
    assert notifier.ready("prêt") is False and notifier.stopping() is False
    asyncio.run(asyncio.wait_for(notifier.keep_alive(), 1.0))  # returns at once


def test_ready_and_stopping(listener: tuple[str, list[tuple[float, str]]]) -> None:
    path, received = listener
    notifier = ServiceNotifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("taking calls on AudioSocket 127.0.0.1:9092")
    assert notifier.stopping()
    wait_for(received, 2)
    assert [text for _, text in received] == [
        "READY=1\nSTATUS=taking calls on AudioSocket 127.0.0.1:9092",
        "STOPPING=1",
    ]


async def test_the_watchdog_is_fed_by_the_loop_and_stops_when_the_loop_is_stuck(
    listener: tuple[str, list[tuple[float, str]]],
) -> None:
    path, received = listener
    notifier = ServiceNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert notifier.watchdog_s == pytest.approx(0.2)
    feeding = asyncio.create_task(notifier.keep_alive())
    await asyncio.sleep(0.35)  # pings at 0, 0.1, 0.2, 0.3 s
    time.sleep(0.6)  # the loop is stuck: no ping can go out
    await asyncio.sleep(0.15)
    feeding.cancel()
    await asyncio.to_thread(wait_for, received, 4)
    times = [t for t, text in received if text == "WATCHDOG=1"]
    assert len(times) >= 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 0.55  # the stuck loop's silence, which systemd acts on
    assert min(gaps) < 0.45  # fed every half period (0.1 s) otherwise


def test_a_watchdog_meant_for_another_process_is_ignored(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "200000"}
    assert ServiceNotifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_s is None
    assert ServiceNotifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 0.2
    assert ServiceNotifier({**env, "WATCHDOG_USEC": "soon"}).watchdog_s is None


def test_an_abstract_socket_name_is_understood() -> None:
    assert ServiceNotifier({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify"}).address == (
        "\0/org/freedesktop/systemd1/notify"
    )


def test_a_socket_that_is_gone_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING, logger="voicebot.core.sd_notify"):
        assert notifier.ready("prêt") is False
    assert "not sent" in caplog.text


def test_a_reader_that_falls_behind_never_blocks_the_sender(tmp_path: Path) -> None:
    """The notifier runs on the calls' event loop: a full socket queue (a reader that does
    not read) costs a dropped ping, never a wait."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reader:
        reader.bind(path)
        notifier = ServiceNotifier({"NOTIFY_SOCKET": path})
        sent: list[bool] = []
        sender = threading.Thread(
            target=lambda: sent.extend(notifier.notify("WATCHDOG=1") for _ in range(200)),
            daemon=True,
        )
        sender.start()
        sender.join(60)
        assert not sender.is_alive(), "the notifier blocked on a full socket"
        assert sent[0] and not all(sent)  # the queue filled up; later pings were dropped

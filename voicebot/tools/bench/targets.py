"""The servers a run's calls go to: ``--target host:port`` (given once or several times), or
the one server the bench starts. With several targets the calls are spread round-robin:
the i-th call (the i-th line of the switchboard) goes to target ``i mod T``, and every later
call on that line stays on the same target, so each server carries its share of the
concurrent calls for the whole run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from voicebot.core.errors import VoicebotError

Target = tuple[str, int]  # host, port (the AudioSocket or WebSocket port, per --transport)

T = TypeVar("T")


def parse_target(target: str) -> Target:
    """``host:port`` → (host, port). Raises VoicebotError naming the bad value."""
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise VoicebotError(f"--target must be host:port (e.g. 127.0.0.1:9092), not {target!r}")
    return host, int(port_text)


def parse_targets(targets: Sequence[str]) -> list[Target]:
    """Every ``--target`` checked up front, in the order given; the same one twice is refused
    (it would count one server's calls, CPU and memory twice)."""
    parsed: list[Target] = []
    for text in targets:
        target = parse_target(text)
        if target in parsed:
            raise VoicebotError(f"--target {text!r} is given twice")
        parsed.append(target)
    return parsed


def as_target_list(target: str | Sequence[str] | None) -> list[str]:
    """What ``run_bench`` accepts: one ``host:port``, several, or none (the bench starts its
    own server)."""
    if target is None:
        return []
    return [target] if isinstance(target, str) else list(target)


def label(target: Target) -> str:
    """``host:port``, as given on the command line."""
    return f"{target[0]}:{target[1]}"


def assign(lines: int, targets: Sequence[T]) -> list[T]:
    """The target of each line of the switchboard, round-robin: line i → target i mod T."""
    if not targets:
        raise ValueError("no target to place calls on")
    return [targets[line % len(targets)] for line in range(lines)]

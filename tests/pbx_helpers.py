"""The deployed Asterisk files as an admin adapts them for several bot hosts, and what the
emulated PBX's trace says about where a call was offered. Shared by the tests that run the
deployed dialplan against several bot hosts (tiny scripted bots, or real `voicebot serve`)."""

from __future__ import annotations

from pathlib import Path

from telephony.emulator.dialplan import CallResult, separate_args

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "asterisk"


def websocket_connection(n: int) -> str:
    """The websocket_client.conf connection of bot host ``n`` (1: the deployed one)."""
    return "voicebot" if n == 1 else f"voicebot{n}"


def deployed_copy(folder: Path, hosts: int) -> Path:
    """Copies extensions.conf and queues.conf into ``folder``, with a websocket_client.conf
    that has one connection per host (the deployed ``[voicebot]`` repeated as
    ``[voicebot2]``...); returns the copy of extensions.conf. The hosts' addresses go in
    the PBX's globals (``ALLO_AUDIOSOCKET_<n>``, ``ALLO_WEBSOCKET_<n>``)."""
    for name in ("extensions.conf", "queues.conf"):
        (folder / name).write_text((DEPLOY / name).read_text(encoding="utf-8"), encoding="utf-8")
    clients = (DEPLOY / "websocket_client.conf").read_text(encoding="utf-8")
    section = clients[clients.index("[voicebot]") :]
    for n in range(2, hosts + 1):
        clients += "\n" + section.replace("[voicebot]", f"[{websocket_connection(n)}]")
    (folder / "websocket_client.conf").write_text(clients, encoding="utf-8")
    return folder / "extensions.conf"


def media_targets(result: CallResult) -> list[str]:
    """The bot hosts the call was offered to, in order (AudioSocket's service, or the
    WebSocket connection)."""
    targets = []
    for step in result.trace:
        if step.app == "TryExec" and step.args.startswith("AudioSocket("):
            targets.append(separate_args(step.args[len("AudioSocket(") : -1])[1])
        elif step.app == "Dial":
            targets.append(step.args.split("/")[1])
    return targets

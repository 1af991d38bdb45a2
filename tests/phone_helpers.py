"""A phone server for tests at the process boundary: the real session, engines and Rasa model,
with the settings, the dialogue or AMI a test needs."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from telephony.emulator import AmiEmulator, EmulatedPbx
from voicebot.call.runtime import Runtime
from voicebot.call.server import PhoneServer, start_phone_server
from voicebot.core.interfaces import BotReply


@contextlib.asynccontextmanager
async def phone_server(
    runtime: Runtime,
    *,
    policy: dict[str, Any] | None = None,
    dialogue: Any = None,
    **ami: object,
) -> AsyncIterator[PhoneServer]:
    """``policy``: changes to the policy settings; ``dialogue``: another Dialogue (a wrapper
    around the real one); ``ami``: AMI settings (host, port, secret) to give the server."""
    settings = runtime.services.settings
    if ami:
        settings = settings.replace("ami", **ami)
    if policy:
        settings = settings.replace("policy", **policy)
    services = dataclasses.replace(
        runtime.services,
        settings=settings,
        call_control=None,
        dialogue=dialogue or runtime.services.dialogue,
    )
    server = await start_phone_server(
        settings, runtime=dataclasses.replace(runtime, services=services)
    )
    try:
        yield server
    finally:
        server.accepting = False
        for listener in server.listeners:
            listener.close()
        for task in list(server.tasks):
            task.cancel()
        if server.call_control is not None:
            await server.call_control.close()
        if server.records is not None:
            await server.records.close()


EXTENSIONS = Path(__file__).resolve().parent.parent / "deploy" / "asterisk" / "extensions.conf"
AMI_SECRET = "s3cret-de-test"


@contextlib.asynccontextmanager
async def switchboard(
    runtime: Runtime, *, ami_up: bool = True, **server_options: Any
) -> AsyncIterator[tuple[EmulatedPbx, PhoneServer]]:
    """A phone server behind the emulated Asterisk running our own dialplan, with AMI (down
    when ``ami_up`` is false); ``server_options`` as phone_server's."""
    ami = AmiEmulator(secret=AMI_SECRET)
    port = await ami.start()
    if not ami_up:
        await ami.stop()  # Asterisk's manager is down: nothing listens there any more
    try:
        async with phone_server(
            runtime, host="127.0.0.1", port=port, secret=AMI_SECRET, **server_options
        ) as server:
            if ami_up:
                assert server.call_control is not None
                assert await server.call_control.wait_connected(5.0)
            yield (
                EmulatedPbx(
                    ami=ami,
                    extensions=EXTENSIONS,
                    globals_override={"ALLO_AUDIOSOCKET_1": f"127.0.0.1:{server.audiosocket_port}"},
                    websocket_uri=f"ws://127.0.0.1:{server.websocket_port}",
                ),
                server,
            )
    finally:
        await ami.stop()


class BrokenDialogue:
    """The real dialogue, except that one turn fails inside (a bug, a lost model file…)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    async def greet(self, call_id: str) -> BotReply:
        reply: BotReply = await self.real.greet(call_id)
        return reply

    async def turn(self, call_id: str, text: str) -> BotReply:
        raise RuntimeError("simulated failure inside the dialogue")

    async def dtmf(self, call_id: str, digit: str) -> BotReply:
        reply: BotReply = await self.real.dtmf(call_id, digit)
        return reply

    async def end(self, call_id: str) -> None:
        await self.real.end(call_id)

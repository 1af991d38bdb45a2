"""A phone server for tests at the process boundary: the real session, engines and Rasa model,
with the settings, the dialogue or AMI a test needs."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from voicebot.call.runtime import Runtime
from voicebot.call.server import PhoneServer, start_phone_server


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

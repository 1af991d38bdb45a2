"""Serving one accepted media connection as one call: the same for every transport.

The AudioSocket and chan_websocket servers, and the browser softphone, each accept a
connection, wrap it in a ``MediaTransport`` and hand it to the bot's ``on_call``. Whatever
happens in the call, the transport is ended afterwards: Asterisk's dialplan goes on (to the
operators' queue unless the bot decided otherwise), the browser page learns the call is over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from voicebot.core.interfaces import MediaTransport, OnCall

CALL_FAILED = "the call handler failed: ending the media session"


async def serve_as_call(
    transport: MediaTransport,
    on_call: OnCall,
    log: logging.Logger | logging.LoggerAdapter[Any],
    failure: str = CALL_FAILED,
) -> None:
    """Run ``on_call(transport)`` to its end, then always end the transport.

    A failure of the call is logged on ``log`` (the transport's call logger, which writes the
    call id on every line) with ``failure`` as the message, and goes no further: the server
    and the other calls carry on. Cancellation (server shutdown) still ends the transport,
    then propagates."""
    try:
        await on_call(transport)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(failure)
    finally:
        await transport.end()

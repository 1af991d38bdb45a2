"""`voicebot talk`: a call with the bot through this computer's microphone and speaker."""

from __future__ import annotations

import asyncio

from voicebot.call.runtime import load_runtime, settle_heap
from voicebot.call.session import CallSession
from voicebot.core.config import Settings
from voicebot.tools.talk_audio import PyAudioTransport


def talk(settings: Settings, input_device: int | None, output_device: int | None) -> int:
    # Open the devices first: no sound card is a clear error before minutes of model loading.
    transport = PyAudioTransport(input_device=input_device, output_device=output_device)
    runtime = load_runtime(settings)
    settle_heap()  # real-time audio: no 280 ms collections over the loaded models
    print(
        "Parlez à l'assistant AlloNantes (Ctrl-C pour raccrocher).\n"
        f"  Micro : {transport.input_info.get('name')} ; haut-parleur : "
        f"{transport.output_info.get('name')}",
        flush=True,
    )

    async def main() -> str:
        session = CallSession(runtime.services, transport)
        try:
            report = await session.run()
        finally:
            await transport.end()
        return report.outcome

    try:
        outcome = asyncio.run(main())
    finally:
        runtime.close()
    print(f"Appel terminé : {outcome}")
    return 0

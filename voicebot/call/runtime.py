"""Loading the per-process services once: engines, dialogue, records, call control.

Shared by the phone server, the offline call simulation and the microphone mode, so that
each loads its models the same way (one model of each kind per process).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voicebot.call.context import SessionServices
from voicebot.core.audio import SAMPLE_RATE
from voicebot.core.config import Settings
from voicebot.core.engine_pool import EnginePool
from voicebot.core.events import CallHub
from voicebot.core.stages import StageTimes

if TYPE_CHECKING:
    from voicebot.dialogue.agent import RasaDialogue
    from voicebot.dialogue.process import DialogueProcess

log = logging.getLogger(__name__)

# 15 s of varied French speech takes a new recognizer most of the way to a used one's speed
# (see voicebot.speech.asr_vosk.RecognizerPool).
WARM_UP_AUDIO_S = 15.0
BYTES_PER_SECOND = SAMPLE_RATE * 2


@dataclass
class Runtime:
    services: SessionServices
    executor: ThreadPoolExecutor
    asr_description: str
    tts_description: str
    load_s: float
    # each model's load (they overlap: the dialogue loads while the speech models do)
    stages: StageTimes = field(default_factory=StageTimes)

    async def prerender(self) -> int:
        """Render every fixed prompt and knowledge-base answer once (content-addressed cache)."""
        prerender = getattr(self.services.tts, "prerender", None)
        static_texts = getattr(self.services.dialogue, "static_texts", None)
        if prerender is None or static_texts is None:
            return 0
        started = time.perf_counter()
        count: int = await prerender(static_texts())
        log.info("pre-rendered %d new answers in %.1f s", count, time.perf_counter() - started)
        return count

    async def warm_asr(self, seconds: float = WARM_UP_AUDIO_S) -> int:
        """Warm the ASR's recognizers on the bot's own prompts, so that the first calls'
        first answers cost what later ones cost. Returns how many recognizers are warm."""
        asr = self.services.asr
        warm_up = getattr(asr, "warm_up", None)
        static_texts = getattr(self.services.dialogue, "static_texts", None)
        if warm_up is None or static_texts is None:
            return 0
        started = time.perf_counter()
        clips: list[bytes] = []
        heard_s = 0.0
        for text in static_texts():
            pcm = b"".join([frame.pcm async for frame in self.services.tts.speak(text)])
            clips.append(pcm)
            heard_s += len(pcm) / BYTES_PER_SECOND
            if heard_s >= seconds:
                break
        warm: int = await warm_up(clips)
        log.info(
            "%d speech recognizers warmed on %.0f s of prompts in %.1f s",
            warm,
            heard_s,
            time.perf_counter() - started,
        )
        return warm

    async def prepare(self) -> None:
        """What a server does once it answers calls: the prompts, then the recognizers."""
        await self.prerender()
        await self.warm_asr()

    def close(self) -> None:
        # A dialogue process stops with the runtime that started it. A dialogue in this
        # process stays: one per process, shared by every runtime built on it (its Rasa
        # thread is a daemon and goes with the process).
        close_dialogue = getattr(self.services.dialogue, "close", None)
        if close_dialogue is not None:
            close_dialogue()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.services.vad_executor is not None:
            self.services.vad_executor.shutdown(wait=False, cancel_futures=True)


def settle_heap() -> int:
    """Move everything loaded so far out of the garbage collector's sight; returns how many
    objects. Rasa and TensorFlow leave ~600,000 long-lived objects: each full collection
    walked them all in ~280 ms with the event loop stopped, and every call's audio with it
    (the benchmark's longest gaps were exactly that). Frozen, they are never walked again."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def make_executor(settings: Settings) -> EnginePool:
    # Vosk, Piper and CTranslate2 release the GIL, so one thread per core keeps every core
    # decoding. More threads than cores only make the decoders fight the event loop for the
    # cores: at 12 calls on 2 cores in the same hour, cores + 2 threads let 1-6 frames of
    # ~42,600 go out late, one per core none in two runs (docs/benchmarks.md, 2026-12-03,
    # beside the slower hours). At least two, so that a long job (the dialogue's load at
    # start) never holds the only thread.
    workers = settings.server.workers or max(2, os.cpu_count() or 2)
    return EnginePool(max_workers=workers, thread_name_prefix="engine")


def load_runtime(settings: Settings, hub: CallHub | None = None, with_asr: bool = True) -> Runtime:
    """Load engines and the dialogue. Raises ModelError/KnowledgeBaseError with the fix.

    The dialogue (Rasa and TensorFlow: the longest) loads while this thread loads the speech
    models: in its own process (``dialogue.own_process``), or else on a worker thread (the
    speech models' native parts release the GIL), so the two overlap instead of adding up."""
    from voicebot.speech.engines import import_speech_libraries, load_engines

    started = time.perf_counter()
    executor = make_executor(settings)
    stages = StageTimes()
    with stages.timed("speech imports"):
        import_speech_libraries()  # before TensorFlow's import starts on the other thread
    dialogue_load = executor.submit(_load_dialogue, settings, stages)
    try:
        engines = load_engines(settings, executor)
    except BaseException:
        # the dialogue finishes its load and is dropped; the error is the engines'
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    dialogue = dialogue_load.result()
    stages.merge(engines.stages)
    services = SessionServices(
        settings=settings,
        dialogue=dialogue,
        tts=engines.tts,
        vad_factory=engines.vad_factory,
        asr=engines.asr if with_asr else None,
        hub=hub or CallHub(),
        prompt=dialogue.prompt,
        vad_executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad"),
    )
    load_s = time.perf_counter() - started
    log.info(
        "engines loaded in %.1f s — ASR: %s; voice: %s",
        load_s,
        engines.asr_description,
        engines.tts_description,
    )
    return Runtime(
        services, executor, engines.asr_description, engines.tts_description, load_s, stages
    )


def _load_dialogue(settings: Settings, stages: StageTimes) -> RasaDialogue | DialogueProcess:
    """Rasa's import (TensorFlow's start-up) and the dialogue's load, timed apart."""
    if settings.dialogue.own_process:
        from voicebot.dialogue.process import DialogueProcess

        process = DialogueProcess.start(settings, logging.getLevelName(logging.getLogger().level))
        process.wait_ready()
        for stage, seconds in process.stages.items():
            stages.add(stage, seconds)
        return process

    from voicebot.dialogue.agent import RasaDialogue
    from voicebot.dialogue.rasa_runtime import preload_rasa

    with stages.timed("Rasa import"):
        preload_rasa()
    with stages.timed("dialogue"):
        return RasaDialogue.load(settings)

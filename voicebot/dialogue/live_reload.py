"""Putting a new Rasa model, knowledge base or prompts in service without a restart.

``LiveReloader`` watches, every couple of seconds, what the dialogue is made of: the current
model (``nlu/models/fingerprint.json``, written last when ``voicebot train`` lets a model in,
and the newest archive's name), the knowledge files and the prompts (``stat()`` only: size and
modification time). When they changed and stayed still for one more look (a trainer saving
several files, a model being moved in), it makes a new ``DialogueBrain`` in a thread of its
own, never on a loop that answers turns, and swaps it in (in the dialogue's process when it
runs in one, voicebot.dialogue.process): the turns in progress finish on the old
brain, the next ones use the new one. A knowledge-base or prompts change keeps the model in
service (milliseconds); a new model is loaded (seconds). ``reload()`` does the same on demand
(SIGHUP, the console): with nothing changed, it loads everything again. One reload at a
time.

A reload that fails (a damaged model archive, a knowledge file that does not validate) is
refused: the error is logged with its file, line and field, the brain in service stays, and
``last`` keeps the outcome (when, what, ok or refused, a French message) for the console. The
same files are not tried again until they change.

After a swap the new fixed texts are pre-rendered by the voice in the background (``prerender``,
the runtime's), and every ``on_swap`` listener hears of the new brain (the metrics).

With ``dialogue.model`` set in the settings, the model is fixed: only the knowledge base and
the prompts are watched and swapped (the brain reloads the same model file).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from voicebot.core.config import Settings
from voicebot.core.errors import KnowledgeBaseError, ModelError
from voicebot.dialogue.agent import BrainInfo
from voicebot.dialogue.model_store import FINGERPRINT_FILE, models_dir

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 2.0
MODEL = "modèle"
KNOWLEDGE = "base de connaissances"

# (path, modification time in ns, size); a missing file has (path, -1, -1)
FileStamp = tuple[str, int, int]


@dataclass(frozen=True)
class SourceStamp:
    """What the dialogue's files looked like at one moment (``stat()`` only: cheap)."""

    model: tuple[FileStamp, ...]
    knowledge: tuple[FileStamp, ...]

    @classmethod
    def take(cls, settings: Settings) -> SourceStamp:
        nlu_dir = settings.paths.nlu_dir
        model: tuple[FileStamp, ...] = ()
        if not settings.dialogue.model:
            from voicebot.dialogue.training import latest_model

            folder = models_dir(settings)
            newest = latest_model(settings)
            model = tuple(_stamp(p) for p in (folder / FINGERPRINT_FILE, newest) if p is not None)
        files = [*sorted((nlu_dir / "knowledge").glob("*.yml")), nlu_dir / "prompts.yml"]
        return cls(model=model, knowledge=tuple(_stamp(p) for p in files))

    def changes(self, before: SourceStamp) -> tuple[str, ...]:
        """What changed since ``before``, in the trainers' words."""
        changed = []
        if self.model != before.model:
            changed.append(MODEL)
        if self.knowledge != before.knowledge:
            changed.append(KNOWLEDGE)
        return tuple(changed)


def _stamp(path: Path) -> FileStamp:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class ReloadStatus:
    """The outcome of one reload, for the log and the console."""

    at: float  # seconds since 1970
    trigger: str  # what asked for it: "fichiers modifiés", "SIGHUP", …
    changed: tuple[str, ...]
    ok: bool
    model_version: str  # the model in service afterwards
    message: str  # in French, for the console
    load_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "trigger": self.trigger,
            "changed": list(self.changed),
            "ok": self.ok,
            "model_version": self.model_version,
            "message": self.message,
            "load_s": round(self.load_s, 2),
        }


@runtime_checkable
class ReloadableDialogue(Protocol):
    """A dialogue whose brain can be replaced while calls go on: Rasa in this process
    (voicebot.dialogue.agent.RasaDialogue) or in a process of its own
    (voicebot.dialogue.process.DialogueProcess)."""

    @property
    def model_version(self) -> str: ...

    @property
    def brain_info(self) -> BrainInfo: ...

    async def reload_brain(self, model_too: bool) -> BrainInfo: ...


@dataclass
class LiveReloader:
    """Watches the dialogue's files and swaps a freshly loaded brain in when they change."""

    dialogue: ReloadableDialogue
    settings: Settings
    prerender: Callable[[], Awaitable[int]] | None = None
    on_swap: list[Callable[[BrainInfo], None]] = field(default_factory=list)
    interval_s: float = WATCH_INTERVAL_S
    last: ReloadStatus | None = None
    _handled: SourceStamp | None = None
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="reload")
    )
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def start(self) -> None:
        """Start watching (on the running loop): the files as they are now are in service."""
        self._handled = SourceStamp.take(self.settings)
        if self.settings.dialogue.model:
            log.info(
                "dialogue.model is fixed (%s): the model is never swapped, only the knowledge "
                "base and the prompts",
                self.settings.dialogue.model,
            )
        self._spawn(self._watch())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        """The model this server answers with now, and the last reload's outcome."""
        return {
            "model_version": self.dialogue.model_version,
            "last_reload": self.last.as_dict() if self.last is not None else None,
        }

    def request(self, trigger: str) -> None:
        """Reload soon, whatever changed (a signal handler's way: it cannot await)."""
        log.info("reload requested (%s)", trigger)
        self._spawn(self.reload(trigger))

    async def reload(self, trigger: str = "demande", only_if_changed: bool = False) -> ReloadStatus:
        """Load a new brain from the files as they are now and put it in service, or refuse
        it and keep the one in service. Returns the outcome (also in ``last``)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            stamp = await loop.run_in_executor(self._executor, SourceStamp.take, self.settings)
            changed = stamp.changes(self._handled) if self._handled is not None else ()
            if only_if_changed and not changed:
                return self.last or self._status(trigger, (), True, "Rien n'a changé.")
            # a new model, or a forced reload of one that may change: load the model too
            model_too = not self.settings.dialogue.model and (MODEL in changed or not changed)
            started = time.perf_counter()
            old = self.dialogue.brain_info
            try:
                brain = await self.dialogue.reload_brain(model_too)
            except KnowledgeBaseError as exc:  # already in French, with file, line and field
                return self._refused(trigger, changed, stamp, str(exc))
            except ModelError as exc:
                return self._refused(
                    trigger, changed, stamp, f"modèle Rasa illisible ou incomplet ({exc})"
                )
            except Exception as exc:  # Rasa and TensorFlow raise many kinds
                log.exception("reload: unexpected failure")
                return self._refused(trigger, changed, stamp, f"erreur inattendue ({exc})")
            self._handled = stamp
            for listener in self.on_swap:
                listener(brain)
            load_s = time.perf_counter() - started
            log.info(
                "model %s in service (%s; %s): loaded in %.1f s off the turns' loop, swapped "
                "for %s; calls in progress go on",
                brain.log_name,
                trigger,
                ", ".join(changed) or "forced",
                load_s,
                old.log_name,
            )
            what = ", ".join(changed) or "rechargement demandé"
            self.last = self._status(
                trigger,
                changed,
                True,
                f"Modèle {brain.model_version} en service ({what}), chargé en {load_s:.1f} s "
                "sans interrompre les appels.",
                load_s,
            )
            if self.prerender is not None:
                self._spawn(_prerender(self.prerender, brain.log_name))
            return self.last

    # --- internals ----------------------------------------------------------------------

    def _refused(
        self, trigger: str, changed: tuple[str, ...], stamp: SourceStamp, error: str
    ) -> ReloadStatus:
        current = self.dialogue.model_version
        log.error(
            "reload refused (%s; %s): %s — model %s and the previous knowledge base stay in "
            "service",
            trigger,
            ", ".join(changed) or "forced",
            error,
            self.dialogue.brain_info.log_name,
        )
        self._handled = stamp  # not tried again until the files change again
        self.last = self._status(
            trigger,
            changed,
            False,
            f"Rechargement refusé : {error}. Le modèle {current} et la base de connaissances "
            "précédente restent en service.",
        )
        return self.last

    def _status(
        self, trigger: str, changed: Iterable[str], ok: bool, message: str, load_s: float = 0.0
    ) -> ReloadStatus:
        return ReloadStatus(
            at=time.time(),
            trigger=trigger,
            changed=tuple(changed),
            ok=ok,
            model_version=self.dialogue.model_version,
            message=message,
            load_s=load_s,
        )

    async def _watch(self) -> None:
        """Every ``interval_s``: reload once the files changed and then held still."""
        loop = asyncio.get_running_loop()
        previous = self._handled
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                stamp = await loop.run_in_executor(self._executor, SourceStamp.take, self.settings)
            except Exception:
                log.exception("reload: cannot look at the dialogue's files")
                continue
            if stamp != self._handled and stamp == previous and not self._lock.locked():
                await self.reload("fichiers modifiés", only_if_changed=True)
            previous = stamp

    def _spawn(self, work: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _prerender(prerender: Callable[[], Awaitable[int]], version: str) -> None:
    """The voice renders the new brain's fixed texts now, not in the first call that says them
    (the cache is content-addressed: only new or changed texts cost anything)."""
    started = time.perf_counter()
    try:
        count = await prerender()
    except Exception:
        log.exception("model %s: pre-rendering the new answers failed", version)
        return
    log.info(
        "model %s: %d new answers pre-rendered in %.1f s (in the background)",
        version,
        count,
        time.perf_counter() - started,
    )

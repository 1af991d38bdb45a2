"""The dialogue in a process of its own, behind the same small Dialogue interface.

Why: a Rasa turn is ~20 ms of Python (NLU featurisation, policies, tracker
(de)serialisation) that holds the interpreter lock. In the calls' process that lock is also
what the audio loop needs to send each call's next 20 ms frame: with twelve calls, the late
frames fell while some call was in its dialogue stage (docs/benchmarks.md, « Twelve calls on
a slow afternoon »). In a child process Rasa has an interpreter of its own; the calls' process
only sends a request and reads an answer: 0.6-1.1 ms of its CPU per operation instead of
8.5-15.8 ms (``python -m voicebot.tools.dialogue_speed --own-process``, docs/benchmarks.md).

``DialogueProcess`` is the calls' side. It starts the child
(voicebot.dialogue.process_child), keeps what the calls' process reads without asking (the
model's version, the prompts, the fixed texts: ``brain_info``, refreshed after each live swap)
and sends each operation over a pipe, whose answers its event loop reads as they come.

A child that dies (killed, out of memory, a crash in native code) fails every pending
operation at once with ``DialogueUnavailable``: those calls go to a person at once, with the
prompts still at hand, instead of waiting for an answer that will not come. A call whose
conversation lived in the dead child also goes to a person at its next turn (its slots are
gone; asking the caller to start again would be worse). The child is started again at once;
until it is ready, every turn goes to a person. A child that stops answering for
``ANSWER_TIMEOUT_S`` is killed, which is the same case.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from voicebot.core.config import Settings
from voicebot.core.errors import CallError, ModelError
from voicebot.core.interfaces import BotReply, Understanding
from voicebot.dialogue.agent import BrainInfo
from voicebot.dialogue.process_child import STARTED

log = logging.getLogger(__name__)

# A turn is 20-100 ms; a model being swapped in beside it makes that seconds at worst. An
# answer that takes longer means a stuck child: its callers are better off with a person.
ANSWER_TIMEOUT_S = 15.0
# Rasa's import and a model load: 6-37 s on the machines measured.
START_TIMEOUT_S = 180.0
RESTART_DELAYS_S = (0.0, 1.0, 5.0, 30.0)  # after the 1st, 2nd, 3rd… failed start in a row


class DialogueUnavailable(CallError):
    """The dialogue's process died or is starting again: this call goes to a person."""


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    conn: Connection
    generation: int
    started: float = field(default_factory=time.perf_counter)
    loop: asyncio.AbstractEventLoop | None = None  # the loop that reads its answers


class DialogueProcess:
    """The Dialogue of voicebot.core.interfaces, answered by Rasa in a child process."""

    def __init__(self, settings: Settings, log_level: str = "INFO") -> None:
        self.settings = settings
        self._log_level = log_level
        self._generation = 0
        self._child: _Child | None = None  # the child answering now (None: none ready)
        self._starting: _Child | None = None
        self._info: BrainInfo | None = None
        self.stages: dict[str, float] = {}  # the first child's start-up, for the ready line
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._calls: dict[str, int] = {}  # call id -> the generation holding its conversation
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart: asyncio.Task[None] | None = None
        self._failed_starts = 0
        self._closed = False
        self.restarts = 0

    # --- start-up -------------------------------------------------------------------------

    @classmethod
    def start(cls, settings: Settings, log_level: str = "INFO") -> DialogueProcess:
        """Start the child; it loads while the caller does something else (the speech
        models). ``wait_ready`` then waits for it."""
        dialogue = cls(settings, log_level)
        dialogue._starting = dialogue._spawn()
        return dialogue

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> BrainInfo:
        """Block until the first child has loaded (not on an event loop: seconds). Raises
        what stopped it (ModelError, KnowledgeBaseError), or ModelError if it died."""
        child = self._starting
        if child is None:
            raise RuntimeError("wait_ready() is for the first start only")
        try:
            if not child.conn.poll(timeout_s):
                raise ModelError(f"the dialogue's process did not load within {timeout_s:.0f} s")
            request_id, ok, value = child.conn.recv()
        except (EOFError, OSError):
            raise ModelError(
                f"the dialogue's process stopped while loading (exit code "
                f"{child.process.wait(5)}); its log lines above say why"
            ) from None
        except BaseException:
            self._stop_child(child)
            raise
        if request_id != STARTED or not ok:
            self._stop_child(child)
            raise value if isinstance(value, BaseException) else ModelError(str(value))
        self._info, self.stages = value
        self._starting, self._child = None, child
        return self._info

    def _spawn(self) -> _Child:
        """A fresh interpreter running voicebot.dialogue.process_child, with one end of a
        socket pair (nothing else of this process: not its main module, threads or
        priority); the settings are its first message."""
        self._generation += 1
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(  # noqa: S603 - our own module, no caller text
                [
                    sys.executable,
                    "-m",
                    "voicebot.dialogue.process_child",
                    str(theirs.fileno()),
                    self._log_level,
                ],
                pass_fds=(theirs.fileno(),),
            )
        # only the child holds its end now: the child's death is our end's EOF
        conn = Connection(ours.detach())
        conn.send(self.settings)
        log.info("dialogue process %d started (pid %s)", self._generation, process.pid)
        return _Child(process, conn, self._generation)

    # --- what the calls' process reads without asking ----------------------------------

    @property
    def brain_info(self) -> BrainInfo:
        if self._info is None:
            raise RuntimeError("the dialogue's process is not ready yet (wait_ready)")
        return self._info

    @property
    def model_version(self) -> str:
        return self.brain_info.model_version

    def prompt(self, name: str) -> str:
        return self.brain_info.prompt(name)

    def static_texts(self) -> list[str]:
        return list(self.brain_info.texts)

    @property
    def ready(self) -> bool:
        return self._child is not None

    # --- the Dialogue protocol ---------------------------------------------------------

    async def greet(self, call_id: str) -> BotReply:
        reply: BotReply = await self._call_request(call_id, "greet", call_id)
        return reply

    async def understand(self, text: str) -> Understanding:
        understood: Understanding = await self._request("understand", text)
        return understood

    async def turn(
        self, call_id: str, text: str, understood: Understanding | None = None
    ) -> BotReply:
        reply: BotReply = await self._call_request(call_id, "turn", call_id, text, understood)
        return reply

    async def dtmf(self, call_id: str, digit: str) -> BotReply:
        reply: BotReply = await self._call_request(call_id, "dtmf", call_id, digit)
        return reply

    async def end(self, call_id: str) -> None:
        generation = self._calls.pop(call_id, None)
        child = self._child
        if generation is not None and child is not None and child.generation == generation:
            await self._request("end", call_id)

    # --- for the console and the live reload -------------------------------------------

    async def parse(self, text: str) -> dict[str, Any]:
        parsed: dict[str, Any] = await self._request("parse", text)
        return parsed

    async def reload_brain(self, model_too: bool) -> BrainInfo:
        """The child loads and swaps a new brain (voicebot.dialogue.live_reload); no time
        limit: a model load takes seconds, and turns go on meanwhile."""
        info: BrainInfo = await self._request("reload", model_too, timeout_s=None)
        self._info = info
        return info

    def close(self) -> None:
        """Stop the child (the pipe's close is its signal) and start no other."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
        for child in (self._child, self._starting):
            if child is not None:
                self._stop_child(child)
        self._child = self._starting = None
        self._fail_pending("the dialogue is closed")

    # --- requests ----------------------------------------------------------------------

    async def _call_request(self, call_id: str, op: str, *args: Any) -> Any:
        child = self._child
        if child is None:
            raise DialogueUnavailable("the dialogue's process is starting again")
        if self._calls.setdefault(call_id, child.generation) != child.generation:
            raise DialogueUnavailable("the dialogue's process that held this call stopped")
        return await self._request(op, *args)

    async def _request(
        self, op: str, *args: Any, timeout_s: float | None = ANSWER_TIMEOUT_S
    ) -> Any:
        child = self._child
        if child is None:
            raise DialogueUnavailable("the dialogue's process is starting again")
        self._attach(child)
        request_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            try:
                child.conn.send((request_id, op, args))
            except (OSError, ValueError) as exc:  # the pipe broke under our send
                self._lost(child, f"the pipe broke ({exc})")
                raise DialogueUnavailable("the dialogue's process stopped") from exc
            # what the child raised for this request only (a bug in an action, say) is
            # raised here as it is: that call goes to a person, the child serves the others
            return await asyncio.wait_for(answer, timeout_s)
        except asyncio.TimeoutError:
            self._lost(child, f"no answer to {op!r} within {timeout_s:.0f} s: killed")
            raise DialogueUnavailable(
                f"the dialogue did not answer within {timeout_s:.0f} s"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    # --- answers, and the child's death ------------------------------------------------

    def _attach(self, child: _Child) -> None:
        """Read ``child``'s answers on the running loop (the calls' loop) as they come."""
        loop = self._loop = asyncio.get_running_loop()
        if child.loop is not loop:  # once, unless the loop changed (tests: one per test)
            self._detach(child)
            loop.add_reader(child.conn.fileno(), self._on_readable, child)
            child.loop = loop

    def _detach(self, child: _Child) -> None:
        if child.loop is not None and not child.loop.is_closed():
            child.loop.remove_reader(child.conn.fileno())
        child.loop = None

    def _on_readable(self, child: _Child) -> None:
        try:
            while child.conn.poll():
                request_id, ok, value = child.conn.recv()
                if request_id == STARTED:
                    self._on_started(child, ok, value)
                    continue
                answer = self._pending.get(request_id)
                if answer is None or answer.done():
                    continue  # its caller gave up (timeout, hang-up)
                if ok:
                    answer.set_result(value)
                else:
                    answer.set_exception(value)
        except (EOFError, OSError) as exc:
            self._lost(child, f"its pipe closed ({type(exc).__name__})")

    def _lost(self, child: _Child, why: str) -> None:
        """``child`` is dead or useless: fail what it owed, kill it, start another."""
        if child is self._child:
            self._child = None
        elif child is self._starting:
            self._starting = None
        else:
            return  # already handled
        self._detach(child)
        # Killed at once: a child that stopped answering gets no grace, and a dead one
        # costs nothing to kill. Never waited for here, on the calls' loop.
        child.conn.close()
        child.process.kill()
        log.error(
            "dialogue process %d (pid %s) lost: %s; its pending turns go to a person",
            child.generation,
            child.process.pid,
            why,
        )
        self._fail_pending(f"the dialogue's process stopped: {why}")
        if not self._closed and self._restart is None and self._loop is not None:
            self._failed_starts += 1
            self._restart = self._loop.create_task(self._start_again(child))

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for answer in pending.values():
            if not answer.done():
                answer.set_exception(DialogueUnavailable(why))

    async def _start_again(self, lost: _Child) -> None:
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, lost.process.wait)
        log.info("dialogue process %d exited with code %s", lost.generation, code)
        await asyncio.sleep(RESTART_DELAYS_S[min(self._failed_starts, len(RESTART_DELAYS_S)) - 1])
        child = await loop.run_in_executor(None, self._spawn)
        self._starting = child
        self.restarts += 1
        self._restart = None
        self._attach(child)
        loop.call_later(START_TIMEOUT_S, self._start_overdue, child)

    def _on_started(self, child: _Child, ok: bool, value: Any) -> None:
        if child is not self._starting:
            return
        if not ok:
            log.error("dialogue process %d could not load: %s", child.generation, value)
            self._lost(child, "its load failed")
            return
        self._info, _ = value
        self._starting, self._child = None, child
        self._failed_starts = 0
        log.info(
            "dialogue process %d ready in %.1f s (model %s); new calls get the bot again",
            child.generation,
            time.perf_counter() - child.started,
            self._info.log_name,
        )

    def _start_overdue(self, child: _Child) -> None:
        if child is self._starting:
            self._lost(child, f"not ready within {START_TIMEOUT_S:.0f} s")

    def _stop_child(self, child: _Child) -> None:
        """Close its pipe (its signal to stop), and kill it if it has not within 2 s."""
        self._detach(child)
        child.conn.close()
        try:
            child.process.wait(2.0)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()

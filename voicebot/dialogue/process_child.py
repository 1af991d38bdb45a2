"""The dialogue's own process: Rasa loaded once, answering the calls' process over a pipe.

Started by voicebot.dialogue.process.DialogueProcess as
``python -m voicebot.dialogue.process_child FD LEVEL``: a fresh interpreter, so nothing of the
calls' process (its threads, its real-time priority) comes along; FD is its end of a socket
pair. It reads the settings (the first message), loads the model and the knowledge base, says
so (or sends the error that stopped it), then answers requests until the pipe closes, which
is also how it learns that the calls' process is gone.

The wire format (``multiprocessing.connection`` messages: pickled tuples, between two
processes of ours only) is the client's: requests ``(request_id, op, args)``, answers
``(request_id, ok, value)``; request id 0 is the start-up report,
``(0, True, (BrainInfo, {stage: seconds}))`` or ``(0, False, error)``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from voicebot.core.config import Settings
from voicebot.core.errors import CallError
from voicebot.core.logs import quiet_warnings, setup_logging
from voicebot.dialogue.agent import RasaDialogue

log = logging.getLogger("voicebot.dialogue.process_child")  # not "__main__" when run

STARTED = 0  # the request id of the start-up report


def serve_dialogue(settings: Settings, conn: Connection, log_level: str) -> None:
    """The child's whole life: load, report, answer until the pipe closes."""
    # Stopping is the calls' process's decision (it closes the pipe once it has handed its
    # calls over): Ctrl-C in a terminal or systemd's SIGTERM to the whole unit must not
    # take the dialogue away from calls being handed over. SIGKILL still ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(log_level)
    quiet_warnings()
    stages: dict[str, float] = {}
    try:
        from voicebot.dialogue.rasa_runtime import preload_rasa

        started = time.perf_counter()
        preload_rasa()
        stages["Rasa import"] = time.perf_counter() - started
        started = time.perf_counter()
        dialogue = RasaDialogue.load(settings)
        stages["dialogue"] = time.perf_counter() - started
    except Exception as exc:  # ModelError, KnowledgeBaseError: the calls' process raises it
        conn.send((STARTED, False, portable(exc)))
        return
    # Out of the garbage collector's sight, as in the calls' process (runtime.settle_heap):
    # full collections walking Rasa's objects would stall every turn.
    gc.collect()
    gc.freeze()
    try:
        conn.send((STARTED, True, (dialogue.brain_info, stages)))
    except OSError:
        return  # the calls' process stopped (or gave up on us) while we loaded
    asyncio.run(_answer_requests(dialogue, conn))
    log.info("dialogue process: the calls' process closed the pipe; stopping")


async def _answer_requests(dialogue: RasaDialogue, conn: Connection) -> None:
    """Each request in a task of its own (the calls' turns overlap; Rasa's lock store keeps
    one call's turns in order), answered on this loop's thread, the only one that sends."""
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    def start(message: Any) -> None:
        task = loop.create_task(_answer(dialogue, conn, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def receive() -> None:
        # A blocking reader thread: the loop never waits on a half-received message.
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(closed.set)
                return
            loop.call_soon_threadsafe(start, message)

    threading.Thread(target=receive, name="dialogue-pipe", daemon=True).start()
    await closed.wait()


async def _answer(dialogue: RasaDialogue, conn: Connection, message: Any) -> None:
    request_id, op, args = message  # the client's own tuples
    try:
        answer: tuple[int, bool, Any] = (request_id, True, await _run(dialogue, op, args))
    except Exception as exc:
        log.exception("dialogue process: %s failed", op)
        answer = (request_id, False, portable(exc))
    try:
        conn.send(answer)
    except (OSError, ValueError):
        pass  # the calls' process is gone: nothing to answer
    except Exception as exc:  # an answer that does not pickle: say why instead
        conn.send((answer[0], False, CallError(f"unsendable answer: {exc}")))


# The requests the calls' process may send: the RasaDialogue method each one calls.
OPERATIONS = {
    "greet": "greet",
    "understand": "understand",
    "turn": "turn",
    "dtmf": "dtmf",
    "end": "end",
    "parse": "parse",
    "reload": "reload_brain",
}


async def _run(dialogue: RasaDialogue, op: str, args: tuple[Any, ...]) -> Any:
    method = OPERATIONS.get(op)
    if method is None:
        raise CallError(f"unknown dialogue request {op!r}")
    return await getattr(dialogue, method)(*args)


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it crosses the pipe intact, else a CallError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own object, pickled here
    except Exception:
        return CallError(f"{type(exc).__name__}: {exc}")
    return exc


def main(argv: list[str]) -> None:
    conn = Connection(int(argv[0]))
    settings = conn.recv()
    if not isinstance(settings, Settings):
        raise SystemExit("voicebot.dialogue.process_child: the first message must be Settings")
    serve_dialogue(settings, conn, argv[1] if len(argv) > 1 else "INFO")


if __name__ == "__main__":
    main(sys.argv[1:])

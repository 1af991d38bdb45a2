"""``voicebot nlu parse``: intent and entities of sentences, one per line.

With ``--json`` each input line gives exactly one output line (so results stay aligned
with the input), either::

    {"text", "intent", "confidence", "entities": [{"entity", "value"}], "ranking": [...]}

where ``intent`` is the final decision (``nlu_fallback`` under the threshold), or the same
keys with ``intent: null`` plus ``"error"`` (and ``"line"``) for a line that cannot be
parsed: empty, not UTF-8, or a failure inside Rasa. A bad line never stops the batch.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from voicebot.core.config import Settings
from voicebot.core.errors import VoicebotError
from voicebot.dialogue.agent import MAX_TEXT_CHARS, clean_text, load_agent, nlu_result


def parse_file(settings: Settings, path: Path, as_json: bool) -> int:
    """Parse every line of a file ('-' = standard input); the model is loaded once."""
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise VoicebotError(f"cannot read {path}: {exc.strerror}") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    agent = load_agent(settings)
    asyncio.run(parse_lines(agent, (line.rstrip(b"\r") for line in lines), as_json, sys.stdout))
    return 0


def parse_texts(settings: Settings, texts: list[str], as_json: bool) -> int:
    agent = load_agent(settings)
    asyncio.run(
        parse_lines(
            agent, (t.encode("utf-8", "surrogateescape") for t in texts), as_json, sys.stdout
        )
    )
    return 0


async def parse_lines(agent: Any, lines: Iterable[bytes], as_json: bool, out: TextIO) -> int:
    """Parse raw lines with a loaded agent, printing one result per line. Returns errors."""
    errors = 0
    for number, raw in enumerate(lines, start=1):
        result = await parse_one(agent, raw, number)
        errors += "error" in result
        out.write((json.dumps(result, ensure_ascii=False) if as_json else _human(result)) + "\n")
        out.flush()
    return errors


async def parse_one(agent: Any, raw: bytes, number: int) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = raw.decode("utf-8", errors="replace")
        return _error(shown, number, f"ligne {number} : texte non UTF-8 (octet {exc.start + 1})")
    cleaned = clean_text(text)
    if not cleaned:
        return _error(text, number, f"ligne {number} : ligne vide")
    try:
        result = nlu_result(await agent.parse_message(cleaned))
    except Exception as exc:  # one bad line must not stop the batch
        return _error(text, number, f"ligne {number} : échec de l'analyse ({type(exc).__name__})")
    result["text"] = text
    if len(" ".join(text.split())) > MAX_TEXT_CHARS:
        result["warning"] = f"texte tronqué à {MAX_TEXT_CHARS} caractères pour l'analyse"
    return result


def _error(text: str, number: int, message: str) -> dict[str, Any]:
    return {
        "text": text,
        "intent": None,
        "confidence": 0.0,
        "entities": [],
        "ranking": [],
        "line": number,
        "error": message,
    }


def _human(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERREUR {result['error']}"
    entities = ", ".join(f"{e['entity']}={e['value']}" for e in result["entities"])
    text = result["text"] if len(result["text"]) <= 80 else result["text"][:77] + "..."
    return f"{result['intent']} ({result['confidence']:.2f}){'  ' + entities if entities else ''}  | {text}"

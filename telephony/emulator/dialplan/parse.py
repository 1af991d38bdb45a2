"""The dialplan as loaded: ``extensions.conf`` parsed the way pbx/pbx_config.c
``pbx_load_config`` does it, and the neighbouring ``.conf`` files read as sections."""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field
from pathlib import Path

from telephony.emulator.dialplan.common import DialplanError
from telephony.emulator.dialplan.expand import Expander, no_function


@dataclass(frozen=True)
class Priority:
    number: int
    label: str | None
    app: str
    data: str
    line: int


@dataclass
class Context:
    name: str
    extensions: dict[str, dict[int, Priority]] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)


@dataclass
class Dialplan:
    contexts: dict[str, Context]
    globals: dict[str, str]
    source: str = "extensions.conf"

    @classmethod
    def load(cls, path: Path) -> Dialplan:
        return cls.parse(path.read_text(encoding="utf-8"), str(path))

    @classmethod
    def parse(cls, text: str, source: str = "extensions.conf") -> Dialplan:
        """``pbx_load_config`` on the subset of the syntax the emulator models."""
        plan = cls({}, {}, source)
        category = ""
        last_exten = ""
        last_priority = 0
        for lineno, raw in enumerate(text.splitlines(), 1):
            where = f"{source}:{lineno}"
            line = _strip_comment(raw, where).strip()
            if not line:
                continue
            if line.startswith("#"):
                raise DialplanError(f"{where}: {line.split()[0]} is not emulated")
            if line.startswith("["):
                header = re.fullmatch(r"\[([^\]]+)\]", line)
                if header is None:
                    raise DialplanError(f"{where}: templates are not emulated: {line}")
                category = header.group(1)
                if category not in ("general", "globals"):
                    plan.contexts.setdefault(category, Context(category))
                last_exten, last_priority = "", 0
                continue
            name, sep, value = line.partition("=")
            if not sep or not category:
                raise DialplanError(f"{where}: not a setting: {line}")
            value = value[1:] if value.startswith(">") else value
            name, value = name.strip(), value.strip()
            if category == "general":
                if name.lower() == "autofallthrough" and value.lower() not in ("yes", "true"):
                    raise DialplanError(f"{where}: autofallthrough=no is not emulated")
                continue
            if category == "globals":
                plan.globals[name] = plan.expand_globals(value)
                continue
            context = plan.contexts[category]
            keyword = name.lower()
            if keyword == "include":
                context.includes.append(value)
                continue
            if keyword == "exten":
                exten, rest = _pbx_strsep(value)
                last_exten, last_priority = exten.strip(), 0
            elif keyword == "same":
                if not last_exten:
                    raise DialplanError(f"{where}: 'same' without a previous 'exten'")
                rest = value
            else:
                raise DialplanError(f"{where}: '{name}' is not emulated")
            priority = _parse_priority(context, last_exten, rest, last_priority, lineno, where)
            last_priority = priority.number
        return plan

    def expand_globals(self, text: str) -> str:
        # pbx_config substitutes [globals] values with no channel: only globals are known.
        def read(name: str) -> str | None:
            if "(" in name:
                raise DialplanError(f"{self.source}: a function in [globals] is not emulated")
            return self.globals.get(name)

        return Expander(read, no_function).expand(text)

    def extension(self, context: str, exten: str) -> dict[int, Priority] | None:
        """The priorities of ``exten`` in ``context`` or the contexts it includes, in order
        (pbx_find_extension: the context's own extensions first)."""
        seen: set[str] = set()
        todo = [context]
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            found = self.contexts.get(name)
            if found is None:
                if name == context:
                    return None
                continue
            if exten in found.extensions:
                return found.extensions[exten]
            todo.extend(found.includes)
        return None

    def label(self, context: str, exten: str, label: str) -> int | None:
        priorities = self.extension(context, exten) or {}
        return next((p.number for p in priorities.values() if p.label == label), None)


def _strip_comment(raw: str, where: str) -> str:
    """main/config.c: ``;`` starts a comment unless escaped as ``\\;``."""
    out = []
    i = 0
    while i < len(raw):
        if raw.startswith("\\;", i):
            out.append(";")
            i += 2
            continue
        if raw[i] == ";":
            if raw.startswith(";--", i):
                raise DialplanError(f"{where}: block comments (;-- --;) are not emulated")
            break
        out.append(raw[i])
        i += 1
    return "".join(out)


def _pbx_strsep(text: str) -> tuple[str, str]:
    """pbx_config.c ``pbx_strsep`` for the extension: up to the first ``,`` outside ``[]``."""
    square = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "[":
            square += 1
        elif ch == "]" and square:
            square -= 1
        elif ch == "\\":
            i += 1
        elif ch == "," and not square:
            return text[:i], text[i + 1 :]
        i += 1
    return text, ""


def _parse_priority(
    context: Context, exten: str, rest: str, last: int, lineno: int, where: str
) -> Priority:
    if exten.startswith("_"):
        raise DialplanError(f"{where}: pattern extensions ({exten}) are not emulated")
    if "/" in exten:
        raise DialplanError(f"{where}: caller id matching ({exten}) is not emulated")
    pri_text, _, appl = rest.partition(",")
    pri_text = pri_text.strip()
    label = None
    if "(" in pri_text:
        pri_text, _, label_part = pri_text.partition("(")
        if not label_part.endswith(")"):
            raise DialplanError(f"{where}: label missing trailing ')'")
        label = label_part[:-1]
    if pri_text in ("n", "next"):
        if not last:
            raise DialplanError(f"{where}: 'n' priority on the first entry")
        number = last + 1
    elif pri_text.isdigit() and int(pri_text) > 0:
        number = int(pri_text)
    else:
        raise DialplanError(f"{where}: priority '{pri_text}' is not emulated")
    # pbx_config: the application is what precedes the first '(', its data runs to the last ')'.
    if "(" in appl:
        app, _, data = appl.partition("(")
        if "${" in app or "$[" in app:
            raise DialplanError(f"{where}: a computed application name is not emulated")
        end = data.rfind(")")
        if end < 0:
            raise DialplanError(f"{where}: no closing parenthesis in {appl}")
        data = data[:end]
    else:
        app, data = appl, ""
    app = app.lstrip()
    priorities = context.extensions.setdefault(exten, {})
    if number in priorities:
        raise DialplanError(f"{where}: priority {number} of {exten} is defined twice")
    if label is not None and any(p.label == label for p in priorities.values()):
        raise DialplanError(f"{where}: label {label} of {exten} is defined twice")
    priority = Priority(number, label, app, data, lineno)
    priorities[number] = priority
    return priority


def ini_sections(path: Path) -> dict[str, dict[str, str]] | None:
    if not path.exists():
        return None
    parser = configparser.ConfigParser(
        strict=False, inline_comment_prefixes=(";",), comment_prefixes=(";", "#")
    )
    parser.read_string(path.read_text(encoding="utf-8"))
    return {name: dict(parser[name]) for name in parser.sections()}

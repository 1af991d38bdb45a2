"""An emulated PBX that runs the project's own ``extensions.conf`` for emulated calls.

On a real Asterisk, what happens after the bot ends the media session is the dialplan's
business: hang up, or queue the caller with the context the bot set through AMI. This module
executes ``deploy/asterisk/extensions.conf`` the way Asterisk does, so that a test proves the
deployed dialplan and the bot agree::

    pbx = EmulatedPbx(ami=ami, extensions=DEPLOY / "extensions.conf",
                      globals_override={"ALLO_AUDIOSOCKET": f"127.0.0.1:{port}"},
                      websocket_uri=f"ws://127.0.0.1:{ws_port}")
    result = await pbx.call("3939", caller_number="0612345678", caller=script, timeout_s=60)
    assert result.ending == "hangup"

Each behaviour follows Asterisk's source (the function named in each docstring); what this
module does not model raises ``DialplanError`` (an application: ``UnsupportedApplication``),
so that a dialplan change the emulator does not understand fails the tests loudly instead of
passing them by accident.

* Loading (pbx/pbx_config.c ``pbx_load_config``, main/config.c): ``[globals]``, contexts,
  ``exten =>``/``same =>`` with numbered or ``n`` priorities and ``n(label)`` labels,
  ``include =>``; ``;`` comments (``\\;`` is a literal ``;``). Pattern extensions, templates,
  ``#include`` and block comments are refused.
* Substitution (main/pbx_variables.c ``ast_str_substitute_variables_full2``): ``${VAR}``,
  ``${VAR:offset:length}``, nested ``${FUNC(${...})}`` with ``UUID()``, ``CALLERID(num|name)``,
  ``URIENCODE()``, and ``$[...]`` expressions (main/ast_expr2.y: quoted strings keep their
  quotes, comparisons are numeric only between numbers; ``= == != < > <= >= & |``).
* Applications: ``NoOp``, ``Answer``, ``Set`` (inheritance prefixes, ``CALLERID(name)``),
  ``Goto``/``GotoIf`` (main/pbx.c ``pbx_parseable_goto``), ``ExecIf`` and ``TryExec``
  (apps/app_exec.c), ``Hangup``, ``AudioSocket`` (apps/app_audiosocket.c, run by an
  ``AudioSocketCaller``), ``Dial(WebSocket/...)`` (apps/app_dial.c with
  channels/chan_websocket.c, run by a ``ChanWebSocketPeer``), ``Queue`` (apps/app_queue.c:
  the emulation stops there, no agent is emulated, but the ``b()`` pre-dial handler runs on
  an emulated operator's channel to record the SIP headers it adds), and ``Return`` in that
  handler.
* The caller's channel lives in the ``AmiEmulator`` for the whole call, with its caller id,
  state and current application, so the bot's ``Status``/``Setvar`` reach it while the media
  runs; an AMI ``Hangup`` ends the call, an AMI ``Redirect`` interrupts the media and jumps.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import itertools
import operator
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from websockets.exceptions import WebSocketException

from telephony.chan_websocket.codec import JSON_FORMAT, PLAIN_TEXT, SLIN_FORMAT_RATES
from telephony.emulator.ami import AmiEmulator, EmulatedChannel
from telephony.emulator.audiosocket import AudioSocketCaller
from telephony.emulator.chan_websocket import ChanWebSocketPeer

Media = AudioSocketCaller | ChanWebSocketPeer
CallerScript = Callable[[Media], Awaitable[None]]
Ending = Literal["hangup", "queue", "caller_hangup", "ami_hangup"]

# app_audiosocket's ast_audiosocket_connect waits this long for the TCP connection
# (res/res_audiosocket.c: MAX_CONNECT_TIMEOUT_MSEC).
AUDIOSOCKET_CONNECT_TIMEOUT_S = 2.0
# How often a running media session looks at the AMI side (a Hangup or Redirect action).
_POLL_S = 0.02
# Hangup causes by name (main/causes.h), for Hangup(NAME).
_CAUSES = {"NORMAL_CLEARING": 16, "USER_BUSY": 17, "NO_ANSWER": 19, "CALL_REJECTED": 21}


class DialplanError(Exception):
    """The dialplan does something the emulator does not model, or that Asterisk would
    refuse or warn about (a missing context, label or closing parenthesis)."""


class UnsupportedApplication(DialplanError):
    """An application the emulator does not know: add it to the emulator, faithfully."""


class Step(NamedTuple):
    """One executed priority: its location, application and arguments once substituted."""

    context: str
    exten: str
    priority: int
    app: str
    args: str


@dataclass(frozen=True)
class QueueEntry:
    """What ``Queue()`` was asked (apps/app_queue.c ``queue_exec`` arguments)."""

    name: str
    options: str
    timeout: str


@dataclass
class CallResult:
    ending: Ending
    # The caller channel's variables when the call left the dialplan, read back without
    # their "_"/"__" prefix; raw_variables keeps the names as stored (prefix included).
    variables: dict[str, str]
    raw_variables: dict[str, str]
    app_status: dict[str, str]  # TRYSTATUS / DIALSTATUS / QUEUESTATUS, those set
    trace: list[Step]
    callerid_num: str
    callerid_name: str  # what the operator's phone shows
    media: Media | None  # None when the dialplan started no media session
    channel: str
    uniqueid: str
    hangup_cause: int | None  # Hangup(cause); None when not hung up by Hangup()
    queue: QueueEntry | None  # set when the call reached Queue()
    # The Queue b() pre-dial handler, run on an emulated operator's channel (which only
    # inherits "_"/"__" variables): the SIP headers it added, and its steps.
    operator_headers: dict[str, str] = field(default_factory=dict)
    operator_trace: list[Step] = field(default_factory=list)


# --- the dialplan as loaded ------------------------------------------------------------------


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

        return _Expander(read, _no_function).expand(text)

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


# --- argument parsing as Asterisk does it ---------------------------------------------------


def separate_args(
    text: str, delim: str = ",", *, remove_chars: bool = True, max_args: int = 128
) -> list[str]:
    """main/app.c ``__ast_app_separate_args``: split on ``delim`` outside ``()``, ``[]`` and
    quotes; with ``remove_chars`` (``AST_STANDARD_APP_ARGS``) quotes and backslashes are
    removed. The last of ``max_args`` arguments gets the rest as it is."""
    args: list[str] = []
    paren = bracket = 0
    quote = False
    i, n = 0, len(text)
    ended_on_delim = False
    while i < n and len(args) < max_args - 1:
        current: list[str] = []
        ended_on_delim = False
        while i < n:
            ch = text[i]
            if ch == "(":
                paren += 1
            elif ch == ")":
                paren = max(0, paren - 1)
            elif ch == "[":
                bracket += 1
            elif ch == "]":
                bracket = max(0, bracket - 1)
            elif ch == '"' and delim != '"':
                quote = not quote
                if remove_chars:
                    i += 1
                    continue
            elif ch == "\\":
                # The next character is taken literally; the backslash goes with remove_chars.
                current.append(text[i + 1 : i + 2] if remove_chars else text[i : i + 2])
                i += 2
                continue
            elif ch == delim and not paren and not quote and not bracket:
                i += 1
                ended_on_delim = True
                break
            current.append(ch)
            i += 1
        args.append("".join(current))
    if i < n or ended_on_delim:
        args.append(text[i:])
    return args


def parse_options(text: str) -> dict[str, str | None]:
    """main/app.c ``parse_options``: one letter each, some with a ``(argument)`` whose
    parentheses may nest; a backslash makes the next character literal."""
    options: dict[str, str | None] = {}
    i, n = 0, len(text)
    while i < n:
        letter = text[i]
        i += 1
        if i < n and text[i] == "(":
            depth = 1
            i += 1
            arg: list[str] = []
            while i < n:
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    arg.append(text[i + 1])
                    i += 2
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                arg.append(ch)
                i += 1
            if i >= n:
                raise DialplanError(f"missing closing parenthesis for option '{letter}'")
            i += 1
            options[letter] = "".join(arg)
        else:
            options[letter] = None
    return options


def filter_chars(allowed: str, text: str) -> str:
    """func_strings.c ``FILTER(allowed-chars,string)``: keep only the allowed characters;
    ``a-b`` in the allowed set is a range (``0-9``)."""
    keep: set[str] = set()
    i = 0
    while i < len(allowed):
        if i + 2 < len(allowed) and allowed[i + 1] == "-":
            keep.update(chr(c) for c in range(ord(allowed[i]), ord(allowed[i + 2]) + 1))
            i += 3
        else:
            keep.add(allowed[i])
            i += 1
    return "".join(ch for ch in text if ch in keep)


def uri_encode(text: str) -> str:
    """main/utils.c ``ast_uri_encode`` with ``ast_uri_http`` (func_uri.c ``URIENCODE``): every
    byte but letters, digits and ``-_.!~*'()`` becomes ``%XX``."""
    keep = set(b"-_.!~*'()")
    out = []
    for byte in text.encode("utf-8"):
        if chr(byte).isascii() and (chr(byte).isalnum() or byte in keep):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def uri_verify_encoded(text: str) -> bool:
    """main/utils.c ``ast_uri_verify_encoded``, which chan_websocket's
    ``validate_uri_parameters`` applies to each name and value of ``v()``."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            # At least two characters must follow, and sscanf("%2x") must read a hex digit.
            if i + 2 >= len(text) or not re.match(r"\s*[0-9A-Fa-f]", text[i + 1 : i + 3]):
                return False
            i += 3
        elif (ch.isascii() and ch.isalnum()) or ch in "-_.+":
            i += 1
        else:
            return False
    return True


def check_condition(text: str) -> bool:
    """main/pbx.c ``pbx_checkcondition``: empty is false, a leading integer is its truth,
    any other string is true."""
    if not text:
        return False
    number = re.match(r"\s*([+-]?\d+)", text)
    return int(number.group(1)) != 0 if number else True


# --- substitution and expressions ------------------------------------------------------------


def _no_function(name: str, args: str) -> str:
    raise DialplanError(f"function {name}() is not available here")


class _Expander:
    """``${...}`` and ``$[...]`` substitution (``ast_str_substitute_variables_full2``): inner
    substitutions first, the result is never rescanned."""

    def __init__(
        self, read: Callable[[str], str | None], function: Callable[[str, str], str]
    ) -> None:
        self.read = read
        self.function = function

    def expand(self, text: str) -> str:
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            j = text.find("$", i)
            if j < 0:
                out.append(text[i:])
                break
            kind = text[j + 1 : j + 2]
            if kind not in ("{", "["):
                out.append(text[i : j + 1])
                i = j + 1
                continue
            out.append(text[i:j])
            opening, closing = ("{", "}") if kind == "{" else ("[", "]")
            other = "$[" if kind == "{" else "${"
            k = j + 2
            depth = 1
            needsub = False
            while depth and k < n:
                if text.startswith("$" + opening, k):
                    needsub = True
                    depth += 1
                    k += 1
                elif text[k] == opening:
                    depth += 1
                elif text[k] == closing:
                    depth -= 1
                elif text.startswith(other, k):
                    needsub = True
                    k += 1
                k += 1
            if depth:
                raise DialplanError(f"missing '{closing}' in {text!r}")
            inner = text[j + 2 : k - 1]
            if needsub:
                inner = self.expand(inner)
            out.append(self._variable(inner) if kind == "{" else evaluate_expression(inner))
            i = k
        return "".join(out)

    def _variable(self, spec: str) -> str:
        # parse_variable_name: ":offset:length" after the name, outside parentheses.
        depth = 0
        name, offset, length = spec, 0, None
        for index, ch in enumerate(spec):
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == ":" and depth == 0:
                name = spec[:index]
                numbers = re.match(r"\s*([+-]?\d+)(?::\s*([+-]?\d+))?", spec[index + 1 :])
                if numbers:
                    offset = int(numbers.group(1))
                    length = int(numbers.group(2)) if numbers.group(2) else None
                break
        if "(" in name:
            function, _, args = name.partition("(")
            end = args.rfind(")")
            value: str | None = self.function(function, args[:end] if end >= 0 else args)
        else:
            value = self.read(name)
        if value is None:
            return ""
        return _substring(value, offset, length)


def _substring(value: str, offset: int, length: int | None) -> str:
    """pbx_variables.c ``ast_str_substring``: a negative offset counts from the end, a
    negative length leaves that many characters off the end."""
    if offset < 0:
        offset = max(0, len(value) + offset)
    value = value[offset:]
    if length is None:
        return value
    return value[:length] if length >= 0 else value[: max(0, len(value) + length)]


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"[^"]*")
      | (?P<op>\|\||&&|==|=~|~~|>=|<=|!=|::|[|&=><+,\-*/%?!:()])
      | (?P<bare>(?:[a-zA-Z0-9.';\\_^\#@]|[^\x00-\x7f]|\$[^{])+)
    )""",
    re.VERBOSE,
)
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass
class _Value:
    text: str
    kind: Literal["string", "numeric_string", "number"]

    def is_zero_or_null(self) -> bool:
        if self.kind == "string":
            return self.text == ""
        return self.text == "" or float(self.text) == 0


def evaluate_expression(text: str) -> str:
    """``$[...]`` (main/ast_expr2.fl and ast_expr2.y) for the operators the project uses:
    comparisons, ``&`` and ``|``, parentheses. A quoted string keeps its quotes, so
    ``"a" = a`` is false, as in Asterisk; comparisons are numeric only between numbers."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise DialplanError(f"syntax error in $[{text}]")
        group = match.lastgroup or ""
        tokens.append((group, match.group(group)))
        pos = match.end()
    if not tokens:
        raise DialplanError("empty expression $[]")
    parser = _ExpressionParser(tokens, text)
    value = parser.parse_or()
    if parser.pos != len(tokens):
        kind, token = tokens[parser.pos]
        if kind == "op" and token != ")":
            raise DialplanError(f"operator {token!r} in $[{text}] is not emulated")
        raise DialplanError(f"syntax error in $[{text}] at {token!r}")
    return value.text


class _ExpressionParser:
    _COMPARISONS = ("=", "==", "!=", "<", ">", "<=", ">=")

    def __init__(self, tokens: list[tuple[str, str]], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.pos = 0

    def _peek(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "op":
            return self.tokens[self.pos][1]
        return None

    def parse_or(self) -> _Value:
        left = self.parse_and()
        while self._peek() in ("|", "||"):
            self.pos += 1
            right = self.parse_and()
            left = right if left.is_zero_or_null() else left
        return left

    def parse_and(self) -> _Value:
        left = self.parse_comparison()
        while self._peek() in ("&", "&&"):
            self.pos += 1
            right = self.parse_comparison()
            if left.is_zero_or_null() or right.is_zero_or_null():
                left = _Value("0", "number")
        return left

    def parse_comparison(self) -> _Value:
        left = self.parse_primary()
        while (op := self._peek()) in self._COMPARISONS:
            self.pos += 1
            right = self.parse_primary()
            left = _Value("1" if _compare(op or "", left, right) else "0", "number")
        return left

    def parse_primary(self) -> _Value:
        if self.pos >= len(self.tokens):
            raise DialplanError(f"syntax error in $[{self.source}]: missing operand")
        kind, token = self.tokens[self.pos]
        self.pos += 1
        if kind == "op":
            if token == "(":
                value = self.parse_or()
                if self._peek() != ")":
                    raise DialplanError(f"syntax error in $[{self.source}]: missing ')'")
                self.pos += 1
                return value
            raise DialplanError(f"operator {token!r} in $[{self.source}] is not emulated")
        if kind == "bare" and _NUMBER.fullmatch(token):
            return _Value(token, "numeric_string")
        return _Value(token, "string")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _compare(op: str, a: _Value, b: _Value) -> bool:
    # op_eq and friends: as strings (strcoll) if either side is a string, else as numbers.
    if a.kind == "string" or b.kind == "string":
        return _COMPARE[op](a.text, b.text)
    return _COMPARE[op](float(a.text), float(b.text))


# --- the emulated PBX ------------------------------------------------------------------------


class _Jump(NamedTuple):
    context: str
    exten: str
    priority: int


_RETURN = object()  # Return() in a subroutine


@dataclass
class _Leg:
    """The channel a dialplan runs on: the caller's, or an operator's in a pre-dial handler."""

    channel: EmulatedChannel
    operator: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Call:
    channel: EmulatedChannel
    script: CallerScript | None
    deadline: float
    trace: list[Step] = field(default_factory=list)
    operator_trace: list[Step] = field(default_factory=list)
    operator_headers: dict[str, str] = field(default_factory=dict)
    media: Media | None = None
    ending: Ending | None = None
    hangup_cause: int | None = None
    queue: QueueEntry | None = None


class EmulatedPbx:
    """Runs emulated calls through a dialplan file. Several calls may run at once."""

    def __init__(
        self,
        *,
        ami: AmiEmulator,
        extensions: Path,
        globals_override: Mapping[str, str] | None = None,
        websocket_uri: str | None = None,
        websocket_connect_timeout_s: float = 2.0,
    ) -> None:
        self.ami = ami
        self.extensions = extensions
        self.dialplan = Dialplan.load(extensions)
        self.globals = {**self.dialplan.globals, **(globals_override or {})}
        self.websocket_uri = websocket_uri
        self.websocket_connect_timeout_s = websocket_connect_timeout_s
        # The neighbouring configuration files, when present, are checked like Asterisk
        # would use them: websocket_client.conf connections, queues.conf queues.
        self._websocket_clients = _ini_sections(extensions.parent / "websocket_client.conf")
        self._queues = _ini_sections(extensions.parent / "queues.conf")
        self._channel_numbers = itertools.count(1)

    async def call(
        self,
        exten: str,
        *,
        caller: CallerScript | None = None,
        caller_number: str = "",
        caller_name: str = "",
        context: str = "allonantes-entrant",
        variables: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> CallResult:
        """An incoming call to ``exten`` in ``context``, run until it leaves the dialplan.

        ``caller`` runs once the bot's media is connected (once per media session): it may
        play audio, send DTMF, wait, or ``await media.hangup()``; it is cancelled when the
        media session ends, and an exception it raises is raised here. ``variables`` are on
        the channel when it enters the dialplan (as an endpoint's ``set_var`` would put them).
        Raises ``DialplanError`` for what the emulator does not model, ``TimeoutError`` after
        ``timeout_s``."""
        loop = asyncio.get_running_loop()
        name = f"PJSIP/trunk-{next(self._channel_numbers):08x}"
        channel = self.ami.add_channel(
            name,
            callerid_num=caller_number,
            callerid_name=caller_name,
            state="Ring",
            **dict(variables or {}),
        )
        channel.context, channel.exten, channel.priority = context, exten, 1
        channel.application = channel.data = ""
        call = _Call(channel, caller, loop.time() + timeout_s)
        try:
            await asyncio.wait_for(
                self._run(call, _Leg(channel), context, exten, 1, subroutine=False),
                max(0.0, call.deadline - loop.time()) + 1.0,
            )
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"the call was still in the dialplan after {timeout_s} s "
                f"(last step: {call.trace[-1] if call.trace else None})"
            ) from None
        finally:
            self.ami.remove_channel(name)
            if call.media is not None:
                await call.media.close()
        assert call.ending is not None
        return CallResult(
            ending=call.ending,
            variables=channel.read_back(),
            raw_variables=dict(channel.variables),
            app_status={
                key: value
                for key in ("TRYSTATUS", "DIALSTATUS", "QUEUESTATUS")
                if (value := channel.get_variable(key)) is not None
            },
            trace=call.trace,
            callerid_num=channel.callerid_num,
            callerid_name=channel.callerid_name,
            media=call.media,
            channel=name,
            uniqueid=channel.uniqueid,
            hangup_cause=call.hangup_cause,
            queue=call.queue,
            operator_headers=call.operator_headers,
            operator_trace=call.operator_trace,
        )

    # --- the PBX loop (main/pbx.c __ast_pbx_run) -------------------------------------------

    async def _run(
        self, call: _Call, leg: _Leg, context: str, exten: str, priority: int, *, subroutine: bool
    ) -> None:
        channel = leg.channel
        trace = call.operator_trace if leg.operator else call.trace
        while True:
            if not subroutine:
                if self._gone(call):
                    return
                if channel.redirect is not None:  # an AMI Redirect between two priorities
                    context, exten, priority = channel.redirect
                    channel.redirect = None
            priorities = self.dialplan.extension(context, exten)
            if priorities is None:
                raise DialplanError(f"no extension '{exten}' in context '{context}'")
            found = priorities.get(priority)
            if found is None:
                if subroutine:
                    raise DialplanError(f"{context},{exten} ends without Return()")
                # autofallthrough (the default): Asterisk hangs the channel up.
                trace.append(Step(context, exten, priority, "(autofallthrough)", ""))
                call.ending = "hangup"
                return
            where = f"{context},{exten},{priority} ({self.dialplan.source}:{found.line})"
            args = self._expander(leg).expand(found.data)
            trace.append(Step(context, exten, priority, found.app, args))
            channel.context, channel.exten, channel.priority = context, exten, priority
            result = await self._exec(call, leg, found.app, args, where)
            if isinstance(result, _Jump):
                context, exten, priority = result
                continue
            if result is _RETURN:
                if not subroutine:
                    raise DialplanError(f"{where}: Return() without Gosub")
                return
            if result != 0:
                if not subroutine and channel.redirect is not None and not channel.hungup:
                    continue  # an async goto interrupted the application: go on over there
                if call.ending is None:
                    call.ending = "hangup"
                return
            priority += 1

    def _gone(self, call: _Call) -> bool:
        if call.ending is not None:
            return True
        if call.channel.hungup:
            call.ending = "ami_hangup"
            return True
        return False

    def _expander(self, leg: _Leg) -> _Expander:
        channel = leg.channel

        def read(name: str) -> str | None:
            # ast_str_retrieve_variable: built-in names, then the channel, then globals.
            builtins = {
                "EXTEN": channel.exten,
                "CONTEXT": channel.context,
                "PRIORITY": str(channel.priority),
                "CHANNEL": channel.name,
                "UNIQUEID": channel.uniqueid,
            }
            if name in builtins:
                return builtins[name]
            value = channel.get_variable(name)
            return value if value is not None else self.globals.get(name)

        def function(name: str, args: str) -> str:
            upper = name.upper()
            if upper == "UUID":
                return str(uuid.uuid4())  # func_uuid.c: ast_uuid_generate_str, lower case
            if upper == "URIENCODE":
                return uri_encode(args)
            if upper == "FILTER":
                allowed, _, text = args.partition(",")
                return filter_chars(allowed, text)
            if upper == "CALLERID":
                parts = separate_args(args)
                if len(parts) != 1:
                    raise DialplanError(f"CALLERID({args}) is not emulated")
                try:
                    return channel.get_variable(f"CALLERID({parts[0]})") or ""
                except ValueError as exc:
                    raise DialplanError(f"CALLERID({args}) is not emulated") from exc
            raise DialplanError(f"function {name}() is not emulated")

        return _Expander(read, function)

    # --- applications ----------------------------------------------------------------------

    async def _exec(self, call: _Call, leg: _Leg, app: str, args: str, where: str) -> object:
        """pbx_exec: run one application; 0 goes on, non-zero hangs the channel up."""
        channel = leg.channel
        saved = channel.application, channel.data
        channel.application, channel.data = app, args
        try:
            return await self._dispatch(call, leg, app, args, where)
        finally:
            channel.application, channel.data = saved  # pbx_exec restores them

    async def _dispatch(self, call: _Call, leg: _Leg, app: str, args: str, where: str) -> object:
        name = app.lower()
        channel = leg.channel
        if name == "noop":
            return 0
        if name == "set":
            return self._set(leg, args, where)
        if name == "goto":
            return self._goto(channel, args, where)
        if name == "gotoif":
            # pbx_builtin_gotoif: condition?iftrue[:iffalse], strsep semantics.
            condition, _, branches = args.partition("?")
            if_true, _, if_false = branches.partition(":")
            branch = if_true if check_condition(condition) else if_false
            return self._goto(channel, branch, where) if branch else 0
        if name == "execif":
            return await self._execif(call, leg, args, where)
        if name == "tryexec":
            return await self._tryexec(call, leg, args, where)
        if name == "return":
            return _RETURN
        if leg.operator:
            raise UnsupportedApplication(f"{where}: {app}() in a pre-dial handler")
        if name == "answer":
            channel.state = "Up"
            return 0
        if name == "hangup":
            cause = args.strip()
            call.hangup_cause = int(cause) if cause.isdigit() else _CAUSES.get(cause, 16)
            call.ending = "hangup"
            return -1
        if name == "audiosocket":
            return await self._audiosocket(call, args, where)
        if name == "dial":
            return await self._dial(call, args, where)
        if name == "queue":
            return await self._enter_queue(call, args, where)
        raise UnsupportedApplication(
            f"{where}: the emulator does not know the application {app}(); "
            "add it to telephony/emulator/dialplan.py as Asterisk's source does it"
        )

    def _set(self, leg: _Leg, args: str, where: str) -> int:
        # pbx_builtin_setvar: the name runs to the first '=' (not stripped); no '=' is ignored.
        name, sep, value = args.partition("=")
        if not sep:
            return 0
        if name.upper().startswith("PJSIP_HEADER(") and name.endswith(")"):
            parts = separate_args(name[len("PJSIP_HEADER(") : -1])
            if not leg.operator or len(parts) != 2 or parts[0].lower() != "add":
                raise DialplanError(
                    f"{where}: only PJSIP_HEADER(add,...) in a pre-dial handler is emulated"
                )
            leg.headers[parts[1]] = value
            return 0
        try:
            leg.channel.set_variable(name, value)
        except ValueError as exc:
            raise DialplanError(f"{where}: Set({name}=...) is not emulated") from exc
        return 0

    def _goto(self, channel: EmulatedChannel, target: str, where: str) -> _Jump:
        """pbx_parseable_goto: ``[[context,]exten,]priority``, a priority being a number, a
        label of the target extension, or ``+n``/``-n``."""
        parts = target.split(",", 2)
        context, exten = channel.context, channel.exten
        if len(parts) == 3:
            context, exten, pri = parts
        elif len(parts) == 2:
            exten, pri = parts
        else:
            pri = parts[0]
        if self.dialplan.extension(context, exten) is None:
            raise DialplanError(f"{where}: Goto({target}): no extension {exten} in {context}")
        mode = {"+": 1, "-": -1}.get(pri[:1], 0)
        pri = pri[1:] if mode else pri
        if re.fullmatch(r"\s*[+-]?\d+", pri):
            number = int(pri)
            number = channel.priority + mode * number if mode else number
        else:
            found = self.dialplan.label(context, exten, pri)
            if found is None:
                raise DialplanError(
                    f"{where}: Goto({target}): no label '{pri}' in {context},{exten}"
                )
            number = found
        if number not in (self.dialplan.extension(context, exten) or {}):
            raise DialplanError(f"{where}: Goto({target}): no priority {number} there")
        return _Jump(context, exten, number)

    async def _execif(self, call: _Call, leg: _Leg, args: str, where: str) -> object:
        """app_exec.c ``execif_exec`` (preferred syntax): ``expr?app(args)[:app(args)]``; the
        arguments are not substituted a second time."""
        comma, question = args.find(","), args.find("?")
        if question < 0 or (0 <= comma < question):
            raise DialplanError(f"{where}: ExecIf's deprecated syntax is not emulated")
        condition, remainder = separate_args(args, "?", remove_chars=False, max_args=2)
        apps = separate_args(remainder, ":", remove_chars=False, max_args=2)
        chosen = apps[0] if check_condition(condition) else (apps[1] if len(apps) > 1 else "")
        if not chosen:
            return 0
        app, _, data = chosen.partition("(")
        end = data.rfind(")")
        return await self._exec(call, leg, app, data[:end] if end >= 0 else data, where)

    async def _tryexec(self, call: _Call, leg: _Leg, args: str, where: str) -> object:
        """app_exec.c ``tryexec_exec``: the arguments ARE substituted again, TRYSTATUS says
        SUCCESS or FAILED (NOAPP for an unknown application, which the emulator refuses)."""
        app, _, data = args.partition("(")
        end = data.rfind(")")
        data = self._expander(leg).expand(data[:end] if end >= 0 else data)
        result = await self._exec(call, leg, app, data, where)
        if isinstance(result, _Jump):  # TryExec(Goto(...)): the Goto returned 0
            leg.channel.set_variable("TRYSTATUS", "SUCCESS")
            return result
        leg.channel.set_variable("TRYSTATUS", "FAILED" if result != 0 else "SUCCESS")
        return 0

    # --- media -----------------------------------------------------------------------------

    async def _audiosocket(self, call: _Call, args: str, where: str) -> int:
        """app_audiosocket.c ``audiosocket_exec``/``audiosocket_run``: -1 when the UUID is
        invalid, the channel is not answered, the bot is unreachable or silent for 2 s (the
        AudioSocketCaller enforces that) or breaks the protocol; 0 when the bot sends the
        hangup kind or closes the socket."""
        parts = separate_args(args, max_args=2)
        call_id = parts[0] if parts else ""
        server = parts[1] if len(parts) > 1 else ""
        if not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", call_id):
            return -1  # uuid_parse refuses it
        host, port = _host_port(server)
        media = AudioSocketCaller()
        call.media = media
        if host is None:
            return -1
        try:
            if call.channel.state != "Up":
                # audiosocket_run refuses an unanswered channel after the TCP connection is
                # made and before the UUID is sent: the bot sees a connection close, empty.
                await asyncio.wait_for(media.open_raw(host, port), AUDIOSOCKET_CONNECT_TIMEOUT_S)
                return -1
            await asyncio.wait_for(
                media.connect(host, port, call_id), AUDIOSOCKET_CONNECT_TIMEOUT_S
            )
        except (OSError, asyncio.TimeoutError):
            return -1
        how = await self._converse(call, media)
        if how in ("bot_hangup", "bot_close"):
            return 0
        return -1

    async def _dial(self, call: _Call, args: str, where: str) -> int:
        """app_dial.c ``dial_exec_full`` for one ``WebSocket/`` peer, with chan_websocket.c's
        ``webchan_request``/``webchan_call``: an unreachable bot gives CHANUNAVAIL and the
        dialplan goes on; the bot is answered at once (auto answer, unless ``n``); when it
        hangs up, ``g`` goes on in the dialplan with DIALSTATUS=ANSWER, without ``g`` the
        caller is hung up."""
        parts = separate_args(args, max_args=4)
        peers = parts[0] if parts else ""
        timeout = parts[1] if len(parts) > 1 else ""
        options = parse_options(parts[2]) if len(parts) > 2 else {}
        unknown = set(options) - {"g"}
        if unknown:
            raise DialplanError(f"{where}: Dial options {sorted(unknown)} are not emulated")
        if "&" in peers or not peers.startswith("WebSocket/"):
            raise DialplanError(f"{where}: only Dial(WebSocket/...) to one peer is emulated")
        channel = call.channel
        connection_id, *rest = separate_args(peers[len("WebSocket/") :], "/", max_args=2)
        ws_options = parse_options(rest[0]) if rest else {}
        unknown = set(ws_options) - {"c", "v", "f", "n"}
        if unknown:
            raise DialplanError(f"{where}: WebSocket options {sorted(unknown)} are not emulated")
        codec = ws_options.get("c") or "slin"
        if codec not in SLIN_FORMAT_RATES:
            raise DialplanError(f"{where}: codec {codec} is not emulated")
        params = ws_options.get("v") or ""
        uri = self._websocket_connection(connection_id)
        if uri is None or (params and not self._valid_uri_params(params)):
            channel.set_variable("DIALSTATUS", "CHANUNAVAIL")  # the request fails
            return 0
        if params:
            # Commas separate the pairs in the dial string (a '&' would be a second peer):
            # chan_websocket turns them back into '&'.
            uri += ("&" if "?" in uri else "?") + params.replace(",", "&")
        peer_channel = self.ami.add_channel(f"WebSocket/{connection_id}/0x{id(call):012x}")
        # Dial's outgoing channel runs no dialplan: it shows as app_dial's "AppDial".
        peer_channel.application, peer_channel.data = "AppDial", "(Outgoing Line)"
        peer_channel.context, peer_channel.exten, peer_channel.priority = channel.context, "s", 1
        # Dial makes the bot's channel inherit the caller's variables; chan_websocket's
        # set_channel_variables adds its own two.
        peer_channel.variables.update(_inherited(channel.variables))
        peer_channel.variables["MEDIA_WEBSOCKET_CONNECTION_ID"] = connection_id
        peer_channel.variables["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] = str(
            SLIN_FORMAT_RATES[codec] // 50 * 2
        )
        media = ChanWebSocketPeer(
            codec=codec,
            control_format=JSON_FORMAT
            if (ws_options.get("f") or "").lower() == "json"
            else PLAIN_TEXT,
            connection_id=connection_id,
            channel=peer_channel.name,
            channel_id=peer_channel.uniqueid,
            channel_variables=_bare(peer_channel.variables),
        )
        call.media = media
        try:
            try:
                await asyncio.wait_for(media.connect(uri), self.websocket_connect_timeout_s)
            except (OSError, asyncio.TimeoutError, WebSocketException):
                channel.set_variable("DIALSTATUS", "CHANUNAVAIL")
                return 0
            if "n" in ws_options and not await self._wait_answer(call, media, timeout):
                channel.set_variable("DIALSTATUS", "NOANSWER")
                await media.close()
                return 0
            how = await self._converse(call, media)
        finally:
            self.ami.remove_channel(peer_channel.name)
        channel.set_variable("DIALSTATUS", "ANSWER")
        if how in ("bot_hangup", "bot_close"):
            return 0 if "g" in options else -1
        return -1

    async def _wait_answer(self, call: _Call, media: ChanWebSocketPeer, timeout: str) -> bool:
        loop = asyncio.get_running_loop()
        seconds = float(timeout) if re.fullmatch(r"\d+(\.\d+)?", timeout.strip()) else None
        deadline = call.deadline if seconds is None else min(call.deadline, loop.time() + seconds)
        while not media.answered and not media.closed and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
        return media.answered

    async def _converse(self, call: _Call, media: Media) -> str:
        """The media session, until the bot or the caller ends it (or AMI hangs the channel
        up, or redirects it). The caller's script runs alongside and is cancelled at the end;
        an exception it raised is raised here."""
        script: asyncio.Future[None] | None = None
        if call.script is not None:
            script = asyncio.ensure_future(call.script(media))
        loop = asyncio.get_running_loop()
        how = ""
        try:
            while True:
                if script is not None and script.done():
                    script.result()  # the script's own failure is the test's failure
                    script = None
                ended = media.ended_by if isinstance(media, AudioSocketCaller) else media.closed_by
                if ended is not None:
                    how = ended
                    break
                if call.channel.hungup or call.channel.redirect is not None:
                    how = "ami"
                    break
                if loop.time() > call.deadline:
                    raise TimeoutError("the media session outlived the call's timeout")
                await asyncio.sleep(_POLL_S)
        finally:
            await media.close()
            if script is not None:
                script.cancel()  # no effect on a finished script
                with contextlib.suppress(asyncio.CancelledError):
                    await script  # raises what the script raised
        if how == "caller":
            call.ending = "caller_hangup"
            call.channel.hungup = True
        return how

    # --- the queue ---------------------------------------------------------------------------

    async def _enter_queue(self, call: _Call, args: str, where: str) -> int:
        """app_queue.c ``queue_exec``: the emulation stops here (no agent). The ``b()``
        pre-dial handler runs on an operator's channel that inherits the caller's "_"/"__"
        variables (main/channel.c ``ast_channel_inherit_variables``)."""
        parts = separate_args(args, max_args=9) + [""] * 9
        name, options_text, timeout = parts[0], parts[1], parts[4]
        if self._queues is not None and name not in self._queues:
            raise DialplanError(f"{where}: queue '{name}' is not in queues.conf")
        call.queue = QueueEntry(name, options_text, timeout)
        handler = parse_options(options_text).get("b")
        if handler:
            target = handler.split("^")
            if "(" in handler or len(target) != 3:
                raise DialplanError(f"{where}: b({handler}) is not emulated")
            operator = EmulatedChannel(
                "PJSIP/operateur-00000001",
                f"{call.channel.uniqueid}.op",
                _inherited(call.channel.variables),
                callerid_num=call.channel.callerid_num,
                callerid_name=call.channel.callerid_name,
                state="Down",
            )
            leg = _Leg(operator, operator=True, headers=call.operator_headers)
            context, exten, pri = target
            operator.context, operator.exten = context, exten
            start = self._goto(operator, f"{context},{exten},{pri}", where)
            await self._run(call, leg, *start, subroutine=True)
        call.ending = "queue"
        return -1

    def _websocket_connection(self, connection_id: str) -> str | None:
        """The URI of a websocket_client.conf connection (``websocket_uri`` replaces it for
        the test's port); None when that file exists and does not define it."""
        if self._websocket_clients is not None and connection_id not in self._websocket_clients:
            return None
        if self.websocket_uri is not None:
            return self.websocket_uri
        if self._websocket_clients is not None:
            return self._websocket_clients[connection_id].get("uri")
        return None

    @staticmethod
    def _valid_uri_params(params: str) -> bool:
        # chan_websocket.c validate_uri_parameters: each name and value already encoded.
        return all(
            uri_verify_encoded(piece) for pair in params.split(",") for piece in pair.split("=")
        )


def _host_port(server: str) -> tuple[str | None, int]:
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", server.strip())
    if match is None:
        return None, 0
    host = match.group(1) or match.group(3)
    return host, int(match.group(2) or match.group(4))


def _inherited(variables: Mapping[str, str]) -> dict[str, str]:
    """ast_channel_inherit_variables: "__X" stays "__X", "_X" becomes "X" (inherited once),
    a variable without prefix is not inherited."""
    inherited = {}
    for name, value in variables.items():
        if name.startswith("__"):
            inherited[name] = value
        elif name.startswith("_"):
            inherited[name[1:]] = value
    return inherited


def _bare(variables: Mapping[str, str]) -> dict[str, str]:
    return {name.lstrip("_"): value for name, value in variables.items()}


def _ini_sections(path: Path) -> dict[str, dict[str, str]] | None:
    if not path.exists():
        return None
    parser = configparser.ConfigParser(
        strict=False, inline_comment_prefixes=(";",), comment_prefixes=(";", "#")
    )
    parser.read_string(path.read_text(encoding="utf-8"))
    return {name: dict(parser[name]) for name in parser.sections()}

"""Asterisk's text handling in the dialplan: argument splitting and options (main/app.c),
``${...}`` substitution with the functions the dialplan uses (main/pbx_variables.c), and
``$[...]`` expressions (main/ast_expr2.y)."""

from __future__ import annotations

import operator
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from telephony.emulator.ami import EmulatedChannel
from telephony.emulator.dialplan.common import DialplanError

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


def no_function(name: str, args: str) -> str:
    raise DialplanError(f"function {name}() is not available here")


class Expander:
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
    comparisons, ``&`` and ``|``, ``+ - * %`` on whole numbers, parentheses. A quoted string keeps its quotes, so
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
        if kind == "op" and token != ")":  # noqa: S105 — a lexer token, not a password
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
        left = self.parse_additive()
        while (op := self._peek()) in self._COMPARISONS:
            self.pos += 1
            right = self.parse_additive()
            left = _Value("1" if _compare(op or "", left, right) else "0", "number")
        return left

    # ast_expr2.y: "%left TOK_PLUS TOK_MINUS" binds tighter than the comparisons, and
    # "%left TOK_MULT TOK_DIV TOK_MOD" tighter still.
    def parse_additive(self) -> _Value:
        left = self.parse_multiplicative()
        while (op := self._peek()) in ("+", "-"):
            self.pos += 1
            left = _arithmetic(op or "", left, self.parse_multiplicative(), self.source)
        return left

    def parse_multiplicative(self) -> _Value:
        left = self.parse_primary()
        while (op := self._peek()) in ("*", "%"):
            self.pos += 1
            left = _arithmetic(op or "", left, self.parse_primary(), self.source)
        return left

    def parse_primary(self) -> _Value:
        if self.pos >= len(self.tokens):
            raise DialplanError(f"syntax error in $[{self.source}]: missing operand")
        kind, token = self.tokens[self.pos]
        self.pos += 1
        if kind == "op":
            if token == "(":  # noqa: S105 — a lexer token, not a password
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


def _arithmetic(op: str, a: _Value, b: _Value, source: str) -> _Value:
    """op_plus, op_minus, op_times, op_rem on whole numbers. Asterisk computes in long double
    and prints the result with "%.18Lg" (whole numbers without a decimal point); its
    fallbacks on a non-numeric operand or a zero divisor (a warning and a made-up value) are
    dialplan mistakes here, as are fractions, which the emulator does not model."""
    if a.kind == "string" or b.kind == "string":
        raise DialplanError(f"non-numeric argument to {op!r} in $[{source}]")
    if "." in a.text or "." in b.text:
        raise DialplanError(f"fractions in $[{source}] are not emulated")
    x, y = int(a.text), int(b.text)
    if op == "+":
        result = x + y
    elif op == "-":
        result = x - y
    elif op == "*":
        result = x * y
    else:
        if y == 0:
            raise DialplanError(f"division by zero in $[{source}]")
        # fmodl: the remainder takes the sign of the dividend (C), not of the divisor.
        result = abs(x) % abs(y) * (-1 if x < 0 else 1)
    return _Value(str(result), "number")


def _compare(op: str, a: _Value, b: _Value) -> bool:
    # op_eq and friends: as strings (strcoll) if either side is a string, else as numbers.
    if a.kind == "string" or b.kind == "string":
        return _COMPARE[op](a.text, b.text)
    return _COMPARE[op](float(a.text), float(b.text))


# --- a channel's substitution ----------------------------------------------------------------


def channel_expander(channel: EmulatedChannel, globals: Mapping[str, str]) -> Expander:
    """The substitution on ``channel``: its variables and built-in names, then ``globals``;
    the functions ``UUID``, ``URIENCODE``, ``FILTER``, ``CALLERID`` and ``GLOBAL``."""

    def read(name: str) -> str | None:
        # ast_str_retrieve_variable: built-in names, then the channel, then globals.
        builtins = {
            "EXTEN": channel.exten,
            "CONTEXT": channel.context,
            "PRIORITY": str(channel.priority),
            "CHANNEL": channel.name,
            "UNIQUEID": channel.uniqueid,
            # pbx_variables.c: the wall clock in whole seconds (the dialplan times a media
            # session with it).
            "EPOCH": str(int(time.time())),
        }
        if name in builtins:
            return builtins[name]
        value = channel.get_variable(name)
        return value if value is not None else globals.get(name)

    def function(name: str, args: str) -> str:
        upper = name.upper()
        if upper == "UUID":
            return str(uuid.uuid4())  # func_uuid.c: ast_uuid_generate_str, lower case
        if upper == "GLOBAL":  # func_global.c global_read
            return globals.get(args, "")
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

    return Expander(read, function)

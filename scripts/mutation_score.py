"""Mutation score per decoder, from the results mutmut left in mutants/ (`make mutation`).

mutmut 3 writes, next to each mutated copy ``mutants/<path>``, a ``<path>.meta`` JSON file
whose ``exit_code_by_key`` gives each mutant's outcome (the codes are mutmut's own: 1 and 3 a
test failed, 0 every test passed, 36 and the SIGXCPU codes a timeout, None not run).

A mutant counts as *killed* when a test failed or when it ran past its timeout (a decoder
that hangs is noticed). The score "wording aside" leaves out the mutants that change nothing
but the text of a raised exception: both the mutated function and the original are parsed,
the arguments of every ``raise X(...)`` are blanked, and a mutant whose function is then the
same as the original only rewords a message. Exit status: 1 if a decoder scores under
``--fail-under`` (wording aside) or a mutant was not run, else 0.

For the AMI decoder, whose headers are read with ``.get()`` on panoramisk's case-insensitive
Message (Asterisk matches header names without case too), the mutants whose only change is
the case of such a header name are equivalent and set aside the same way ("header case").

Each decoder is a module and, unless the whole module is a decoder, the functions in it that
decode outside bytes or text (``DECODERS``): only their mutants are scored. ``--patterns``
prints the mutant names to give ``mutmut run`` so that only those mutants are run.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

# mutmut's name for a function is x_NAME, for a method xǁCLASSǁNAME; a mutant adds __mutmut_N.
CLASS_SEPARATOR = "\u01c1"


@dataclass(frozen=True)
class Decoder:
    """A decoder that reads bytes or text from outside: a module, and the functions in it
    that decode (None: the whole module). A method is written ``Class.method``."""

    name: str
    source: Path
    functions: tuple[str, ...] | None = None
    # The decoder reads headers with .get() on a case-insensitive mapping (panoramisk's AMI
    # Message, as Asterisk's own astman_get_header): a mutant that only changes the case of
    # a header name it reads behaves the same, and is set aside like a message's wording.
    case_insensitive_get: bool = False

    @property
    def module(self) -> str:
        return ".".join(self.source.with_suffix("").parts)

    def mangled(self) -> set[str] | None:
        """mutmut's names for the decoding functions (None: every function of the module)."""
        if self.functions is None:
            return None
        names = set()
        for function in self.functions:
            cls, _, method = function.rpartition(".")
            names.add(
                f"x{CLASS_SEPARATOR}{cls}{CLASS_SEPARATOR}{method}" if cls else f"x_{function}"
            )
        return names

    def patterns(self) -> list[str]:
        """Mutant names, as ``mutmut run`` takes them (fnmatch patterns)."""
        mangled = self.mangled()
        if mangled is None:
            return [f"{self.module}.*"]
        return [f"{self.module}.{name}__mutmut_*" for name in sorted(mangled)]


# The decoders that read outside bytes (the ones scripts/fuzz.py fuzzes), as they are called.
DECODERS = (
    Decoder("AudioSocket codec", Path("telephony/audiosocket/codec.py")),
    Decoder("chan_websocket codec", Path("telephony/chan_websocket/codec.py")),
    # Asterisk's answers on the manager connection: a list action's replies, Status events.
    Decoder(
        "AMI replies",
        Path("telephony/ami.py"),
        ("list_replies", "status_caller_line", "_variable_values", "_caller_number"),
        case_insensitive_get=True,
    ),
    Decoder("console messages", Path("voicebot/console/api.py"), ("_console_command",)),
    Decoder(
        "softphone messages",
        Path("voicebot/console/softphone.py"),
        ("parse_start", "BrowserTransport.receive_text", "BrowserTransport.receive_audio"),
    ),
    # YAML text -> values, environment values -> typed values, the nesting guard; not the
    # sections' own validation of the values once typed.
    Decoder(
        "settings loader",
        Path("voicebot/core/config.py"),
        ("load_settings", "yaml_nesting", "_coerce", "_build_section", "_generic_env_target"),
    ),
    Decoder(
        "knowledge-base loader",
        Path("voicebot/dialogue/knowledge.py"),
        (
            "KnowledgeBase.load",
            "_where",
            "_compose",
            "_mapping",
            "_text",
            "_date",
            "_load_entries",
            "_entry",
            "_load_prompts",
        ),
    ),
)

KILLED_CODES = {1, 3}
TIMEOUT_CODES = {36, 24, -24, 152, 255}
SURVIVED_CODES = {0}


@dataclass
class Score:
    name: str
    total: int = 0
    killed: int = 0
    wording: int = 0
    wording_killed: int = 0
    header_case: int = 0
    header_case_killed: int = 0
    not_run: int = 0

    @property
    def aside(self) -> int:
        return self.wording + self.header_case

    @property
    def aside_killed(self) -> int:
        return self.wording_killed + self.header_case_killed

    def percent(self, *, wording_aside: bool) -> float:
        total = self.total - self.aside if wording_aside else self.total
        killed = self.killed - self.aside_killed if wording_aside else self.killed
        return 100.0 * killed / total if total else 100.0


class _BlankRaiseArguments(ast.NodeTransformer):
    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        if isinstance(node.exc, ast.Call):
            node.exc.args = []
            node.exc.keywords = []
        return node


class _FoldGetKeys(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
            key = node.args[0]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                node.args[0] = ast.Constant(key.value.lower())
        return node


def _functions(tree: ast.AST) -> dict[str, ast.FunctionDef]:
    return {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name
    }


def _normalised(
    function: ast.FunctionDef, *, blank_messages: bool, fold_get_keys: bool = False
) -> str:
    copy = ast.parse(ast.unparse(function)).body[0]
    assert isinstance(copy, ast.FunctionDef)
    copy.name = "f"
    if blank_messages:
        copy = _BlankRaiseArguments().visit(copy)
    if fold_get_keys:
        copy = _FoldGetKeys().visit(copy)
    return ast.dump(copy, include_attributes=False)


def is_wording_only(mutant: ast.FunctionDef, original: ast.FunctionDef) -> bool:
    """True if the mutant differs from the original only inside raised exceptions' arguments."""
    if _normalised(mutant, blank_messages=False) == _normalised(original, blank_messages=False):
        return False  # an equivalent rewrite (not a message change): keep it counted
    return _normalised(mutant, blank_messages=True) == _normalised(original, blank_messages=True)


def is_header_case_only(mutant: ast.FunctionDef, original: ast.FunctionDef) -> bool:
    """True if the mutant differs from the original only in the case of ``.get("Key")``
    keys (equivalent where the mapping's keys are case-insensitive)."""
    if _normalised(mutant, blank_messages=False) == _normalised(original, blank_messages=False):
        return False
    folded = {"blank_messages": False, "fold_get_keys": True}
    return _normalised(mutant, **folded) == _normalised(original, **folded)


def score_file(decoder: Decoder, mutants_dir: Path, survivors: list[str]) -> Score:
    mutated = mutants_dir / decoder.source
    meta = json.loads(mutated.with_name(mutated.name + ".meta").read_text(encoding="utf-8"))
    functions = _functions(ast.parse(mutated.read_text(encoding="utf-8")))
    wanted = decoder.mangled()
    score = Score(decoder.name)
    for key, code in sorted(meta["exit_code_by_key"].items()):
        function_name = key.removeprefix(decoder.module + ".")
        base = function_name.rsplit("__mutmut_", 1)[0]
        if wanted is not None and base not in wanted:
            continue  # not a decoding function of this module
        mutant, original = functions[function_name], functions[base + "__mutmut_orig"]
        wording = is_wording_only(mutant, original)
        header_case = (
            not wording and decoder.case_insensitive_get and is_header_case_only(mutant, original)
        )
        killed = code in KILLED_CODES or code in TIMEOUT_CODES
        score.total += 1
        score.killed += killed
        score.wording += wording
        score.wording_killed += wording and killed
        score.header_case += header_case
        score.header_case_killed += header_case and killed
        if code is None:
            score.not_run += 1
        elif not killed and not wording and not header_case:
            survivors.append(key)
    return score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources",
        nargs="*",
        type=Path,
        help="only the decoders of these files, e.g. telephony/ami.py (default: every decoder)",
    )
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--fail-under", type=float, default=0.0, help="percent, wording aside")
    parser.add_argument("--show-survivors", action="store_true")
    parser.add_argument(
        "--patterns", action="store_true", help="print the mutant names for `mutmut run`, then exit"
    )
    args = parser.parse_args(argv)

    decoders = [d for d in DECODERS if not args.sources or d.source in args.sources]
    unknown = set(args.sources) - {d.source for d in DECODERS}
    if unknown:
        parser.error(f"not a decoder: {', '.join(sorted(map(str, unknown)))}")
    if args.patterns:
        print(" ".join(pattern for d in decoders for pattern in d.patterns()))
        return 0

    survivors: list[str] = []
    scores = [score_file(decoder, args.mutants, survivors) for decoder in decoders]
    print(f"{'decoder':<36} {'mutants':>7} {'killed':>7} {'score':>7}   wording aside")
    for s in scores:
        kept = s.total - s.aside
        header_case = f", {s.header_case} header-case" if s.header_case else ""
        print(
            f"{s.name:<36} {s.total:>7} {s.killed:>7} {s.percent(wording_aside=False):>6.1f}%"
            f"   {s.killed - s.aside_killed}/{kept} = {s.percent(wording_aside=True):.1f}%"
            f" ({s.wording} wording{header_case} mutants left out)"
        )
    if args.show_survivors and survivors:
        print("\nsurviving mutants (see one with `mutmut show NAME`):")
        for name in survivors:
            print(f"  {name}")
    failed = [s for s in scores if s.percent(wording_aside=True) < args.fail_under]
    for s in failed:
        print(f"{s.name}: under {args.fail_under:.0f} %", file=sys.stderr)
    not_run = sum(s.not_run for s in scores)
    if not_run:
        print(f"{not_run} mutants were not run", file=sys.stderr)
    return 1 if failed or not_run else 0


if __name__ == "__main__":
    sys.exit(main())

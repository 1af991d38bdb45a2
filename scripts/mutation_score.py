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
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

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
    not_run: int = 0

    def percent(self, *, wording_aside: bool) -> float:
        total = self.total - self.wording if wording_aside else self.total
        killed = self.killed - self.wording_killed if wording_aside else self.killed
        return 100.0 * killed / total if total else 100.0


class _BlankRaiseArguments(ast.NodeTransformer):
    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        if isinstance(node.exc, ast.Call):
            node.exc.args = []
            node.exc.keywords = []
        return node


def _functions(tree: ast.AST) -> dict[str, ast.FunctionDef]:
    return {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name
    }


def _normalised(function: ast.FunctionDef, *, blank_messages: bool) -> str:
    copy = ast.parse(ast.unparse(function)).body[0]
    assert isinstance(copy, ast.FunctionDef)
    copy.name = "f"
    if blank_messages:
        copy = _BlankRaiseArguments().visit(copy)
    return ast.dump(copy, include_attributes=False)


def is_wording_only(mutant: ast.FunctionDef, original: ast.FunctionDef) -> bool:
    """True if the mutant differs from the original only inside raised exceptions' arguments."""
    if _normalised(mutant, blank_messages=False) == _normalised(original, blank_messages=False):
        return False  # an equivalent rewrite (not a message change): keep it counted
    return _normalised(mutant, blank_messages=True) == _normalised(original, blank_messages=True)


def score_file(source: Path, mutants_dir: Path, survivors: list[str]) -> Score:
    mutated = mutants_dir / source
    meta = json.loads(mutated.with_name(mutated.name + ".meta").read_text(encoding="utf-8"))
    functions = _functions(ast.parse(mutated.read_text(encoding="utf-8")))
    module = ".".join(source.with_suffix("").parts)
    score = Score(str(source))
    for key, code in sorted(meta["exit_code_by_key"].items()):
        function_name = key.removeprefix(module + ".")
        original = functions[function_name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"]
        wording = is_wording_only(functions[function_name], original)
        killed = code in KILLED_CODES or code in TIMEOUT_CODES
        score.total += 1
        score.killed += killed
        score.wording += wording
        score.wording_killed += wording and killed
        if code is None:
            score.not_run += 1
        elif not killed and not wording:
            survivors.append(key)
    return score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources", nargs="+", type=Path, help="the mutated files, e.g. telephony/ami.py"
    )
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--fail-under", type=float, default=0.0, help="percent, wording aside")
    parser.add_argument("--show-survivors", action="store_true")
    args = parser.parse_args(argv)

    survivors: list[str] = []
    scores = [score_file(source, args.mutants, survivors) for source in args.sources]
    print(f"{'decoder':<36} {'mutants':>7} {'killed':>7} {'score':>7}   wording aside")
    for s in scores:
        kept = s.total - s.wording
        print(
            f"{s.name:<36} {s.total:>7} {s.killed:>7} {s.percent(wording_aside=False):>6.1f}%"
            f"   {s.killed - s.wording_killed}/{kept} = {s.percent(wording_aside=True):.1f}%"
            f" ({s.wording} wording mutants left out)"
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

"""The emulator's model of what the dialplan uses to spread calls over several bot hosts, each
on literal dialplan snippets, as Asterisk's source does it: arithmetic in ``$[...]``
(main/ast_expr2.y), variable names built by substitution (main/pbx_variables.c),
``Set(GLOBAL(...))`` shared by the calls of one PBX (funcs/func_global.c) and
``While``/``EndWhile``/``ExitWhile``/``ContinueWhile`` (apps/app_while.c). What the deployed
dialplan does with them: test_emulated_pbx.py and test_spread_hosts.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from telephony.emulator import AmiEmulator
from telephony.emulator.ami import EmulatedChannel
from telephony.emulator.dialplan import (
    CallResult,
    DialplanError,
    EmulatedPbx,
    channel_expander,
    evaluate_expression,
)


def pbx_for(snippet: str, folder: Path) -> EmulatedPbx:
    """A PBX running ``snippet`` (an extensions.conf of its own, no neighbouring files)."""
    path = folder / "extensions.conf"
    path.write_text(snippet, encoding="utf-8")
    return EmulatedPbx(ami=AmiEmulator(), extensions=path)


async def run(pbx: EmulatedPbx) -> CallResult:
    return await pbx.call("s", context="essai", timeout_s=5)


def noops(result: CallResult) -> list[str]:
    return [step.args for step in result.trace if step.app == "NoOp"]


# --- arithmetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("0 % 2 + 1", "1"),  # % binds tighter than +
        ("2 % 2 + 1", "1"),
        ("3 % 2 + 1", "2"),
        ("2 + 3 * 4", "14"),
        ("(1 + 2) * 3", "9"),
        ("7 - 10", "-3"),
        ("10 - 2 - 3", "5"),  # left-associative
        ("1 + 1 < 3", "1"),  # + binds tighter than the comparisons
        ("0 < 0", "0"),
        ("2 < 3 & 3 % 3 = 0", "1"),
    ],
)
def test_arithmetic_as_asterisk(expression: str, value: str) -> None:
    assert evaluate_expression(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("5 % 0", "division by zero"),  # Asterisk warns and makes a value up
        ("a + 1", "non-numeric"),  # Asterisk warns and returns the other operand
        ('"1" + 1', "non-numeric"),  # a quoted number is a string
        ("1.5 + 1", "fractions"),
        (" % 2", "not emulated"),  # an empty variable: Asterisk's syntax error
    ],
)
def test_arithmetic_mistakes_fail_loudly(expression: str, message: str) -> None:
    with pytest.raises(DialplanError, match=message):
        evaluate_expression(expression)


# --- names built by substitution ----------------------------------------------------------------


def test_variable_names_built_by_substitution() -> None:
    """pbx_substitute_variables_helper_full: what is inside ``${...}`` is substituted first
    (``${...}`` and ``$[...]`` alike), then the result is the name looked up."""
    channel = EmulatedChannel("PJSIP/essai-1", "1", {"N": "1"})
    expander = channel_expander(channel, {"HOTE_1": "a:1", "HOTE_2": "b:2", "N": "2"})
    assert expander.expand("${HOTE_${N}}") == "a:1"  # the channel's N before the global
    assert expander.expand("${HOTE_$[${N} + 1]}") == "b:2"
    assert expander.expand("${HOTE_$[${N} + 2]}") == ""  # no such variable: empty
    assert expander.expand('$["${HOTE_$[${N} + 1]}" != ""]') == "1"
    assert expander.expand("${GLOBAL(N)}") == "2"  # GLOBAL() reads past the channel's N


# --- GLOBAL() ----------------------------------------------------------------------------------


ROUND = """
[globals]
TOUR=0
[essai]
exten => s,1,Set(ICI=$[${TOUR} % 3 + 1])
 same => n,Set(GLOBAL(TOUR)=${ICI})
 same => n,NoOp(${ICI})
 same => n,Hangup()
"""


async def test_set_global_is_shared_by_the_calls_of_one_pbx(tmp_path: Path) -> None:
    pbx = pbx_for(ROUND, tmp_path)
    firsts = [noops(await run(pbx)) for _ in range(4)]
    assert firsts == [["1"], ["2"], ["3"], ["1"]]
    assert pbx.globals["TOUR"] == "1"
    # Another PBX (another Asterisk, or this one restarted) starts from [globals] again.
    assert noops(await run(pbx_for(ROUND, tmp_path))) == ["1"]


async def test_set_global_writes_the_global_not_the_channel(tmp_path: Path) -> None:
    snippet = """
[globals]
X=global
[essai]
exten => s,1,Set(X=canal)
 same => n,Set(GLOBAL(X)=nouveau)
 same => n,NoOp(${X} ${GLOBAL(X)})
 same => n,Hangup()
"""
    pbx = pbx_for(snippet, tmp_path)
    result = await run(pbx)
    assert noops(result) == ["canal nouveau"]  # ${X}: the channel's first
    assert result.variables["X"] == "canal" and pbx.globals["X"] == "nouveau"


async def test_set_global_with_an_inheritance_prefix_is_not_emulated(tmp_path: Path) -> None:
    snippet = "[essai]\nexten => s,1,Set(GLOBAL(__X)=1)\n same => n,Hangup()\n"
    with pytest.raises(DialplanError, match="not emulated"):
        await run(pbx_for(snippet, tmp_path))


# --- While loops -------------------------------------------------------------------------------


async def test_while_counts_and_goes_past_its_endwhile(tmp_path: Path) -> None:
    snippet = """
[essai]
exten => s,1,Set(I=0)
 same => n,While($[${I} < 3])
 same => n,NoOp(tour ${I})
 same => n,Set(I=$[${I} + 1])
 same => n,EndWhile()
 same => n,NoOp(fin ${I})
 same => n,Hangup()
"""
    result = await run(pbx_for(snippet, tmp_path))
    assert noops(result) == ["tour 0", "tour 1", "tour 2", "fin 3"]
    # The While is run again (its condition substituted anew) after each EndWhile.
    whiles = [step.args for step in result.trace if step.app == "While"]
    assert whiles == ["1", "1", "1", "0"]
    # app_while.c cleans its variables up when the condition fails.
    assert not [name for name in result.variables if name.startswith(("WHILE_", "END_"))]
    assert result.ending == "hangup"


async def test_a_false_condition_at_once_skips_the_body(tmp_path: Path) -> None:
    snippet = """
[essai]
exten => s,1,While(0)
 same => n,NoOp(jamais)
 same => n,EndWhile()
 same => n,NoOp(après)
 same => n,Hangup()
"""
    assert noops(await run(pbx_for(snippet, tmp_path))) == ["après"]


async def test_nested_whiles_and_two_loops_in_one_extension(tmp_path: Path) -> None:
    """find_matching_endwhile counts the nested While()s; a second loop after the first
    gets its own index (the first one's variables are gone)."""
    snippet = """
[essai]
exten => s,1,Set(I=0)
 same => n,While($[${I} < 2])
 same => n,Set(J=0)
 same => n,While($[${J} < 2])
 same => n,NoOp(${I}${J})
 same => n,Set(J=$[${J} + 1])
 same => n,EndWhile()
 same => n,Set(I=$[${I} + 1])
 same => n,EndWhile()
 same => n,While($[${I} > 0])
 same => n,NoOp(retour ${I})
 same => n,Set(I=$[${I} - 1])
 same => n,EndWhile()
 same => n,Hangup()
"""
    result = await run(pbx_for(snippet, tmp_path))
    assert noops(result) == ["00", "01", "10", "11", "retour 2", "retour 1"]


async def test_exitwhile_and_continuewhile(tmp_path: Path) -> None:
    snippet = """
[essai]
exten => s,1,Set(I=0)
 same => n,While(1)
 same => n,Set(I=$[${I} + 1])
 same => n,ExecIf($[${I} = 2]?ContinueWhile())
 same => n,ExecIf($[${I} = 4]?ExitWhile())
 same => n,NoOp(${I})
 same => n,EndWhile()
 same => n,NoOp(sorti ${I})
 same => n,Hangup()
"""
    result = await run(pbx_for(snippet, tmp_path))
    assert noops(result) == ["1", "3", "sorti 4"]


async def test_a_goto_out_of_a_loop_leaves_it_open(tmp_path: Path) -> None:
    """Jumping out with GotoIf (as the deployed dialplan does when a bot answered) is what
    Asterisk allows: the loop's WHILE_0 variable stays on the channel, nothing else."""
    snippet = """
[essai]
exten => s,1,Set(I=0)
 same => n,While(1)
 same => n,Set(I=$[${I} + 1])
 same => n,GotoIf($[${I} = 2]?dehors)
 same => n,EndWhile()
 same => n(dehors),NoOp(dehors ${I})
 same => n,Hangup()
"""
    result = await run(pbx_for(snippet, tmp_path))
    assert noops(result) == ["dehors 2"]
    assert result.variables["WHILE_0"] == "essai,s,2"


async def test_a_while_without_endwhile_fails_loudly(tmp_path: Path) -> None:
    snippet = "[essai]\nexten => s,1,While(0)\n same => n,NoOp(x)\n same => n,Hangup()\n"
    with pytest.raises(DialplanError, match="no EndWhile"):
        await run(pbx_for(snippet, tmp_path))

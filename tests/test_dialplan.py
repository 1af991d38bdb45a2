"""deploy/asterisk: the dialplan passes asterisklint, has the shape the bot relies on (every
call ends as the bot decided, a person is the fail-safe), and the configuration files agree
with the bot (ports, subprotocol, variable names, AMI permissions). What the dialplan does
with live calls is in test_emulated_pbx.py."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from telephony import ami
from telephony.chan_websocket import server as websocket_server
from telephony.emulator import AmiEmulator
from telephony.emulator.dialplan import Dialplan, EmulatedPbx
from voicebot.core.config import AmiSettings, ServerSettings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "asterisk"

# asterisklint (2022) predates these two; exactly these messages are expected and filtered,
# nothing else is silenced.
KNOWN_GAPS = (
    re.compile(r"E_FUNC_MISSING: function 'UUID' does not exist"),
    re.compile(r"E_APP_MISSING: app 'AudioSocket' does not exist"),
)


def asterisklint() -> str:
    candidates = [Path(sys.executable).parent / "asterisklint", shutil.which("asterisklint")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("asterisklint est introuvable : installez-le (pip install asterisklint==0.4.3)")


def lint(path: Path) -> list[str]:
    """asterisklint's findings on one extensions.conf, minus the known gaps."""
    done = subprocess.run(
        [asterisklint(), "dialplan-check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = (done.stdout + done.stderr).splitlines()
    findings = [line for line in lines if re.search(r":\d+ [EWH]_[A-Z_]+:", line)]
    return [line for line in findings if not any(gap.search(line) for gap in KNOWN_GAPS)]


def contexts(text: str) -> dict[str, list[str]]:
    """``[context]`` → its non-comment lines (a small reader, enough for our own file)."""
    result: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = re.sub(r"(?<!\\);.*", "", raw).strip()
        if not line:
            continue
        header = re.fullmatch(r"\[([^\]]+)\](?:\(.*\))?", line)
        if header:
            current = header.group(1)
            result.setdefault(current, [])
        else:
            result.setdefault(current, []).append(line)
    return result


def apps(lines: list[str]) -> list[str]:
    """The application calls of a context, in order (``exten =>`` and ``same =>`` lines)."""
    found = []
    for line in lines:
        match = re.match(r"(?:exten\s*=>\s*[^,]+,|same\s*=>\s*)[^,]+,(.*)", line)
        if match:
            found.append(match.group(1).strip())
    return found


def ini(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        strict=False, inline_comment_prefixes=(";",), comment_prefixes=(";", "#")
    )
    parser.read_string((DEPLOY / name).read_text(encoding="utf-8"))
    return parser


EXTENSIONS = (DEPLOY / "extensions.conf").read_text(encoding="utf-8")
DIALPLAN = contexts(EXTENSIONS)
GLOBALS = dict(line.split("=", 1) for line in DIALPLAN["globals"])


def test_dialplan_passes_asterisklint() -> None:
    assert lint(DEPLOY / "extensions.conf") == []


def test_lint_still_reports_real_mistakes(tmp_path: Path) -> None:
    broken = EXTENSIONS.replace("Goto(allonantes-operateurs,s,1)", "Goto(allonantes-operateur,s,1)")
    broken = broken.replace(" same => n,Answer()", " same => n,Answr()", 1)
    broken = broken.replace("${UUID()}", "${UUIDX()}", 1)
    (tmp_path / "extensions.conf").write_text(broken, encoding="utf-8")
    findings = "\n".join(lint(tmp_path / "extensions.conf"))
    assert "E_APP_MISSING: app 'Answr'" in findings
    assert "E_DP_GOTO_NOCONTEXT" in findings
    assert "function 'UUIDX' does not exist" in findings


HOSTS = ("_1", "_2", "_3")  # the bot hosts named in [globals]


def media_then_decision(context: str, media: list[str], host: str, taken: str) -> None:
    """The hosts ``host``_1, _2, ... are counted up to the first empty one; the call starts
    at the host after the one the previous call was last offered to (the round
    ``ALLO_TOUR_...``, a global set before each try), then each host once, with a new UUID: a bot that took the call goes to its decision; when
    none answered (or none is configured), the queue with the reason robot_indisponible. What
    this does with live calls: test_emulated_pbx.py and test_dialplan_spread.py."""
    steps = apps(DIALPLAN[context])
    tour = f"ALLO_TOUR_{host.removeprefix('ALLO_')}"
    expected = [
        "Set(ALLO_NB_HOTES=0)",
        f'While($["${{{host}_$[${{ALLO_NB_HOTES}} + 1]}}" != ""])',
        "Set(ALLO_NB_HOTES=$[${ALLO_NB_HOTES} + 1])",
        "EndWhile()",
        "GotoIf($[${ALLO_NB_HOTES} = 0]?indisponible)",
        f"Set(ALLO_HOTE=$[${{{tour}}} % ${{ALLO_NB_HOTES}} + 1])",
        "Set(ALLO_ESSAIS=0)",
        "While($[${ALLO_ESSAIS} < ${ALLO_NB_HOTES}])",
        f"Set(GLOBAL({tour})=${{ALLO_HOTE}})",
        f"Set({ami.CALL_ID_VARIABLE}=${{UUID()}})",
        *media,
        f"GotoIf($[{taken}]?decision)",
        "Set(ALLO_HOTE=$[${ALLO_HOTE} % ${ALLO_NB_HOTES} + 1])",
        "Set(ALLO_ESSAIS=$[${ALLO_ESSAIS} + 1])",
        "EndWhile()",
        "Set(__ALLO_HANDOFF_REASON=robot_indisponible)",
        "Goto(allonantes-operateurs,s,1)",
        "Goto(allonantes-decision,s,1)",
    ]
    assert steps[steps.index("Answer()") + 1 :] == expected
    labelled = "same => n(indisponible),Set(__ALLO_HANDOFF_REASON=robot_indisponible)"
    assert labelled in DIALPLAN[context]
    assert "same => n(decision),Goto(allonantes-decision,s,1)" in DIALPLAN[context]
    # One host by default: the others are empty until an admin names them; the round starts
    # at 0, so that the first call after a (re)load goes to host 1.
    assert [GLOBALS[f"{host}{suffix}"].strip() for suffix in HOSTS[1:]] == ["", ""]
    assert GLOBALS[tour].strip() == "0"


def test_audiosocket_variant() -> None:
    # Timed, and judged on the decision and the time, not on TRYSTATUS: AudioSocket() returns
    # -1 for every end before Asterisk 20.14 / 21.9 / 22.4 (test_emulated_pbx.py runs both).
    bot = [
        "Set(ALLO_DEBUT=${EPOCH})",
        "TryExec(AudioSocket(${ALLO_UUID},${ALLO_AUDIOSOCKET_${ALLO_HOTE}}))",
    ]
    taken = '"${ALLO_DECISION}" != "" | ${EPOCH} - ${ALLO_DEBUT} > 3'
    media_then_decision("allonantes-audiosocket", bot, "ALLO_AUDIOSOCKET", taken)
    assert GLOBALS["ALLO_AUDIOSOCKET_1"].strip() == f"127.0.0.1:{ServerSettings().audiosocket_port}"


def test_websocket_variant() -> None:
    steps = apps(DIALPLAN["allonantes-websocket"])
    dial = next(step for step in steps if step.startswith("Dial("))
    # The caller's number goes to the bot URI-encoded: chan_websocket refuses v() values that
    # are not (a '+' would fail the Dial), and turns the ',' between pairs into '&'.
    assert dial == (
        f"Dial(WebSocket/${{ALLO_WEBSOCKET_${{ALLO_HOTE}}}}/c(slin)"
        f"v({websocket_server.CALL_ID_PARAM}=${{ALLO_UUID}},"
        "allo_appelant=${URIENCODE(${FILTER(0-9+,${CALLERID(num)})})}),5,g)"
    )
    media_then_decision(
        "allonantes-websocket", [dial], "ALLO_WEBSOCKET", '"${DIALSTATUS}" = "ANSWER"'
    )
    connection = GLOBALS["ALLO_WEBSOCKET_1"].strip()
    client = ini("websocket_client.conf")[connection]
    assert client["type"] == "websocket_client"
    assert client["connection_type"] == "per_call_config"
    assert client["uri"] == f"ws://127.0.0.1:{ServerSettings().websocket_port}"
    assert client["protocols"] == "media"


def test_decision_context_shape() -> None:
    steps = apps(DIALPLAN["allonantes-decision"])
    assert steps == [
        'GotoIf($["${ALLO_DECISION}" = "raccrocher"]?fin)',
        "Goto(allonantes-operateurs,s,1)",
        "NoOp(AlloNantes: appel ${UNIQUEID} terminé par le robot)",
        "Hangup(16)",
    ]
    labelled = "same => n(fin),NoOp(AlloNantes: appel ${UNIQUEID} terminé par le robot)"
    assert labelled in DIALPLAN["allonantes-decision"]


@pytest.mark.parametrize(
    ("decision", "ending"),
    [
        ("raccrocher", "hangup"),
        ("transfert", "queue"),
        ("", "queue"),  # no decision (AMI down, or the bot died): a person takes the call
        ("RACCROCHER", "queue"),  # anything but the exact word: the fail-safe
        ("raccrocher ", "queue"),
    ],
)
async def test_decision_hangs_up_only_on_raccrocher(decision: str, ending: str) -> None:
    pbx = EmulatedPbx(ami=AmiEmulator(), extensions=DEPLOY / "extensions.conf")
    variables = {"ALLO_DECISION": decision} if decision else {}
    result = await pbx.call("s", context="allonantes-decision", variables=variables, timeout_s=5)
    assert result.ending == ending
    if ending == "queue":
        assert result.queue is not None and result.queue.name == GLOBALS["ALLO_QUEUE"].strip()


def test_every_gotoif_label_exists() -> None:
    plan = Dialplan.load(DEPLOY / "extensions.conf")
    for context in plan.contexts.values():
        for exten, priorities in context.extensions.items():
            for priority in priorities.values():
                if priority.app != "GotoIf":
                    continue
                for branch in priority.data.partition("?")[2].split(":"):
                    if branch and "," not in branch:
                        assert plan.label(context.name, exten, branch), (context.name, branch)


def test_operators_queue_gets_the_context() -> None:
    steps = apps(DIALPLAN["allonantes-operateurs"])
    queue = next(step for step in steps if step.startswith("Queue("))
    assert queue.startswith("Queue(${ALLO_QUEUE},")
    assert ini("queues.conf").has_section(GLOBALS["ALLO_QUEUE"].strip())
    shown = " ".join(steps + apps(DIALPLAN["allonantes-entete"]))
    for variable in (ami.REASON_VARIABLE, ami.INTENT_VARIABLE, ami.SUMMARY_VARIABLE):
        assert "${" + variable.lstrip("_") + "}" in shown


def test_manager_user_is_minimal_and_on_loopback() -> None:
    text = (DEPLOY / "manager.conf").read_text(encoding="utf-8")
    manager = ini("manager.conf")
    assert manager["general"]["bindaddr"] == "127.0.0.1"
    user = manager[AmiSettings().username]
    assert user["read"] == "none" and user["write"] == "call,reporting"
    assert user["permit"] == "127.0.0.1/255.255.255.255"
    assert user["deny"] == "0.0.0.0/0.0.0.0"
    assert not re.search(r"^\s*secret\s*=", text, re.MULTILINE)  # kept out of the file
    assert '#include "manager_voicebot_secret.conf"' in text


def test_http_server_is_loopback_only() -> None:
    assert ini("http.conf")["general"]["bindaddr"] == "127.0.0.1"


def test_every_goto_target_exists() -> None:
    for target in re.findall(r"Goto\((allonantes-[a-z-]+),s,1\)", EXTENSIONS):
        assert target in DIALPLAN, target
    for endpoint_context in re.findall(
        r"^context = (\S+)", (DEPLOY / "pjsip.conf").read_text(), re.M
    ):
        assert endpoint_context in DIALPLAN, endpoint_context

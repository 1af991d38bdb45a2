"""An emulated PBX that runs the project's own ``extensions.conf`` for emulated calls.

On a real Asterisk, what happens after the bot ends the media session is the dialplan's
business: hang up, or queue the caller with the context the bot set through AMI. This package
executes ``deploy/asterisk/extensions.conf`` the way Asterisk does, so that a test proves the
deployed dialplan and the bot agree::

    pbx = EmulatedPbx(ami=ami, extensions=DEPLOY / "extensions.conf",
                      globals_override={"ALLO_AUDIOSOCKET_1": f"127.0.0.1:{port}"},
                      websocket_uri=f"ws://127.0.0.1:{ws_port}")
    result = await pbx.call("3939", caller_number="0612345678", caller=script, timeout_s=60)
    assert result.ending == "hangup"

Each behaviour follows Asterisk's source (the function named in each docstring); what this
package does not model raises ``DialplanError`` (an application: ``UnsupportedApplication``),
so that a dialplan change the emulator does not understand fails the tests loudly instead of
passing them by accident.

* Loading (pbx/pbx_config.c ``pbx_load_config``, main/config.c): ``[globals]``, contexts,
  ``exten =>``/``same =>`` with numbered or ``n`` priorities and ``n(label)`` labels,
  ``include =>``; ``;`` comments (``\\;`` is a literal ``;``). Pattern extensions, templates,
  ``#include`` and block comments are refused.
* Substitution (main/pbx_variables.c ``ast_str_substitute_variables_full2``): ``${VAR}``,
  ``${VAR:offset:length}``, the built-in ``EPOCH``, nested ``${FUNC(${...})}`` with
  ``UUID()``, ``CALLERID(num|name)``, ``URIENCODE()``, ``FILTER()``, ``GLOBAL()``, variable names built by substitution
  (``${HOST_${N}}``, ``${HOST_$[${N} + 1]}``: the inner part first, then the lookup), and
  ``$[...]`` expressions (main/ast_expr2.y: quoted strings keep their quotes, comparisons are
  numeric only between numbers; ``= == != < > <= >= & | + - * %``, arithmetic on whole
  numbers only).
* Applications: ``NoOp``, ``Answer``, ``Set`` (inheritance prefixes, ``CALLERID(name)``,
  ``GLOBAL(name)``: the PBX's globals, shared by all its calls), ``Goto``/``GotoIf``
  (main/pbx.c ``pbx_parseable_goto``), ``ExecIf`` and ``TryExec`` (apps/app_exec.c),
  ``While``/``EndWhile``/``ExitWhile``/``ContinueWhile`` (apps/app_while.c, with its
  ``WHILE_<n>`` channel variables), ``Hangup``, ``AudioSocket`` (apps/app_audiosocket.c, run by an
  ``AudioSocketCaller``; how it ends and whether it forwards keys depend on the emulated
  ``AmiEmulator.asterisk_version``, see telephony/audiosocket/versions.py),
  ``Dial(WebSocket/...)`` (apps/app_dial.c with
  channels/chan_websocket.c, run by a ``ChanWebSocketPeer``), ``Queue`` (apps/app_queue.c:
  the emulation stops there, no agent is emulated, but the ``b()`` pre-dial handler runs on
  an emulated operator's channel to record the SIP headers it adds), and ``Return`` in that
  handler.
* The caller's channel lives in the ``AmiEmulator`` for the whole call, with its caller id,
  state and current application, so the bot's ``Status``/``Setvar`` reach it while the media
  runs; an AMI ``Hangup`` ends the call, an AMI ``Redirect`` interrupts the media and jumps.

The package: ``parse`` loads the file, ``expand`` does Asterisk's argument splitting,
substitution and expressions, ``apps`` runs the dialplan and its applications (``Interpreter``),
``media`` the media legs (``MediaLegs``), ``pbx`` the calls (``EmulatedPbx``); ``common`` has
what they share.
"""

from telephony.emulator.dialplan.apps import Interpreter
from telephony.emulator.dialplan.common import (
    CallerScript,
    DialplanError,
    Ending,
    Media,
    QueueEntry,
    Step,
    UnsupportedApplication,
)
from telephony.emulator.dialplan.expand import (
    channel_expander,
    check_condition,
    evaluate_expression,
    filter_chars,
    parse_options,
    separate_args,
    uri_encode,
    uri_verify_encoded,
)
from telephony.emulator.dialplan.media import AUDIOSOCKET_CONNECT_TIMEOUT_S, MediaLegs
from telephony.emulator.dialplan.parse import Context, Dialplan, Priority
from telephony.emulator.dialplan.pbx import CallResult, EmulatedPbx

__all__ = [
    "AUDIOSOCKET_CONNECT_TIMEOUT_S",
    "CallResult",
    "CallerScript",
    "Context",
    "Dialplan",
    "DialplanError",
    "EmulatedPbx",
    "Ending",
    "Interpreter",
    "Media",
    "MediaLegs",
    "Priority",
    "QueueEntry",
    "Step",
    "UnsupportedApplication",
    "channel_expander",
    "check_condition",
    "evaluate_expression",
    "filter_chars",
    "parse_options",
    "separate_args",
    "uri_encode",
    "uri_verify_encoded",
]

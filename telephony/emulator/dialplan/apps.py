"""The PBX loop and the applications: main/pbx.c ``__ast_pbx_run`` and ``pbx_exec`` on a
call's channel, ``Set`` (``GLOBAL()`` included), ``Goto``/``GotoIf``, ``ExecIf``/``TryExec``,
``While``/``EndWhile``/``ExitWhile``/``ContinueWhile``, ``Hangup``, ``Queue`` with its
pre-dial handler; the media applications are ``MediaLegs``'s."""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from telephony.emulator.ami import EmulatedChannel
from telephony.emulator.dialplan.common import (
    Call,
    DialplanError,
    Leg,
    QueueEntry,
    Step,
    UnsupportedApplication,
)
from telephony.emulator.dialplan.expand import (
    channel_expander,
    check_condition,
    parse_options,
    separate_args,
)
from telephony.emulator.dialplan.media import MediaLegs, inherited
from telephony.emulator.dialplan.parse import Dialplan

# Hangup causes by name (main/causes.h), for Hangup(NAME).
_CAUSES = {"NORMAL_CLEARING": 16, "USER_BUSY": 17, "NO_ANSWER": 19, "CALL_REJECTED": 21}


class _Jump(NamedTuple):
    context: str
    exten: str
    priority: int


_RETURN = object()  # Return() in a subroutine


class Interpreter:
    """Runs the dialplan for one of an ``EmulatedPbx``'s calls, on the caller's channel and
    on an operator's in a pre-dial handler; ``media`` runs the media applications."""

    def __init__(
        self,
        *,
        dialplan: Dialplan,
        globals: dict[str, str],
        queues: dict[str, dict[str, str]] | None,
        media: MediaLegs,
    ) -> None:
        self.dialplan = dialplan
        # The PBX's global variables, shared by all its calls: Set(GLOBAL(...)) changes them.
        self.globals = globals
        self._queues = queues
        self.media = media

    # --- the PBX loop (main/pbx.c __ast_pbx_run) -------------------------------------------

    async def run(
        self, call: Call, leg: Leg, context: str, exten: str, priority: int, *, subroutine: bool
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
            args = channel_expander(leg.channel, self.globals).expand(found.data)
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

    def _gone(self, call: Call) -> bool:
        if call.ending is not None:
            return True
        if call.channel.hungup:
            call.ending = "ami_hangup"
            return True
        return False

    # --- applications ----------------------------------------------------------------------

    async def _exec(self, call: Call, leg: Leg, app: str, args: str, where: str) -> object:
        """pbx_exec: run one application; 0 goes on, non-zero hangs the channel up."""
        channel = leg.channel
        saved = channel.application, channel.data
        channel.application, channel.data = app, args
        try:
            return await self._dispatch(call, leg, app, args, where)
        finally:
            channel.application, channel.data = saved  # pbx_exec restores them

    async def _dispatch(self, call: Call, leg: Leg, app: str, args: str, where: str) -> object:
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
        if name in ("while", "endwhile", "exitwhile"):
            kind: Literal["while", "end", "exit"] = (
                "while" if name == "while" else "end" if name == "endwhile" else "exit"
            )
            return self._while(channel, kind, args, where)
        if name == "continuewhile":
            return self._continue_while(channel, where)
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
            return await self.media.audiosocket(call, args, where)
        if name == "dial":
            return await self.media.dial(call, args, where)
        if name == "queue":
            return await self._enter_queue(call, args, where)
        raise UnsupportedApplication(
            f"{where}: the emulator does not know the application {app}(); "
            "add it to telephony/emulator/dialplan/apps.py as Asterisk's source does it"
        )

    def _set(self, leg: Leg, args: str, where: str) -> int:
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
        if name.upper().startswith("GLOBAL(") and name.endswith(")"):
            # func_global.c global_write: pbx_builtin_setvar_helper(NULL, name, value).
            variable = name[len("GLOBAL(") : -1]
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_]*", variable):
                raise DialplanError(f"{where}: Set(GLOBAL({variable})=...) is not emulated")
            self.globals[variable] = value
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

    async def _execif(self, call: Call, leg: Leg, args: str, where: str) -> object:
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

    async def _tryexec(self, call: Call, leg: Leg, args: str, where: str) -> object:
        """app_exec.c ``tryexec_exec``: the arguments ARE substituted again, TRYSTATUS says
        SUCCESS or FAILED (NOAPP for an unknown application, which the emulator refuses)."""
        app, _, data = args.partition("(")
        end = data.rfind(")")
        data = channel_expander(leg.channel, self.globals).expand(data[:end] if end >= 0 else data)
        result = await self._exec(call, leg, app, data, where)
        if isinstance(result, _Jump):  # TryExec(Goto(...)): the Goto returned 0
            leg.channel.set_variable("TRYSTATUS", "SUCCESS")
            return result
        leg.channel.set_variable("TRYSTATUS", "FAILED" if result != 0 else "SUCCESS")
        return 0

    # --- loops (apps/app_while.c) ------------------------------------------------------------

    def _while(
        self,
        channel: EmulatedChannel,
        kind: Literal["while", "end", "exit"],
        condition: str,
        where: str,
    ) -> object:
        """``_while_exec``, with the channel variables it keeps: ``WHILE_<n>`` holds the
        n-th open loop's "context,exten,priority", ``END_WHILE_<n>`` the priority after its
        EndWhile (once EndWhile ran), and "<context>_<exten>_<priority>" the n of the
        While at that place. EndWhile goes back to the While, which substitutes and tests
        its condition again; a false condition (or ExitWhile) goes past the EndWhile."""
        used = -1
        while channel.get_variable(f"WHILE_{used + 1}") is not None:
            used += 1
        here = f"{channel.context},{channel.exten},{channel.priority}"
        my_name = f"{channel.context}_{channel.exten}_{channel.priority}"
        label = str(used)
        if kind == "while":
            stored = channel.get_variable(my_name)
            if stored is None:
                stored = str(used + 1)
                channel.set_variable(my_name, stored)
            label = stored
        varname = f"WHILE_{label}"
        end_varname = f"END_{varname}"
        while_pri = channel.get_variable(varname)
        if (kind == "while" and not check_condition(condition)) or kind == "exit":
            channel.unset_variable(varname)
            channel.unset_variable(my_name)
            after_end = channel.get_variable(end_varname)
            if after_end is not None:
                channel.unset_variable(end_varname)
                return self._goto(channel, after_end, where)
            end = self._matching_endwhile(channel)
            if end is None:  # Asterisk: "Couldn't find matching EndWhile?" and goes on
                raise DialplanError(f"{where}: no EndWhile() matches this loop")
            # ast_channel_priority_set(chan, pri): the PBX loop then runs pri + 1.
            return _Jump(channel.context, channel.exten, end + 1)
        if kind == "while" and while_pri is None:
            channel.set_variable(varname, here)
        elif kind == "end" and while_pri is not None:
            if channel.get_variable(end_varname) is None:
                after = f"{channel.context},{channel.exten},{channel.priority + 1}"
                channel.set_variable(end_varname, after)
            return self._goto(channel, while_pri, where)
        return 0

    def _continue_while(self, channel: EmulatedChannel, where: str) -> object:
        """``while_continue_exec``: back to the innermost open While, if any."""
        index, innermost = 0, None
        while (found := channel.get_variable(f"WHILE_{index}")) is not None:
            innermost, index = found, index + 1
        return self._goto(channel, innermost, where) if innermost is not None else 0

    def _matching_endwhile(self, channel: EmulatedChannel) -> int | None:
        """``find_matching_endwhile``: the following priorities, one by one while they
        exist, counting nested While()s, up to the EndWhile() that closes this one."""
        priorities = self.dialplan.extension(channel.context, channel.exten) or {}
        number, level = channel.priority + 1, 1
        while (found := priorities.get(number)) is not None:
            if found.app.lower() == "while":
                level += 1
            elif found.app.lower() == "endwhile":
                level -= 1
            if level == 0:
                return number
            number += 1
        return None

    # --- the queue ---------------------------------------------------------------------------

    async def _enter_queue(self, call: Call, args: str, where: str) -> int:
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
                inherited(call.channel.variables),
                callerid_num=call.channel.callerid_num,
                callerid_name=call.channel.callerid_name,
                state="Down",
            )
            leg = Leg(operator, operator=True, headers=call.operator_headers)
            context, exten, pri = target
            operator.context, operator.exten = context, exten
            start = self._goto(operator, f"{context},{exten},{pri}", where)
            await self.run(call, leg, *start, subroutine=True)
        call.ending = "queue"
        return -1

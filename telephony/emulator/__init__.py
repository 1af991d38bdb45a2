"""A protocol-faithful Asterisk emulator, for the tests and the benchmark.

It stands at the process boundary, where Asterisk would be, and speaks exactly what
Asterisk speaks (from Asterisk's own source):

* ``AudioSocketCaller``: the ``AudioSocket()`` application's side of a call (UUID first,
  paced 20 ms audio, DTMF, the 2-second no-traffic rule, the kinds the bot may send);
* ``ChanWebSocketPeer``: ``chan_websocket`` dialling the bot (subprotocol ``media``,
  ``MEDIA_START``, the playout queue with XOFF/XON, FLUSH_MEDIA, marks, status);
* ``AmiEmulator``: the manager interface (banner, Login, Ping, Setvar/Getvar, Status,
  Redirect, Hangup, Logoff, events), with ways to drop connections and go silent;
* ``EmulatedPbx``: the dialplan itself: it runs the project's ``extensions.conf`` for an
  emulated call (AudioSocket or chan_websocket to the bot, the caller's channel in the
  ``AmiEmulator``), and reports how the call left the dialplan (``CallResult``).

Example (a benchmark or a test)::

    caller = AudioSocketCaller()
    await caller.connect("127.0.0.1", 9092)
    await caller.play_silence(2.0)          # paced in real time
    await caller.send_dtmf("0")
    ended_by = await caller.wait_for_hangup(3.0)
    print(caller.first_voice_s(), caller.max_gap_s(), ended_by)
"""

from telephony.emulator.ami import AmiEmulator, EmulatedChannel
from telephony.emulator.audiosocket import AudioSocketCaller, ReceivedMessage
from telephony.emulator.chan_websocket import ChanWebSocketPeer
from telephony.emulator.dialplan import (
    CallResult,
    DialplanError,
    EmulatedPbx,
    Step,
    UnsupportedApplication,
)

__all__ = [
    "AmiEmulator",
    "AudioSocketCaller",
    "CallResult",
    "ChanWebSocketPeer",
    "DialplanError",
    "EmulatedChannel",
    "EmulatedPbx",
    "ReceivedMessage",
    "Step",
    "UnsupportedApplication",
]

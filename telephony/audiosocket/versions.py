"""Which Asterisk releases have which ``AudioSocket()``.

Three behaviours of apps/app_audiosocket.c changed in 2025 ("audiosocket: fix timeout, fix
dialplan app exit" and "audiosocket: added support for DTMF frames"), read in Asterisk's
source at the tags 18.26.4, 20.13.0/20.14.0, 21.8.0/21.9.0 and 22.3.0/22.4.0, and seen on
real 20.13.0 and 20.14.0 builds:

* the bot's hangup kind: since those releases ``AudioSocket()`` returns 0; before, -1
  (``TRYSTATUS=FAILED`` under ``TryExec``);
* a socket closed without the hangup kind (a host killed mid-call): since those releases,
  0; before, it reads as a null frame and the session never ends (the caller waits in
  silence until they hang up), and there is no timeout when neither side sends anything;
* the caller's keys: since those releases they reach the bot (kind ``0x03``); before, a key
  pressed during ``AudioSocket()`` is dropped.

The dialplan does not depend on the first (deploy/asterisk/extensions.conf); nothing can
mend the other two on an older Asterisk, so the bot warns when it meets one
(telephony/ami.py), and the emulator can be either.
"""

from __future__ import annotations

import re

# The first release of each branch with both changes. Branches after 22 have them from their
# first release; 18 and 19 never did.
FIXED_IN = {20: (20, 14), 21: (21, 9), 22: (22, 4)}

_VERSION = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?:\.\d+)?")


def parse_asterisk_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from what Asterisk says it is (``20.13.0``, ``22.4.0-rc1``,
    ``certified-20.7-cert5``); None when it names no release (``GIT-master-1a2b3c``)."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def audiosocket_is_current(version: str) -> bool:
    """Whether this Asterisk's ``AudioSocket()`` ends with 0 on the bot's hangup and
    forwards the caller's keys (True), or returns -1 for every end and drops keys (False).
    Raises ValueError when ``version`` names no release."""
    parsed = parse_asterisk_version(version)
    if parsed is None:
        raise ValueError(f"not an Asterisk version: {version!r} (expected e.g. 20.13.0)")
    major = parsed[0]
    if major in FIXED_IN:
        return parsed >= FIXED_IN[major]
    return major > max(FIXED_IN)

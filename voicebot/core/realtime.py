"""Real-time priority for the thread that paces every call's audio.

The calls' event loop sends each call a 20 ms frame every 20 ms; a frame more than 20 ms
late is a hole the caller hears. On a busy 2-core server the loop needs little CPU (about a
sixth of a core for twelve calls) but needs it *on time*, while the speech engines' threads
keep both cores busy in bursts. Audio servers solve this the same way (PipeWire, JACK):
the pacing thread runs under ``SCHED_RR``, so the kernel runs it as soon as it wakes.

``SCHED_RESET_ON_FORK`` makes every thread and process this thread starts afterwards
(the engines' executor, Rasa's thread, espeak-ng) start at normal priority: only the loop
itself is real-time. The kernel's real-time throttling (95 % of each second by default)
bounds what a real-time thread could take if it ever spun.

Allowed for root, for a process with CAP_SYS_NICE, or for any user up to RLIMIT_RTPRIO
(systemd: ``LimitRTPRIO=``, see deploy/systemd). Without it the loop runs at normal
priority and says so once.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def raise_to_realtime(priority: int) -> bool:
    """Make the calling thread SCHED_RR at ``priority`` (1–99), its children normal.
    Returns False (and logs why) when not permitted or ``priority`` is 0."""
    if priority <= 0:
        log.info("audio pacing at normal priority (server.audio_priority = 0)")
        return False
    policy = os.SCHED_RR | os.SCHED_RESET_ON_FORK
    try:
        os.sched_setscheduler(threading.get_native_id(), policy, os.sched_param(priority))
    except OSError as exc:
        log.info(
            "audio pacing at normal priority: real-time priority %d not permitted (%s); "
            "allow it with LimitRTPRIO=%d in the systemd unit (deploy/systemd)",
            priority,
            exc.strerror or exc,
            priority,
        )
        return False
    log.info("audio pacing thread at real-time priority %d (SCHED_RR)", priority)
    return True

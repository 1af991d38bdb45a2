"""Giving freed memory back to the system.

glibc's allocator keeps freed memory in its arenas for the next allocation, and a thread
pool spreads allocations over several arenas: after a large native object is freed (a
Vosk recognizer's expanded decoding graph, a hundred MB or more), the process's resident
memory stays where it was. ``malloc_trim(0)`` hands the free pages of every arena back.
Other C libraries (musl, macOS) have no such call and return memory on their own: there
it does nothing.
"""

from __future__ import annotations

import ctypes


def release_freed_memory() -> bool:
    """Return the allocator's free pages to the system; True if it could. Blocking for a few
    milliseconds on a large heap (it walks every arena): call it from a worker thread."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols already loaded: libc's among them
    except (OSError, AttributeError):  # not glibc
        return False
    trim(0)
    return True

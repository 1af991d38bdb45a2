#!/usr/bin/env python3
"""The soak (issue 15): N emulated calls kept up for --minutes against a real `voicebot serve`;
the server's RSS and open file descriptors sampled, their slope judged; late frames counted.
Not part of `make test` (tests/test_soak.py runs a one-minute version).

    nice -n 10 .venv/bin/python scripts/soak.py --calls 8 --minutes 30 --out /tmp/soak

Exit code 0 on PASS, 1 on FAIL, 2 on bad arguments, 130 when interrupted. The logic and the
thresholds are in voicebot/tools/bench/soak.py.
"""

from __future__ import annotations

import sys

from voicebot.tools.bench.soak import main

if __name__ == "__main__":
    sys.exit(main())

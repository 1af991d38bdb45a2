"""The server's end-of-turn decisions as the bench reads them from its log."""

from __future__ import annotations

from pathlib import Path

from voicebot.tools.bench.turn_ends import describe, end_of_turn_decisions, server_waits

LOG = """\
2026-12-02 07:29:35,726 INFO voicebot.call.session: [call c54c] end of turn after 300 ms of silence (fallen)
2026-12-02 07:29:36,001 INFO voicebot.call.session: [call c54c] heard '…' (confidence 0.80)
2026-12-02 07:29:47,310 INFO voicebot.call.listener: [call 9a5e] speech again after the recognizer settled
2026-12-02 07:29:48,088 INFO voicebot.call.session: [call 9a5e] end of turn after 1200 ms of silence (unfinished)
2026-12-02 07:29:50,090 INFO voicebot.call.session: [call 3eb7] end of turn after 660 ms of silence (default)
2026-12-02 07:29:51,090 INFO voicebot.call.session: [call 3eb7] end of turn after 300 ms of silence (fallen)
"""


def test_the_decisions_are_counted_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(LOG, encoding="utf-8")
    decisions = end_of_turn_decisions(log)
    assert decisions == {
        "turns": 4,
        "wait_ms_p50": 660,
        "wait_ms_max": 1200,
        "why": {"fallen": 2, "unfinished": 1, "default": 1},
        "resumed_after_settle": 1,
    }
    text = describe(decisions)
    assert text.startswith("4 turns ended by the server: median wait 660 ms, longest 1200 ms")
    assert "fallen 2, unfinished 1, default 1" in text
    assert "settled in the pause 1 times" in text


def test_no_log_or_no_decision(tmp_path: Path) -> None:
    assert end_of_turn_decisions(tmp_path / "absent.log") is None
    empty = tmp_path / "server.log"
    empty.write_text("nothing here\n", encoding="utf-8")
    decisions = end_of_turn_decisions(empty)
    assert decisions is not None and decisions["turns"] == 0 and decisions["wait_ms_p50"] is None
    assert "none" in describe(decisions)


def test_each_calls_waits_in_order(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(LOG, encoding="utf-8")
    assert server_waits(log) == {"c54c": [300], "9a5e": [1200], "3eb7": [660, 300]}
    assert server_waits(tmp_path / "absent.log") == {}

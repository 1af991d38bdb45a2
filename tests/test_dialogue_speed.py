"""The dialogue's cost per operation (voicebot/tools/dialogue_speed.py), on the real model."""

from __future__ import annotations

from voicebot.dialogue.agent import RasaDialogue
from voicebot.tools.dialogue_speed import measure_dialogue


def test_every_kind_of_turn_is_measured_and_its_calls_are_dropped(
    rasa_dialogue: RasaDialogue,
) -> None:
    costs = {cost.name: cost for cost in measure_dialogue(rasa_dialogue, 0.3, 3)}
    assert list(costs) == [
        "idle loop (10 ms sleeps)",
        "NLU reading at a pause (understand)",
        "reading + turn on it (understand, turn)",
        "turn with its own parse (turn)",
        "DTMF turn (dtmf)",
    ]
    assert all(cost.operations >= 1 for cost in costs.values())
    idle = costs["idle loop (10 ms sleeps)"]
    # CPU time, not wall time: Rasa's work shows however busy the machine is
    assert costs["turn with its own parse (turn)"].cpu_ms > idle.cpu_ms
    assert costs["reading + turn on it (understand, turn)"].cpu_ms > idle.cpu_ms
    assert all(cost.beside.longest_gap_ms > 0 for cost in costs.values())
    # the bench-like calls' conversations are dropped as the server drops a finished call's
    assert not [key for key in rasa_dialogue.conversations.serialised if "dialogue-speed" in key]

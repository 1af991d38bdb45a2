"""The fast event lookup (voicebot.dialogue.rasa_runtime.install_fast_event_lookup) gives
the classes Rasa's own ``Event.resolve_by_type`` gives, and a call's tracker comes back from
the tracker store with the same events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voicebot.dialogue.agent import RasaDialogue
from voicebot.dialogue.rasa_runtime import install_fast_event_lookup
from voicebot.tools.dialogue_speed import Caller


@pytest.fixture()
def lookups() -> tuple[Any, Any]:
    """(the installed lookup, Rasa's own)."""
    from rasa.shared.core.events import Event

    install_fast_event_lookup()
    install_fast_event_lookup()  # idempotent: Rasa's own stays one call away
    fast = Event.resolve_by_type
    assert fast.fast_lookup  # type: ignore[attr-defined]
    return fast, fast.rasa_resolve  # type: ignore[attr-defined]


def test_every_event_name_resolves_to_rasas_class(lookups: tuple[Any, Any]) -> None:
    from rasa.shared.core.events import Event
    from rasa.shared.utils.common import all_subclasses

    fast, rasa_resolve = lookups
    names = {cls.type_name for cls in all_subclasses(Event)}
    assert {"user", "action", "slot", "bot", "session_started"} <= names
    for name in sorted(names):
        assert fast(name) is rasa_resolve(name), name


def test_names_no_class_has_go_rasas_way(lookups: tuple[Any, Any]) -> None:
    from rasa.shared.core.events import ActionExecuted

    fast, _ = lookups
    assert fast("topic") is None
    assert fast("no_such_event", ActionExecuted) is ActionExecuted
    with pytest.raises(ValueError, match="no_such_event"):
        fast("no_such_event")


def test_an_event_class_defined_after_the_first_lookups_is_found(
    lookups: tuple[Any, Any],
) -> None:
    from rasa.shared.core.events import ActionExecuted

    fast, _ = lookups
    assert fast("user") is not None  # the table is made

    class LateEvent(ActionExecuted):
        type_name = "voicebot_test_late_event"

    assert fast("voicebot_test_late_event") is LateEvent


def test_a_calls_tracker_comes_back_as_with_rasas_lookup(
    rasa_dialogue: RasaDialogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rasa.shared.core.events import Event

    fast = Event.resolve_by_type
    assert fast.fast_lookup  # type: ignore[attr-defined]  # installed when the model loaded
    loop = asyncio.new_event_loop()
    caller = Caller(rasa_dialogue, loop, 100)
    try:
        for _ in range(4):
            caller.turn_on_reading()
        store = rasa_dialogue.brain.agent.tracker_store
        serialised = rasa_dialogue.conversations.serialised[caller.call_id]
        events = list(store.deserialise_tracker(caller.call_id, serialised).events)
        kinds = [type(event).__name__ for event in events]
        assert kinds.count("UserUttered") == 4 and "BotUttered" in kinds
        monkeypatch.setattr(Event, "resolve_by_type", staticmethod(fast.rasa_resolve))  # type: ignore[attr-defined]
        assert list(store.deserialise_tracker(caller.call_id, serialised).events) == events
    finally:
        caller.close()
        loop.close()

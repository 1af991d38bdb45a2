"""The console's and the softphone's WebSocket messages, decoded from the text a browser sends.

The console sends ``take`` (an operator takes a transferred call) and ``ping``; the softphone
sends a first ``start`` message, then ``text``, ``dtmf``, ``typing``, ``hangup``, ``ping`` and
binary 16-bit PCM. Everything else is refused with ``BadMessage``, whose text the page shows.
"""

from __future__ import annotations

import struct
from typing import Any, cast

import pytest

from voicebot.console.api import _console_command
from voicebot.console.board import LiveBoard
from voicebot.console.context import BadMessage, WebLimits
from voicebot.console.softphone import BrowserTransport, parse_start
from voicebot.core.events import CallHub
from voicebot.core.interfaces import AudioIn, CallerActive, CallerHungUp, DtmfIn, TextIn


class RecordingOutbox:
    """What the handlers offer to the browser, kept in order."""

    def __init__(self) -> None:
        self.items: list[object] = []

    def offer(self, item: object) -> bool:
        self.items.append(item)
        return True

    def drop_audio(self) -> None:
        pass

    def close_after_sending(self) -> None:
        pass


# --- the console ----------------------------------------------------------------------------


def console(text: str, queued: tuple[str, ...] = ("appel-1",)) -> tuple[LiveBoard, list[object]]:
    board = LiveBoard(CallHub(), WebLimits())
    for call_id in queued:
        board.queue[call_id] = {"call_id": call_id}
    outbox = RecordingOutbox()
    _console_command(board, cast(Any, outbox), text)
    return board, outbox.items


def test_console_take_removes_the_call_from_the_queue() -> None:
    board, sent = console('{"type": "take", "call_id": "appel-1"}', ("appel-0", "appel-1"))
    assert list(board.queue) == ["appel-0"]
    assert sent == []  # the change reaches the consoles through the board


def test_console_take_with_other_fields() -> None:
    board, _ = console('{"call_id":"appel-1","type":"take","extra":[1,2]}')
    assert board.queue == {}


def test_console_take_of_a_call_no_longer_queued() -> None:
    with pytest.raises(BadMessage) as caught:
        console('{"type": "take", "call_id": "appel-2"}')
    assert str(caught.value) == "Cet appel n'est plus dans la file."


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "take"}',
        '{"type": "take", "call_id": ""}',
        '{"type": "take", "call_id": null}',
        '{"type": "take", "call_id": 1}',
        '{"type": "take", "call_id": ["appel-1"]}',
    ],
)
def test_console_take_without_a_call_id(text: str) -> None:
    board = LiveBoard(CallHub(), WebLimits())
    board.queue["appel-1"] = {"call_id": "appel-1"}
    board.queue[""] = {"call_id": ""}
    with pytest.raises(BadMessage) as caught:
        _console_command(board, cast(Any, RecordingOutbox()), text)
    assert str(caught.value) == "call_id manquant."
    assert list(board.queue) == ["appel-1", ""]


def test_console_ping_is_answered_with_pong() -> None:
    board, sent = console('{"type": "ping"}')
    assert sent == [{"type": "pong"}]
    assert list(board.queue) == ["appel-1"]


@pytest.mark.parametrize(
    "text", ['{"type": "Ping"}', '{"type": "pong"}', '{"call_id": "appel-1"}', "{}", '{"type": 1}']
)
def test_console_unknown_message_type(text: str) -> None:
    with pytest.raises(BadMessage) as caught:
        console(text)
    assert str(caught.value) == "Type de message inconnu."


@pytest.mark.parametrize("text", ["[]", '"take"', "1", "null", "true", '[{"type": "ping"}]'])
def test_console_message_must_be_an_object(text: str) -> None:
    with pytest.raises(BadMessage) as caught:
        console(text)
    assert str(caught.value) == "Message illisible : un objet JSON est attendu."


@pytest.mark.parametrize("text", ["", "ping", "{", '{"type": "ping"', "{'type': 'ping'}"])
def test_console_message_must_be_json(text: str) -> None:
    with pytest.raises(BadMessage) as caught:
        console(text)
    assert str(caught.value) == "Message illisible : JSON attendu."


# --- the softphone's first message ----------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000, 96000, 192000])
def test_start_gives_the_browsers_rate(rate: int) -> None:
    assert parse_start(f'{{"type": "start", "sample_rate": {rate}}}') == rate


def test_start_may_carry_other_fields() -> None:
    assert parse_start('{"sample_rate":48000,"type":"start","agent":"x"}') == 48000


@pytest.mark.parametrize("rate", ["7999", "192001", "0", "-48000"])
def test_start_rate_out_of_bounds(rate: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_start('{"type": "start", "sample_rate": ' + rate + "}")
    assert str(caught.value) == "sample_rate doit être entre 8000 et 192000 Hz."


@pytest.mark.parametrize("rate", ['"48000"', "48000.0", "true", "null", "[48000]"])
def test_start_rate_must_be_an_integer(rate: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_start('{"type": "start", "sample_rate": ' + rate + "}")
    assert str(caught.value) == "sample_rate doit être un nombre entier de Hz."


def test_start_without_a_rate() -> None:
    with pytest.raises(BadMessage) as caught:
        parse_start('{"type": "start"}')
    assert str(caught.value) == "sample_rate doit être un nombre entier de Hz."


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "text", "sample_rate": 48000}',
        '{"sample_rate": 48000}',
        '{"type": "Start", "sample_rate": 48000}',
        '[{"type": "start", "sample_rate": 48000}]',
        '"start"',
        "48000",
    ],
)
def test_first_message_must_be_start(text: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_start(text)
    assert str(caught.value) == 'Le premier message doit être {"type": "start", "sample_rate": …}.'


@pytest.mark.parametrize("text", ["", "start", '{"type": "start", "sample_rate": 48000'])
def test_first_message_must_be_json(text: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_start(text)
    assert str(caught.value) == "Le premier message doit être du JSON."


# --- the softphone's later text messages ----------------------------------------------------


def phone(rate: int = 8000, **limits: Any) -> tuple[BrowserTransport, RecordingOutbox]:
    outbox = RecordingOutbox()
    transport = BrowserTransport("appel-1", rate, cast(Any, outbox), CallHub(), WebLimits(**limits))
    return transport, outbox


def inbox(transport: BrowserTransport) -> list[object]:
    items: list[object] = []
    while not transport._inbox.empty():
        items.append(transport._inbox.get_nowait())
    return items


def test_typed_text_reaches_the_call_stripped() -> None:
    transport, outbox = phone()
    transport.receive_text('{"type": "text", "text": "  Bonjour, la mairie ?\\n"}')
    assert inbox(transport) == [TextIn("Bonjour, la mairie ?")]
    assert outbox.items == []


@pytest.mark.parametrize("text", ['""', '"  \\t\\n "', "null", "12", '["Bonjour"]'])
def test_typed_text_must_be_text(text: str) -> None:
    transport, _ = phone()
    with pytest.raises(BadMessage) as caught:
        transport.receive_text('{"type": "text", "text": ' + text + "}")
    assert str(caught.value) == "Le texte est vide."
    assert inbox(transport) == []


def test_typed_text_without_its_field() -> None:
    transport, _ = phone()
    with pytest.raises(BadMessage, match=r"^Le texte est vide\.$"):
        transport.receive_text('{"type": "text"}')


def test_typed_text_length_limit() -> None:
    transport, _ = phone(max_text_chars=10)
    transport.receive_text('{"type": "text", "text": "0123456789"}')
    assert inbox(transport) == [TextIn("0123456789")]
    with pytest.raises(BadMessage) as caught:
        transport.receive_text('{"type": "text", "text": "0123456789A"}')
    assert str(caught.value) == "Texte trop long (maximum 10 caractères)."
    assert inbox(transport) == []


def test_typed_text_default_length_limit_is_500() -> None:
    transport, _ = phone()
    transport.receive_text('{"type": "text", "text": "' + "a" * 500 + '"}')
    assert inbox(transport) == [TextIn("a" * 500)]
    with pytest.raises(BadMessage, match=r"^Texte trop long \(maximum 500 caractères\)\.$"):
        transport.receive_text('{"type": "text", "text": "' + "a" * 501 + '"}')


@pytest.mark.parametrize("digit", list("0123456789*#"))
def test_every_keypad_digit(digit: str) -> None:
    transport, _ = phone()
    transport.receive_text('{"type": "dtmf", "digit": "' + digit + '"}')
    assert inbox(transport) == [DtmfIn(digit)]


@pytest.mark.parametrize("digit", ['"A"', '"D"', '""', '"12"', '"**"', "1", "null", '["1"]'])
def test_unknown_keypad_digits(digit: str) -> None:
    transport, _ = phone()
    with pytest.raises(BadMessage) as caught:
        transport.receive_text('{"type": "dtmf", "digit": ' + digit + "}")
    assert str(caught.value) == "Touche inconnue : 0 à 9, * ou #."
    assert inbox(transport) == []


def test_typing_notice_keeps_the_call_from_counting_a_silence() -> None:
    transport, _ = phone(typing_interval_s=3600.0)
    transport.receive_text('{"type": "typing"}')
    transport.receive_text('{"type": "typing"}')  # absorbed: within the interval
    assert inbox(transport) == [CallerActive()]


def test_hangup_from_the_browser() -> None:
    transport, _ = phone()
    transport.receive_text('{"type": "hangup"}')
    transport.receive_text('{"type": "hangup"}')
    assert inbox(transport) == [CallerHungUp("hung up in the browser")]


def test_softphone_ping_is_answered_with_pong() -> None:
    transport, outbox = phone()
    transport.receive_text('{"type": "ping"}')
    assert outbox.items == [{"type": "pong"}]
    assert inbox(transport) == []


@pytest.mark.parametrize(
    "text", ['{"type": "start", "sample_rate": 8000}', '{"type": "Text", "text": "x"}', "{}"]
)
def test_softphone_unknown_message_type(text: str) -> None:
    transport, outbox = phone()
    with pytest.raises(BadMessage) as caught:
        transport.receive_text(text)
    assert str(caught.value) == "Type de message inconnu."
    assert outbox.items == []
    assert inbox(transport) == []


@pytest.mark.parametrize("text", ["[]", '"ping"', "null", '[{"type": "ping"}]'])
def test_softphone_message_must_be_an_object(text: str) -> None:
    transport, _ = phone()
    with pytest.raises(BadMessage) as caught:
        transport.receive_text(text)
    assert str(caught.value) == "Message illisible : un objet JSON est attendu."


@pytest.mark.parametrize("text", ["", "ping", '{"type": "ping"'])
def test_softphone_message_must_be_json(text: str) -> None:
    transport, _ = phone()
    with pytest.raises(BadMessage) as caught:
        transport.receive_text(text)
    assert str(caught.value) == "Message illisible : JSON attendu."


# --- the softphone's audio ------------------------------------------------------------------


def pcm(samples: range) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def test_audio_at_8khz_reaches_the_call_in_20ms_frames() -> None:
    transport, _ = phone(max_audio_ahead_s=10.0)
    audio = pcm(range(-320, 320))  # 640 samples: 80 ms
    transport.receive_audio(audio)
    frames = inbox(transport)
    assert [type(item) for item in frames] == [AudioIn] * 4
    assert b"".join(cast(AudioIn, item).frame.pcm for item in frames) == audio
    assert transport.frames_in == 4
    assert transport.frames_dropped == 0


def test_no_audio_is_nothing() -> None:
    transport, _ = phone()
    transport.receive_audio(b"")
    assert inbox(transport) == []
    assert transport._audio_in_s == 0.0


@pytest.mark.parametrize("size", [1, 3, 321])
def test_audio_must_be_whole_16_bit_samples(size: int) -> None:
    transport, _ = phone()
    with pytest.raises(BadMessage) as caught:
        transport.receive_audio(bytes(size))
    assert str(caught.value) == "L'audio doit être du PCM 16 bits : nombre d'octets impair."
    assert inbox(transport) == []


def test_audio_counts_seconds_at_the_browsers_rate() -> None:
    transport, _ = phone(48000, max_audio_ahead_s=10.0)
    transport.receive_audio(bytes(48000 * 2))  # one second at 48 kHz
    assert transport._audio_in_s == 1.0
    transport.receive_audio(bytes(24000 * 2))
    assert transport._audio_in_s == 1.5


def test_audio_much_faster_than_real_time_is_refused() -> None:
    # 8 s of audio, twice, with a 10 s allowance: the second is 6 s too early, however slow
    # the machine running the test.
    transport, _ = phone(max_audio_ahead_s=10.0)
    transport.receive_audio(bytes(8 * 8000 * 2))
    assert transport.frames_in == 400
    with pytest.raises(BadMessage) as caught:
        transport.receive_audio(bytes(8 * 8000 * 2))
    assert str(caught.value) == "Audio envoyé plus vite que le temps réel."
    assert transport.frames_in == 400


def test_audio_counts_both_bytes_per_sample() -> None:
    # 15 s of 8 kHz samples, refused with a 10 s allowance (counted as three bytes a sample,
    # it would be 10 s and pass).
    transport, _ = phone(max_audio_ahead_s=10.0)
    with pytest.raises(BadMessage, match="temps réel"):
        transport.receive_audio(bytes(15 * 8000 * 2))
    assert transport.frames_in == 0


def test_audio_past_a_full_inbox_is_dropped() -> None:
    transport, _ = phone(max_audio_ahead_s=1.0)  # room for 50 frames
    for _ in range(49):
        transport._inbox.put_nowait(CallerActive())
    transport.receive_audio(bytes(3 * 320))
    assert transport._inbox.qsize() == 50
    assert (transport.frames_in, transport.frames_dropped) == (1, 2)


class FakeClock:
    """The softphone's clock, moved by the test (no real time is measured)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_audio_up_to_the_allowance_ahead_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("voicebot.console.softphone.time", clock)
    transport, _ = phone(max_audio_ahead_s=1.0)
    transport.receive_audio(bytes(8000 * 2))  # exactly one second ahead: allowed
    assert transport.frames_in == 50
    with pytest.raises(BadMessage, match="temps réel"):
        transport.receive_audio(bytes(2))


def test_audio_allowance_counts_the_time_since_the_call_began(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr("voicebot.console.softphone.time", clock)
    transport, _ = phone(max_audio_ahead_s=1.0)
    clock.now += 30.0  # 30 s into the call, the browser sends 30.5 s at once (a catch-up)
    transport.receive_audio(bytes(61 * 8000))
    assert transport._audio_in_s == 30.5
    with pytest.raises(BadMessage, match="temps réel"):
        transport.receive_audio(bytes(8000 * 2))  # 31.5 s in 30 s: 1.5 s ahead

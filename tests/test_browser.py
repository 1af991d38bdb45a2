"""End to end in a real headless Chromium: the phone server, the console and the softphone.

The whole server runs (voicebot.app: real Rasa dialogue, real ASR and voice on the
stand-in models, SQLite records); the only fake is at the process boundary: the Asterisk
emulator places the phone call. Chromium is Debian's (/usr/bin/chromium), driven by
Playwright; its fake microphone plays a real French recording (asterisk-core-sounds-fr).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from telephony.emulator import AudioSocketCaller
from tests.browser_helpers import CHROMIUM, HEADLESS_ARGS
from voicebot.app import start_server
from voicebot.call.server import PhoneServer
from voicebot.core.audio import read_wav, write_wav
from voicebot.core.config import Settings
from voicebot.core.events import CallEvent, CallHub

if TYPE_CHECKING:
    from voicebot.dialogue.agent import RasaDialogue

pytestmark = pytest.mark.asyncio(loop_scope="module")

FRENCH_RECORDING = Path("/usr/share/asterisk/sounds/fr/all-circuits-busy-now.wav")
TOKEN = "jeton-du-test-navigateur"
HANDOFF_DEADLINE_S = 1.0


@dataclass
class Running:
    server: PhoneServer
    hub: CallHub
    base_url: str
    events: list[CallEvent]


def _microphone_wav(folder: Path) -> Path:
    """What Chromium's fake microphone plays, in a loop: French speech, then a pause."""
    speech = read_wav(FRENCH_RECORDING, 48000)
    pause = bytes(2 * 48000 * 2)
    path = folder / "micro.wav"
    write_wav(path, speech + pause, rate=48000)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    rasa_dialogue: RasaDialogue, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    from voicebot.call.runtime import Runtime, make_executor
    from voicebot.call.session import SessionServices
    from voicebot.speech.engines import load_engines

    folder = tmp_path_factory.mktemp("browser")
    settings = (
        Settings()
        .replace("paths", data_dir=folder / "data")
        .replace("server", audiosocket_port=0, websocket_port=0, http_port=0)
        .replace("console", token=TOKEN)
    )
    executor = make_executor(settings)
    engines = await asyncio.get_running_loop().run_in_executor(
        None, load_engines, settings, executor
    )
    hub = CallHub()
    services = SessionServices(
        settings=settings,
        dialogue=rasa_dialogue,  # the session's shared Rasa agent (conftest)
        tts=engines.tts,
        vad_factory=engines.vad_factory,
        asr=engines.asr,
        hub=hub,
        prompt=rasa_dialogue.prompt,
    )
    runtime = Runtime(services, executor, engines.asr_description, engines.tts_description, 0.0)
    server = await start_server(settings, with_web=True, runtime=runtime)
    assert server.http_port, "the console did not start"
    events: list[CallEvent] = []
    subscription = hub.subscribe()

    async def keep_events() -> None:
        while True:
            events.append(await subscription.get())

    keeper = asyncio.create_task(keep_events())
    yield Running(server, hub, f"http://127.0.0.1:{server.http_port}", events)
    keeper.cancel()
    await server.shutdown(5.0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), "install Debian's chromium: apt-get install chromium"
    microphone = _microphone_wav(tmp_path_factory.mktemp("micro"))
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *HEADLESS_ARGS,
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}",
            ],
        )
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def operator(browser: Browser, running: Running) -> AsyncIterator[BrowserContext]:
    """A browser session logged in with the token through the login form."""
    context = await browser.new_context(locale="fr-FR")
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await page.goto(running.base_url + "/")
    assert page.url.endswith("/login?next=/")
    await page.get_by_label("Jeton d'accès").fill("mauvais jeton")
    await page.get_by_role("button", name="Se connecter").click()
    await page.get_by_text("Jeton incorrect.").wait_for()
    await page.get_by_label("Jeton d'accès").fill(TOKEN)
    await page.get_by_role("button", name="Se connecter").click()
    await page.get_by_role("heading", name="AlloNantes — console des opérateurs").wait_for()
    await page.close()
    yield context
    await context.close()


async def _console(context: BrowserContext, running: Running) -> Page:
    page = await context.new_page()
    await page.goto(running.base_url + "/")
    await page.locator("#connection[data-state=on]").wait_for()
    return page


async def _wait_event(running: Running, call_id: str, kind: str, timeout: float) -> CallEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in running.events:
            if event.call_id == call_id and event.kind == kind:
                return event
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {kind} event for call {call_id} in {timeout} s")


async def test_console_shows_a_handoff_within_a_second(
    operator: BrowserContext, running: Running
) -> None:
    page = await _console(operator, running)
    caller = AudioSocketCaller()
    call_id = await caller.connect("127.0.0.1", running.server.audiosocket_port)
    try:
        silence = asyncio.create_task(caller.play_silence(30.0))
        await _wait_event(running, call_id, "bot", timeout=20)  # the greeting
        # The call is live in the console while the bot talks.
        await page.locator(f'#live tr[data-call-id="{call_id}"]').wait_for()
        await caller.send_dtmf("0")  # the caller asks for a person
        handoff = await _wait_event(running, call_id, "handoff", timeout=20)
        seen_at = time.time()
        card = page.locator(f'li.handoff[data-call-id="{call_id}"]')
        remaining_ms = max(1.0, (handoff.at + HANDOFF_DEADLINE_S - time.time()) * 1000)
        await card.wait_for(timeout=remaining_ms)  # no reload: pushed over the WebSocket
        shown_after = time.time() - handoff.at
        assert shown_after <= HANDOFF_DEADLINE_S, f"shown {shown_after:.2f} s after the handoff"
        print(f"handoff shown in the console {shown_after * 1000:.0f} ms after it was decided")
        await _screenshot(page, "console-handoff")
        assert seen_at - handoff.at < HANDOFF_DEADLINE_S

        text = await card.inner_text()
        assert "Touche du clavier" in text  # the reason, in words
        assert handoff.data["summary"] and handoff.data["summary"] in text
        greeting = next(e for e in running.events if e.call_id == call_id and e.kind == "bot")
        transcript = card.locator("ol.transcript > li")
        assert await transcript.count() >= 2
        assert greeting.data["text"] in await transcript.first.inner_text()
        assert "[touche 0]" in text  # the caller's key press is in the transcript
        if handoff.data.get("intent"):
            assert handoff.data["intent"] in text
        await caller.wait_for_hangup(10.0)
        silence.cancel()
    finally:
        await caller.close()

    # The operator takes the call: it leaves the queue; past calls find it.
    await card.get_by_role("button", name="Pris en charge").focus()
    await page.keyboard.press("Enter")  # the keyboard is enough
    await card.wait_for(state="detached")
    await page.get_by_label("Issue").select_option("transferred")
    await page.get_by_role("button", name="Rechercher").click()
    row = page.locator(f'#results tr[data-call-id="{call_id}"]')
    await row.wait_for()
    await row.get_by_role("button").click()
    await page.locator("#detail-transcript li.caller").first.wait_for()
    assert "[touche 0]" in await page.locator("#detail-transcript").inner_text()
    await page.close()


async def _start_softphone_call(context: BrowserContext, running: Running) -> Page:
    page = await context.new_page()
    await page.goto(running.base_url + "/appeler")
    await page.get_by_role("button", name="Appeler", exact=True).click()
    await _wait_js(page, "window.softphone.stats.callId !== null", timeout=15)
    return page


async def _screenshot(page: Page, name: str) -> None:
    """With VOICEBOT_SCREENSHOTS=<folder>, keep what the page looked like (for people)."""
    folder = os.environ.get("VOICEBOT_SCREENSHOTS")
    if folder:
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


async def _wait_js(page: Page, expression: str, timeout: float) -> None:
    """Poll a page expression (wait_for_function would need 'unsafe-eval' in the CSP)."""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"{expression} still false after {timeout} s")
        await asyncio.sleep(0.05)


async def test_softphone_call_hears_the_greeting_and_shows_the_transcript(
    operator: BrowserContext, running: Running
) -> None:
    console = await _console(operator, running)
    page = await _start_softphone_call(operator, running)
    call_id = await page.evaluate("window.softphone.stats.callId")
    # The greeting's audio reached the page (voiced 20 ms frames, not just silence)...
    await _wait_js(page, "window.softphone.stats.botVoicedFrames >= 25", timeout=20)
    greeting = await _wait_event(running, call_id, "bot", timeout=5)
    # ...and its text is in the page's transcript.
    await page.locator("#transcript li.bot").first.wait_for()
    assert greeting.data["text"] in await page.locator("#transcript").inner_text()
    # The call is live in the operators' console, from the browser.
    row = console.locator(f'#live tr[data-call-id="{call_id}"]')
    await row.wait_for()
    assert "Navigateur" in await row.inner_text()

    # The fake microphone speaks French: the server hears it and the transcript shows it.
    assert await page.evaluate("window.softphone.stats.chunksSent") > 0
    heard = await _wait_event(running, call_id, "caller", timeout=40)
    assert heard.data["text"].strip()
    await page.locator("#transcript li.caller").first.wait_for()
    await _screenshot(page, "softphone-call")
    await _screenshot(console, "console-live")

    await page.get_by_role("button", name="Raccrocher").click()
    await _wait_event(running, call_id, "ended", timeout=15)
    await row.wait_for(state="detached")
    record = await running.server.records.get_call(call_id)
    assert record is not None and record["transport"] == "navigateur"
    assert any(t["speaker"] == "caller" for t in record["turns"])
    await page.close()
    await console.close()


async def test_typed_text_gets_an_answer(
    operator: BrowserContext, running: Running, rasa_dialogue: RasaDialogue
) -> None:
    page = await _start_softphone_call(operator, running)
    call_id = await page.evaluate("window.softphone.stats.callId")
    await _wait_event(running, call_id, "bot", timeout=20)
    await page.get_by_role("button", name="Couper le micro").click()  # the text path only
    await _wait_bot_quiet(page)
    # Typed slowly, for longer than the bot waits before « Êtes-vous toujours là ? »: someone
    # writing is not silent, and must not be interrupted.
    question = "quels sont les horaires de la mairie"
    silence_s = running.server.settings.policy.silence_prompt_s
    typing_started = time.monotonic()
    await page.get_by_label("Écrire au robot").focus()
    await page.keyboard.type(question, delay=(silence_s + 2.0) * 1000 / len(question))
    assert time.monotonic() - typing_started > silence_s + 1.0
    assert await page.evaluate("window.softphone.stats.typingSent") >= silence_s  # 1 a second
    still_there = rasa_dialogue.prompt("silence_check")
    asked = [
        e
        for e in running.events
        if e.call_id == call_id and e.kind == "bot" and e.data.get("text") == still_there
    ]
    assert not asked, "the bot asked whether the caller was still there while they typed"
    # muted, the page still streams (silence), like a muted phone
    assert await page.evaluate("window.softphone.stats.silentChunksSent") > 50 * silence_s
    await page.keyboard.press("Enter")

    typed = page.locator("#transcript li.caller", has_text=question)
    await typed.wait_for()
    answer_event = await _wait_for_answer(running, call_id, question)
    answer = page.locator("#transcript li.bot", has_text=answer_event.data["text"][:40])
    await answer.first.wait_for()
    text = await answer.first.inner_text()
    assert f"intention {answer_event.data['intent']}" in text
    assert answer_event.data["intent"] == "horaires_mairie"
    await _screenshot(page, "softphone-text")
    await page.get_by_role("button", name="Raccrocher").click()
    await _wait_event(running, call_id, "ended", timeout=15)
    await page.close()


async def _wait_bot_quiet(page: Page, quiet_s: float = 1.0, timeout: float = 30.0) -> None:
    """Until the page has heard the bot speak, then nothing voiced for ``quiet_s``."""
    await _wait_js(page, "window.softphone.stats.botVoicedFrames > 0", timeout=timeout)
    deadline = time.monotonic() + timeout
    voiced = await page.evaluate("window.softphone.stats.botVoicedFrames")
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"the bot was still speaking after {timeout} s")
        await asyncio.sleep(0.1)
        now_voiced = await page.evaluate("window.softphone.stats.botVoicedFrames")
        if now_voiced != voiced:
            voiced, quiet_since = now_voiced, time.monotonic()


async def _wait_for_answer(running: Running, call_id: str, question: str) -> CallEvent:
    """The bot's first reply after the typed question."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = [e for e in running.events if e.call_id == call_id]
        asked = next(
            (
                i
                for i, e in enumerate(events)
                if e.kind == "caller" and e.data.get("text") == question
            ),
            None,
        )
        if asked is not None:
            for event in events[asked + 1 :]:
                if event.kind == "bot" and event.data.get("intent"):
                    return event
        await asyncio.sleep(0.05)
    raise AssertionError("the bot did not answer the typed question")

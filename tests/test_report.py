"""The ROI report (`voicebot report`, the console's « Tableau de bord ») on a seeded records
database whose answers are known.

The seed is written through the records store like a call session writes it (with a clock
set to each call's times). Every expected figure is computed HERE, by ``expected()``, a small
calculation over the seed itself (who called, when, how it ended), never by the report's
code; a few of them are also written out by hand, to check that calculation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from voicebot import cli
from voicebot.console.app import make_app
from voicebot.core.config import PROJECT_ROOT, ReportSettings, Settings, load_settings
from voicebot.core.errors import ConfigError
from voicebot.core.events import CallHub
from voicebot.core.interfaces import MediaTransport
from voicebot.records.report import CallRow, compute_report, definitions
from voicebot.records.store import CallRecords

PARIS = ZoneInfo("Europe/Paris")
KEY = "clé-du-rapport-de-test"
TOKEN = "jeton-du-tableau-de-bord"
FIRST, LAST = dt.date(2024, 3, 4), dt.date(2024, 3, 17)  # Monday 4 to Sunday 17 March 2024
DAY_S = 24 * 3600
CHROMIUM = Path("/usr/bin/chromium")


def paris(month: int, day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(2024, month, day, hour, minute, tzinfo=PARIS).timestamp()


@dataclass(frozen=True)
class Seeded:
    call_id: str
    who: str | None  # the person calling (None: no number passed)
    number: str | None  # the number as the telephony passed it
    start: float
    duration_s: float | None  # None: the call never ended (no outcome)
    outcome: str | None = None
    reason: str | None = None
    intents: tuple[str, ...] = ()


SEED = (
    # A: resolved, then calls back 6 h later (another spelling of the same number)
    Seeded("a1", "A", "0611111111", paris(3, 4, 9, 10), 120, "resolved", None, ("collecte_dechets", "au_revoir")),
    Seeded("a2", "A", "06 11 11 11 11", paris(3, 4, 15), 60, "transferred", "demande", ("collecte_dechets", "demander_agent")),
    # B: resolved, calls again 48 h later (beyond 24 h): both resolved net
    Seeded("b1", "B", "0622222222", paris(3, 5, 10), 90, "resolved", None, ("etat_civil",)),
    Seeded("b2", "B", "0622222222", paris(3, 7, 10), 150, "resolved", None, ("papiers_identite", "remercier")),
    # C: abandons, calls again and is answered, then calls back the next day
    Seeded("c1", "C", "+33633333333", paris(3, 6, 14, 30), 20, "abandoned"),
    Seeded("c2", "C", "+33633333333", paris(3, 6, 14, 40), 100, "resolved", None, ("papiers_identite",)),
    Seeded("c3", "C", "+33633333333", paris(3, 7, 14), 80, "transferred", "incompréhension", ("nlu_fallback", "nlu_fallback")),
    # no number: a resolved call that cannot be checked, a transfer, an abandon
    Seeded("n1", None, None, paris(3, 8, 11), 60, "resolved", None, ("etat_civil",)),
    Seeded("n2", None, None, paris(3, 8, 11, 30), 30, "transferred", "dtmf"),
    Seeded("n3", None, None, paris(3, 11, 9), 10, "abandoned"),
    # E: resolved at 09:00-09:05, calls again the next day at 09:04: 24 h 04 after the
    # start but 23 h 59 after the end: a repeat call (the window runs from the end)
    Seeded("e1", "E", "0655555555", paris(3, 12, 9), 300, "resolved", None, ("stationnement",)),
    Seeded("e2", "E", "0655555555", paris(3, 13, 9, 4), 40, "error", "erreur", ("stationnement",)),
    # D: resolved on the last evening, calls back the morning after the period
    Seeded("d1", "D", "0644444444", paris(3, 17, 22), 100, "resolved", None, ("decheterie",)),
    Seeded("d2", "D", "0644444444", paris(3, 18, 8), 50, "resolved", None, ("decheterie",)),
    # F: a call whose end was never recorded (counted apart)
    Seeded("f1", "F", "0666666666", paris(3, 12, 16), None),
    # B before the period: not counted
    Seeded("b0", "B", "0622222222", paris(3, 3, 23, 30), 45, "resolved", None, ("etat_civil",)),
)  # fmt: skip


@dataclass(frozen=True)
class Expected:
    calls: int
    resolved: int
    resolved_net: int
    transfers: int
    abandons: int
    containment: float
    transfer_rate: float
    abandon_rate: float
    durations: tuple[float, ...]  # time with the bot of the counted calls, sorted


def expected(seed: tuple[Seeded, ...], window_s: float = DAY_S) -> Expected:
    """The figures, from the seed alone: a call counts if it ended and started in the period;
    a resolved call is resolved net if its caller is known and did not call again (any call)
    after it started and within ``window_s`` after it ended."""
    start = dt.datetime(2024, 3, 4, tzinfo=PARIS).timestamp()
    end = dt.datetime(2024, 3, 18, tzinfo=PARIS).timestamp()
    counted = [s for s in seed if s.outcome is not None and start <= s.start < end]

    def called_again(call: Seeded) -> bool:
        assert call.duration_s is not None
        return any(
            other.who == call.who
            and call.start < other.start <= call.start + call.duration_s + window_s
            for other in seed
        )

    resolved = [s for s in counted if s.outcome == "resolved"]
    net = [s for s in resolved if s.who is not None and not called_again(s)]
    transfers = [s for s in counted if s.outcome in ("transferred", "error")]
    abandons = [s for s in counted if s.outcome == "abandoned"]
    n = len(counted)
    return Expected(
        n,
        len(resolved),
        len(net),
        len(transfers),
        len(abandons),
        len(net) / n,
        len(transfers) / n,
        len(abandons) / n,
        tuple(sorted(s.duration_s for s in counted if s.duration_s is not None)),
    )


def test_the_expected_figures_by_hand() -> None:
    """The test's own calculation agrees with the seed read by a person."""
    e = expected(SEED)
    # 13 ended calls in the period; resolved net: b1 and b2 only (a1, c2, e1, d1 called
    # back; n1 has no number); transfers a2, c3, n2, e2; abandons c1, n3.
    assert (e.calls, e.resolved, e.resolved_net, e.transfers, e.abandons) == (13, 7, 2, 4, 2)
    assert (e.containment, e.transfer_rate, e.abandon_rate) == (2 / 13, 4 / 13, 2 / 13)


# --- the seeded database ------------------------------------------------------------------------


async def _seed(settings: Settings) -> None:
    now = [0.0]
    store = CallRecords.open(settings, clock=lambda: now[0])
    try:
        for call in SEED:
            now[0] = call.start
            await store.start_call(call.call_id, "audiosocket", call.number)
            for intent in call.intents:
                now[0] += 5
                await store.add_turn(call.call_id, "caller", "ma question")
                await store.add_turn(call.call_id, "bot", "ma réponse", intent, 0.9)
            if call.duration_s is None:
                continue
            now[0] = call.start + call.duration_s
            await store.end_call(
                call.call_id,
                call.outcome or "",
                call.reason,
                {"reason": call.reason, "intent": None} if call.reason else None,
            )
    finally:
        await store.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report") / "data"
    settings = Settings().replace("paths", data_dir=folder).replace("records", caller_hash_key=KEY)
    asyncio.run(_seed(settings))
    return folder


@pytest.fixture
def env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(data_dir))
    for name in ("VOICEBOT_CONFIG", "VOICEBOT_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return data_dir


def _run_report(out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = cli.main(
        [
            "report",
            "--from",
            FIRST.isoformat(),
            "--to",
            LAST.isoformat(),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "rapport.json").read_text(encoding="utf-8"))
    return printed


# --- voicebot report ------------------------------------------------------------------------------


def test_report_gives_exactly_the_expected_rates(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEBOT_REPORT_OPERATOR_HANDLING_S", "300")
    report = _run_report(tmp_path / "rapport", capsys)
    e = expected(SEED)

    assert report["calls"] == e.calls
    assert report["unfinished"] == 1  # f1
    assert report["resolved"]["gross"] == e.resolved
    assert report["resolved"]["net"] == e.resolved_net
    assert report["transferred"] == e.transfers
    assert report["abandoned"] == e.abandons
    assert report["rates"]["containment"] == e.containment
    assert report["rates"]["transfer"] == e.transfer_rate
    assert report["rates"]["abandon"] == e.abandon_rate
    assert report["rates"]["gross_resolution"] == e.resolved / e.calls
    # why the resolved calls are not all net: called back, or no number to check
    assert report["resolved"]["called_back"] == 4  # a1, c2, e1, d1
    assert report["resolved"]["without_number"] == 1  # n1
    assert report["resolved"]["pending_check"] == 0  # 2024: every window has elapsed
    assert report["calls_without_number"] == 3

    by_reason = {r["reason"]: r["calls"] for r in report["transfers_by_reason"]}
    assert by_reason == {"demande": 1, "incompréhension": 1, "dtmf": 1, "erreur": 1}
    assert report["errors"] == 1

    durations = e.durations
    assert report["time_with_bot"]["calls"] == 13
    assert report["time_with_bot"]["mean_s"] == pytest.approx(sum(durations) / len(durations))
    assert report["time_with_bot"]["median_s"] == durations[len(durations) // 2]  # 13: odd

    # 300 s per net resolved call (the setting, from the environment)
    assert report["operator_handling_s"] == 300
    assert report["operator_time_saved_s"] == e.resolved_net * 300

    # topics: small talk and « un conseiller » are never topics
    top = {t["topic"]: (t["calls"], t["transferred"]) for t in report["top_topics"]}
    assert top == {
        "collecte_dechets": (2, 1),
        "etat_civil": (2, 0),
        "papiers_identite": (2, 0),
        "stationnement": (2, 1),
        "decheterie": (1, 0),
    }
    assert report["calls_without_topic"] == 4  # c1, c3 (not understood), n2, n3
    # one transfer each, half of their calls each: in alphabetical order
    assert [t["topic"] for t in report["most_transferred_topics"]] == [
        "collecte_dechets",
        "stationnement",
    ]

    # calls by weekday and hour (Paris time): Monday 9 h holds a1 (4 March) and n3 (11 March)
    grid = report["by_weekday_hour"]
    assert len(grid) == 7 and all(len(day) == 24 for day in grid)
    assert sum(map(sum, grid)) == e.calls
    assert grid[0][9] == 2 and grid[6][22] == 1 and grid[3][14] == 1

    # week by week
    weeks = [(w["week"], w["calls"], w["resolved_net"], w["transferred"]) for w in report["weeks"]]
    assert weeks == [("2024-W10", 9, 2, 3), ("2024-W11", 4, 0, 1)]


def test_the_page_defines_every_figure_and_the_charts_open(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rapport"
    report = _run_report(out, capsys)
    page = (out / "rapport.html").read_text(encoding="utf-8")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())

    assert page.startswith('<!doctype html>\n<html lang="fr">')
    # every figure has its definition on the page: the JSON's, and the words a reader needs
    assert len(report["definitions"]) == 16
    for definition in report["definitions"].values():
        assert " ".join(definition.split()) in text
    for words in (
        "Appels",
        "Résolus par le robot, nets des rappels",
        "Taux de résolution net",
        "dans les 24 heures qui suivent la fin de l'appel",
        "ne sont PAS comptés comme résolus",  # numberless calls: the cautious choice
        "Transferts par motif",
        "Abandons",
        "Médiane",
        "Sujets le plus souvent transférés",
        "Appels par heure et par jour",
        "Temps de conseiller économisé",
        "4 min 00 s",  # the default 240 s per call
        "Tendance semaine par semaine",
    ):
        assert words in text.replace("\u00a0", " "), words
    assert "15,4 %" in text.replace("\u00a0", " ")  # 2 / 13
    # nothing from elsewhere: the stylesheet is inside, the images are the files beside it
    assert "http://" not in page and "https://" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == sorted(p.name for p in out.glob("*.png"))
    assert len(images) == 4
    for name in images:
        with Image.open(out / name) as image:
            image.load()
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300


def test_report_settings_are_validated(tmp_path: Path) -> None:
    config = tmp_path / "voicebot.yml"
    for bad in ("operator_handling_s: -1", "timezone: Lune/Mer_de_la_Tranquillité"):
        config.write_text(f"report:\n  {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="report"):
            load_settings(config, environ={})
    config.write_text("report:\n  operator_handling_s: 180\n", encoding="utf-8")
    assert load_settings(config, environ={}).report.operator_handling_s == 180.0
    assert cli.main(["report", "--from", "2024-03-10", "--to", "2024-03-01"]) == 2


def test_a_resolved_call_still_in_its_window_counts_for_now() -> None:
    """The report is pure: rows in, figures out (here without any database)."""
    settings = ReportSettings()
    now = paris(3, 5, 12)
    rows = [
        CallRow("x", paris(3, 5, 10), paris(3, 5, 10, 2), "h1", "resolved", None, 120.0, None),
        CallRow("y", paris(3, 5, 11), paris(3, 5, 11, 1), None, "resolved", None, 60.0, None),
    ]
    report = compute_report(
        rows, [("h1", rows[0].started_at)], dt.date(2024, 3, 5), dt.date(2024, 3, 5), settings, now
    )
    assert (report.resolved.net, report.resolved.pending_check) == (1, 1)
    assert report.rates.containment == 1 / 2
    assert {key for key, _, _ in definitions(report)} >= {"containment", "pending_check"}
    with pytest.raises(AttributeError):
        report.calls = 3  # type: ignore[misc]


# --- the console's « Tableau de bord » -------------------------------------------------------------


class NoCalls:
    async def on_call(self, transport: MediaTransport) -> None:
        raise AssertionError("no call expected")


@pytest_asyncio.fixture(loop_scope="function")
async def console(data_dir: Path) -> AsyncIterator[TestClient]:
    settings = (
        Settings()
        .replace("paths", data_dir=data_dir)
        .replace("records", caller_hash_key=KEY)
        .replace("console", token=TOKEN)
    )
    records = CallRecords.open(settings)
    client = TestClient(TestServer(make_app(settings, CallHub(), records, NoCalls().on_call)))
    await client.start_server()
    yield client
    await client.close()
    await records.close()


PERIOD = f"/tableau-de-bord?du={FIRST.isoformat()}&au={LAST.isoformat()}"


@pytest.mark.asyncio(loop_scope="function")
async def test_the_dashboard_needs_the_token(console: TestClient) -> None:
    refused = await console.get(PERIOD, allow_redirects=False)
    assert refused.status == 303 and refused.headers["Location"].startswith("/login")
    wrong = await console.get(
        PERIOD, headers={"Authorization": "Bearer faux"}, allow_redirects=False
    )
    assert wrong.status == 303
    assert (await console.get(PERIOD + "&format=json", allow_redirects=False)).status == 303

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    opened = await console.get(PERIOD, headers=bearer)
    assert opened.status == 200 and opened.content_type == "text/html"
    assert opened.headers["Cache-Control"] == "no-store"
    page = html.unescape(await opened.text()).replace("\u00a0", " ").replace("\u202f", " ")
    assert '<link rel="stylesheet" href="/static/style.css">' in page
    assert "15,4 %" in page and "<svg" in page
    figures = await (await console.get(PERIOD + "&format=json", headers=bearer)).json()
    e = expected(SEED)
    assert figures["rates"]["containment"] == e.containment
    assert figures["rates"]["transfer"] == e.transfer_rate
    assert figures["rates"]["abandon"] == e.abandon_rate
    bad = await console.get("/tableau-de-bord?du=2024-03-10&au=2024-03-01", headers=bearer)
    assert bad.status == 400 and "avant son début" in await bad.text()


def _artefacts() -> Path:
    folder = Path(
        os.environ.get("VOICEBOT_SCREENSHOTS") or PROJECT_ROOT / "bench-out" / "test-artefacts"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.asyncio(loop_scope="function")
async def test_the_dashboard_in_chromium(console: TestClient) -> None:
    from playwright.async_api import async_playwright

    assert CHROMIUM.exists(), "install Debian's chromium: apt-get install chromium"
    base = str(console.make_url("/")).rstrip("/")
    requests: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(locale="fr-FR", viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            await page.goto(base + "/login")
            await page.get_by_label("Jeton d'accès").fill(TOKEN)
            await page.get_by_role("button", name="Se connecter").click()
            await page.wait_for_url(base + "/")
            await page.goto(base + PERIOD)
            await page.get_by_role(
                "heading", level=1, name=re.compile("Tableau de bord")
            ).wait_for()
            banner = await page.locator("header.banner").evaluate(
                "e => getComputedStyle(e).backgroundColor"
            )
            assert banner == "rgb(11, 79, 138)"  # the console's stylesheet applies
            essentials = page.get_by_role("table", name=re.compile("Les chiffres de la période"))
            row = essentials.locator("#chiffre-containment")
            assert "15,4" in await row.inner_text()
            assert await page.locator("svg[role=img]").count() == 4
            path = _artefacts() / "tableau-de-bord.png"
            await page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of /tableau-de-bord: {path}")
        finally:
            await browser.close()
    assert requests and all(url.startswith(base) for url in requests), requests
    with Image.open(path) as shot:
        assert shot.width >= 1200 and shot.height > 900

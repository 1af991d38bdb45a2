"""The public algorithm card: what the bot does, with which thresholds, what it keeps, who
to ask. Generated from the running configuration, never written by hand.

- ``card``: the facts (``gather_card(settings)`` → a frozen ``AlgorithmCard``);
- ``render``: the same card as accessible HTML and as PDF;
- ``page``: ``/transparence`` on the console, public (no token) and read-only;
- ``write_card``: ``voicebot transparence --out DIR`` (``transparence.html``, ``.pdf``).
"""

from __future__ import annotations

from pathlib import Path

from voicebot.console.transparency.card import AlgorithmCard, gather_card
from voicebot.console.transparency.page import CARD_PAGE, CardPage, transparency_page
from voicebot.console.transparency.render import render_html, render_pdf
from voicebot.core.config import Settings
from voicebot.core.errors import VoicebotError

HTML_NAME = "transparence.html"
PDF_NAME = "transparence.pdf"

__all__ = [
    "CARD_PAGE",
    "HTML_NAME",
    "PDF_NAME",
    "AlgorithmCard",
    "CardPage",
    "gather_card",
    "render_html",
    "render_pdf",
    "transparency_page",
    "write_card",
]


def write_card(settings: Settings, out_dir: Path) -> tuple[Path, Path]:
    """Write the card as ``transparence.html`` (self-contained) and ``transparence.pdf``."""
    card = gather_card(settings)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        html_path, pdf_path = out_dir / HTML_NAME, out_dir / PDF_NAME
        html_path.write_text(render_html(card, stylesheet_href=None), encoding="utf-8")
        pdf_path.write_bytes(render_pdf(card))
    except OSError as exc:
        raise VoicebotError(f"cannot write the card into {out_dir}: {exc.strerror}") from None
    return html_path, pdf_path


def write_card_command(settings: Settings, out_dir: Path) -> int:
    """``voicebot transparence --out DIR``: write the card and say where."""
    html_path, pdf_path = write_card(settings, out_dir)
    print(f"Fiche de transparence : {html_path}")
    print(f"Version PDF : {pdf_path}")
    return 0

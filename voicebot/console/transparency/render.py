"""The algorithm card laid out: accessible HTML (the console's stylesheet) and PDF (fpdf2).

Both show the same words, in the same order, from one ``AlgorithmCard``. The HTML has a
language (``lang="fr"``), a skip link, one ``h1`` and ``h2`` per part, lists, and tables with
captions and header cells; it loads nothing from anywhere else (the console serves it with
``/static/style.css``; the file written by ``voicebot transparence`` carries the same
stylesheet inside). The PDF uses DejaVu Sans, which matplotlib (a dependency) ships, so
every French character prints; it has a title, a language and a bookmark per part.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from voicebot.console.context import STATIC_DIR
from voicebot.console.transparency.model import AlgorithmCard, Evaluation
from voicebot.console.transparency.topics import GROUP_LABELS
from voicebot.console.transparency.words import datetime_fr, number_fr, percent_fr
from voicebot.core.errors import VoicebotError
from voicebot.core.french import date_fr

TITLE = "Comment fonctionne l'assistant automatique"
STYLESHEET = STATIC_DIR / "style.css"

# (anchor, heading) of each part, in order: the HTML's table of contents and the PDF's bookmarks.
PARTS = (
    ("but", "À quoi sert l'assistant"),
    ("sujets", "Les sujets traités"),
    ("jamais", "Ce que l'assistant ne traite jamais"),
    ("regles", "Quand l'assistant vous passe un conseiller, ou raccroche"),
    ("sources", "D'où viennent les réponses"),
    ("donnees", "Ce qui est gardé de votre appel"),
    ("modeles", "Les modèles utilisés"),
    ("evaluation", "La dernière évaluation"),
    ("contact", "Vos questions et vos droits"),
)
HEADINGS = dict(PARTS)
ALSO_RECOGNISED = (
    "L'assistant reconnaît aussi les phrases de conversation, et celles qu'il ne traite pas "
    "lui-même :"
)


# --- shared wording -----------------------------------------------------------------------------


def evaluation_summary(evaluation: Evaluation | None) -> str:
    if evaluation is None:
        return (
            "Pas encore d'évaluation enregistrée. Les services de la Ville mesurent la "
            "reconnaissance de la parole avec « voicebot asr eval --json » ; le dernier "
            "rapport enregistré (dossier des évaluations, réglage transparency.evaluation_dir) "
            "apparaîtra ici."
        )
    words = (
        f" ({evaluation.reference_words} mots)" if evaluation.reference_words is not None else ""
    )
    return (
        f"Le {date_fr(evaluation.saved_on.date())}, sur {evaluation.utterances} phrases "
        f"enregistrées{words} du corpus « {evaluation.corpus} », la reconnaissance de la "
        f"parole s'est trompée sur {percent_fr(evaluation.wer)} des mots (taux d'erreur sur "
        "les mots, WER : plus il est bas, mieux c'est)."
    )


def evaluation_rows(evaluation: Evaluation) -> list[tuple[str, str]]:
    rows = [
        ("Date du rapport", date_fr(evaluation.saved_on.date())),
        ("Moteur", f"{evaluation.engine} — {evaluation.model}"),
        ("Corpus", evaluation.corpus),
        ("Phrases évaluées", str(evaluation.utterances)),
        ("Taux d'erreur sur les mots (WER)", percent_fr(evaluation.wer)),
    ]
    if evaluation.rtf is not None:
        rows.append(
            (
                "Temps de calcul / durée de la parole (RTF)",
                number_fr(evaluation.rtf, 3),
            )
        )
    return rows


def generated_line(card: AlgorithmCard) -> str:
    return (
        f"Fiche produite automatiquement le {datetime_fr(card.generated_at)}, à partir de la "
        "configuration en service."
    )


def retention_line(card: AlgorithmCard) -> str:
    return (
        f"La transcription écrite de votre appel et les décisions de l'assistant sont gardées "
        f"{card.data.retention_days}\u00a0jours, dans {card.data.storage}, puis effacées "
        "automatiquement (l'effacement a lieu chaque jour)."
    )


# --- HTML -------------------------------------------------------------------------------------------


def typo(text: str) -> str:
    """French spacing: no-break spaces inside « » and before : ; ? ! (never a lone « at a
    line's end, nor a colon at the start of the next)."""
    for plain, tied in (("« ", "«\u00a0"), (" »", "\u00a0»"), (" :", "\u00a0:"), (" ;", "\u00a0;")):
        text = text.replace(plain, tied)
    return text.replace(" ?", "\u00a0?").replace(" !", "\u00a0!")


def _e(text: object) -> str:
    return escape(typo(str(text)), quote=True)


def _list(items: Iterable[str], cls: str = "") -> str:
    attribute = f' class="{cls}"' if cls else ""
    return f"<ul{attribute}>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[tuple[str, Sequence[str]]],
    row_headers: bool = True,
) -> str:
    """``rows``: (row id, cells); the first cell heads its row (``th scope=row``)."""
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    body = []
    for row_id, cells in rows:
        first, *rest = cells
        first_cell = f'<th scope="row">{first}</th>' if row_headers else f"<td>{first}</td>"
        others = "".join(f"<td>{c}</td>" for c in rest)
        body.append(f'<tr id="{_e(row_id)}">{first_cell}{others}</tr>')
    return (
        f"<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _section(anchor: str, *content: str) -> str:
    return (
        f'<section aria-labelledby="{anchor}"><h2 id="{anchor}">{_e(HEADINGS[anchor])}</h2>'
        + "".join(content)
        + "</section>"
    )


def _settings_cell(settings: Sequence[str]) -> str:
    if not settings:
        return "—"
    return "<br>".join(f"<code>{_e(s)}</code>" for s in settings)


def render_html(card: AlgorithmCard, stylesheet_href: str | None = "/static/style.css") -> str:
    """The page. ``stylesheet_href=None``: the console's stylesheet inside the page (a file)."""
    if stylesheet_href is None:
        css = STYLESHEET.read_text(encoding="utf-8").replace("</", "<\\/")
        style = f"<style>{css}</style>"
    else:
        style = f'<link rel="stylesheet" href="{_e(stylesheet_href)}">'
    toc = "".join(f'<li><a href="#{a}">{_e(h)}</a></li>' for a, h in PARTS)

    answered = _table(
        "Sujets auxquels l'assistant répond, avec le nombre de phrases d'exemple apprises",
        ("Sujet", "Nom technique", "Phrases d'exemple apprises"),
        (
            (f"intention-{i.name}", (_e(i.label), f"<code>{_e(i.name)}</code>", str(i.examples)))
            for i in card.answered()
        ),
    )
    others = _table(
        "Les autres phrases que l'assistant reconnaît, et ce qu'il fait",
        (
            "Ce que vous dites",
            "Nom technique",
            "Phrases d'exemple apprises",
            "Ce que fait l'assistant",
        ),
        (
            (
                f"intention-{i.name}",
                (
                    _e(i.label),
                    f"<code>{_e(i.name)}</code>",
                    str(i.examples),
                    _e(GROUP_LABELS[i.group]),
                ),
            )
            for i in card.others()
        ),
    )
    rules = _table(
        "Règles de l'assistant, avec les seuils en vigueur",
        ("Situation", "Seuil en vigueur", "Ce qui se passe", "Réglage"),
        (
            (
                f"regle-{r.key}",
                (_e(r.situation), _e(r.threshold), _e(r.outcome), _settings_cell(r.settings)),
            )
            for r in card.rules
        ),
    )
    sources = _table(
        "Source de chaque réponse et date de sa dernière vérification",
        ("Sujet", "Source", "Vérifiée le", "Fichier"),
        (
            (
                f"source-{s.topic}",
                (
                    _e(s.label),
                    _e(s.source),
                    f'<time datetime="{s.verified_on.isoformat()}">{_e(date_fr(s.verified_on))}'
                    f"</time>" + (" (à revérifier)" if s.stale else ""),
                    f"<code>{_e(s.file)}</code>",
                ),
            )
            for s in card.sources
        ),
    )
    models = _table(
        "Modèles et logiciels utilisés par l'assistant",
        ("Rôle", "Modèle", "Version", "Licence", "Statut", "Précisions"),
        (
            (
                f"modele-{n}",
                (_e(m.role), _e(m.name), _e(m.version), _e(m.licence), _e(m.status), _e(m.detail)),
            )
            for n, m in enumerate(card.models, 1)
        ),
    )
    if card.evaluation is None:
        evaluation = f'<p class="empty">{_e(evaluation_summary(None))}</p>'
    else:
        evaluation = f"<p>{_e(evaluation_summary(card.evaluation))}</p>" + _table(
            "Chiffres du dernier rapport d'évaluation",
            ("Mesure", "Valeur"),
            (
                (f"eval-{n}", (_e(k), _e(v)))
                for n, (k, v) in enumerate(evaluation_rows(card.evaluation))
            ),
        )
    contact = card.contact
    online = (
        f'<dt>En ligne</dt><dd><a href="{_e(contact.online)}">{_e(contact.online)}</a></dd>'
        if contact.online
        else ""
    )
    postal = f"<dt>Par courrier</dt><dd>{_e(contact.postal)}</dd>" if contact.postal else ""
    notes = (
        '<section aria-labelledby="notes"><h2 id="notes">À l\'attention des services de la '
        "Ville</h2>" + _list(card.notes) + "</section>"
        if card.notes
        else ""
    )
    body = "".join(
        (
            _section(
                "but",
                *(f"<p>{_e(p)}</p>" for p in card.purpose),
                "<p>Ce que l'assistant dit en décrochant :</p>",
                f'<blockquote lang="fr"><p>{_e(card.greeting)}</p></blockquote>',
            ),
            _section(
                "sujets",
                "<p>L'assistant reconnaît ce que vous dites en le comparant à des phrases "
                "d'exemple que la Ville lui a apprises.</p>",
                answered,
                f"<p>{_e(ALSO_RECOGNISED)}</p>",
                others,
            ),
            _section("jamais", _list(card.never)),
            _section(
                "regles",
                "<p>L'assistant ne vous laisse jamais sans solution : dans chacune de ces "
                "situations, il vous passe un conseiller, sauf quand vous avez eu votre "
                "réponse. Les seuils sont ceux de la configuration en service.</p>",
                rules,
            ),
            _section(
                "sources",
                "<p>Les réponses viennent des fiches rédigées par les services de la Ville. "
                "Chaque fiche indique sa source et la date de sa dernière vérification.</p>",
                sources,
            ),
            _section(
                "donnees",
                f"<p><strong>{_e(retention_line(card))}</strong></p>",
                "<h3>Pour chaque appel</h3>",
                _list(card.data.per_call),
                "<h3>Pour chaque phrase échangée</h3>",
                _list(card.data.per_turn),
                "<h3>Ce qui n'est jamais gardé</h3>",
                _list(card.data.never),
                "<h3>Ce qui est gardé pour l'apprentissage</h3>",
                _list(card.data.for_training),
            ),
            _section("modeles", models),
            _section("evaluation", evaluation),
            _section(
                "contact",
                "<p>Pour toute question sur l'assistant, ou pour une demande sur vos données :</p>",
                f'<dl class="detail"><dt>Service</dt><dd>{_e(contact.name)}</dd>'
                f"<dt>Par téléphone</dt><dd>{_e(contact.phone)}</dd>{postal}{online}</dl>",
                "<h3>Vos droits sur vos données</h3>",
                _list(card.rights),
            ),
            notes,
        )
    )
    title = f"{TITLE} — {card.service}"
    return (
        '<!doctype html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n{style}\n</head>\n<body>\n"
        '<a class="skip-link" href="#contenu">Aller au contenu</a>\n'
        f'<header class="banner"><h1>{_e(title)}</h1>'
        "<p>Fiche publique de transparence de l'algorithme</p></header>\n"
        f'<main id="contenu">\n<p>{_e(generated_line(card))}</p>\n'
        f'<nav aria-label="Sommaire"><h2>Sommaire</h2><ol>{toc}</ol></nav>\n'
        f"{body}\n</main>\n</body>\n</html>\n"
    )


# --- PDF ----------------------------------------------------------------------------------------------


def _font_files() -> tuple[Path, Path]:
    """DejaVu Sans (regular, bold) as matplotlib ships them: present wherever the bot runs.
    (Found without importing matplotlib, which is slow and noisy to import.)"""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise VoicebotError("matplotlib is not installed: no font for the PDF (make setup)")
    folder = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"
    regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
    for path in (regular, bold):
        if not path.is_file():
            raise VoicebotError(f"police introuvable pour le PDF : {path} (matplotlib incomplet ?)")
    return regular, bold


def render_pdf(card: AlgorithmCard) -> bytes:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos
    from fpdf.fonts import FontFace

    regular, bold = _font_files()
    title = f"{TITLE} — {card.service}"
    # fontTools logs every step of subsetting the font at INFO: noise in the command's output.
    logging.getLogger("fontTools").setLevel(logging.WARNING)

    class CardPdf(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("DejaVu", "", 8)
            self.set_text_color(74, 74, 74)
            self.cell(0, 6, f"{title} — page {self.page_no()} / {{nb}}", align="C")

    pdf = CardPdf(format="A4")
    pdf.set_lang("fr")
    pdf.set_title(title)
    pdf.set_author(card.contact.organisation)
    pdf.set_subject("Fiche publique de transparence de l'algorithme")
    pdf.set_creator("voicebot transparence")
    pdf.add_font("DejaVu", "", str(regular))
    pdf.add_font("DejaVu", "B", str(bold))
    pdf.set_auto_page_break(True, margin=16)
    pdf.set_margins(16, 16, 16)
    pdf.add_page()
    ink, accent = (26, 26, 26), (11, 79, 138)

    def text(content: str, size: float = 10, style: str = "", gap: float = 1.5) -> None:
        pdf.set_font("DejaVu", style, size)
        pdf.multi_cell(0, size * 0.5, typo(content), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(gap)

    def heading(anchor: str) -> None:
        if pdf.get_y() > pdf.h - 50:
            pdf.add_page()
        pdf.ln(3)
        pdf.start_section(HEADINGS[anchor], level=0)
        pdf.set_text_color(*accent)
        text(HEADINGS[anchor], 14, "B", gap=0)
        pdf.set_draw_color(*accent)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
        pdf.set_text_color(*ink)
        pdf.ln(2.5)

    def bullets(items: Iterable[str]) -> None:
        pdf.set_font("DejaVu", "", 10)
        for item in items:  # hanging indent: the lines of an item align after its bullet
            pdf.set_x(pdf.l_margin + 3)
            pdf.cell(5, 5, "•")
            pdf.multi_cell(
                pdf.epw - 8, 5, typo(item), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
            )
            pdf.ln(1)
        pdf.ln(1)

    def table(
        caption: str,
        headers: Sequence[str],
        rows: Iterable[Sequence[str]],
        widths: Sequence[int],
        small_last: bool = False,
    ) -> None:
        """``small_last``: the last column in a smaller type (technical settings names)."""
        small = FontFace(size_pt=6.5)
        if pdf.get_y() > pdf.h - 45:  # a caption is never left alone at a page's foot
            pdf.add_page()
        text(caption, 10, "B", gap=1)
        pdf.set_font("DejaVu", "", 8.5)
        with pdf.table(
            col_widths=tuple(widths),
            text_align="LEFT",
            v_align="TOP",
            line_height=4.4,
            padding=1.2,
            headings_style=FontFace(emphasis="BOLD", fill_color=(243, 245, 248)),
            first_row_as_headings=True,
        ) as grid:
            header = grid.row()
            for cell in headers:
                header.cell(cell)
            for cells in rows:
                row = grid.row()
                for n, cell in enumerate(cells):
                    last = small_last and n == len(cells) - 1
                    row.cell(typo(cell), style=small if last else None)
        pdf.ln(3)

    pdf.set_text_color(*accent)
    text(title, 18, "B", gap=1)
    pdf.set_text_color(*ink)
    text("Fiche publique de transparence de l'algorithme", 11)
    text(generated_line(card), 9)

    heading("but")
    for paragraph in card.purpose:
        text(paragraph)
    text("Ce que l'assistant dit en décrochant :")
    pdf.set_x(pdf.l_margin + 6)
    pdf.set_font("DejaVu", "", 10)
    pdf.multi_cell(
        pdf.epw - 6,
        5,
        typo(f"« {card.greeting} »"),
        align="L",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(2)

    heading("sujets")
    text(
        "L'assistant reconnaît ce que vous dites en le comparant à des phrases d'exemple que "
        "la Ville lui a apprises."
    )
    table(
        "Sujets auxquels l'assistant répond, avec le nombre de phrases d'exemple apprises",
        ("Sujet", "Nom technique", "Phrases d'exemple apprises"),
        ((i.label, i.name, str(i.examples)) for i in card.answered()),
        (3, 3, 2),
    )
    text(ALSO_RECOGNISED)
    table(
        "Les autres phrases que l'assistant reconnaît, et ce qu'il fait",
        ("Ce que vous dites", "Nom technique", "Exemples", "Ce que fait l'assistant"),
        ((i.label, i.name, str(i.examples), GROUP_LABELS[i.group]) for i in card.others()),
        (6, 4, 3, 8),
    )

    heading("jamais")
    bullets(card.never)

    heading("regles")
    text(
        "L'assistant ne vous laisse jamais sans solution : dans chacune de ces situations, il "
        "vous passe un conseiller, sauf quand vous avez eu votre réponse. Les seuils sont ceux "
        "de la configuration en service."
    )
    table(
        "Règles de l'assistant, avec les seuils en vigueur",
        ("Situation", "Seuil en vigueur", "Ce qui se passe", "Réglage"),
        ((r.situation, r.threshold, r.outcome, "\n".join(r.settings) or "—") for r in card.rules),
        (4, 5, 4, 5),
        small_last=True,
    )

    heading("sources")
    text(
        "Les réponses viennent des fiches rédigées par les services de la Ville. Chaque fiche "
        "indique sa source et la date de sa dernière vérification."
    )
    table(
        "Source de chaque réponse et date de sa dernière vérification",
        ("Sujet", "Source", "Vérifiée le", "Fichier"),
        (
            (
                s.label,
                s.source,
                date_fr(s.verified_on) + (" (à revérifier)" if s.stale else ""),
                s.file,
            )
            for s in card.sources
        ),
        (3, 6, 2, 2),
    )

    heading("donnees")
    text(retention_line(card), style="B")
    text("Pour chaque appel", 11, "B", gap=0.5)
    bullets(card.data.per_call)
    text("Pour chaque phrase échangée", 11, "B", gap=0.5)
    bullets(card.data.per_turn)
    text("Ce qui n'est jamais gardé", 11, "B", gap=0.5)
    bullets(card.data.never)
    text("Ce qui est gardé pour l'apprentissage", 11, "B", gap=0.5)
    bullets(card.data.for_training)

    heading("modeles")
    table(
        "Modèles et logiciels utilisés par l'assistant",
        ("Rôle", "Modèle", "Version", "Licence", "Statut", "Précisions"),
        ((m.role, m.name, m.version, m.licence, m.status, m.detail) for m in card.models),
        (4, 3, 2, 3, 3, 5),
    )

    heading("evaluation")
    text(evaluation_summary(card.evaluation))
    if card.evaluation is not None:
        table(
            "Chiffres du dernier rapport d'évaluation",
            ("Mesure", "Valeur"),
            evaluation_rows(card.evaluation),
            (1, 2),
        )

    heading("contact")
    contact = card.contact
    text("Pour toute question sur l'assistant, ou pour une demande sur vos données :")
    lines = [f"Service : {contact.name}", f"Par téléphone : {contact.phone}"]
    if contact.postal:
        lines.append(f"Par courrier : {contact.postal}")
    if contact.online:
        lines.append(f"En ligne : {contact.online}")
    bullets(lines)
    text("Vos droits sur vos données", 11, "B", gap=0.5)
    bullets(card.rights)
    if card.notes:
        text("À l'attention des services de la Ville", 11, "B", gap=0.5)
        bullets(card.notes)
    return bytes(pdf.output())

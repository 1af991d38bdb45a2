"""French text normalisation: what the caller must hear right, in words."""

from __future__ import annotations

import re

import pytest

from voicebot.speech.text_fr import (
    normalize_for_speech,
    number_to_words,
    ordinal_to_words,
    split_sentences,
)


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zéro"),
        (1, "un"),
        (16, "seize"),
        (17, "dix-sept"),
        (21, "vingt et un"),
        (22, "vingt-deux"),
        (61, "soixante et un"),
        (70, "soixante-dix"),
        (71, "soixante et onze"),
        (77, "soixante-dix-sept"),
        (80, "quatre-vingts"),
        (81, "quatre-vingt-un"),
        (90, "quatre-vingt-dix"),
        (91, "quatre-vingt-onze"),
        (99, "quatre-vingt-dix-neuf"),
        (100, "cent"),
        (101, "cent un"),
        (180, "cent quatre-vingts"),
        (200, "deux cents"),
        (201, "deux cent un"),
        (1000, "mille"),
        (1001, "mille un"),
        (1999, "mille neuf cent quatre-vingt-dix-neuf"),
        (2026, "deux mille vingt-six"),
        (80_000, "quatre-vingt mille"),
        (200_000, "deux cent mille"),
        (1_000_000, "un million"),
        (2_000_000, "deux millions"),
        (200_000_000, "deux cents millions"),
        (1_000_000_000, "un milliard"),
    ],
)
def test_number_to_words(number: int, words: str) -> None:
    assert number_to_words(number) == words


def test_feminine_ends_in_une() -> None:
    assert number_to_words(1, feminine=True) == "une"
    assert number_to_words(21, feminine=True) == "vingt et une"
    assert number_to_words(81, feminine=True) == "quatre-vingt-une"
    assert number_to_words(11, feminine=True) == "onze"


def test_every_number_up_to_ten_thousand_is_words_only() -> None:
    seen = set()
    for n in range(10_000):
        words = number_to_words(n)
        assert re.fullmatch(r"[a-zé -]+", words), (n, words)
        seen.add(words)
    assert len(seen) == 10_000  # no two numbers read the same


def test_too_large_a_number_is_refused() -> None:
    with pytest.raises(ValueError):
        number_to_words(10**12)


@pytest.mark.parametrize(
    ("n", "feminine", "words"),
    [
        (1, False, "premier"),
        (1, True, "première"),
        (2, False, "deuxième"),
        (4, False, "quatrième"),
        (5, False, "cinquième"),
        (9, False, "neuvième"),
        (11, False, "onzième"),
        (21, False, "vingt et unième"),
        (25, False, "vingt-cinquième"),
        (80, False, "quatre-vingtième"),
        (100, False, "centième"),
        (200, False, "deux centième"),  # num2words alone says "deux centsième"
        (1000, False, "millième"),
    ],
)
def test_ordinals(n: int, feminine: bool, words: str) -> None:
    assert ordinal_to_words(n, feminine) == words


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        # phone numbers, read in pairs as the French do
        (
            "Appelez le 02 40 41 90 00.",
            "Appelez le zéro deux, quarante, quarante et un, quatre-vingt-dix, zéro zéro.",
        ),
        ("0240419000", "zéro deux, quarante, quarante et un, quatre-vingt-dix, zéro zéro"),
        ("02.40.41.90.00", "zéro deux, quarante, quarante et un, quatre-vingt-dix, zéro zéro"),
        ("06-12-34-56-78", "zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit"),
        (
            "+33 2 40 41 90 00",
            "plus trente-trois, deux, quarante, quarante et un, quatre-vingt-dix, zéro zéro",
        ),
        # times
        ("à 8h30", "à huit heures trente"),
        ("à 8h", "à huit heures"),
        ("à 12h", "à midi"),
        ("à 12h30", "à midi trente"),
        ("à 0h15", "à minuit quinze"),
        ("à 1h", "à une heure"),
        ("à 21h", "à vingt et une heures"),
        ("à 13h01", "à treize heures une"),
        ("à 8 h 30", "à huit heures trente"),
        ("de 8h30-17h", "de huit heures trente à dix-sept heures"),
        ("24h/24, 7j/7", "vingt-quatre heures sur vingt-quatre, sept jours sur sept"),
        # dates
        ("le 1er janvier", "le premier janvier"),
        ("le 15/03/2026", "le quinze mars deux mille vingt-six"),
        ("le 01/05", "le premier mai"),
        ("le 2 mai 2025", "le deux mai deux mille vingt-cinq"),
        # amounts
        ("25 €", "vingt-cinq euros"),
        ("25€", "vingt-cinq euros"),
        ("2,50 €", "deux euros cinquante"),
        ("12,5 €", "douze euros cinquante"),
        ("1 €", "un euro"),
        ("0,50 €", "cinquante centimes"),
        ("1\u202f250 €", "mille deux cent cinquante euros"),
        ("3 euros", "trois euros"),
        # abbreviations
        ("St-Herblain", "Saint-Herblain"),
        ("Ste-Luce-sur-Loire", "Sainte-Luce-sur-Loire"),
        ("3 Bd Jean Moulin", "trois boulevard Jean Moulin"),
        ("2 av. de la Gare", "deux avenue de la Gare"),
        ("Pl. Royale", "place Royale"),
        ("n° 12", "numéro douze"),
        ("Mme Dupont", "madame Dupont"),
        # ordinals
        ("au 3e étage", "au troisième étage"),
        ("la 1re fois", "la première fois"),
        ("le 21e siècle", "le vingt et unième siècle"),
        ("le 2ème", "le deuxième"),
        # the rest
        ("10 %", "dix pour cent"),
        ("2,5 km", "deux virgule cinq kilomètres"),
        ("2,05", "deux virgule zéro cinq"),
        ("Bonjour !", "Bonjour !"),
    ],
)
def test_normalize_for_speech(text: str, spoken: str) -> None:
    assert normalize_for_speech(text) == spoken


def test_a_real_answer_has_no_digit_left() -> None:
    answer = (
        "La mairie annexe de St-Herblain, 3 Bd Jean Moulin, est ouverte du lundi au vendredi "
        "de 8h30-12h30 et 13h30-17h, le 1er samedi du mois de 9h à 12h. Tél. : 02 40 41 90 00. "
        "Le passeport coûte 86 € (42 € pour un mineur). Délai : 3e semaine après le 15/03/2026."
    )
    spoken = normalize_for_speech(answer)
    assert not re.search(r"\d", spoken), spoken
    assert "zéro deux, quarante, quarante et un, quatre-vingt-dix, zéro zéro" in spoken
    assert "huit heures trente à midi trente" in spoken
    assert "quatre-vingt-six euros" in spoken


def test_text_without_numbers_is_unchanged() -> None:
    text = "Je vous passe un conseiller, ne quittez pas."
    assert normalize_for_speech(text) == text


def test_split_sentences() -> None:
    assert split_sentences("Bonjour. Que puis-je faire pour vous ? Merci!  Au revoir…  ") == [
        "Bonjour.",
        "Que puis-je faire pour vous ?",
        "Merci!",
        "Au revoir…",
    ]
    assert split_sentences("   ") == []
    assert split_sentences("Sans point final") == ["Sans point final"]

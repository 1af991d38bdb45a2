"""French normalisation for scoring, and the word error rate."""

from __future__ import annotations

import pytest

from voicebot.tools.text_score import (
    WordErrors,
    align,
    normalize,
    normalize_text,
    number_to_words,
    ordinal_to_words,
    score,
)


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zéro"),
        (16, "seize"),
        (17, "dix-sept"),
        (21, "vingt et un"),
        (22, "vingt-deux"),
        (70, "soixante-dix"),
        (71, "soixante et onze"),
        (77, "soixante-dix-sept"),
        (80, "quatre-vingts"),
        (81, "quatre-vingt-un"),
        (91, "quatre-vingt-onze"),
        (100, "cent"),
        (101, "cent un"),
        (200, "deux cents"),
        (280, "deux cent quatre-vingts"),
        (1000, "mille"),
        (2024, "deux mille vingt-quatre"),
        (80_000, "quatre-vingt mille"),
        (200_000, "deux cent mille"),
        (1_000_000, "un million"),
        (3_000_021, "trois millions vingt et un"),
        (2_000_000_000, "deux milliards"),
    ],
)
def test_number_to_words(number: int, words: str) -> None:
    assert number_to_words(number) == words


def test_number_too_large_is_refused() -> None:
    with pytest.raises(ValueError):
        number_to_words(10**12)


@pytest.mark.parametrize(
    ("number", "words"),
    [(1, "premier"), (2, "deuxième"), (5, "cinquième"), (9, "neuvième"), (11, "onzième"),
     (19, "dix-neuvième"), (21, "vingt et unième"), (25, "vingt-cinquième"),
     (80, "quatre-vingtième"), (200, "deux centième"), (1000, "millième")],
)  # fmt: skip
def test_ordinal_to_words(number: int, words: str) -> None:
    assert ordinal_to_words(number) == words


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("Appuyez sur 1.", "appuyez sur un"),
        ("appuyez sur 4 ou 6", "Appuyez sur quatre ou six"),
        ("90", "quatre-vingt-dix"),
        ("80 euros", "quatre-vingts euros"),
        ("quatre-vingt", "quatre vingts"),
        ("1 000 000", "un million"),
        ("2,5 %", "deux virgule cinq pour cent"),
        ("le 1er mai", "le premier mai"),
        ("la 1re fois", "la première fois"),
        ("le 3e étage", "le troisième étage"),
        ("le 25e", "le vingt-cinquième"),
        ("à 14h30", "à quatorze heures trente"),
        ("dès 9 h", "dès neuf heures"),
        ("02 40 41", "zéro deux quarante quarante et un"),
        ("une minute", "1 minute"),
        ("appuyez sur *", "appuyez sur étoile"),
        ("suivi du #", "suivi du dièse"),
    ],
)
def test_numbers_and_symbols_written_either_way_are_equal(written: str, spoken: str) -> None:
    assert normalize(written) == normalize(spoken)


def test_case_punctuation_and_quotes_are_dropped() -> None:
    assert normalize("« Merci de votre patience ! »") == ["merci", "de", "votre", "patience"]
    assert normalize("AU REVOIR...") == normalize("au revoir")


def test_apostrophes_split_elisions_but_keep_lexical_words() -> None:
    assert normalize("l’heure d’aujourd’hui") == ["l'", "heure", "d'", "aujourd'hui"]
    assert normalize("l'heure") == normalize("l' heure") == normalize("L’heure")
    assert normalize("Jusqu'à ce qu'il") == ["jusqu'", "a", "ce", "qu'", "il"]
    assert normalize("quelqu'un") == ["quelqu'un"]
    assert normalize("'eeks'") == ["eeks"]


def test_hyphens_separate_words() -> None:
    assert (
        normalize("s'il-vous-plaît")
        == normalize("s'il vous plaît")
        == ["s'", "il", "vous", "plait"]
    )
    assert normalize("Est-ce") == ["est", "ce"]


def test_accents_are_folded_unless_kept() -> None:
    assert normalize("Désolé, ça a échoué") == normalize("Desole, ca a echoue")
    assert normalize("Désolé", keep_accents=True) == ["désolé"]
    assert normalize("Désolé", keep_accents=True) != normalize("Desole", keep_accents=True)
    assert normalize("cœur") == ["coeur"]


def test_spelled_capital_letters_are_one_word() -> None:
    assert normalize("I A X") == normalize("IAX") == ["iax"]
    assert normalize("A.M.") == ["am"]
    # Lower-case single letters are ordinary words ("il y a"), never joined.
    assert normalize("il y a") == ["il", "y", "a"]


def test_normalize_text_joins_words() -> None:
    assert normalize_text("Pour quitter, appuyez sur 8.") == "pour quitter appuyez sur huit"


def test_align_counts_each_kind_of_error() -> None:
    ref = ["pour", "quitter", "appuyez", "sur", "huit"]
    assert align(ref, ref) == WordErrors(0, 0, 0, 5)
    assert align(ref, ["pour", "quitter", "appuyez", "sur", "neuf"]) == WordErrors(1, 0, 0, 5)
    assert align(ref, ["pour", "appuyez", "sur", "huit"]) == WordErrors(0, 1, 0, 5)
    assert align(ref, ["alors", "pour", "quitter", "appuyez", "sur", "huit"]) == WordErrors(
        0, 0, 1, 5
    )
    mixed = align(ref, ["alors", "pour", "partir", "appuyez", "huit"])
    assert (mixed.substitutions, mixed.deletions, mixed.insertions) == (1, 1, 1)
    assert mixed.rate == pytest.approx(3 / 5)


def test_align_with_empty_sides() -> None:
    assert align([], []) == WordErrors(0, 0, 0, 0)
    assert align(["merci"], []) == WordErrors(0, 1, 0, 1)
    empty_reference = align([], ["euh", "bonjour"])
    assert empty_reference == WordErrors(0, 0, 2, 0)
    assert empty_reference.rate == 2.0


def test_word_errors_add_up_over_a_corpus() -> None:
    total = WordErrors(1, 0, 2, 10) + WordErrors(0, 3, 0, 5)
    assert total == WordErrors(1, 3, 2, 15)
    assert total.rate == pytest.approx(6 / 15)


def test_score_normalises_both_sides() -> None:
    assert score("Pour quitter, appuyez sur 8.", "pour quitter appuyez sur huit").errors == 0
    assert score("Aurevoir", "Au revoir.") == WordErrors(1, 0, 1, 1)
    assert score("Désolé", "desole").errors == 0
    assert score("Désolé", "desole", keep_accents=True).errors == 1

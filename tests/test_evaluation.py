"""The evaluation's figures, the ASR-noise transform and the retraining gate, on literal data
(no model loaded: fast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from voicebot.core.config import PROJECT_ROOT, Settings, load_settings
from voicebot.core.errors import ConfigError, ModelError, NluDataError
from voicebot.dialogue.asr_noise import (
    FILLERS,
    asr_noisy,
    asr_spellings,
    numbers_in_words,
    split_word,
    strip_accents,
)
from voicebot.dialogue.evaluation import (
    Prediction,
    ThresholdPoint,
    score,
    scores_json,
    threshold_curve,
)
from voicebot.dialogue.gate import Figures, gate
from voicebot.dialogue.nlu_eval import load_test_sets

NLU_DIR = PROJECT_ROOT / "nlu"

# --- evaluation math ------------------------------------------------------------------

PREDICTIONS = [
    Prediction("a1", "a", "a", "a", 0.9, "set1"),
    Prediction("a2", "a", "b", "b", 0.8, "set1"),
    Prediction("b1", "b", "b", "b", 0.7, "set2"),
    # off-topic sent to the fallback: handled right
    Prediction("h1", "hors_sujet", "nlu_fallback", "a", 0.4, "set2"),
    # a valid request sent to the fallback: a miss
    Prediction("b2", "b", "nlu_fallback", "b", 0.5, "set2"),
]


def test_accuracy_counts_an_off_topic_fallback_as_right() -> None:
    scores = score(PREDICTIONS)
    assert (scores.correct, scores.total) == (3, 5)
    assert scores.accuracy == pytest.approx(0.6)
    assert scores.per_set == {"set1": (1, 2), "set2": (2, 3)}
    assert [p.text for p in scores.errors] == ["a2", "b2"]


def test_per_intent_precision_recall_f1() -> None:
    per_intent = score(PREDICTIONS).per_intent
    assert per_intent["a"].precision == pytest.approx(1.0)
    assert per_intent["a"].recall == pytest.approx(0.5)
    assert per_intent["a"].f1 == pytest.approx(2 / 3)
    assert per_intent["b"].precision == pytest.approx(0.5)
    assert per_intent["b"].recall == pytest.approx(0.5)
    assert per_intent["b"].f1 == pytest.approx(0.5)
    assert per_intent["hors_sujet"].f1 == pytest.approx(1.0)
    assert [per_intent[k].support for k in ("a", "b", "hors_sujet")] == [2, 2, 1]


def test_confusion_matrix_rows_expected_columns_decided_with_the_fallback_last() -> None:
    scores = score(PREDICTIONS)
    assert scores.labels == ["a", "b", "hors_sujet"]
    assert scores.columns == ["a", "b", "hors_sujet", "nlu_fallback"]
    assert scores.confusion == [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]


def test_threshold_curve_kept_accuracy_and_share_handed_over() -> None:
    assert threshold_curve(PREDICTIONS, [0.5, 0.75, 0.95]) == [
        ThresholdPoint(0.5, 0.75, pytest.approx(0.2)),  # type: ignore[arg-type]
        ThresholdPoint(0.75, 0.5, pytest.approx(0.6)),  # type: ignore[arg-type]
        ThresholdPoint(0.95, 1.0, 1.0),  # nothing kept: nothing wrong, everyone handed over
    ]
    assert [p.threshold for p in score(PREDICTIONS).curve] == [
        0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9
    ]  # fmt: skip


def test_scores_json_shape() -> None:
    data = scores_json(score(PREDICTIONS))
    assert data["accuracy"] == 0.6
    assert data["per_intent"]["a"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.6667,
        "support": 2,
    }
    assert data["per_set"]["set2"] == {"accuracy": 0.6667, "correct": 2, "total": 3}
    assert data["errors"][1]["predicted"] == "nlu_fallback"
    assert len(data["threshold_curve"]) == 13


def test_no_prediction_scores_zero_without_failing() -> None:
    scores = score([])
    assert (scores.accuracy, scores.total, scores.per_intent, scores.confusion) == (0.0, 0, {}, [])


# --- the noisy copy -------------------------------------------------------------------


def test_accents_and_ligatures_dropped() -> None:
    assert strip_accents("Déchèterie, Œuvre, ça, île, naïf") == "Decheterie, OEuvre, ca, ile, naif"


def test_numbers_written_as_french_words() -> None:
    assert numbers_in_words("le 15 mars à 8 heures") == "le quinze mars à huit heures"
    assert numbers_in_words("44000") == "quarante-quatre mille"


def test_fixed_asr_spellings() -> None:
    assert asr_spellings("aujourd’hui s'il vous plaît") == "aujourd hui sil vous plait"
    assert asr_spellings("qu'est-ce que c'est") == "qu est ce que c'est"


def test_a_long_word_is_cut_after_a_vowel_near_its_middle() -> None:
    assert split_word("ordures") == ("ordu", "res")
    assert split_word("decheterie") == ("deche", "terie")


def test_noisy_sentence_pinned() -> None:
    # A change of the transform changes every noisy figure: it must be deliberate.
    text = "Aujourd'hui, s'il vous plaît : le 15 à l'Hôtel-de-Ville ?"
    assert asr_noisy(text) == "aujourd hui sil vous plait le quinze a lhotel de ville"
    assert asr_noisy("la déchèterie de la prairie de mauves est ouverte le dimanche") == (
        "la decheterie de laprairie de mauves est ouverte ben le dimanche"
    )


def test_noisy_copy_is_deterministic_and_seeded() -> None:
    texts = [e.text for e in load_test_sets(NLU_DIR)]
    assert [asr_noisy(t) for t in texts] == [asr_noisy(t) for t in texts]
    assert [asr_noisy(t, seed=1) for t in texts] != [asr_noisy(t) for t in texts]
    # most sentences change: the noisy set measures something else than the clean one
    assert sum(asr_noisy(t) != t for t in texts) > 0.6 * len(texts)


def test_noise_only_moves_spaces_and_adds_fillers() -> None:
    """Every test sentence keeps its letters: lowercase, unaccented, no punctuation, and once
    the fillers are taken out, the same letters as the sentence (spaces aside)."""
    for example in load_test_sets(NLU_DIR):
        noisy = asr_noisy(example.text)
        assert noisy == noisy.lower() and noisy == strip_accents(noisy)
        assert all(c.isalnum() or c == " " for c in noisy), noisy
        letters = "".join(w for w in noisy.split() if w not in FILLERS)
        clean = strip_accents(asr_spellings(numbers_in_words(example.text.lower())))
        expected = "".join(w for w in "".join(c if c.isalnum() else " " for c in clean).split()
                           if w not in FILLERS)  # fmt: skip
        assert letters == expected, (example.text, noisy)


# --- the gate -------------------------------------------------------------------------

CURRENT = Figures(
    clean_accuracy=0.95,
    noisy_accuracy=0.92,
    clean_f1={"decheterie": 0.90, "encombrants": 0.80},
    noisy_f1={"decheterie": 0.85, "encombrants": 0.75},
)


def figures(**changes: object) -> Figures:
    values = {**CURRENT.__dict__, **changes}
    return Figures(**values)  # type: ignore[arg-type]


def test_gate_accepts_an_equal_or_better_candidate() -> None:
    assert gate(CURRENT, CURRENT).accepted
    better = figures(clean_accuracy=0.97, noisy_f1={"decheterie": 0.95, "encombrants": 0.75})
    decision = gate(CURRENT, better)
    assert decision.accepted and decision.reasons == []
    assert "accepté" in decision.summary()


def test_gate_refuses_any_accuracy_loss_clean_or_noisy() -> None:
    decision = gate(CURRENT, figures(clean_accuracy=0.949))
    assert not decision.accepted
    assert decision.reasons == [
        "taux de bonnes réponses en baisse sur les phrases propres (95,0 % → 94,9 %)"
    ]
    decision = gate(CURRENT, figures(noisy_accuracy=0.91))
    assert decision.reasons == [
        "taux de bonnes réponses en baisse sur les phrases bruitées (92,0 % → 91,0 %)"
    ]
    assert decision.summary().startswith("Modèle refusé : taux de bonnes réponses")


def test_gate_tolerates_an_f1_drop_up_to_the_setting() -> None:
    two_points = figures(clean_f1={"decheterie": 0.88, "encombrants": 0.80})
    assert gate(CURRENT, two_points, max_f1_drop_points=2.0).accepted
    three_points = figures(noisy_f1={"decheterie": 0.85, "encombrants": 0.72})
    decision = gate(CURRENT, three_points, max_f1_drop_points=2.0)
    assert decision.reasons == [
        "F1 de l'intention « encombrants » en baisse de 3,0 points sur les phrases bruitées "
        "(75,0 → 72,0, baisse tolérée : 2 points)"
    ]
    assert gate(CURRENT, three_points, max_f1_drop_points=5).accepted
    just_over = figures(clean_f1={"decheterie": 0.8798, "encombrants": 0.80})
    [reason] = gate(CURRENT, just_over).reasons
    assert "en baisse de 2,02 points" in reason  # not "2,0", which reads as tolerated
    assert not gate(CURRENT, two_points, max_f1_drop_points=0).accepted


def test_gate_counts_an_intent_missing_from_the_candidate_as_zero() -> None:
    decision = gate(CURRENT, figures(clean_f1={"decheterie": 0.90}))
    assert not decision.accepted
    assert "« encombrants » en baisse de 80,0 points" in decision.reasons[0]


def test_gate_lists_every_reason() -> None:
    swapped = figures(
        clean_accuracy=0.90,
        clean_f1={"decheterie": 0.1, "encombrants": 0.1},
    )
    reasons = gate(CURRENT, swapped).reasons
    assert len(reasons) == 3
    assert "décheterie" not in reasons[1] and "« decheterie »" in reasons[1]


def test_gate_setting_is_validated(tmp_path: Path) -> None:
    assert Settings().dialogue.gate_max_f1_drop == 2.0
    config = tmp_path / "voicebot.yml"
    config.write_text("dialogue:\n  gate_max_f1_drop: 5\n", encoding="utf-8")
    assert load_settings(config, environ={}).dialogue.gate_max_f1_drop == 5.0
    config.write_text("dialogue:\n  gate_max_f1_drop: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="gate_max_f1_drop must be between 0 and 100"):
        load_settings(config, environ={})


# --- clear errors -----------------------------------------------------------------------


def test_a_broken_test_file_names_the_file(tmp_path: Path) -> None:
    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("models"))
    (copy / "tests" / "unseen.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: saluer\n  examples: |\n    - allo\n  : [\n',
        encoding="utf-8",
    )
    with pytest.raises(NluDataError, match=r"unseen\.yml : fichier illisible"):
        load_test_sets(copy)


def test_no_test_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    with pytest.raises(NluDataError, match="aucun jeu de test"):
        load_test_sets(tmp_path)


def test_evaluate_without_a_model_names_voicebot_train(tmp_path: Path) -> None:
    from voicebot.dialogue.evaluate_command import evaluate_command

    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("models"))
    settings = Settings().replace("paths", nlu_dir=copy)
    with pytest.raises(ModelError, match="voicebot train"):
        evaluate_command(settings, out_dir=tmp_path / "out")
    with pytest.raises(ModelError, match="no Rasa model at"):
        evaluate_command(settings, model=tmp_path / "absent.tar.gz", out_dir=tmp_path / "out")


# --- model versions and the model folder (fake archives: no training) -------------------


def test_accepting_a_candidate_moves_it_in_with_its_version(tmp_path: Path) -> None:
    from voicebot.dialogue.model_store import make_version, read_version, write_version
    from voicebot.dialogue.training import accept

    folder = tmp_path / "models"
    (folder / "candidate").mkdir(parents=True)
    old = folder / "allonantes-20261201-100000.tar.gz"
    old.write_bytes(b"old")
    candidate = folder / "candidate" / "allonantes-20261202-170406.tar.gz"
    candidate.write_bytes(b"new")
    version = make_version(candidate, "59cc2b4b0f93" + "0" * 52, "2026-12-02T17:04:06+00:00")
    assert version.version == "20261202-170406-59cc2b4b0f93"
    write_version(candidate, version)

    model = accept(folder, candidate, version)

    assert model == folder / candidate.name and model.read_bytes() == b"new"
    assert sorted(p.name for p in folder.iterdir()) == [
        "allonantes-20261202-170406.json",
        "allonantes-20261202-170406.tar.gz",
        "fingerprint.json",
    ]
    assert read_version(model) == version
    record = json.loads((folder / "fingerprint.json").read_text(encoding="utf-8"))
    assert record == {
        "fingerprint": version.fingerprint,
        "model": model.name,
        "version": version.version,
    }


def test_a_model_trained_before_versions_gets_one_from_its_name(tmp_path: Path) -> None:
    from voicebot.dialogue.model_store import read_version

    model = tmp_path / "allonantes-20261202-141339.tar.gz"
    model.write_bytes(b"")
    assert read_version(model).version == "20261202-141339-inconnu"
    (tmp_path / "fingerprint.json").write_text(
        json.dumps({"fingerprint": "f5fd9d94480f0a06", "model": model.name}), encoding="utf-8"
    )
    assert read_version(model).version == "20261202-141339-f5fd9d94480f"


def test_if_needed_refuses_at_once_data_already_refused(tmp_path: Path) -> None:
    from voicebot.core.errors import GateRefusedError
    from voicebot.dialogue.model_store import write_last_refused
    from voicebot.dialogue.training import fingerprint, train

    copy = tmp_path / "nlu"
    shutil.copytree(NLU_DIR, copy, ignore=shutil.ignore_patterns("models"))
    report = copy / "models" / "refused" / "x" / "report.html"
    write_last_refused(copy / "models", fingerprint(copy), report, "F1 en baisse")
    settings = Settings().replace("paths", nlu_dir=copy)
    with pytest.raises(GateRefusedError, match="déjà donné un modèle refusé"):
        train(settings, if_needed=True)
    assert not (copy / "models" / "candidate").exists()  # nothing was trained

"""Write nlu/data/asr_variantes.yml: training sentences as a speech recogniser writes them.

    .venv/bin/python scripts/asr_variants.py

For one example in three of each intent in nlu/data (this file aside; at most
MAX_PER_INTENT per intent), one variant made by
voicebot.dialogue.asr_noise with its own seed (not the test sets' seed): accents and
punctuation dropped, fillers « euh » / « ben », words split or merged. A variant is left out
when it is already a training sentence, when it belongs to another intent, or when it is a
test sentence of nlu/tests (clean or in its noisy copy): test sentences are never trained on.
Deterministic: re-running it on the same data writes the same file. Re-run it after editing
nlu/data, then `voicebot train`.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from voicebot.dialogue.asr_noise import FILLERS, asr_noisy, numbers_in_words, strip_accents

ROOT = Path(__file__).resolve().parent.parent

OUTPUT = "asr_variantes.yml"
SEED = 2026  # differs from the test sets' DEFAULT_SEED
EVERY = 3  # one variant for every EVERY examples
# At most this many per intent: the large intents (hors_sujet) must not grow their share,
# or the model starts reading any unaccented, "ben"-filled sentence as off-topic.
MAX_PER_INTENT = 25
_MARKUP = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_NOT_LETTER = re.compile(r"[^\w]|_")
HEADER = """\
# FICHIER GÉNÉRÉ par scripts/asr_variants.py : ne pas modifier à la main.
# Des phrases d'entraînement de nlu/data telles que la reconnaissance vocale les écrit
# (sans accents ni ponctuation, avec des « euh », des mots coupés ou collés), pour que le robot
# comprenne aussi bien ce qu'écrit la reconnaissance vocale que des phrases bien écrites.
# Après avoir modifié nlu/data, relancez : .venv/bin/python scripts/asr_variants.py
"""


def intent_examples(data_dir: Path) -> dict[str, list[str]]:
    examples: dict[str, list[str]] = {}
    for path in sorted(data_dir.glob("*.yml")):
        if path.name == OUTPUT:
            continue
        for item in yaml.safe_load(path.read_text(encoding="utf-8")).get("nlu") or []:
            if "intent" in item:
                lines = [line.strip()[2:].strip() for line in item["examples"].splitlines()]
                texts = [_MARKUP.sub(r"\1", line) for line in lines if line]
                examples.setdefault(item["intent"], []).extend(texts)
    return examples


def letters(text: str) -> str:
    """A sentence reduced to its letters: no case, accents, punctuation, fillers or spaces.

    Two sentences with the same letters are the same sentence for the model (a variant that
    only splits or merges words differently from a test sentence's noisy copy is that test
    sentence); tests/test_nlu.py checks the test sets against nlu/data with the same rule.
    """
    words = _NOT_LETTER.sub(" ", strip_accents(numbers_in_words(text.lower()))).split()
    return "".join(w for w in words if w not in FILLERS)


def test_sentences(tests_dir: Path) -> set[str]:
    """The letters of every test sentence (its noisy copies have the same letters)."""
    texts: set[str] = set()
    for path in sorted(tests_dir.glob("*.yml")):
        for item in yaml.safe_load(path.read_text(encoding="utf-8")).get("nlu") or []:
            for line in (item.get("examples") or "").splitlines():
                text = _MARKUP.sub(r"\1", line.strip()[2:].strip())
                if text:
                    texts.add(letters(text))
    return texts


def variants(examples: dict[str, list[str]], excluded: set[str]) -> dict[str, list[str]]:
    owner: dict[str, str] = {}
    for intent, texts in examples.items():
        for text in texts:
            owner.setdefault(text.lower(), intent)
    result: dict[str, list[str]] = {}
    for intent, texts in examples.items():
        chosen = []
        for text in texts[::EVERY]:
            variant = asr_noisy(text, SEED)
            if variant and variant not in owner and letters(variant) not in excluded:
                owner[variant] = intent
                chosen.append(variant)
                if len(chosen) == MAX_PER_INTENT:
                    break
        result[intent] = chosen
    return result


def render(result: dict[str, list[str]]) -> str:
    parts = [HEADER, 'version: "3.1"\nnlu:\n']
    for intent in sorted(result):
        if result[intent]:
            parts.append(f"- intent: {intent}\n  examples: |\n")
            parts.extend(f"    - {text}\n" for text in result[intent])
    return "".join(parts)


def main() -> int:
    nlu_dir = ROOT / "nlu"
    result = variants(intent_examples(nlu_dir / "data"), test_sentences(nlu_dir / "tests"))
    out = nlu_dir / "data" / OUTPUT
    out.write_text(render(result), encoding="utf-8")
    print(f"{sum(map(len, result.values()))} variantes écrites dans {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

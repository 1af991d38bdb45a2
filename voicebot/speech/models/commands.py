"""``voicebot models list``, ``pull`` and ``verify``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.speech.models.checks import installed_problem
from voicebot.speech.models.download import file_digest, human_size, install
from voicebot.speech.models.manifest import (
    STAGING_DIR,
    VERIFIED_RECORD,
    ModelEntry,
    is_installed,
    load_manifest,
    manifest_path,
    model_dir,
)
from voicebot.speech.models.resolve import resolve_asr, resolve_tts


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _default_marks(entry: ModelEntry) -> str:
    return {"asr-default": " (ASR par défaut)", "voice-default": " (voix par défaut)"}.get(
        entry.role, ""
    )


def list_models(settings: Settings, out: TextIO | None = None) -> int:
    """`voicebot models list`: official models, installed or available, with their sizes."""
    out = out or sys.stdout
    path = manifest_path(settings)
    manifest = load_manifest(path)
    print(f"Modèles officiels ({path}) — dossier : {settings.paths.models_dir}", file=out)
    print(f"  {'NOM':<28} {'TYPE':<8} {'TAILLE':>10}  ÉTAT", file=out)
    for entry in manifest.values():
        if is_installed(settings, entry.name):
            state = "installé"
            size = human_size(_tree_size(model_dir(settings, entry.name)))
        else:
            partial = settings.paths.models_dir / STAGING_DIR / entry.name
            have = _tree_size(partial) if partial.exists() else 0
            state = "disponible"
            if have and entry.size:
                state = f"téléchargement interrompu ({have / entry.size:.0%})"
            size = human_size(entry.size) if entry.size else "~"
        print(
            f"  {entry.name:<28} {entry.kind:<8} {size:>10}  {state}{_default_marks(entry)}",
            file=out,
        )
    for label, resolve in (("ASR utilisée", resolve_asr), ("Voix utilisée", resolve_tts)):
        try:
            chosen = resolve(settings)
            print(f"{label} : {chosen.description} ({chosen.origin})", file=out)
        except ModelError as exc:
            print(f"{label} : aucune — {exc}", file=out)
    print("Télécharger : voicebot models pull NOM", file=out)
    return 0


def pull(settings: Settings, name: str, base_url: str | None = None) -> int:
    """`voicebot models pull NAME`: download, verify, move into place. Raises ModelError."""
    manifest = load_manifest(manifest_path(settings))
    entry = manifest.get(name)
    if entry is None:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(manifest)}")
    if is_installed(settings, name):
        print(f"{name} est déjà installé ({model_dir(settings, name)}).")
        return 0
    settings.paths.models_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"Téléchargement de {name} ({human_size(entry.size)}) — {entry.description}",
        file=sys.stderr,
    )
    if not entry.fully_checksummed:
        print(f"Attention : {entry.checksum_note}", file=sys.stderr)
    target = install(settings, entry, base_url)
    print(f"{name} installé dans {target}.")
    return 0


def verify_installed(settings: Settings, name: str) -> list[str]:
    """Problems with an installed model: files changed or missing since `pull`, structure."""
    folder = model_dir(settings, name)
    try:
        record = json.loads((folder / VERIFIED_RECORD).read_text(encoding="utf-8"))
        expected: dict[str, str] = dict(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"verification record unreadable ({exc})"]
    problems = []
    for relative, digest in expected.items():
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif file_digest(path, "sha256") != digest:
            problems.append(f"{relative} has changed since it was installed")
    return problems


def verify(settings: Settings, out: TextIO | None = None) -> int:
    """`voicebot models verify`: re-check every installed model and what would be loaded."""
    out = out or sys.stdout
    manifest = load_manifest(manifest_path(settings))
    failures = 0
    installed = [entry for entry in manifest.values() if is_installed(settings, entry.name)]
    for entry in installed:
        problems = verify_installed(settings, entry.name)
        structural = installed_problem(settings, entry)
        if structural:
            problems.append(structural)
        if problems:
            failures += 1
            print(f"ÉCHEC {entry.name} : {'; '.join(problems)}", file=out)
            print(
                f"      réparer : voicebot models pull {entry.name} (après suppression du dossier)",
                file=out,
            )
        else:
            print(f"OK    {entry.name}", file=out)
    if not installed:
        print("Aucun modèle officiel installé.", file=out)
    for label, resolve in (("ASR", resolve_asr), ("voix", resolve_tts)):
        try:
            chosen = resolve(settings)
            print(
                f"{label} chargée au démarrage : {chosen.description} ({chosen.origin})", file=out
            )
        except ModelError as exc:
            failures += 1
            print(f"ÉCHEC {label} : {exc}", file=out)
    return 1 if failures else 0

"""The manifest of official models (``models/manifest.yml``), and where a model is installed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from voicebot.core.config import PROJECT_ROOT, Settings
from voicebot.core.errors import ModelError

MANIFEST_FILE = "manifest.yml"
PACKAGED_MANIFEST = PROJECT_ROOT / "models" / MANIFEST_FILE
VERIFIED_RECORD = ".voicebot-verified.json"
STAGING_DIR = ".staging"
DEFAULT_ASR_MODEL = "vosk-model-small-fr-0.22"
DEFAULT_VOICE = "fr_FR-siwis-medium"
KINDS = ("vosk", "piper", "whisper")


@dataclass(frozen=True)
class ModelFile:
    name: str
    url: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None

    @property
    def checksum(self) -> tuple[str, str] | None:
        if self.sha256:
            return ("sha256", self.sha256.lower())
        if self.md5:
            return ("md5", self.md5.lower())
        return None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str
    role: str
    description: str
    files: tuple[ModelFile, ...]
    archive: str | None = None
    license: str = ""
    checksum_note: str = ""

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    @property
    def fully_checksummed(self) -> bool:
        return all(f.checksum is not None for f in self.files)


def manifest_path(settings: Settings) -> Path:
    """The models folder's own manifest if it has one (a mirror, a test), else the packaged one."""
    local = settings.paths.models_dir / MANIFEST_FILE
    return local if local.is_file() else PACKAGED_MANIFEST


def load_manifest(path: Path) -> dict[str, ModelEntry]:
    """Parse and check a manifest. Raises ModelError naming the file and the bad field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read the model manifest {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"the model manifest {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ModelError(f"{path}: expected a top-level 'models:' mapping")
    entries: dict[str, ModelEntry] = {}
    for name, spec in raw["models"].items():
        where = f"{path}: models.{name}"
        if not isinstance(spec, dict):
            raise ModelError(f"{where}: expected a mapping")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ModelError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        archive = spec.get("archive")
        if archive not in (None, "zip"):
            raise ModelError(f"{where}.archive: only 'zip' is supported, got {archive!r}")
        files_raw = spec.get("files")
        if not isinstance(files_raw, list) or not files_raw:
            raise ModelError(f"{where}.files: expected a non-empty list")
        files = tuple(_model_file(f"{where}.files[{i}]", item) for i, item in enumerate(files_raw))
        if archive == "zip" and len(files) != 1:
            raise ModelError(f"{where}: a zip model must have exactly one file (the archive)")
        entries[str(name)] = ModelEntry(
            name=str(name),
            kind=kind,
            role=str(spec.get("role", "")),
            description=str(spec.get("description", "")),
            files=files,
            archive=archive,
            license=str(spec.get("license", "")),
            checksum_note=str(spec.get("checksum_note", "")),
        )
    return entries


def _model_file(where: str, item: Any) -> ModelFile:
    if not isinstance(item, dict):
        raise ModelError(f"{where}: expected a mapping")
    name, url = item.get("name"), item.get("url")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ModelError(f"{where}.name: expected a plain file name, got {name!r}")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ModelError(f"{where}.url: expected an http(s) URL, got {url!r}")
    size = item.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ModelError(f"{where}.size: expected a positive number of bytes or null, got {size!r}")
    digests: dict[str, str | None] = {}
    for algorithm, length in (("sha256", 64), ("md5", 32)):
        value = item.get(algorithm)
        if value is not None and (
            not isinstance(value, str)
            or len(value) != length
            or any(c not in "0123456789abcdefABCDEF" for c in value)
        ):
            raise ModelError(f"{where}.{algorithm}: expected {length} hexadecimal digits")
        digests[algorithm] = value
    if not digests["sha256"] and not digests["md5"] and item.get("checksum") != "none":
        raise ModelError(
            f"{where}: give the publisher's sha256 or md5, or 'checksum: none' if it publishes none"
        )
    return ModelFile(name=name, url=url, size=size, sha256=digests["sha256"], md5=digests["md5"])


# --- where a model is installed ---------------------------------------------------------------


def model_dir(settings: Settings, name: str) -> Path:
    return settings.paths.models_dir / name


def is_installed(settings: Settings, name: str) -> bool:
    """Installed = moved into place by `pull` with its verification record."""
    return (model_dir(settings, name) / VERIFIED_RECORD).is_file()

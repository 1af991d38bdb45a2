"""The speech-model manager: what is installed, what to load, and `voicebot models pull`.

Official models are listed in ``models/manifest.yml`` with their publisher's checksum. They
are downloaded only by ``voicebot models pull NAME`` — never at run time — into
``settings.paths.models_dir/NAME/``:

- into ``.staging/NAME/`` first, each file as ``FILE.partial`` (an interrupted download is
  resumed with an HTTP Range request the next time), then checked (size, checksum);
- a Vosk archive is unpacked there (refusing paths that escape the folder);
- a ``.voicebot-verified.json`` record lists the SHA-256 of every installed file, so that
  ``voicebot models verify`` can later detect a damaged file;
- finally the folder is moved into place with one atomic rename: a model folder is either
  complete and verified, or absent.

``resolve_asr`` and ``resolve_tts`` decide what to load, in this order: the settings or their
environment overrides (``VOICEBOT_ASR_MODEL`` a Vosk folder, ``VOICEBOT_TTS_VOICE`` a Piper
``.onnx``); else the official model if pulled; else the French-capable stand-ins (the Whisper
base model assembled from PyPI packages; the espeak-ng French voice), with a warning that
names the command to get the real one. A configured model that is missing or broken is an
error, never a silent fallback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import yaml
from tqdm import tqdm

from voicebot.core.config import PROJECT_ROOT, Settings
from voicebot.core.errors import ModelError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.yml"
PACKAGED_MANIFEST = PROJECT_ROOT / "models" / MANIFEST_FILE
VERIFIED_RECORD = ".voicebot-verified.json"
STAGING_DIR = ".staging"
DEFAULT_ASR_MODEL = "vosk-model-small-fr-0.22"
DEFAULT_VOICE = "fr_FR-siwis-medium"
KINDS = ("vosk", "piper", "whisper")
# Preference among installed official models when the settings name none.
VOSK_PREFERENCE = (DEFAULT_ASR_MODEL, "vosk-model-fr-0.22")
WHISPER_PREFERENCE = ("faster-whisper-small", "faster-whisper-base")
VOICE_PREFERENCE = (DEFAULT_VOICE, "fr_FR-upmc-medium", "fr_FR-tom-medium")
CHUNK_BYTES = 1 << 20  # hashing
READ_BYTES = 64 << 10  # network reads: small, so that a cut loses little
HTTP_TIMEOUT_S = 30.0
USER_AGENT = "allonantes-voicebot-models/1"

# --- the manifest ---------------------------------------------------------------------------


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


# --- what is installed ------------------------------------------------------------------------


def model_dir(settings: Settings, name: str) -> Path:
    return settings.paths.models_dir / name


def is_installed(settings: Settings, name: str) -> bool:
    """Installed = moved into place by `pull` with its verification record."""
    return (model_dir(settings, name) / VERIFIED_RECORD).is_file()


def human_size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "?"
    size = float(n_bytes)
    for unit in ("o", "Kio", "Mio", "Gio"):
        if size < 1024 or unit == "Gio":
            return f"{size:.0f} {unit}" if unit == "o" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} Gio"


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def vosk_model_problem(path: Path) -> str | None:
    """Why ``path`` is not a Vosk model usable on 8 kHz audio, or None if it is."""
    if not path.is_dir():
        return f"{path} is not a folder"
    layouts = ((path / "am" / "final.mdl", path / "conf"), (path / "final.mdl", path))
    conf_dir = next((conf for model, conf in layouts if model.is_file()), None)
    if conf_dir is None:
        return f"{path} holds no Vosk acoustic model (am/final.mdl)"
    mfcc = conf_dir / "mfcc.conf"
    features = mfcc if mfcc.is_file() else conf_dir / "fbank.conf"
    if not features.is_file():
        return f"{path} has no feature configuration (conf/mfcc.conf)"
    return upsampling_problem(features)


def upsampling_problem(features_conf: Path) -> str | None:
    """Kaldi refuses audio below the model's rate unless the feature config allows upsampling.

    Phone audio is 8 kHz; most Vosk models are trained at 16 kHz. Without
    ``--allow-upsample=true`` the recognizer would fail on the first frame.
    """
    options: dict[str, str] = {}
    for line in features_conf.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("--") and "=" in line:
            key, value = line[2:].split("=", 1)
            options[key.strip()] = value.strip()
    try:
        model_rate = float(options.get("sample-frequency", "16000"))
    except ValueError:
        return f"{features_conf}: unreadable --sample-frequency={options['sample-frequency']!r}"
    if model_rate <= 8000:
        return None
    if options.get("allow-upsample", "false").lower() in ("true", "1"):
        return None
    return (
        f"{features_conf} does not allow upsampling (--allow-upsample=true is missing): this "
        f"model expects {model_rate:.0f} Hz audio and cannot decode 8 kHz phone audio. Use a "
        f"model that allows it, e.g. `voicebot models pull {DEFAULT_ASR_MODEL}`"
    )


def piper_voice_problem(onnx: Path) -> str | None:
    """Why ``onnx`` is not a usable Piper voice (model + JSON config), or None."""
    if onnx.suffix != ".onnx":
        return f"{onnx} is not a Piper voice (.onnx file expected)"
    if not onnx.is_file():
        return f"{onnx} does not exist"
    config_path = Path(f"{onnx}.json")
    if not config_path.is_file():
        return f"{onnx} has no {config_path.name} next to it (Piper needs both files)"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        int(config["audio"]["sample_rate"])
        str(config["espeak"]["voice"])
        dict(config["phoneme_id_map"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{config_path} is not a valid Piper voice config ({type(exc).__name__}: {exc})"
    return None


def whisper_model_problem(path: Path) -> str | None:
    if not path.is_dir():
        return f"{path} is not a folder"
    missing = [
        n for n in ("model.bin", "config.json", "tokenizer.json") if not (path / n).is_file()
    ]
    if missing:
        return f"{path} is not a faster-whisper model (missing {', '.join(missing)})"
    return None


def _installed_problem(settings: Settings, entry: ModelEntry) -> str | None:
    folder = model_dir(settings, entry.name)
    if entry.kind == "vosk":
        return vosk_model_problem(folder)
    if entry.kind == "piper":
        return piper_voice_problem(folder / f"{entry.name}.onnx")
    return whisper_model_problem(folder)


# --- what to load -------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    """What an engine should load, and where the choice came from."""

    engine: str  # "vosk" | "whisper" | "piper" | "espeak"
    path: Path | None
    origin: str  # "settings" | "official" | "standin"
    description: str


def resolve_asr(settings: Settings) -> ResolvedModel:
    """The ASR model to load. Raises ModelError if a configured one is broken or none exists."""
    engine = settings.asr.engine
    if settings.asr.model:
        path = Path(settings.asr.model).expanduser()
        problem = vosk_model_problem(path) if engine == "vosk" else whisper_model_problem(path)
        if problem:
            raise ModelError(
                f"ASR model from settings/VOICEBOT_ASR_MODEL is unusable: {problem}. Fix the "
                f"path, or unset it and run `voicebot models pull {DEFAULT_ASR_MODEL}`"
            )
        return ResolvedModel(engine, path, "settings", f"{engine} {path}")
    manifest = load_manifest(manifest_path(settings))
    preference = VOSK_PREFERENCE if engine == "vosk" else WHISPER_PREFERENCE
    for name in preference:
        entry = manifest.get(name)
        if entry is None or not is_installed(settings, name):
            continue
        problem = _installed_problem(settings, entry)
        if problem:
            raise ModelError(
                f"the installed model {name} is broken: {problem}. Run "
                f"`voicebot models pull {name}` again (and `voicebot models verify`)"
            )
        return ResolvedModel(
            entry.kind, model_dir(settings, name), "official", f"{entry.kind} {name}"
        )
    from voicebot.speech.standins import whisper_base_dir

    wanted = DEFAULT_ASR_MODEL if engine == "vosk" else WHISPER_PREFERENCE[0]
    try:
        standin = whisper_base_dir()
    except (ModelError, OSError) as exc:
        raise ModelError(
            f"no ASR model installed: run `voicebot models pull {wanted}` ({exc})"
        ) from None
    log.warning(
        "no official ASR model installed: using the Whisper base stand-in (slower, less "
        "accurate on the phone). Run `voicebot models pull %s`",
        wanted,
    )
    return ResolvedModel("whisper", standin, "standin", "whisper base (stand-in)")


def resolve_tts(settings: Settings) -> ResolvedModel:
    """The voice to load. Raises ModelError if a configured one is broken or none exists."""
    if settings.tts.voice:
        onnx = Path(settings.tts.voice).expanduser()
        problem = piper_voice_problem(onnx)
        if problem:
            raise ModelError(
                f"voice from settings/VOICEBOT_TTS_VOICE is unusable: {problem}. Fix the path, "
                f"or unset it and run `voicebot models pull {DEFAULT_VOICE}`"
            )
        return ResolvedModel("piper", onnx, "settings", f"piper {onnx.stem}")
    manifest = load_manifest(manifest_path(settings))
    for name in VOICE_PREFERENCE:
        entry = manifest.get(name)
        if entry is None or not is_installed(settings, name):
            continue
        problem = _installed_problem(settings, entry)
        if problem:
            raise ModelError(
                f"the installed voice {name} is broken: {problem}. Run "
                f"`voicebot models pull {name}` again"
            )
        onnx = model_dir(settings, name) / f"{name}.onnx"
        return ResolvedModel("piper", onnx, "official", f"piper {name}")
    if shutil.which("espeak-ng") is None:
        raise ModelError(
            f"no voice at all: no Piper voice installed (run `voicebot models pull "
            f"{DEFAULT_VOICE}`) and espeak-ng is missing (apt-get install espeak-ng)"
        )
    log.warning(
        "no Piper voice installed: speaking with the espeak-ng French voice (robotic). "
        "Run `voicebot models pull %s`",
        DEFAULT_VOICE,
    )
    return ResolvedModel(
        "espeak", None, "standin", f"espeak-ng {settings.tts.espeak_voice} (stand-in)"
    )


# --- downloading -------------------------------------------------------------------------------


class Progress:
    """Download progress on stderr: a tqdm bar on a terminal; otherwise (a log, a pipe) one
    line per 10 %, in tqdm's format, since tqdm would redraw its bar with carriage returns."""

    def __init__(
        self, label: str, total: int | None, stream: TextIO | None = None, initial: int = 0
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.initial = initial
        self.done = initial
        self._last_decile = -1
        self._bar = (
            tqdm(
                total=total,
                initial=initial,
                desc=label,
                file=self.stream,
                unit="o",
                unit_scale=True,
                unit_divisor=1024,
                mininterval=0.2,
                dynamic_ncols=True,
            )
            if self.tty
            else None
        )

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self.done)
        elif self.total:
            decile = int(10 * done / self.total)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line(done) + "\n")
        self.done = done

    def _line(self, done: int) -> str:
        return tqdm.format_meter(
            done,
            self.total,
            time.monotonic() - self.started,
            prefix=self.label,
            ascii=True,
            unit="o",
            unit_scale=True,
            unit_divisor=1024,
            initial=self.initial,
        )

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _offline_error(url: str, reason: object) -> ModelError:
    host = urllib.parse.urlsplit(url).netloc
    return ModelError(
        f"cannot reach {host} ({reason}): no network? Already-downloaded parts are kept, run "
        f"the same command again to resume; or copy the models folder from a connected machine. "
        f"/ Impossible de joindre {host} : pas de réseau ? La partie déjà téléchargée est "
        f"conservée ; relancez la même commande pour reprendre."
    )


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    file: ModelFile, url: str, partial: Path, label: str, progress_stream: TextIO | None = None
) -> None:
    """Download ``url`` into ``partial``, resuming what is already there (HTTP Range).

    Raises ModelError on a network failure; the bytes received so far stay in ``partial``.
    """
    have = partial.stat().st_size if partial.exists() else 0
    if file.size is not None and have > file.size:
        partial.unlink()  # longer than the real file: not a prefix of it
        have = 0
    if file.size is not None and have == file.size:
        return
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Range beyond the end: what we have is the whole file (checked by the caller).
            return
        raise ModelError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        raise _offline_error(url, getattr(exc, "reason", exc)) from None
    with response:
        status = getattr(response, "status", 200)
        resuming = bool(have) and status == 206
        if have and not resuming:
            log.info(
                "the server ignored the resume request: downloading %s from the start", file.name
            )
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else file.size
        progress = Progress(label, total, progress_stream, initial=have)
        done = have
        with partial.open("ab" if resuming else "wb") as out:
            try:
                done = _copy_stream(response, out, progress, done)
            except (TimeoutError, OSError, HTTPException) as exc:
                out.flush()
                done = out.tell()
                progress.finish()
                raise ModelError(
                    f"download of {file.name} interrupted after {human_size(done)} ({exc}); run "
                    f"the same command again to resume / téléchargement interrompu : relancez la "
                    f"commande pour reprendre"
                ) from None
        progress.finish()
    if total is not None and done < total:
        raise ModelError(
            f"download of {file.name} interrupted after {human_size(done)} of "
            f"{human_size(total)}; run the same command again to resume / téléchargement "
            f"interrompu : relancez la commande pour reprendre"
        )


def _copy_stream(source: BinaryIO | Any, out: BinaryIO, progress: Progress, done: int) -> int:
    """Copy the response body to the file; on a cut connection the bytes received are kept."""
    while True:
        try:
            chunk = source.read(READ_BYTES)
        except IncompleteRead as exc:
            out.write(exc.partial)
            raise
        if not chunk:
            return done
        out.write(chunk)
        done += len(chunk)
        progress.update(done)


def check_file(file: ModelFile, path: Path) -> None:
    """Size and checksum against the manifest. Raises ModelError on a mismatch."""
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        raise ModelError(f"{file.name}: {size} bytes, expected {file.size}")
    checksum = file.checksum
    if checksum is not None:
        algorithm, expected = checksum
        actual = _file_digest(path, algorithm)
        if actual != expected:
            raise ModelError(
                f"{file.name}: {algorithm} checksum mismatch (expected {expected}, got {actual}): "
                f"the file is corrupt or was replaced by its publisher"
            )
    elif path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelError(f"{file.name}: not valid JSON ({exc})") from None


def _safe_extract(archive: Path, target: Path) -> None:
    """Unpack a zip, refusing absolute paths and '..' (a hostile or broken archive)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            root = target.resolve()
            for member in zipped.infolist():
                destination = (target / member.filename).resolve()
                if not destination.is_relative_to(root):
                    raise ModelError(f"{archive.name}: refusing unsafe path {member.filename!r}")
            zipped.extractall(target)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{archive.name} is not a valid zip archive ({exc})") from None


def _record(folder: Path, entry: ModelEntry) -> None:
    files = {
        str(p.relative_to(folder)): _file_digest(p, "sha256")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != VERIFIED_RECORD
    }
    record = {
        "name": entry.name,
        "kind": entry.kind,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "publisher_checksums": {
            f.name: (f.checksum[0] + ":" + f.checksum[1]) if f.checksum else None
            for f in entry.files
        },
        "sha256": files,
    }
    (folder / VERIFIED_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")


def install(
    settings: Settings,
    entry: ModelEntry,
    base_url: str | None = None,
    progress_stream: TextIO | None = None,
) -> Path:
    """Download, check, unpack and move a model into place. Returns its folder."""
    models_dir = settings.paths.models_dir
    staging = models_dir / STAGING_DIR / entry.name
    staging.mkdir(parents=True, exist_ok=True)
    downloaded: list[Path] = []
    for index, file in enumerate(entry.files, 1):
        url = f"{base_url.rstrip('/')}/{file.name}" if base_url else file.url
        partial = staging / f"{file.name}.partial"
        label = f"{file.name} ({index}/{len(entry.files)})"
        download(file, url, partial, label, progress_stream)
        try:
            check_file(file, partial)
        except ModelError:
            # a corrupt file cannot be resumed: the next attempt starts over
            partial.unlink(missing_ok=True)
            raise
        if file.checksum is None:
            log.warning(
                "%s: the publisher gives no checksum; only its structure was checked", file.name
            )
        final = staging / file.name
        os.replace(partial, final)
        downloaded.append(final)
    content = staging / "content"
    if content.exists():
        shutil.rmtree(content)
    if entry.archive == "zip":
        unpacked = staging / "unpacked"
        if unpacked.exists():
            shutil.rmtree(unpacked)
        unpacked.mkdir()
        _safe_extract(downloaded[0], unpacked)
        tops = [p for p in unpacked.iterdir() if not p.name.startswith("__MACOSX")]
        source = tops[0] if len(tops) == 1 and tops[0].is_dir() else unpacked
        os.replace(source, content)
        shutil.rmtree(unpacked, ignore_errors=True)
    else:
        content.mkdir()
        for path in downloaded:
            os.replace(path, content / path.name)
    problem = {
        "vosk": vosk_model_problem,
        "whisper": whisper_model_problem,
        "piper": lambda folder: piper_voice_problem(folder / f"{entry.name}.onnx"),
    }[entry.kind](content)
    if problem:
        raise ModelError(f"{entry.name} downloaded but unusable: {problem}")
    _record(content, entry)
    target = model_dir(settings, entry.name)
    if target.exists():
        old = models_dir / STAGING_DIR / f"{entry.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(content, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(content, target)  # atomic: the folder appears complete or not at all
    shutil.rmtree(staging, ignore_errors=True)
    return target


# --- the commands -----------------------------------------------------------------------------


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
        elif _file_digest(path, "sha256") != digest:
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
        structural = _installed_problem(settings, entry)
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

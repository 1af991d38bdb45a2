"""Downloading a model: resumable HTTP download, checks, unpacking, atomic install."""

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
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from tqdm import tqdm

from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.speech.models.checks import (
    piper_voice_problem,
    vosk_model_problem,
    whisper_model_problem,
)
from voicebot.speech.models.manifest import (
    STAGING_DIR,
    VERIFIED_RECORD,
    ModelEntry,
    ModelFile,
    model_dir,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # hashing
READ_BYTES = 64 << 10  # network reads: small, so that a cut loses little
HTTP_TIMEOUT_S = 30.0
USER_AGENT = "allonantes-voicebot-models/1"


def human_size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "?"
    size = float(n_bytes)
    for unit in ("o", "Kio", "Mio", "Gio"):
        if size < 1024 or unit == "Gio":
            return f"{size:.0f} {unit}" if unit == "o" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} Gio"


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


def file_digest(path: Path, algorithm: str) -> str:
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
        actual = file_digest(path, algorithm)
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
        str(p.relative_to(folder)): file_digest(p, "sha256")
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

"""The model manager: manifest, `models pull/list/verify` against a local HTTP server, and
what gets loaded (settings, official model, stand-ins)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from voicebot.core.config import Settings
from voicebot.core.errors import ModelError
from voicebot.speech import models
from voicebot.speech.standins import joe_voice_path, vosk_ko_model_dir

# --- a small HTTP server on 127.0.0.1, with Range support and ways to misbehave ------------


@dataclass
class FileServer:
    files: dict[str, bytes]
    cut_after: int | None = None  # close the connection after this many body bytes (once)
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            byte_range = self.headers.get("Range")
            state.requests.append((name, byte_range))
            body = state.files.get(name)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if byte_range and not state.ignore_range:
                start = int(byte_range.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state.cut_after is not None:
                self.wfile.write(payload[: state.cut_after])
                self.wfile.flush()
                state.cut_after = None
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer(files={})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def vosk_like_archive(top: str = "vosk-model-test", allow_upsample: bool = True) -> bytes:
    """A zip laid out like a Vosk model (the downloader's job is the files, not decoding)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{top}/am/final.mdl", os.urandom(400_000))
        archive.writestr(f"{top}/graph/HCLr.fst", os.urandom(200_000))
        archive.writestr(f"{top}/conf/model.conf", "--beam=10.0\n")
        mfcc = "--use-energy=false\n--sample-frequency=16000\n"
        archive.writestr(
            f"{top}/conf/mfcc.conf", mfcc + ("--allow-upsample=true\n" if allow_upsample else "")
        )
        archive.writestr(f"{top}/README", "test model\n")
    return buffer.getvalue()


def write_manifest(folder: Path, entries: dict[str, dict[str, object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.yml"
    path.write_text(yaml.safe_dump({"models": entries}), encoding="utf-8")
    return path


def zip_entry(url: str, body: bytes, sha256: str | None = None) -> dict[str, object]:
    return {
        "kind": "vosk",
        "role": "asr-default",
        "description": "test",
        "archive": "zip",
        "files": [
            {
                "name": "vosk-model-test.zip",
                "url": url,
                "size": len(body),
                "sha256": sha256 or hashlib.sha256(body).hexdigest(),
            }
        ],
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings().replace("paths", models_dir=tmp_path / "models", data_dir=tmp_path / "var")


@pytest.fixture
def archive(server: FileServer, settings: Settings) -> bytes:
    body = vosk_like_archive()
    server.files["vosk-model-test.zip"] = body
    write_manifest(
        settings.paths.models_dir,
        {"vosk-model-test": zip_entry(f"{server.base_url}/vosk-model-test.zip", body)},
    )
    return body


# --- the packaged manifest ------------------------------------------------------------------


def test_packaged_manifest_lists_the_official_models() -> None:
    manifest = models.load_manifest(models.PACKAGED_MANIFEST)
    expected = {
        "vosk-model-small-fr-0.22": "vosk",
        "vosk-model-fr-0.22": "vosk",
        "fr_FR-siwis-medium": "piper",
        "fr_FR-upmc-medium": "piper",
        "fr_FR-tom-medium": "piper",
        "faster-whisper-base": "whisper",
        "faster-whisper-small": "whisper",
    }
    assert {name: manifest[name].kind for name in expected} == expected
    assert manifest[models.DEFAULT_ASR_MODEL].role == "asr-default"
    assert manifest[models.DEFAULT_VOICE].role == "voice-default"
    for entry in manifest.values():
        for file in entry.files:
            assert file.url.startswith("https://"), file.url
            if file.checksum is None:
                # no checksum is only acceptable when the manifest says why
                assert "no" in entry.checksum_note.lower() or "not" in entry.checksum_note.lower()
    for name in ("vosk-model-small-fr-0.22", "vosk-model-fr-0.22"):
        (file,) = manifest[name].files
        assert file.md5 and file.size, name  # alphacephei publishes md5 + size
    for name in ("fr_FR-siwis-medium", "fr_FR-upmc-medium", "fr_FR-tom-medium"):
        onnx, config = manifest[name].files
        assert onnx.name == f"{name}.onnx" and onnx.sha256 and onnx.size
        assert config.name == f"{name}.onnx.json" and config.md5 and config.size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [1, 2]", "top-level 'models:' mapping"),
        ("models:\n  x:\n    kind: kaldi\n    files: []", "models.x.kind"),
        ("models:\n  x:\n    kind: vosk\n    files: []", "models.x.files"),
        (
            "models:\n  x:\n    kind: piper\n    files:\n      - {name: a.onnx, url: 'ftp://h/a'}",
            "url",
        ),
        (
            "models:\n  x:\n    kind: piper\n    files:\n      - {name: a.onnx, url: 'https://h/a'}",
            "give the publisher's sha256 or md5",
        ),
        (
            "models:\n  x:\n    kind: piper\n    files:\n      - {name: a.onnx, url: 'https://h/a', sha256: abc}",
            "64 hexadecimal digits",
        ),
        (
            "models:\n  x:\n    kind: piper\n    files:\n      - {name: ../a.onnx, url: 'https://h/a', checksum: none}",
            "plain file name",
        ),
        ("models: {x: [", "not valid YAML"),
    ],
)
def test_a_broken_manifest_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "manifest.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ModelError, match=message):
        models.load_manifest(path)


# --- pull, list, verify -----------------------------------------------------------------------


def test_pull_downloads_checks_unpacks_and_moves_into_place(
    settings: Settings, server: FileServer, archive: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert models.pull(settings, "vosk-model-test") == 0
    folder = settings.paths.models_dir / "vosk-model-test"
    assert (folder / "am" / "final.mdl").is_file()
    assert (folder / "conf" / "mfcc.conf").is_file()
    assert models.is_installed(settings, "vosk-model-test")
    assert models.vosk_model_problem(folder) is None
    assert not (settings.paths.models_dir / ".staging" / "vosk-model-test").exists()
    with zipfile.ZipFile(io.BytesIO(archive)) as original:
        inside = original.read("vosk-model-test/am/final.mdl")
    assert (folder / "am" / "final.mdl").read_bytes() == inside
    assert "installé" in capsys.readouterr().out

    listing = io.StringIO()
    assert models.list_models(settings, out=listing) == 0
    line = next(row for row in listing.getvalue().splitlines() if "vosk-model-test" in row)
    assert "installé" in line and "(ASR par défaut)" in line
    report = io.StringIO()
    assert models.verify(settings, out=report) == 0
    assert "OK    vosk-model-test" in report.getvalue()
    assert models.pull(settings, "vosk-model-test") == 0  # already there: nothing downloaded
    assert len(server.requests) == 1


def test_pull_refuses_a_checksum_mismatch(settings: Settings, server: FileServer) -> None:
    body = vosk_like_archive()
    server.files["vosk-model-test.zip"] = body
    wrong = hashlib.sha256(b"something else").hexdigest()
    write_manifest(
        settings.paths.models_dir,
        {"vosk-model-test": zip_entry(f"{server.base_url}/vosk-model-test.zip", body, wrong)},
    )
    with pytest.raises(ModelError, match="sha256 checksum mismatch"):
        models.pull(settings, "vosk-model-test")
    assert not (settings.paths.models_dir / "vosk-model-test").exists()
    staging = settings.paths.models_dir / ".staging" / "vosk-model-test"
    assert not (staging / "vosk-model-test.zip.partial").exists()  # a corrupt file is not resumed


def test_an_interrupted_download_resumes_where_it_stopped(
    settings: Settings, server: FileServer, archive: bytes
) -> None:
    server.cut_after = 300_000
    with pytest.raises(ModelError, match=r"interrupted .*run the same command again to resume"):
        models.pull(settings, "vosk-model-test")
    partial = (
        settings.paths.models_dir / ".staging" / "vosk-model-test" / "vosk-model-test.zip.partial"
    )
    kept = partial.stat().st_size
    assert 0 < kept <= 300_000
    assert archive.startswith(partial.read_bytes())
    assert not (settings.paths.models_dir / "vosk-model-test").exists()
    listing = io.StringIO()
    models.list_models(settings, out=listing)
    assert "téléchargement interrompu" in listing.getvalue()

    assert models.pull(settings, "vosk-model-test") == 0
    assert server.requests[-1] == ("vosk-model-test.zip", f"bytes={kept}-")
    assert models.verify(settings, out=io.StringIO()) == 0


def test_a_server_ignoring_the_resume_request_restarts_cleanly(
    settings: Settings, server: FileServer, archive: bytes
) -> None:
    server.cut_after = 200_000
    with pytest.raises(ModelError):
        models.pull(settings, "vosk-model-test")
    server.ignore_range = True  # answers 200 with the whole file
    assert models.pull(settings, "vosk-model-test") == 0
    assert server.requests[-1][1] is not None  # we asked to resume...
    assert models.verify(settings, out=io.StringIO()) == 0  # ...and did not splice two copies


def test_offline_gives_a_clear_message_in_both_languages(
    settings: Settings, archive: bytes
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(ModelError) as raised:
        models.pull(settings, "vosk-model-test", base_url=f"http://127.0.0.1:{closed}")
    message = str(raised.value)
    assert "cannot reach 127.0.0.1" in message and "no network" in message
    assert "Impossible de joindre" in message


def test_base_url_downloads_from_a_mirror(settings: Settings, server: FileServer) -> None:
    body = vosk_like_archive()
    server.files["vosk-model-test.zip"] = body
    write_manifest(
        settings.paths.models_dir,
        {"vosk-model-test": zip_entry("https://publisher.invalid/vosk-model-test.zip", body)},
    )
    assert models.pull(settings, "vosk-model-test", base_url=server.base_url + "/") == 0
    assert server.requests == [("vosk-model-test.zip", None)]


def test_verify_finds_a_damaged_file(settings: Settings, archive: bytes) -> None:
    models.pull(settings, "vosk-model-test")
    damaged = settings.paths.models_dir / "vosk-model-test" / "graph" / "HCLr.fst"
    damaged.write_bytes(b"oops")
    report = io.StringIO()
    assert models.verify(settings, out=report) == 1
    assert "ÉCHEC vosk-model-test" in report.getvalue()
    assert "graph/HCLr.fst has changed" in report.getvalue()
    assert "voicebot models pull vosk-model-test" in report.getvalue()


def test_an_archive_escaping_its_folder_is_refused(settings: Settings, server: FileServer) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as evil:
        evil.writestr("../../escaped.txt", "gotcha")
    body = buffer.getvalue()
    server.files["vosk-model-test.zip"] = body
    write_manifest(
        settings.paths.models_dir,
        {"vosk-model-test": zip_entry(f"{server.base_url}/vosk-model-test.zip", body)},
    )
    with pytest.raises(ModelError, match="unsafe path"):
        models.pull(settings, "vosk-model-test")
    assert not any(p.name == "escaped.txt" for p in settings.paths.models_dir.parent.rglob("*"))


def test_a_model_without_8khz_support_is_refused_at_pull(
    settings: Settings, server: FileServer
) -> None:
    body = vosk_like_archive(allow_upsample=False)
    server.files["vosk-model-test.zip"] = body
    write_manifest(
        settings.paths.models_dir,
        {"vosk-model-test": zip_entry(f"{server.base_url}/vosk-model-test.zip", body)},
    )
    with pytest.raises(ModelError, match="allow-upsample"):
        models.pull(settings, "vosk-model-test")
    assert not (settings.paths.models_dir / "vosk-model-test").exists()


def test_a_piper_voice_pull_keeps_both_files(settings: Settings, server: FileServer) -> None:
    onnx = os.urandom(50_000)
    config = joe_voice_path().with_suffix(".onnx.json").read_bytes()
    server.files.update({"v.onnx": onnx, "v.onnx.json": config})
    entry = {
        "kind": "piper",
        "role": "voice-default",
        "files": [
            {"name": "fr_FR-test-medium.onnx", "url": f"{server.base_url}/v.onnx", "size": len(onnx),
             "sha256": hashlib.sha256(onnx).hexdigest()},
            {"name": "fr_FR-test-medium.onnx.json", "url": f"{server.base_url}/v.onnx.json",
             "size": len(config), "md5": hashlib.md5(config).hexdigest()},  # noqa: S324 — the manifest's md5 field, as upstream publishes it; sha256 is the check
        ],
    }  # fmt: skip
    write_manifest(settings.paths.models_dir, {"fr_FR-test-medium": entry})
    assert models.pull(settings, "fr_FR-test-medium") == 0
    folder = settings.paths.models_dir / "fr_FR-test-medium"
    assert (folder / "fr_FR-test-medium.onnx").read_bytes() == onnx
    assert models.piper_voice_problem(folder / "fr_FR-test-medium.onnx") is None


def test_unknown_model_name(settings: Settings) -> None:
    with pytest.raises(
        ModelError, match=r"unknown model 'vosk-model-en'.*vosk-model-small-fr-0.22"
    ):
        models.pull(settings, "vosk-model-en")


# --- what gets loaded ---------------------------------------------------------------------


def test_explicit_vosk_model_comes_first(settings: Settings) -> None:
    chosen = models.resolve_asr(settings.replace("asr", model=str(vosk_ko_model_dir())))
    assert (chosen.engine, chosen.origin, chosen.path) == ("vosk", "settings", vosk_ko_model_dir())


def test_a_broken_explicit_model_is_an_error_naming_the_fix(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(
        ModelError,
        match=r"holds no Vosk acoustic model.*voicebot models pull vosk-model-small-fr-0.22",
    ):
        models.resolve_asr(settings.replace("asr", model=str(tmp_path)))
    with pytest.raises(ModelError, match=r"VOICEBOT_TTS_VOICE.*no .*onnx.json"):
        lonely = tmp_path / "voice.onnx"
        lonely.write_bytes(b"x")
        models.resolve_tts(settings.replace("tts", voice=str(lonely)))


def test_a_model_refusing_8khz_is_explained(tmp_path: Path) -> None:
    (tmp_path / "am").mkdir()
    (tmp_path / "am" / "final.mdl").write_bytes(b"x")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mfcc.conf").write_text(
        "--sample-frequency=16000\n--allow-downsample=true\n"
    )
    problem = models.vosk_model_problem(tmp_path)
    assert problem is not None
    assert "--allow-upsample=true is missing" in problem and "8 kHz" in problem
    (tmp_path / "conf" / "mfcc.conf").write_text("--sample-frequency=8000\n")
    assert models.vosk_model_problem(tmp_path) is None  # a narrowband model needs no upsampling
    assert models.vosk_model_problem(vosk_ko_model_dir()) is None


def test_the_installed_official_model_comes_next(settings: Settings, server: FileServer) -> None:
    body = vosk_like_archive()
    server.files["z.zip"] = body
    write_manifest(
        settings.paths.models_dir,
        {models.DEFAULT_ASR_MODEL: zip_entry(f"{server.base_url}/z.zip", body)},
    )
    models.pull(settings, models.DEFAULT_ASR_MODEL)
    chosen = models.resolve_asr(settings)
    assert (chosen.engine, chosen.origin) == ("vosk", "official")
    assert chosen.path == settings.paths.models_dir / models.DEFAULT_ASR_MODEL


def test_with_nothing_installed_the_stand_ins_are_used_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="voicebot.speech.models"):
        asr = models.resolve_asr(settings)
        tts = models.resolve_tts(settings)
    assert (asr.engine, asr.origin) == ("whisper", "standin")
    assert asr.path is not None and (asr.path / "model.bin").is_file()
    assert (tts.engine, tts.origin, tts.path) == ("espeak", "standin", None)
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "voicebot models pull vosk-model-small-fr-0.22" in warnings
    assert "voicebot models pull fr_FR-siwis-medium" in warnings


def test_explicit_piper_voice(settings: Settings) -> None:
    chosen = models.resolve_tts(settings.replace("tts", voice=str(joe_voice_path())))
    assert (chosen.engine, chosen.origin, chosen.path) == ("piper", "settings", joe_voice_path())


def test_environment_overrides_reach_the_resolution(tmp_path: Path) -> None:
    from voicebot.core.config import load_settings

    loaded = load_settings(
        environ={
            "VOICEBOT_ASR_MODEL": str(vosk_ko_model_dir()),
            "VOICEBOT_TTS_VOICE": str(joe_voice_path()),
            "VOICEBOT_DATA_DIR": str(tmp_path),
        }
    )
    assert models.resolve_asr(loaded).path == vosk_ko_model_dir()
    assert models.resolve_tts(loaded).path == joe_voice_path()


def test_human_size() -> None:
    assert models.human_size(512) == "512 o"
    assert models.human_size(42_233_323) == "40.3 Mio"
    assert models.human_size(1_523_026_348) == "1.4 Gio"
    assert models.human_size(None) == "?"

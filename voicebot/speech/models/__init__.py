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

The package: ``manifest`` (the manifest, where a model is installed), ``checks`` (is a folder a
usable model), ``resolve`` (what to load), ``download`` (``pull``'s download and install),
``commands`` (``voicebot models list / pull / verify``). Every public name is importable from
``voicebot.speech.models`` itself.
"""

from __future__ import annotations

from voicebot.speech.models.checks import (
    installed_problem,
    piper_voice_problem,
    upsampling_problem,
    vosk_model_problem,
    whisper_model_problem,
)
from voicebot.speech.models.commands import (
    list_models,
    pull,
    verify,
    verify_installed,
)
from voicebot.speech.models.download import (
    CHUNK_BYTES,
    HTTP_TIMEOUT_S,
    READ_BYTES,
    USER_AGENT,
    Progress,
    check_file,
    download,
    file_digest,
    human_size,
    install,
)
from voicebot.speech.models.manifest import (
    DEFAULT_ASR_MODEL,
    DEFAULT_VOICE,
    KINDS,
    MANIFEST_FILE,
    PACKAGED_MANIFEST,
    STAGING_DIR,
    VERIFIED_RECORD,
    ModelEntry,
    ModelFile,
    is_installed,
    load_manifest,
    manifest_path,
    model_dir,
)
from voicebot.speech.models.resolve import (
    VOICE_PREFERENCE,
    VOSK_PREFERENCE,
    WHISPER_PREFERENCE,
    ResolvedModel,
    resolve_asr,
    resolve_tts,
)

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_ASR_MODEL",
    "DEFAULT_VOICE",
    "HTTP_TIMEOUT_S",
    "KINDS",
    "MANIFEST_FILE",
    "PACKAGED_MANIFEST",
    "READ_BYTES",
    "STAGING_DIR",
    "USER_AGENT",
    "VERIFIED_RECORD",
    "VOICE_PREFERENCE",
    "VOSK_PREFERENCE",
    "WHISPER_PREFERENCE",
    "ModelEntry",
    "ModelFile",
    "Progress",
    "ResolvedModel",
    "check_file",
    "download",
    "file_digest",
    "human_size",
    "install",
    "installed_problem",
    "is_installed",
    "list_models",
    "load_manifest",
    "manifest_path",
    "model_dir",
    "piper_voice_problem",
    "pull",
    "resolve_asr",
    "resolve_tts",
    "upsampling_problem",
    "verify",
    "verify_installed",
    "vosk_model_problem",
    "whisper_model_problem",
]

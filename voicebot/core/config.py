"""One validated, immutable settings object.

Defaults are embedded here so that ``make run`` works with no file at all. A YAML file
(``--config`` or ``VOICEBOT_CONFIG``) overrides them, then environment variables override
the file: ``VOICEBOT_<SECTION>_<FIELD>`` for any field (``VOICEBOT_VAD_END_SILENCE_MS=700``),
plus the short aliases documented in ``ENV_ALIASES``. Secrets (AMI password, console
token, the caller-number hashing key) are never read from a settings file: each comes from
the environment (``VOICEBOT_CONSOLE_TOKEN``…), else from a file named by the same variable
with ``_FILE`` (``VOICEBOT_CONSOLE_TOKEN_FILE``), else from systemd's credentials folder
(``$CREDENTIALS_DIRECTORY/console-token``, ``LoadCredential=``; ``SECRET_CREDENTIALS``).
A secret file other users may read or change is refused (``read_secret_file``). The hashing
key's file is read only by the commands that store callers' numbers
(``with_caller_hash_key``); `make setup` creates one outside the repository.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import sysconfig
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from voicebot.core.errors import ConfigError

SHARE_NAME = "allonantes-voicebot"


@dataclass(frozen=True)
class ProjectLayout:
    """Where the bot reads its project files and writes its data.

    In a source checkout (``nlu/domain.yml`` next to the ``voicebot`` package) it is all in
    the checkout, as it always was: ``nlu/``, ``models/`` (manifest, pulled models,
    stand-ins), ``var/`` (records, TTS cache), ``bench-out/``. Installed from the wheel, the
    files it reads (the ``nlu/`` sources, ``models/manifest.yml``, ``deploy/``) are the
    wheel's data files in ``<prefix>/share/allonantes-voicebot/``, and what it writes
    (records, caches, pulled and stand-in models, bench reports) goes to the user's data
    folder, ``${XDG_DATA_HOME:-~/.local/share}/allonantes-voicebot``. The trained Rasa model
    stays in ``nlu/models`` under the root (a venv's share folder is writable)."""

    root: Path  # nlu/, models/manifest.yml, deploy/
    data_dir: Path  # records, TTS cache
    models_dir: Path  # pulled official models, assembled stand-ins
    bench_out_dir: Path  # `voicebot bench` reports
    source_checkout: bool


def user_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``${XDG_DATA_HOME:-$HOME/.local/share}/allonantes-voicebot``: an installed bot's data."""
    env = os.environ if environ is None else environ
    data_home = env.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):  # the XDG spec ignores a relative value
        home = env.get("HOME") or os.path.expanduser("~")
        data_home = os.path.join(home, ".local", "share")
    return Path(data_home) / SHARE_NAME


def install_prefixes() -> list[Path]:
    """Where pip and uv put a wheel's data files: this interpreter's scheme (a venv's root,
    /usr/local…), then the user scheme (``pip install --user``: ~/.local), then sys.prefix."""
    user = sysconfig.get_path("data", sysconfig.get_preferred_scheme("user"))
    found = (sysconfig.get_path("data"), user, sys.prefix)
    return list(dict.fromkeys(Path(p) for p in found))


def installed_share_dir(prefixes: Sequence[Path] | None = None) -> Path:
    """``<prefix>/share/allonantes-voicebot`` of the first prefix that holds the installed
    Rasa project; if none does (a broken install) the first one, so that errors name it."""
    candidates = [p / "share" / SHARE_NAME for p in (prefixes or install_prefixes())]
    for share in candidates:
        if (share / "nlu" / "domain.yml").is_file():
            return share
    return candidates[0]


def project_layout(
    package_parent: Path | None = None,
    prefixes: Sequence[Path] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProjectLayout:
    """The checkout when ``package_parent`` (the folder holding the ``voicebot`` package)
    has ``nlu/domain.yml``, else the installed layout (see ProjectLayout)."""
    parent = Path(__file__).resolve().parents[2] if package_parent is None else package_parent
    if (parent / "nlu" / "domain.yml").is_file():
        return ProjectLayout(parent, parent / "var", parent / "models", parent / "bench-out", True)
    data = user_data_dir(environ)
    share = installed_share_dir(prefixes)
    return ProjectLayout(share, data, data / "models", data / "bench-out", False)


LAYOUT = project_layout()
# The checkout, or the installed share folder: where nlu/ and models/manifest.yml are.
PROJECT_ROOT = LAYOUT.root

# Short names kept stable for operators and scripts.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "VOICEBOT_ASR_MODEL": ("asr", "model"),
    "VOICEBOT_ASR_ENGINE": ("asr", "engine"),
    "VOICEBOT_TTS_VOICE": ("tts", "voice"),
    "VOICEBOT_DATA_DIR": ("paths", "data_dir"),
    "VOICEBOT_DATABASE_URL": ("records", "database_url"),
    "VOICEBOT_AMI_HOST": ("ami", "host"),
    "VOICEBOT_AMI_USERNAME": ("ami", "username"),
    "VOICEBOT_CALLER_HASH_KEY_FILE": ("records", "caller_hash_key_file"),
}
# Secrets: never in a settings file. The environment, else the file named by the variable
# with "_FILE", else systemd's credential of that name (SECRET_CREDENTIALS).
SECRET_ENV: dict[str, tuple[str, str]] = {
    "VOICEBOT_AMI_SECRET": ("ami", "secret"),
    "VOICEBOT_CONSOLE_TOKEN": ("console", "token"),
    "VOICEBOT_CALLER_HASH_KEY": ("records", "caller_hash_key"),
}
# The credential names in $CREDENTIALS_DIRECTORY (the unit's LoadCredential=NAME:/path).
SECRET_CREDENTIALS: dict[str, str] = {
    "VOICEBOT_AMI_SECRET": "ami-secret",
    "VOICEBOT_CONSOLE_TOKEN": "console-token",
    "VOICEBOT_CALLER_HASH_KEY": "caller-hash-key",
}


@dataclass(frozen=True)
class PathSettings:
    nlu_dir: Path = PROJECT_ROOT / "nlu"
    models_dir: Path = LAYOUT.models_dir
    data_dir: Path = LAYOUT.data_dir


@dataclass(frozen=True)
class AsrSettings:
    engine: str = "vosk"  # "vosk" (streaming, cheap) or "whisper" (more accurate, costlier)
    model: str = ""  # a model directory; empty = the installed official model, else a stand-in
    max_utterance_s: float = 15.0
    whisper_threads: int = 2
    whisper_beam_size: int = 1
    whisper_workers: int = 1  # CTranslate2 replicas decoding in parallel (each whisper_threads)
    # Vosk recognizers are kept between utterances and calls (a new one is several times
    # slower on its first utterances); an utterance holds one from the caller's first word to
    # its final result. This many are warmed after start-up on the bot's prompts (in the
    # background, one at a time: the server answers meanwhile), at most idle_recognizers
    # wait. As many as the calls a server carries at its peak: with 4 warm, 12 calls gave a
    # response p95 of 1.1 s (8 first turns on new recognizers), with 12 warm 0.33 s
    # (docs/benchmarks.md). A recognizer grows with what it hears (~75 MB after 12 s of
    # speech, more with every new sentence): once it has heard recognizer_max_audio_s it is
    # retired when it is given back and its memory freed.
    warm_recognizers: int = 12
    # Audio goes to a Vosk recognizer in chunks of this many ms (a multiple of 20): partial
    # transcripts come this often; the end of an utterance flushes what waits.
    vosk_chunk_ms: int = 100
    # The recognizer closes the utterance when the caller's pause is this many ms short of
    # the silence that ends the turn (never before 100 ms of pause): its final result, the
    # costliest step of a turn (Vosk: 46 ms of CPU p50, 97 ms p95, idle; several times that
    # on a loaded server), is then computed during the pause and ready when the turn ends.
    # If the caller speaks again, the rest is a new segment of the same utterance. 0: only
    # when the turn ends. Whisper decodes the whole utterance at the end and ignores this.
    settle_lead_ms: int = 450
    idle_recognizers: int = 12
    # Memory against latency: a retired recognizer's replacement is warm on the bot's
    # prompts only, and slower on callers' sentences until it has heard some. At 12 calls for
    # 7 min: 120 s kept the server flat (56 MB per extra call) with response p95 ~0.5 s after
    # retirements; 300 s held p95 82 ms at ~75 MB per extra call (docs/benchmarks.md).
    recognizer_max_audio_s: float = 120.0

    def validate(self) -> None:
        if self.engine not in ("vosk", "whisper"):
            raise ValueError(f"engine must be 'vosk' or 'whisper', not {self.engine!r}")
        _positive(max_utterance_s=self.max_utterance_s, whisper_threads=self.whisper_threads)
        _positive(whisper_beam_size=self.whisper_beam_size, whisper_workers=self.whisper_workers)
        _positive(recognizer_max_audio_s=self.recognizer_max_audio_s)
        if not 0 <= self.settle_lead_ms <= 5000:
            raise ValueError(f"settle_lead_ms must be from 0 to 5000, not {self.settle_lead_ms}")
        if not 20 <= self.vosk_chunk_ms <= 1000 or self.vosk_chunk_ms % 20:
            raise ValueError(
                f"vosk_chunk_ms must be a multiple of 20 from 20 to 1000, not {self.vosk_chunk_ms}"
            )
        if not 0 <= self.warm_recognizers <= self.idle_recognizers:
            raise ValueError(
                "warm_recognizers must be between 0 and idle_recognizers "
                f"({self.idle_recognizers}), not {self.warm_recognizers}"
            )


@dataclass(frozen=True)
class TtsSettings:
    voice: str = ""  # a Piper .onnx file; empty = the installed official voice, else espeak-ng
    volume: float = 0.7  # Piper peak-normalises each sentence: scale it down to phone levels
    length_scale: float = 1.0
    espeak_voice: str = "fr"

    def validate(self) -> None:
        if not 0.0 < self.volume <= 1.0:
            raise ValueError(f"volume must be in (0, 1], not {self.volume}")
        _positive(length_scale=self.length_scale)


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    barge_in_threshold: float = 0.8
    start_speech_ms: int = 100
    end_silence_ms: int = 650
    # Loud voiced speech needed to interrupt the bot: on the French prompts one-syllable
    # words ("non", "un", "deux", "seize") add up to 140-420 ms of it with Silero's 8 kHz
    # branch, "au revoir" 740 ms, so 460 ms lets the short ones through without a barge-in
    # (docs/benchmarks.md, "The VAD on onnxruntime").
    barge_in_ms: int = 460
    barge_in_min_dbfs: float = -40.0  # quieter frames (the bot's echo) never count for barge-in
    preroll_ms: int = 300
    # Windows quieter than this are silence without asking Silero: it costs ~1 ms of CPU per
    # 32 ms window, the largest per-call cost on the event loop, and an idle line or a
    # listening caller is mostly below it. Phone speech sits near -26 dBFS; -inf disables.
    floor_dbfs: float = -55.0

    def validate(self) -> None:
        for name in ("threshold", "barge_in_threshold"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        _positive(start_speech_ms=self.start_speech_ms, end_silence_ms=self.end_silence_ms)
        _positive(barge_in_ms=self.barge_in_ms)
        for name in ("barge_in_min_dbfs", "floor_dbfs"):
            if getattr(self, name) > 0:
                raise ValueError(f"{name} is in dBFS (<= 0), not {getattr(self, name)}")


@dataclass(frozen=True)
class TurnSettings:
    """When a silence ends the caller's turn, from what they said (voicebot.call.turn_end).
    Published with the other rules of the algorithm: the README's table shows them."""

    # A request the NLU reads as complete, with at least this confidence, ends after
    # complete_silence_ms; a yes/no answer to a question the bot asked, after
    # closed_answer_silence_ms; a sentence left hanging (« je voudrais… », « de », « euh »)
    # waits unfinished_silence_ms. When the words say neither, the voice does
    # (voicebot.speech.intonation): a last pitch fall_semitones or more below the caller's
    # median ends after fallen_silence_ms; one at held_semitones or above (the voice held
    # up, as before more words) waits held_silence_ms; anything else waits
    # vad.end_silence_ms. Calibrated with `python -m voicebot.tools.turn_eval`.
    enabled: bool = True
    complete_confidence: float = 0.85
    complete_silence_ms: int = 300
    closed_answer_silence_ms: int = 250
    unfinished_silence_ms: int = 1200
    fall_semitones: float = 4.0
    fallen_silence_ms: int = 300
    held_semitones: float = 0.0
    held_silence_ms: int = 900

    def validate(self) -> None:
        if not 0.0 < self.complete_confidence <= 1.0:
            raise ValueError(
                f"complete_confidence must be in (0, 1], not {self.complete_confidence}"
            )
        _positive(
            complete_silence_ms=self.complete_silence_ms,
            closed_answer_silence_ms=self.closed_answer_silence_ms,
            unfinished_silence_ms=self.unfinished_silence_ms,
            fallen_silence_ms=self.fallen_silence_ms,
            held_silence_ms=self.held_silence_ms,
        )
        if self.fall_semitones <= 0:
            raise ValueError(f"fall_semitones must be > 0, not {self.fall_semitones}")
        if self.held_semitones <= -self.fall_semitones:
            raise ValueError(
                f"held_semitones ({self.held_semitones}) must be above -fall_semitones "
                f"({-self.fall_semitones}): a pitch cannot both have fallen and held"
            )


@dataclass(frozen=True)
class DialogueSettings:
    model: str = ""  # a trained Rasa model archive; empty = newest under nlu/models
    # The NLU fallback threshold lives in nlu/config.yml (FallbackClassifier): it is part of
    # the trained model and calibrated on held-out data (scripts/calibrate_fallback.py).
    # `voicebot train` keeps a new model only if no intent's F1 on the test sets (clean or
    # noisy) drops by more than this many points (of percentage) below the current model's.
    gate_max_f1_drop: float = 2.0
    # The console's « Améliorer le robot » lists the caller sentences the bot understood with
    # a confidence below the fallback threshold plus this margin (besides those it did not
    # understand at all): a guess barely above the threshold is worth a trainer's look.
    review_confidence_margin: float = 0.15
    # Rasa answers from a process of its own (voicebot.dialogue.process): its ~20 ms of
    # Python per turn then never holds the calls' audio loop. False: in the calls' process
    # (one process less, ~1 GB; for a machine that takes few calls).
    own_process: bool = True

    def validate(self) -> None:
        if not 0 <= self.gate_max_f1_drop <= 100:
            raise ValueError(
                f"gate_max_f1_drop must be between 0 and 100 points, not {self.gate_max_f1_drop}"
            )
        if not 0 <= self.review_confidence_margin <= 1:
            raise ValueError(
                "review_confidence_margin is a confidence between 0 and 1, "
                f"not {self.review_confidence_margin}"
            )


SILENCE_ACTIONS = ("hangup", "transfer", "hangup_if_answered")


@dataclass(frozen=True)
class PolicySettings:
    """When the bot hands the caller to a human. Published: these are the algorithm's rules."""

    max_consecutive_fallbacks: int = 2
    min_asr_confidence: float = 0.45
    max_low_confidence_turns: int = 2
    max_call_seconds: int = 300
    silence_prompt_s: float = 8.0
    silence_prompts_before_end: int = 2
    # After the last « Êtes-vous toujours là ? »: "hangup" (goodbye, then Asterisk hangs up),
    # "transfer" (to an operator), or "hangup_if_answered": hang up when the bot has already
    # answered the caller, otherwise transfer — a silent line may be a bad line or a caller
    # who cannot speak, and nobody should be left without a person.
    silence_action: str = "hangup_if_answered"

    def __post_init__(self) -> None:
        if self.silence_action not in SILENCE_ACTIONS:
            raise ValueError(
                f"silence_action must be one of {', '.join(SILENCE_ACTIONS)}, "
                f"not {self.silence_action!r}"
            )


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    audiosocket_port: int = 9092
    websocket_port: int = 9093
    http_port: int = 8080
    # Engine thread pool size; 0 = one per core, at least 2 (voicebot.call.runtime.make_executor
    # says why).
    workers: int = 0
    shutdown_grace_s: float = 10.0
    # SCHED_RR priority of the event loop's thread, which paces every call's audio
    # (voicebot.core.realtime); 0 = normal priority.
    audio_priority: int = 10

    def validate(self) -> None:
        if not 0 <= self.audio_priority <= 99:
            raise ValueError(
                f"audio_priority is a SCHED_RR priority from 1 to 99, or 0 for normal "
                f"priority, not {self.audio_priority}"
            )


@dataclass(frozen=True)
class AmiSettings:
    host: str = ""  # empty = no AMI (handoff still happens; context is then lost)
    port: int = 5038
    username: str = "voicebot"
    secret: str = ""
    ping_interval_s: float = 10.0
    reconnect_max_s: float = 30.0


@dataclass(frozen=True)
class RecordsSettings:
    database_url: str = ""  # empty = SQLite under data_dir
    retention_days: int = 30
    caller_hash_key: str = ""  # VOICEBOT_CALLER_HASH_KEY; empty = read caller_hash_key_file
    caller_hash_key_file: str = ""  # empty = default_caller_hash_key_file()
    # Several bot hosts on one PostgreSQL (ignored with SQLite): this instance's name in the
    # hosts table and in each call record (empty = "<machine name>-<process id>": a restarted
    # instance is a new host, so the calls its previous life held are marked interrupted),
    # its heartbeat, and how long without one before the other hosts declare it dead.
    host_id: str = ""
    heartbeat_s: float = 2.0
    dead_after_s: float = 8.0

    def validate(self) -> None:
        _positive(heartbeat_s=self.heartbeat_s, dead_after_s=self.dead_after_s)
        if self.dead_after_s < 2 * self.heartbeat_s:
            raise ValueError("records.dead_after_s must be at least twice records.heartbeat_s")
        if len(self.host_id) > 64:
            raise ValueError("records.host_id: 64 characters at most")


@dataclass(frozen=True)
class ConsoleSettings:
    token: str = ""
    # The address browsers use when a TLS-terminating reverse proxy serves the console
    # ("https://console.example.fr", no path): pages, forms and WebSockets from that origin are
    # accepted besides the server's own, and an https one makes the login cookie Secure.
    # Empty: the server's own address only (and Secure only when the server itself does TLS).
    public_origin: str = ""

    def validate(self) -> None:
        origin = self.public_origin
        if not origin:
            return
        scheme, _, rest = origin.partition("://")
        if (
            scheme not in ("http", "https")
            or not rest
            or any(c in rest for c in "/?#@ \t")
            or origin != origin.lower()
        ):
            raise ValueError(
                "public_origin must be scheme://host[:port] in lower case, no path "
                f"(as a browser writes Origin), not {origin!r}"
            )


@dataclass(frozen=True)
class ReportSettings:
    """The ROI report (``voicebot report``, the console's « Tableau de bord »)."""

    # An operator's average time for one call (talk and wrap-up): each call the bot resolved
    # (net of repeat calls) is counted as this much operator time saved.
    operator_handling_s: float = 240.0
    # A resolved call is not counted as resolved when the same (hashed) number calls again
    # within this many hours after it ended.
    repeat_window_h: float = 24.0
    # Days, hours, weekdays and weeks of the report are those of this time zone.
    timezone: str = "Europe/Paris"

    def validate(self) -> None:
        _positive(
            operator_handling_s=self.operator_handling_s, repeat_window_h=self.repeat_window_h
        )
        if self.operator_handling_s > 86400:
            raise ValueError(
                f"operator_handling_s is in seconds (at most a day), not {self.operator_handling_s}"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone must be a time zone name such as Europe/Paris, not {self.timezone!r}"
            ) from None


_PHONE_CHARACTERS = frozenset("0123456789 +.-()")


@dataclass(frozen=True)
class TransparencySettings:
    """The public algorithm card (``/transparence``, ``voicebot transparence``): who answers
    the public's questions and data requests, and where evaluation reports are kept.

    The defaults are AlloNantes's; a deployment overrides them in its settings file
    (``transparency:`` section) or with ``VOICEBOT_TRANSPARENCY_<FIELD>``."""

    service_name: str = "AlloNantes"
    organisation: str = "Ville de Nantes et Nantes Métropole"
    contact_name: str = "AlloNantes, l'accueil téléphonique de la Ville et de la Métropole"
    contact_phone: str = "02 40 41 9000"
    contact_postal: str = (
        "Ville de Nantes — AlloNantes, 2 rue de l'Hôtel de Ville, 44094 Nantes Cedex 1"
    )
    contact_online: str = "https://metropole.nantes.fr"
    # `voicebot asr eval --json` reports saved here are shown (the newest); empty = data_dir/evaluations
    evaluation_dir: str = ""

    def validate(self) -> None:
        for name in ("service_name", "organisation", "contact_name", "contact_phone"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty: the public needs someone to ask")
        phone = self.contact_phone
        if not set(phone) <= _PHONE_CHARACTERS or sum(c.isdigit() for c in phone) < 3:
            raise ValueError(f"contact_phone must be a phone number, not {phone!r}")
        if not self.contact_postal.strip() and not self.contact_online.strip():
            raise ValueError("give contact_postal or contact_online: a channel besides the phone")
        online = self.contact_online.strip()
        if online and (not online.startswith(("https://", "http://")) or " " in online):
            raise ValueError(f"contact_online must be an http(s) address, not {online!r}")


@dataclass(frozen=True)
class Settings:
    paths: PathSettings = field(default_factory=PathSettings)
    asr: AsrSettings = field(default_factory=AsrSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    turn: TurnSettings = field(default_factory=TurnSettings)
    dialogue: DialogueSettings = field(default_factory=DialogueSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    records: RecordsSettings = field(default_factory=RecordsSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    transparency: TransparencySettings = field(default_factory=TransparencySettings)
    report: ReportSettings = field(default_factory=ReportSettings)

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some fields of one section changed (validated like a load)."""
        current = getattr(self, section)
        updated = _build_section(
            section, type(current), {**_as_dict(current), **changes}, "override"
        )
        return dataclasses.replace(self, **{section: updated})


CALLER_HASH_KEY_FILE_NAME = Path("allonantes-voicebot") / "caller-hash.key"


def default_caller_hash_key_file(environ: Mapping[str, str] | None = None) -> Path:
    """``${XDG_CONFIG_HOME:-$HOME/.config}/allonantes-voicebot/caller-hash.key``: where
    `make setup` (scripts/caller-hash-key.sh) writes the key, outside the repository so that
    it is never committed nor copied with the code."""
    env = os.environ if environ is None else environ
    config_home = env.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config_home):  # the XDG spec ignores a relative value
        home = env.get("HOME") or os.path.expanduser("~")
        config_home = os.path.join(home, ".config")
    return Path(config_home) / CALLER_HASH_KEY_FILE_NAME


def caller_hash_key_file(settings: Settings, environ: Mapping[str, str] | None = None) -> Path:
    """records.caller_hash_key_file (VOICEBOT_CALLER_HASH_KEY_FILE), else systemd's credential
    ``caller-hash-key`` when the service has one, else default_caller_hash_key_file."""
    configured = settings.records.caller_hash_key_file
    if configured:
        return Path(os.path.expanduser(configured))
    credential = credential_file("VOICEBOT_CALLER_HASH_KEY", environ)
    if credential is not None:
        return credential
    return default_caller_hash_key_file(environ)


def credential_file(variable: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """systemd's credential for the secret ``variable`` (``$CREDENTIALS_DIRECTORY/<name>``,
    LoadCredential=), when the service was given one; None otherwise."""
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if not os.path.isabs(directory):
        return None
    path = Path(directory) / SECRET_CREDENTIALS[variable]
    return path if path.exists() else None


def read_secret_file(
    path: Path,
    what: str,
    *,
    missing: str = "",
    empty: str = "",
    systemd_credential: bool = False,
) -> str:
    """The secret in ``path``, as written (surrounding whitespace aside). Raises ConfigError
    naming the file and the fix. ``what`` names the secret ("console token file");
    ``missing`` and ``empty`` replace the default advice for those two cases.

    A file other users may read, or change, is refused: whoever reads the console token
    drives the console, whoever reads the AMI secret drives Asterisk, and whoever reads the
    caller hash key can hash every phone number and find a caller in the records. Only its
    owner may have any access (0600 or 0400). ``systemd_credential``: a file of
    ``$CREDENTIALS_DIRECTORY``, a folder systemd keeps for this service alone, where it may
    grant the service's user read access by an ACL, which shows in the mode as the group's
    read bit: there only the others' bits and the group's write bit are refused."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(missing or f"the {what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the {what} {path} is not a regular file")
    if info.st_mode & (0o027 if systemd_credential else 0o077):
        raise ConfigError(
            f"the {what} {path} is open to other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}` "
            "(owned by the user the bot runs as)"
        )
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"cannot read the {what} {path}: {reason}") from None
    if not secret:
        raise ConfigError(f"the {what} {path} is empty" + (f": {empty}" if empty else ""))
    return secret


def read_caller_hash_key_file(path: Path, *, systemd_credential: bool = False) -> str:
    """The key in ``path``, as written (surrounding whitespace aside). Raises ConfigError."""
    return read_secret_file(
        path,
        "caller hash key file",
        systemd_credential=systemd_credential,
        missing=(
            f"no key to hash callers' numbers: run `make setup` (it creates {path}), or set "
            "VOICEBOT_CALLER_HASH_KEY in the environment (a deployment: the service's "
            "LoadCredential=caller-hash-key or EnvironmentFile); VOICEBOT_CALLER_HASH_KEY_FILE "
            "names another key file"
        ),
        empty=(
            "remove it and run `make setup` for a new key (past callers will no longer be "
            "recognised), or set VOICEBOT_CALLER_HASH_KEY"
        ),
    )


def _secrets_from_files(environ: Mapping[str, str]) -> dict[str, tuple[str, str, str]]:
    """The AMI secret and the console token the environment does not hold, read from
    ``<VARIABLE>_FILE`` or systemd's credential: variable → (section, field, secret). The
    caller hash key is not read here: only the commands that store numbers need it
    (``with_caller_hash_key``), and its ``_FILE`` variable is a setting."""
    found: dict[str, tuple[str, str, str]] = {}
    for variable, (section, key) in SECRET_ENV.items():
        if environ.get(variable) or variable == "VOICEBOT_CALLER_HASH_KEY":
            continue
        what = f"{variable.removeprefix('VOICEBOT_').lower().replace('_', ' ')} file"
        named = environ.get(f"{variable}_FILE", "")
        if named:
            secret = read_secret_file(Path(os.path.expanduser(named)), what)
        else:
            credential = credential_file(variable, environ)
            if credential is None:
                continue
            secret = read_secret_file(credential, what, systemd_credential=True)
        found[variable] = (section, key, secret)
    return found


def with_caller_hash_key(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings with ``records.caller_hash_key`` set: VOICEBOT_CALLER_HASH_KEY (already
    in the settings when they were loaded), else the key file (VOICEBOT_CALLER_HASH_KEY_FILE,
    else default_caller_hash_key_file). For the commands that store callers' numbers
    (`voicebot serve`, `voicebot run`); raises ConfigError saying what to do. Without a key
    no number could be recorded, and an empty HMAC key would leave a plain hash of a phone
    number, which anyone can reverse by trying every number."""
    if settings.records.caller_hash_key:
        return settings
    path = caller_hash_key_file(settings, environ)
    credential = path == credential_file("VOICEBOT_CALLER_HASH_KEY", environ)
    key = read_caller_hash_key_file(path, systemd_credential=credential)
    return settings.replace("records", caller_hash_key=key)


def _positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, not {value}")


def _as_dict(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}


_CONTAINERS = (dict, list, set, tuple)
# PyYAML's scanner is quadratic in the depth of [ ] and { } (2,000 levels: seconds).
MAX_YAML_NESTING = 100


def yaml_nesting(text: str) -> int:
    """The deepest [ ] / { } nesting in YAML text (brackets in strings count too: an upper
    bound, far above any real file)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    return deepest


def _coerce(value: Any, target: Any, where: str) -> Any:
    """Convert a YAML or environment value to the field's declared type."""
    if isinstance(value, _CONTAINERS):  # never printed: YAML aliases can make it enormous
        raise ConfigError(f"{where}: expected a single value, got {type(value).__name__}")
    if value is None:  # `host:` with nothing after it: YAML reads null, never the text "None"
        if target is str:
            return ""  # empty text is "not set" for every text setting
        raise ConfigError(f"{where}: no value (leave the line out to keep the default)")
    if target is Path:
        return Path(os.path.expanduser(str(value)))
    if target is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on", "oui"):
            return True
        if text in ("0", "false", "no", "off", "non", ""):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if target in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return target(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if target is str:
        return str(value)
    raise ConfigError(f"{where}: unsupported setting type {target}")


def _build_section(name: str, cls: type, raw: Mapping[str, Any], origin: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown setting {name}.{unknown[0]} (known: {', '.join(sorted(known))})"
        )
    values = {
        key: _coerce(value, hints[key], f"{origin}: {name}.{key}") for key, value in raw.items()
    }
    try:
        section = cls(**values)
        validate = getattr(section, "validate", None)
        if validate is not None:
            validate()
    except ValueError as exc:
        raise ConfigError(f"{origin}: {name}: {exc}") from None
    return section


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the YAML file (if any), then the environment. Raises ConfigError."""
    env = os.environ if environ is None else environ
    if path is None and env.get("VOICEBOT_CONFIG"):
        path = Path(env["VOICEBOT_CONFIG"])
    layered: dict[str, dict[str, Any]] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
            if yaml_nesting(text) > MAX_YAML_NESTING:
                raise RecursionError  # PyYAML takes seconds, then exceeds Python's stack
            loaded = yaml.safe_load(text) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"settings file {path} is not UTF-8 text") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"settings file {path} is not valid YAML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"settings file {path}: values nested too deeply") from None
        except ValueError as exc:  # a value YAML cannot build, such as the date 2026-02-30
            raise ConfigError(f"settings file {path} holds an invalid value: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"settings file {path} must hold a mapping of sections")
        for section, values in loaded.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: section {section!r} must be a mapping")
            layered[str(section)] = dict(values)

    sections = {f.name: f for f in dataclasses.fields(Settings)}
    for name in layered:
        if name not in sections:
            raise ConfigError(f"{origin}: unknown section {name!r} (known: {', '.join(sections)})")
    for section, key in SECRET_ENV.values():
        if key in layered.get(section, {}):
            raise ConfigError(
                f"{origin}: {section}.{key} is a secret: set it in the environment, not in a file"
            )

    for variable, value in env.items():
        if not variable.startswith("VOICEBOT_") or variable == "VOICEBOT_CONFIG":
            continue
        target = ENV_ALIASES.get(variable) or SECRET_ENV.get(variable)
        if target is None:
            target = _generic_env_target(variable, sections)
        if target is not None:
            layered.setdefault(target[0], {})[target[1]] = value
    for section, key, secret in _secrets_from_files(env).values():
        layered.setdefault(section, {})[key] = secret

    built = {
        name: _build_section(
            name,
            _section_class(f),
            layered.get(name, {}),
            origin if name in layered else "defaults",
        )
        for name, f in sections.items()
    }
    return Settings(**built)


def _section_class(f: dataclasses.Field[Any]) -> type:
    hints = typing.get_type_hints(Settings)
    cls = hints[f.name]
    assert isinstance(cls, type) and not isinstance(cls, types.GenericAlias)  # noqa: S101 — the Settings class's own annotations; narrows the type
    return cls


def _generic_env_target(
    variable: str, sections: Mapping[str, dataclasses.Field[Any]]
) -> tuple[str, str] | None:
    rest = variable[len("VOICEBOT_") :].lower()
    for name, f in sections.items():
        prefix = name + "_"
        if rest.startswith(prefix):
            key = rest[len(prefix) :]
            if key in {g.name for g in dataclasses.fields(_section_class(f))}:
                return (name, key)
    return None

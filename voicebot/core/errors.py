"""The project's small exception hierarchy.

Every error a user can meet derives from ``VoicebotError`` and carries a message in
plain words (what is wrong, and where possible the command that fixes it).
"""

from __future__ import annotations


class VoicebotError(Exception):
    """Base class of every error the voicebot raises on purpose."""


class ConfigError(VoicebotError):
    """The settings file or an environment variable holds an invalid value."""


class ModelError(VoicebotError):
    """A model (ASR, TTS, NLU) is missing, incomplete or unreadable."""


class NluDataError(VoicebotError):
    """A Rasa training or test file under nlu/ is malformed; names the file."""


class GateRefusedError(VoicebotError):
    """A newly trained model was refused by the gate: it would have made the bot worse."""


class KnowledgeBaseError(VoicebotError):
    """A knowledge-base file is malformed; names the file, line and field."""


class AudioInputError(VoicebotError):
    """Audio given to the bot (a WAV file, a device) cannot be used."""


class ProtocolError(VoicebotError):
    """A peer (Asterisk, a browser) sent bytes that break its protocol."""


class CallError(VoicebotError):
    """A failure inside one call: that call is handed to a human, nothing else is affected."""

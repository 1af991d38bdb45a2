"""Rasa in this process: quiet logs, and its start-up cost apart from loading a model."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_rasa() -> None:
    """Rasa's structured logs print every debug line unless configured: keep warnings only.

    Rasa and its dependencies also emit deprecation warnings on import that mean nothing to
    an operator or a trainer: those are silenced too (other warnings still show).
    """
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(rasa|tensorflow|keras)")
    from rasa.utils.log_utils import configure_structlog

    root = logging.getLogger()
    level = root.level
    configure_structlog(logging.WARNING)
    root.setLevel(level)  # Rasa lowers the whole process to WARNING: keep the bot's own logs


def preload_rasa() -> None:
    """Import Rasa's agent (TensorFlow start-up: seconds), so that it can be timed apart
    from loading a model (scripts/bench_nlu.py)."""
    import rasa.core.agent  # noqa: F401

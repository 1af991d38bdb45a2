"""AlloNantes voicebot: an offline French telephony assistant (Asterisk, Vosk, Rasa, Piper)."""

__version__ = "0.1.0"

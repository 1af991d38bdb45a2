"""Speech engines: VAD, ASR (Vosk, Whisper), TTS (Piper, espeak-ng), French text for speech, models."""

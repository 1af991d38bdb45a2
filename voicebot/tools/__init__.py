"""Tools around the bot: offline call simulation, microphone calls, ASR evaluation, the benchmark."""

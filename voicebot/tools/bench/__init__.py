"""`voicebot bench`: how fast the bot answers and how many calls one server holds.

The benchmark starts a `voicebot serve --no-web` as a subprocess on free loopback ports (or
targets running servers: ``--target host:port``, repeated for several, the calls spread
round-robin: call i on target i mod T), places N concurrent calls through the Asterisk emulator
(telephony/emulator: the process boundary, where Asterisk would be) and measures everything
from the caller's side, on the emulator's clock:

* each caller streams real-time audio (one 20 ms frame every 20 ms, speech or silence), and
  talks in realistic turns: French questions made with espeak-ng, real French prompts from
  asterisk-core-sounds-fr-wav, pauses, a barge-in over the greeting and another over a
  reply, and a DTMF key;
* **endpoint wait**: the VAD's last voiced frame → its end-of-speech decision, in stream
  time. After each run the bench replays every call's exact caller audio through the
  project's own Silero VAD (its scores depend on all the audio before, so only the whole
  call gives the server's frame) and finds the frame on which the server decided;
* **response latency**: that decision frame (or the DTMF key) sent → first non-silent bot
  frame heard; **turn gap**: the last voiced caller frame → the same bot frame. Both
  include the server's receive path and the TTS audio's own leading silence: what a caller
  hears;
* **per stage** (ASR final, NLU, TTS first audio) from the call records the server writes
  anyway (voicebot.records.store): the caller turn is stored when the ASR final is ready, the bot
  turn when the dialogue has answered. No hook in the server;
* **pacing**: the time every bot frame reached the caller (its arrival over AudioSocket; its
  playout from chan_websocket's queue). An *underrun* is a frame more than one frame plus
  ``UNDERRUN_TOLERANCE_S`` after the previous one (a hole the caller hears). The bench's own
  event loop is watched too: a late frame fully explained by a stall of the bench itself is
  counted apart, as a client-side underrun;
* **CPU and RSS** of each server process visible from this machine (its espeak-ng children
  included; the bench's own server, or the process listening on a local target's port), its
  event loop's thread apart, and the whole machine's CPU, sampled with psutil. A server on
  another machine is listed as not visible, with its calls, underruns and response p95 only.
  The run's ``server`` figures are all visible servers together (sums); ``servers`` lists each.
  With several targets the per-stage split reads the settings' records database: one shared
  PostgreSQL holds every host's calls.

``--find-capacity`` climbs CAPACITY_STEPS until the p95 turn gap exceeds 1 s or a
server-side underrun appears, and reports the largest N that held. Every run writes a
markdown report, results.json and PNG plots to the output folder (bench-out/<time> by
default). Exit codes: cli.py.

The modules, in the order a run uses them:

* ``script``: what the callers say and how they behave; ``clips``: their audio, analysed by
  the project's VAD;
* ``lines``: the emulated AudioSocket and chan_websocket lines, and the line noise;
  ``call``: one emulated call; ``traffic``: N concurrent calls (``CallRunner``);
* ``server``: the `voicebot serve` the bench starts; ``targets``: the ``--target`` servers
  and the round-robin; ``watch``: each server's CPU and RSS, the machine's;
* ``turns``: every turn measured after the calls (the VAD replay); ``underruns``: the bot
  audio's pacing; ``records``: the per-stage split from the call records; ``summary``: one
  run's figures;
* ``verdict``: the targets and the capacity criterion;
* ``run``: a whole run (warm-up, capacity steps, the result); ``report`` and ``plots``: its
  files; ``cli``: `voicebot bench` (``run_bench``);
* ``speech``: the speech engines alone, without a call (``python -m voicebot.tools.bench.speech``).
* ``soak``: N calls kept up for half an hour, the server's memory and open files sampled and
  their trend judged (``scripts/soak.py``).
"""

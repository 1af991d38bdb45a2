// "Appeler AlloNantes": the browser as a telephone. The microphone goes to the server as
// 16-bit PCM at this page's audio rate (announced first); the bot's 8 kHz audio comes back
// and is played through Web Audio, which resamples it.
"use strict";

(() => {
  const A = window.AlloNantes;
  const $ = (id) => document.getElementById(id);
  // Read by the end-to-end tests, and handy when debugging a call.
  const stats = {
    botFrames: 0,
    botVoicedFrames: 0,
    chunksSent: 0,
    silentChunksSent: 0, // sent while muted
    flushes: 0,
    typingSent: 0,
    callId: null,
    ended: false,
  };
  window.softphone = { stats };

  let socket = null;
  let context = null;
  let micStream = null;
  let captureNode = null;
  let sourceNode = null;
  let muted = false;
  let nextPlayTime = 0;
  const scheduled = new Set();
  const TYPING_INTERVAL_MS = 1000;
  let typingSentAt = -Infinity;

  function setState(text) {
    $("call-state").textContent = text;
  }

  function setInCall(inCall) {
    $("call").disabled = inCall;
    $("hangup").disabled = !inCall;
    $("mute").disabled = !inCall || !micStream;
    $("say-text").disabled = !inCall;
    $("say-send").disabled = !inCall;
    for (const key of $("keypad").querySelectorAll("button")) key.disabled = !inCall;
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  // Someone writing a question is not silent: tell the bot (at most once a second), so that
  // it does not ask « Êtes-vous toujours là ? » in the middle of the sentence.
  function typing() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    if (now - typingSentAt < TYPING_INTERVAL_MS) return;
    typingSentAt = now;
    send({ type: "typing" });
    stats.typingSent += 1;
  }

  // ---- microphone ---------------------------------------------------------------------

  async function openMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      $("notice").textContent =
        "Le micro n'est disponible que sur une page sécurisée (https ou adresse 127.0.0.1). " +
        "Vous pouvez écrire vos questions.";
      return null;
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      $("notice").textContent = `Micro indisponible (${error.name}) : vous pouvez écrire vos questions.`;
      return null;
    }
  }

  function sendPcm(buffer) {
    const pcm = new Int16Array(buffer);
    let energy = 0;
    for (let i = 0; i < pcm.length; i++) energy += (pcm[i] / 32768) ** 2;
    const level = Math.min(100, Math.round(Math.sqrt(energy / Math.max(1, pcm.length)) * 400));
    $("level").setAttribute("aria-valuenow", String(level));
    $("level").firstElementChild.style.width = `${level}%`;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    // Muted, the page sends silence as a muted phone does: cut mid-sentence, the bot then
    // hears the caller stop instead of waiting forever for the end of the sentence.
    socket.send(muted ? new ArrayBuffer(buffer.byteLength) : buffer);
    stats.chunksSent += 1;
    if (muted) stats.silentChunksSent += 1;
  }

  async function startCapture() {
    sourceNode = context.createMediaStreamSource(micStream);
    const chunk = Math.round(context.sampleRate / 50); // 20 ms
    if (context.audioWorklet) {
      await context.audioWorklet.addModule("/static/capture-worklet.js");
      captureNode = new AudioWorkletNode(context, "allonantes-capture", {
        numberOfOutputs: 1,
        processorOptions: { chunk },
      });
      captureNode.port.onmessage = (event) => sendPcm(event.data);
    } else {
      captureNode = context.createScriptProcessor(2048, 1, 1);
      captureNode.onaudioprocess = (event) => {
        const input = event.inputBuffer.getChannelData(0);
        const pcm = new Int16Array(input.length);
        for (let i = 0; i < input.length; i++) {
          const s = Math.max(-1, Math.min(1, input[i]));
          pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
        }
        sendPcm(pcm.buffer);
      };
    }
    sourceNode.connect(captureNode);
    captureNode.connect(context.destination); // outputs silence; keeps the node running
  }

  // ---- the bot's audio ------------------------------------------------------------------

  function play(buffer) {
    const pcm = new Int16Array(buffer);
    if (pcm.length === 0) return;
    const audio = context.createBuffer(1, pcm.length, 8000);
    const channel = audio.getChannelData(0);
    let energy = 0;
    for (let i = 0; i < pcm.length; i++) {
      channel[i] = pcm[i] / 32768;
      energy += channel[i] * channel[i];
    }
    stats.botFrames += 1;
    if (Math.sqrt(energy / pcm.length) > 0.01) stats.botVoicedFrames += 1;
    const source = context.createBufferSource();
    source.buffer = audio;
    source.connect(context.destination);
    const now = context.currentTime;
    if (nextPlayTime < now + 0.02) nextPlayTime = now + 0.08; // a small cushion for jitter
    source.start(nextPlayTime);
    nextPlayTime += audio.duration;
    scheduled.add(source);
    source.onended = () => scheduled.delete(source);
  }

  function flushPlayback() {
    for (const source of scheduled) {
      try {
        source.stop();
      } catch (_) {
        /* already stopped */
      }
    }
    scheduled.clear();
    nextPlayTime = 0;
    stats.flushes += 1;
  }

  // ---- what the server says ----------------------------------------------------------------

  function addLine(turn) {
    $("transcript").append(A.turnItem(turn));
    $("partial").textContent = "";
  }

  function onEvent(event) {
    switch (event.kind) {
      case "state":
        setState(`En ligne — ${event.state}`);
        break;
      case "partial":
        $("partial").textContent = event.text ? `… ${event.text}` : "";
        break;
      case "caller":
        addLine({ speaker: "caller", text: event.text, asr_confidence: event.asr_confidence });
        break;
      case "bot":
        addLine({ speaker: "bot", text: event.text, intent: event.intent, confidence: event.confidence });
        break;
      case "handoff": {
        const box = A.el(
          "div",
          { class: "decision" },
          A.el("strong", { text: "Transfert vers un conseiller" }),
          ` — motif : ${A.reason(event.reason)}.`,
          event.summary ? ` ${event.summary}` : "",
        );
        $("decisions").append(box);
        break;
      }
      case "timing":
        if (event.response_ms) {
          $("timing").textContent = `Temps de réponse du robot : ${Math.round(event.response_ms)} ms`;
        }
        break;
      default:
        break;
    }
  }

  function onMessage(message) {
    switch (message.type) {
      case "ready":
        stats.callId = message.call_id;
        setState("En ligne");
        setInCall(true);
        break;
      case "event":
        onEvent(message);
        break;
      case "flush":
        flushPlayback();
        break;
      case "ended":
        stats.ended = true;
        setState("Appel terminé.");
        break;
      case "error":
        $("error").textContent = message.message;
        break;
      default:
        break;
    }
  }

  // ---- call and hang up ------------------------------------------------------------------

  async function call() {
    $("error").textContent = "";
    $("notice").textContent = "";
    $("transcript").replaceChildren();
    $("decisions").replaceChildren();
    stats.ended = false;
    $("call").disabled = true;
    setState("Connexion…");
    context = new AudioContext({ latencyHint: "interactive" });
    await context.resume();
    micStream = await openMicrophone();
    socket = new WebSocket(A.wsUrl("/ws/softphone"));
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", async () => {
      send({ type: "start", sample_rate: Math.round(context.sampleRate) });
      if (micStream) {
        try {
          await startCapture();
        } catch (error) {
          $("notice").textContent = `Capture du micro impossible (${error.name || error}).`;
        }
      }
    });
    socket.addEventListener("message", (event) => {
      if (event.data instanceof ArrayBuffer) {
        play(event.data);
        return;
      }
      try {
        onMessage(JSON.parse(event.data));
      } catch (_) {
        /* not ours */
      }
    });
    socket.addEventListener("close", (event) => {
      if (!stats.ended) setState(event.code === 1000 ? "Appel terminé." : "Connexion perdue.");
      stats.ended = true;
      cleanup();
    });
  }

  function cleanup() {
    setInCall(false);
    if (captureNode) captureNode.disconnect();
    if (sourceNode) sourceNode.disconnect();
    if (micStream) for (const track of micStream.getTracks()) track.stop();
    captureNode = null;
    sourceNode = null;
    micStream = null;
    $("level").setAttribute("aria-valuenow", "0");
    $("level").firstElementChild.style.width = "0";
    // Let the last words of the bot finish before closing the audio.
    const audio = context;
    setTimeout(() => audio && audio.close(), Math.max(0, (nextPlayTime - audio.currentTime) * 1000) + 200);
  }

  function hangUp() {
    send({ type: "hangup" });
    if (socket) socket.close(1000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("call").addEventListener("click", () => {
      call().catch((error) => {
        $("error").textContent = `Appel impossible : ${error.message || error}`;
        setInCall(false);
      });
    });
    $("hangup").addEventListener("click", hangUp);
    $("mute").addEventListener("click", () => {
      muted = !muted;
      $("mute").setAttribute("aria-pressed", String(muted));
      $("mute").textContent = muted ? "Rétablir le micro" : "Couper le micro";
    });
    $("say-text").addEventListener("input", typing);
    $("say").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("say-text").value.trim();
      if (!text) return;
      send({ type: "text", text });
      $("say-text").value = "";
    });
    for (const key of $("keypad").querySelectorAll("button")) {
      key.addEventListener("click", () => send({ type: "dtmf", digit: key.dataset.digit }));
    }
  });
})();

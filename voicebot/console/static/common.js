// Shared by the console and the softphone: labels in French and small DOM helpers.
"use strict";

const AlloNantes = {
  reasons: {
    demande: "Demande de l'appelant",
    dtmf: "Touche du clavier",
    urgence: "Urgence",
    "incompréhension": "Incompréhension répétée",
    confiance_asr: "Reconnaissance vocale incertaine",
    "durée": "Durée maximale atteinte",
    erreur: "Incident technique",
    "arrêt": "Arrêt du service",
    silence: "Ligne silencieuse",
    fin_non_transmise: "Fin d'appel non transmise à Asterisk (AMI indisponible)",
    robot_indisponible: "Robot injoignable",
  },
  channelEnds: {
    hung_up_by_bot: "Raccroché par le robot",
    queued: "File des opérateurs",
    caller_hung_up: "Raccroché par l'appelant",
  },
  outcomes: {
    resolved: "Résolu",
    transferred: "Transféré",
    abandoned: "Abandonné",
    error: "Erreur",
    interrupted: "Interrompu (serveur hors service)",
  },
  transports: {
    audiosocket: "Téléphone (AudioSocket)",
    websocket: "Téléphone (WebSocket)",
    navigateur: "Navigateur",
    simulation: "Simulation",
  },

  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },

  percent(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return `${Math.round(value * 100)} %`;
  },

  duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  },

  time(epochSeconds) {
    if (!epochSeconds) return "–";
    return new Date(epochSeconds * 1000).toLocaleString("fr-FR", {
      dateStyle: "short",
      timeStyle: "medium",
    });
  },

  reason(code) {
    return AlloNantes.reasons[code] || code || "–";
  },

  wsUrl(path) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${path}`;
  },

  // One transcript line: speaker, text, then intent/confidences when known.
  turnItem(turn) {
    const who = turn.speaker === "bot" ? "Robot" : "Appelant";
    const meta = [];
    if (turn.intent) meta.push(`intention ${turn.intent} (${AlloNantes.percent(turn.confidence)})`);
    if (turn.asr_confidence !== null && turn.asr_confidence !== undefined) {
      meta.push(`reconnaissance ${AlloNantes.percent(turn.asr_confidence)}`);
    }
    return AlloNantes.el(
      "li",
      { class: turn.speaker === "bot" ? "bot" : "caller" },
      AlloNantes.el("span", { class: "who", text: `${who} :` }),
      turn.text || "",
      meta.length ? AlloNantes.el("span", { class: "meta", text: `— ${meta.join(", ")}` }) : null,
    );
  },
};
window.AlloNantes = AlloNantes;

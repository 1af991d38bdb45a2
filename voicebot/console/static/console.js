// The operators' console: live calls, the queue of transferred calls, search in past calls.
"use strict";

(() => {
  const A = window.AlloNantes;
  const $ = (id) => document.getElementById(id);
  const liveRows = new Map(); // call_id -> <tr>
  const queueCards = new Map(); // call_id -> <li>
  let socket = null;
  let retryMs = 1000;
  let statsTimer = null;

  // ---- live connection ---------------------------------------------------------------

  function setConnection(on, text) {
    const node = $("connection");
    node.dataset.state = on ? "on" : "off";
    node.textContent = text;
  }

  function connect() {
    socket = new WebSocket(A.wsUrl("/ws/console"));
    socket.addEventListener("open", () => {
      retryMs = 1000;
      setConnection(true, "En direct");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      handle(message);
    });
    socket.addEventListener("close", () => {
      setConnection(false, "Déconnecté — nouvelle tentative…");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    });
  }

  let snapshotsSeen = 0;

  function handle(message) {
    switch (message.type) {
      case "snapshot": {
        // A snapshot also comes when this page fell behind a burst of calls: a transfer it
        // brings that the page did not show yet is announced like a live one.
        const known = new Set(queueCards.keys());
        for (const row of liveRows.values()) row.remove();
        liveRows.clear();
        for (const card of queueCards.values()) card.remove();
        queueCards.clear();
        for (const call of message.live) upsertLive(call);
        for (const entry of message.queue) {
          upsertHandoff(entry, snapshotsSeen > 0 && !known.has(entry.call_id));
        }
        snapshotsSeen += 1;
        break;
      }
      case "call":
        upsertLive(message.call);
        break;
      case "call_ended":
        removeLive(message.call_id);
        scheduleStats();
        break;
      case "handoff":
        upsertHandoff(message.entry, true);
        break;
      case "queue_remove":
        removeHandoff(message.call_id);
        break;
      case "error":
        console.warn("console:", message.message);
        break;
      default:
        break;
    }
    refreshCounts();
  }

  function refreshCounts() {
    $("live-count").textContent = `(${liveRows.size})`;
    $("queue-count").textContent = `(${queueCards.size})`;
    $("live-empty").hidden = liveRows.size > 0;
    $("live-table").hidden = liveRows.size === 0;
    $("queue-empty").hidden = queueCards.size > 0;
  }

  // ---- live calls ----------------------------------------------------------------------

  function upsertLive(call) {
    let row = liveRows.get(call.call_id);
    if (!row) {
      row = A.el("tr", { "data-call-id": call.call_id });
      liveRows.set(call.call_id, row);
      $("live").append(row);
      scheduleStats();
    }
    const cells = [
      call.call_id.slice(0, 8),
      A.transports[call.transport] || call.transport || "–",
      call.state || "–",
      call.last_caller || "–",
      call.intent || "–",
      A.percent(call.confidence),
    ];
    // Several bot servers: the one holding the call shows on the call's id.
    const title = call.host ? `${call.call_id} (serveur ${call.host})` : call.call_id;
    row.replaceChildren(...cells.map((text, i) => A.el("td", i === 0 ? { title } : {}, text)));
  }

  function removeLive(callId) {
    const row = liveRows.get(callId);
    if (row) row.remove();
    liveRows.delete(callId);
  }

  // ---- the queue of transferred calls --------------------------------------------------

  function fact(dl, term, value) {
    dl.append(A.el("dt", { text: term }), A.el("dd", {}, value));
  }

  function upsertHandoff(entry, announce) {
    const old = queueCards.get(entry.call_id);
    const titleId = `handoff-${entry.call_id}`;
    const card = A.el("li", {
      class: "handoff", // waits for an operator, even once the bot's part has ended
      "data-call-id": entry.call_id,
      "aria-labelledby": titleId,
    });
    const at = new Date(entry.at * 1000).toLocaleTimeString("fr-FR");
    card.append(
      A.el(
        "h3",
        { id: titleId },
        `Appel transféré à ${at} — `,
        A.el("span", { class: "reason", text: entry.reason_label || A.reason(entry.reason) }),
      ),
    );
    const dl = A.el("dl");
    fact(dl, "Résumé", entry.summary || "–");
    fact(dl, "Intention", entry.intent || "–");
    const entities = Object.entries(entry.entities || {});
    fact(
      dl,
      "Informations",
      entities.length ? entities.map(([k, v]) => `${k} : ${v}`).join(" ; ") : "–",
    );
    fact(dl, "Canal", A.transports[entry.transport] || entry.transport || "–");
    if (entry.context_delivered !== null && entry.context_delivered !== undefined) {
      fact(dl, "Contexte transmis au standard", entry.context_delivered ? "Oui" : "Non");
    }
    const answers = A.el("ul", { class: "answers" });
    for (const text of entry.bot_answers || []) answers.append(A.el("li", { text }));
    fact(dl, "Réponses du robot", (entry.bot_answers || []).length ? answers : "–");
    card.append(dl);

    const details = A.el("details", { open: "" });
    details.append(A.el("summary", { text: "Transcription complète" }));
    const transcript = A.el("ol", { class: "transcript", "aria-label": "Transcription complète" });
    for (const turn of entry.transcript || []) transcript.append(A.turnItem(turn));
    details.append(transcript);
    card.append(details);

    const take = A.el("button", { type: "button", class: "secondary", text: "Pris en charge" });
    take.setAttribute("aria-describedby", titleId);
    take.addEventListener("click", () => {
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ type: "take", call_id: entry.call_id }));
      }
    });
    card.append(take);

    if (old) old.replaceWith(card);
    else $("queue").prepend(card);
    queueCards.set(entry.call_id, card);
    if (announce) {
      $("announcer").textContent =
        `Nouvel appel transféré : ${entry.reason_label || A.reason(entry.reason)}. ${entry.summary || ""}`;
    }
  }

  function removeHandoff(callId) {
    const card = queueCards.get(callId);
    if (!card) return;
    const focusWasInside = card.contains(document.activeElement);
    card.remove();
    queueCards.delete(callId);
    if (focusWasInside) $("file").focus();
  }

  // ---- stats -----------------------------------------------------------------------------

  async function loadStats() {
    try {
      const response = await fetch("/api/stats", { credentials: "same-origin" });
      if (!response.ok) return;
      const { today } = await response.json();
      $("stat-calls").textContent = today.calls;
      $("stat-resolved").textContent = today.resolved;
      $("stat-transferred").textContent = today.transferred;
      $("stat-abandoned").textContent = today.abandoned;
      $("stat-duration").textContent = A.duration(today.mean_duration_s);
    } catch (_) {
      /* the next event retries */
    }
  }

  function scheduleStats() {
    clearTimeout(statsTimer);
    statsTimer = setTimeout(loadStats, 500);
  }

  // ---- search ------------------------------------------------------------------------------

  async function search(event) {
    event.preventDefault();
    const params = new URLSearchParams({ q: $("search-q").value, limit: "50" });
    const outcome = $("search-outcome").value;
    if (outcome) params.set("outcome", outcome);
    $("search-error").textContent = "";
    let body;
    try {
      const response = await fetch(`/api/calls?${params}`, { credentials: "same-origin" });
      body = await response.json();
      if (!response.ok) throw new Error(body.error || "Recherche impossible.");
    } catch (error) {
      $("search-error").textContent = error.message || "Recherche impossible.";
      return;
    }
    const rows = body.calls.map((call) => {
      const view = A.el("button", { type: "button", class: "secondary", text: "Voir" });
      view.setAttribute("aria-label", `Voir l'appel du ${A.time(call.started_at)}`);
      view.addEventListener("click", () => showCall(call.call_id));
      return A.el(
        "tr",
        { "data-call-id": call.call_id },
        A.el("td", { text: A.time(call.started_at) }),
        A.el("td", { text: A.transports[call.transport] || call.transport }),
        A.el("td", { text: call.outcome ? A.outcomes[call.outcome] : "En cours" }),
        A.el("td", { text: call.handoff_reason ? A.reason(call.handoff_reason) : "–" }),
        A.el("td", { text: call.intent || "–" }),
        A.el("td", { text: A.duration(call.duration_s) }),
        A.el("td", { text: call.excerpt || "–" }),
        A.el("td", {}, view),
      );
    });
    $("results").replaceChildren(...rows);
    $("results-caption").textContent = `${rows.length} appel(s) trouvé(s)`;
    $("results-table").hidden = false;
  }

  async function showCall(callId) {
    const response = await fetch(`/api/calls/${encodeURIComponent(callId)}`, {
      credentials: "same-origin",
    });
    const call = await response.json();
    if (!response.ok) {
      $("search-error").textContent = call.error || "Appel introuvable.";
      return;
    }
    const dl = $("detail-facts");
    dl.replaceChildren();
    fact(dl, "Appel", call.call_id);
    fact(dl, "Début", A.time(call.started_at));
    fact(dl, "Canal", A.transports[call.transport] || call.transport);
    fact(dl, "Issue", call.outcome ? A.outcomes[call.outcome] : "En cours");
    if (call.channel_end) fact(dl, "Fin de la ligne", A.channelEnds[call.channel_end] || call.channel_end);
    fact(dl, "Durée avec le robot", A.duration(call.duration_s));
    if (call.handoff) {
      fact(dl, "Motif du transfert", A.reason(call.handoff.reason));
      fact(dl, "Résumé", call.handoff.summary || "–");
    }
    $("detail-transcript").replaceChildren(...call.turns.map(A.turnItem));
    $("detail").hidden = false;
    $("detail").focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("search-form").addEventListener("submit", search);
    refreshCounts();
    loadStats();
    connect();
  });
})();

// « Réentraîner le robot »: fills <section id="entrainement"> (the /ameliorer page, and the
// « aucune évaluation » page) from /api/training (voicebot/console/training_api.py): the
// model in service, the button, the progress of a running job (polled every 1.5 s), and its
// result. No inline code or style (the console's Content-Security-Policy): only this file.
"use strict";

(() => {
  const section = document.getElementById("entrainement");
  if (!section) return;
  const POLL_MS = 1500;

  const el = window.AlloNantes.el; // common.js, loaded first by every page with this one

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds || 0));
    if (s < 60) return `${s} s`;
    return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  }

  const kinds = {
    entrainement: { running: "Entraînement en cours", done: "Entraînement terminé" },
    evaluation: { running: "Évaluation en cours", done: "Évaluation terminée" },
  };
  const anyKind = { running: "Tâche en cours", done: "Tâche terminée" };

  const model = el("p", { "data-testid": "version-modele" });
  const service = el("p", { "data-testid": "version-en-service" });
  const reload = el("p", { class: "message", "data-testid": "rechargement", hidden: "" });
  const train = el("button", { type: "button", "data-testid": "reentrainer" }, "Réentraîner le robot");
  const evaluate = el(
    "button",
    { type: "button", class: "secondary", "data-testid": "evaluer", hidden: "" },
    "Évaluer le modèle en service",
  );
  const cancel = el(
    "button",
    { type: "button", class: "secondary", "data-testid": "annuler-entrainement", hidden: "" },
    "Annuler",
  );
  const state = el("p", {
    class: "state-line",
    role: "status",
    "aria-live": "polite",
    "data-testid": "etat-entrainement",
  });
  const message = el("p", { class: "message", "data-testid": "resultat-entrainement" });
  const reasons = el("ul", { "data-testid": "raisons-refus", hidden: "" });
  const link = el("a", { "data-testid": "lien-evaluation", hidden: "" });
  const lines = el("pre", { "data-testid": "journal-entrainement" });
  const journal = el("details", { hidden: "" }, el("summary", { text: "Dernières lignes de la commande" }), lines);

  section.replaceChildren(
    el("h2", { text: "Réentraîner le robot" }),
    el("p", {
      text:
        "Le robot apprend à nouveau à partir des phrases d'exemple (nlu/data). Le nouveau " +
        "modèle n'est mis en service que s'il ne comprend pas moins bien que l'actuel sur les " +
        "jeux de test ; sinon il est mis de côté avec un rapport qui dit pourquoi. " +
        "Compter plusieurs minutes ; les appels continuent pendant ce temps.",
    }),
    model,
    service,
    reload,
    el("p", {}, train, " ", evaluate, " ", cancel),
    state,
    message,
    reasons,
    link,
    journal,
  );

  let timer = null;
  let notice = ""; // why the server refused the last click, until the next one

  function showModel(current) {
    if (!current) {
      model.replaceChildren("Aucun modèle en service.");
      evaluate.hidden = true;
      return;
    }
    const parts = [`Modèle en service : version ${current.version}`];
    if (current.evaluation_url) {
      parts.push(" — ", el("a", { href: current.evaluation_url, text: "son évaluation" }));
    }
    model.replaceChildren(...parts);
    evaluate.hidden = Boolean(current.evaluation_url);
  }

  // What this server answers with: it takes an accepted model (or an edited knowledge base)
  // by itself, between two turns of each call.
  function showService(current) {
    service.hidden = !current;
    reload.hidden = true;
    if (!current) return;
    service.textContent = `Ce serveur répond avec la version ${current.model_version}.`;
    const last = current.last_reload;
    if (last) {
      reload.hidden = false;
      reload.className = `message ${last.ok ? "info" : "error"}`;
      reload.textContent = `Dernière mise en service : ${last.message}`;
    }
  }

  function showResult(data) {
    const ok = ["accepted", "unchanged", "evaluated"].includes(data.state);
    const shown = data.state === "running" || data.state === "idle" ? "" : data.message;
    message.className = `message ${ok && !notice ? "info" : "error"}`;
    message.textContent = notice || shown;
    reasons.replaceChildren(...(data.reasons || []).map((r) => el("li", { text: r })));
    reasons.hidden = !(data.reasons || []).length;
    link.hidden = !data.report_url;
    if (data.report_url) {
      link.href = data.report_url;
      link.textContent =
        data.state === "refused" ? "Voir le rapport du modèle refusé" : "Voir l'évaluation";
    }
    lines.textContent = (data.lines || []).join("\n");
    journal.hidden = !(data.lines || []).length;
    journal.open = data.state === "failed";
  }

  function show(data) {
    const running = data.state === "running";
    train.disabled = running;
    evaluate.disabled = running;
    cancel.hidden = !running;
    showModel(data.model);
    showService(data.service);
    if (running) {
      const who = data.who ? ` (lancé par ${data.who})` : "";
      const label = (kinds[data.kind] || anyKind).running;
      state.textContent = `${label}${who} : ${data.stage} — ${duration(data.elapsed_s)}`;
    } else if (data.state === "idle") {
      state.textContent = "Aucun entraînement depuis le démarrage du serveur.";
    } else {
      state.textContent = `${(kinds[data.kind] || anyKind).done} en ${duration(data.elapsed_s)}.`;
    }
    showResult(data);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await fetch("/api/training", { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      show(data);
      // Polled while a job runs, and until this server answers with the accepted model.
      const swapping =
        data.service && data.model && data.service.model_version !== data.model.version;
      if (data.state === "running" || (data.state === "accepted" && swapping)) {
        timer = setTimeout(refresh, POLL_MS);
      }
    } catch (error) {
      state.textContent = "État de l'entraînement indisponible ; nouvel essai dans quelques secondes.";
      timer = setTimeout(refresh, POLL_MS * 3);
    }
  }

  async function post(path, body) {
    train.disabled = true;
    evaluate.disabled = true;
    notice = "";
    try {
      const response = await fetch(path, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body || {}),
      });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        notice = data.error || `Refusé (HTTP ${response.status}).`;
      }
    } catch (error) {
      notice = "Le serveur ne répond pas.";
    }
    await refresh();
  }

  // The name the trainer gave on this page (ameliorer.js keeps it): the shared token says
  // nothing of who started a job.
  function trainerName() {
    const field = document.getElementById("trainer-name");
    if (field && field.value.trim()) return field.value.trim();
    try {
      return localStorage.getItem("allonantes.formateur") || "";
    } catch (_) {
      return "";
    }
  }

  train.addEventListener("click", () => post("/api/training", { who: trainerName() }));
  evaluate.addEventListener("click", () => post("/api/evaluation", { who: trainerName() }));
  cancel.addEventListener("click", () => post("/api/training/cancel"));
  refresh();
})();

// « Améliorer le robot »: the sentences the bot missed, and the trainer's decisions on them.
"use strict";

(() => {
  const A = window.AlloNantes;
  const $ = (id) => document.getElementById(id);
  const NAME_KEY = "allonantes.formateur"; // the console token is shared: the name says who
  const reasons = {
    fallback: "non comprise",
    low_confidence: "confiance faible",
    transferred: "appel transféré",
  };
  let choices = { intents: [], entities: {}, ignore: "ignorer" };

  function trainer() {
    return ($("trainer-name").value || "").trim();
  }

  function saveTrainer(event) {
    event.preventDefault();
    const name = trainer();
    if (!name) {
      $("trainer-status").textContent = "Indiquez votre nom.";
      return;
    }
    try {
      localStorage.setItem(NAME_KEY, name);
    } catch (_) {
      /* private browsing: the name stays in the field for this visit */
    }
    $("trainer-status").textContent = `Vos décisions seront notées au nom de ${name}.`;
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || "Service indisponible.");
    return body;
  }

  // What the bot understood, as a trainer reads it. "aucune": the recogniser was too unsure
  // for the sentence to reach the NLU.
  const understood = {
    nlu_fallback: "rien (pas compris)",
    aucune: "rien (phrase mal entendue)",
  };

  function label(intent) {
    return understood[intent] || intent.replaceAll("_", " ");
  }

  function intentSelect(id) {
    const select = A.el("select", { id, "data-testid": "intention" });
    select.append(A.el("option", { value: "", text: "— choisir une intention —" }));
    for (const intent of choices.intents) {
      select.append(A.el("option", { value: intent, text: label(intent) }));
    }
    return select;
  }

  function entityPickers(id) {
    const entity = A.el("select", { id: `${id}-entity`, "data-testid": "entite" });
    entity.append(A.el("option", { value: "", text: "— aucune —" }));
    for (const name of Object.keys(choices.entities)) {
      entity.append(A.el("option", { value: name, text: name }));
    }
    const value = A.el("select", { id: `${id}-value`, "data-testid": "valeur", disabled: "" });
    value.append(A.el("option", { value: "", text: "—" }));
    entity.addEventListener("change", () => {
      value.replaceChildren(A.el("option", { value: "", text: "— choisir une valeur —" }));
      for (const v of choices.entities[entity.value] || []) {
        value.append(A.el("option", { value: v, text: v }));
      }
      value.disabled = !entity.value;
    });
    return [entity, value];
  }

  function confidenceText(group) {
    const parts = [label(group.intent)];
    // A fallback's confidence is the threshold itself: it says nothing about the sentence.
    if (group.confidence_min !== null && group.intent !== "nlu_fallback") {
      parts.push(`confiance ${A.percent(group.confidence_mean)} en moyenne, ${A.percent(group.confidence_min)} au plus bas`);
    }
    const why = Object.keys(group.reasons).map((r) => reasons[r] || r).join(", ");
    return `${parts.join(" — ")} (${why})`;
  }

  function outcomesText(outcomes) {
    return Object.entries(outcomes)
      .map(([outcome, n]) => `${A.outcomes[outcome] || "En cours"} : ${n}`)
      .join(" ; ");
  }

  function groupRow(group, index) {
    const id = `groupe-${index}`;
    const row = A.el("tr", { "data-testid": "groupe", "data-text": group.text, id });
    const sentence = A.el("td", {}, A.el("q", { text: group.text }));
    if (group.spellings.length > 1) {
      sentence.append(
        A.el("span", { class: "meta", text: ` (aussi : ${group.spellings.slice(1).join(" / ")})` }),
      );
    }
    const select = intentSelect(`${id}-intent`);
    select.setAttribute("aria-label", `Intention pour « ${group.text} »`);
    const [entity, value] = entityPickers(id);
    entity.setAttribute("aria-label", "Information citée (facultatif)");
    value.setAttribute("aria-label", "Valeur de l'information");
    const save = A.el("button", { type: "button", text: "Enregistrer", "data-testid": "enregistrer" });
    const ignore = A.el("button", {
      type: "button",
      class: "secondary",
      text: "Ignorer",
      "data-testid": "ignorer",
    });
    const result = A.el("p", { class: "row-result", role: "status", "data-testid": "resultat" });
    const act = (intent) =>
      decide(row, result, [save, ignore], {
        text: group.text,
        intent,
        entity: intent === choices.ignore ? "" : entity.value,
        value: intent === choices.ignore ? "" : value.value,
        who: trainer(),
      });
    save.addEventListener("click", () => {
      if (!select.value) {
        result.textContent = "Choisissez d'abord une intention.";
        select.focus();
        return;
      }
      act(select.value);
    });
    ignore.addEventListener("click", () => act(choices.ignore));
    const teach = A.el(
      "td",
      { class: "teach" },
      select,
      A.el("span", { class: "pickers" }, entity, value),
      A.el("span", { class: "buttons" }, save, ignore),
      result,
    );
    row.append(
      sentence,
      A.el("td", { text: String(group.count) }),
      A.el("td", { text: A.time(group.last_seen) }),
      A.el("td", { text: confidenceText(group) }),
      A.el("td", { text: group.bot_answer || "–" }),
      A.el("td", { text: outcomesText(group.outcomes) }),
      teach,
    );
    return row;
  }

  async function decide(row, result, buttons, payload) {
    if (!payload.who) {
      $("trainer-status").textContent = "Indiquez votre nom avant de décider.";
      $("trainer-name").focus();
      return;
    }
    for (const button of buttons) button.disabled = true;
    let body = {};
    let ok = false;
    try {
      const response = await fetch("/api/review/relabel", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      });
      body = await response.json().catch(() => ({}));
      ok = response.ok;
    } catch (_) {
      body = { error: "Le serveur ne répond pas." };
    }
    const message = ok ? body.message : body.error || "Enregistrement impossible.";
    result.textContent = message;
    $("review-message").textContent = ok ? message : "";
    $("review-error").textContent = ok ? "" : message;
    if (ok) {
      row.dataset.done = "true";
      row.classList.add("done");
    } else {
      for (const button of buttons) button.disabled = false;
    }
  }

  async function load() {
    $("review-error").textContent = "";
    try {
      choices = await getJson("/api/review/intents");
      const queue = await getJson("/api/review?limit=100");
      $("review-cutoff").textContent = A.percent(queue.cutoff);
      $("review").replaceChildren(...queue.groups.map(groupRow));
      $("review-count").textContent = `(${queue.groups.length})`;
      $("review-empty").hidden = queue.groups.length > 0;
      $("review-table").hidden = queue.groups.length === 0;
    } catch (error) {
      $("review-error").textContent = error.message;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    try {
      $("trainer-name").value = localStorage.getItem(NAME_KEY) || "";
    } catch (_) {
      /* no storage: the trainer types the name */
    }
    $("trainer-form").addEventListener("submit", saveTrainer);
    $("review-reload").addEventListener("click", load);
    load();
  });
})();

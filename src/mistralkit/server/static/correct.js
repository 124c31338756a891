// The correction page: text in, POST /v1/correct, the corrected text with every edit highlighted.
"use strict";

/** A protected string (name, number, date…), underlined: no correction may touch it. */
function protectedSpan(result, span) {
  const node = document.createElement("span");
  node.className = "protected";
  node.textContent = result.text.slice(span.start, span.end);
  node.title = `protégé (${span.kind})`;
  return node;
}

const SOURCES = { rule: "règle", llm: "modèle", lm: "choix du modèle" };

/** The corrected text as nodes: each edit a <mark> (class rule, llm or lm) whose title is its reason;
 * an unsure change (proposed, not applied) shows the text as written, outlined, with the proposal. */
function renderCorrected(result) {
  const nodes = [];
  let at = 0;          // position in the original text
  const changes = [...result.edits, ...(result.proposed || []).map((e) => ({ ...e, unsure: true }))];
  const untouched = result.protected.filter(
    (p) => !changes.some((e) => e.start < p.end && p.start < e.end));  // edits win, should one overlap
  const spans = [...changes.map((edit) => ({ edit, start: edit.start, end: edit.end })),
                 ...untouched.map((span) => ({ span, start: span.start, end: span.end }))]
    .sort((a, b) => a.start - b.start || a.end - b.end);
  for (const { edit, span, start } of spans) {
    if (start < at) continue;  // overlaps what is already shown
    nodes.push(document.createTextNode(result.text.slice(at, start)));
    if (span) {
      nodes.push(protectedSpan(result, span));
      at = span.end;
      continue;
    }
    const mark = document.createElement("mark");
    mark.className = edit.unsure ? "edit unsure" : `edit ${edit.source}`;
    mark.tabIndex = 0;
    mark.textContent = edit.unsure ? edit.before : (edit.after || "∅");
    const sure = edit.source === "lm" ? ` (confiance ${Math.round(edit.confidence * 100)} %)` : "";
    const why = (edit.message || (edit.source === "llm" ? "réécrit par le modèle" : "règle du correcteur")) + sure;
    mark.title = edit.unsure ? `proposition incertaine, non appliquée : ${edit.before} → ${edit.after}${sure}`
                             : `${edit.before} → ${edit.after || "(supprimé)"} : ${why}`;
    mark.dataset.after = edit.after;
    mark.dataset.source = edit.unsure ? "incertain, non appliqué" : (SOURCES[edit.source] || edit.source);
    mark.dataset.before = edit.before;
    mark.dataset.message = why;
    mark.addEventListener("click", () => showDetail(mark));
    mark.addEventListener("focus", () => showDetail(mark));
    nodes.push(mark);
    at = edit.end;
  }
  nodes.push(document.createTextNode(result.text.slice(at)));
  $("corrected").replaceChildren(...nodes);
}

function showDetail(mark) {
  $("detail").textContent =
    `« ${mark.dataset.before} » → « ${mark.dataset.after} » (${mark.dataset.source}) : ${mark.dataset.message}`;
}

// The guards' reasons (corrector/guards.py) in French, by the words they begin with.
const REASONS = [
  ["protected string changed", "une chaîne protégée a changé"], ["placeholder", "un nom masqué a été abîmé"],
  ["new digits", "des chiffres ont été ajoutés"], ["new number word", "un nombre a été ajouté"],
  ["new name", "un nom a été ajouté"], ["word dropped", "un mot a disparu"], ["word added", "un mot a été ajouté"],
  ["word changed", "un mot a été remplacé"], ["rule fix undone", "une correction des règles a été défaite"],
  ["edit ratio", "la phrase a trop changé"], ["length ratio", "la longueur a trop changé"],
  ["more checker errors", "plus d'erreurs qu'avant"], ["the rewrite ran far past", "le modèle s'est répété"],
  ["too long for the model", "phrase trop longue pour le modèle"], ["model error", "erreur du modèle"],
  ["empty rewrite", "réponse vide"], ["cancelled", "correction interrompue"],
];

function reasonInFrench(reason) {
  const found = REASONS.find(([prefix]) => reason.startsWith(prefix));
  if (!found) return reason;
  const quoted = reason.match(/'[^']*'(?: -> '[^']*')?/);
  return quoted ? `${found[1]} : ${quoted[0]}` : found[1];
}

function renderRefused(result) {
  const items = result.refused.map((refusal) => {
    const item = document.createElement("li");
    item.className = "refused";
    const sentence = result.corrected.slice(refusal.start, refusal.end).trim();
    item.textContent = `Réécriture du modèle refusée pour « ${sentence} » (${reasonInFrench(refusal.reason)}) : ` +
      "le résultat des règles est gardé.";
    return item;
  });
  $("refused").replaceChildren(...items);
}

/** The chat models; the one picked is the chat page's last choice, else one the server has loaded. */
async function loadModels() {
  const models = await (await api("/v1/models")).json();
  const health = await fetch("/health").then((r) => r.json()).catch(() => ({}));
  const chat = models.data.filter((m) => m.kind === "llm").map((m) => m.id);
  $("model").replaceChildren(...chat.map((id) => new Option(id, id)));
  const loaded = (health.models_loaded || []).map((key) => key.split("+")[0]);
  const wanted = [localStorage.getItem("mistralkit.model"), ...loaded].find((id) => chat.includes(id));
  if (wanted) $("model").value = wanted;
}

async function correct() {
  showError("");
  const text = $("source").value;
  if (!text.trim()) { showError("Écrivez d'abord un texte à corriger."); return; }
  const mode = $("mode").value;
  const body = { text, mode,
                 protect: $("protect").value.split(",").map((w) => w.trim()).filter(Boolean) };
  if (mode === "hybrid" && $("model").value) body.model = $("model").value;  // rank: the server's French base model
  $("run").disabled = true;
  $("run").textContent = "Correction…";
  try {
    const response = await api("/v1/correct", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const result = await response.json();
    renderCorrected(result);
    renderRefused(result);
    const count = result.edits.length, unsure = (result.proposed || []).length;
    const doubts = unsure ? ` ${unsure} proposition${unsure > 1 ? "s" : ""} incertaine${unsure > 1 ? "s" : ""}` +
                            " (encadrée" + (unsure > 1 ? "s" : "") + "), non appliquée" + (unsure > 1 ? "s" : "") + "." : "";
    $("detail").textContent = (count ? `${count} correction${count > 1 ? "s" : ""} : cliquez sur un mot pour la raison.`
                                     : "Aucune correction.") + doubts;
    $("result").hidden = false;
  } finally {
    $("run").disabled = false;
    $("run").textContent = "Corriger";
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function run(promise) {
  try { await promise; } catch (error) { showError(error.message); }
}

function wire() {
  $("correct-form").addEventListener("submit", (event) => { event.preventDefault(); run(correct()); });
  $("mode").addEventListener("change", () => {
    const hybrid = $("mode").value === "hybrid";
    $("model").hidden = $("model-label").hidden = !hybrid;
    if (hybrid && !$("model").options.length) run(loadModels());
  });
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("change-key").addEventListener("click", () => run(askKey("Enter the API key for this server.")));
}

wire();

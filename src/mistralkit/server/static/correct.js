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

/** The corrected text as nodes: each edit a <mark> (class rule or llm) whose title is its reason. */
function renderCorrected(result) {
  const nodes = [];
  let at = 0;          // position in the original text
  const untouched = result.protected.filter(
    (p) => !result.edits.some((e) => e.start < p.end && p.start < e.end));  // edits win, should one overlap
  const spans = [...result.edits.map((edit) => ({ edit, start: edit.start, end: edit.end })),
                 ...untouched.map((span) => ({ span, start: span.start, end: span.end }))]
    .sort((a, b) => a.start - b.start || a.end - b.end);
  for (const { edit, span, start } of spans) {
    nodes.push(document.createTextNode(result.text.slice(at, start)));
    if (span) {
      nodes.push(protectedSpan(result, span));
      at = span.end;
      continue;
    }
    const mark = document.createElement("mark");
    mark.className = `edit ${edit.source}`;
    mark.tabIndex = 0;
    mark.textContent = edit.after || "∅";
    const why = edit.message || (edit.source === "llm" ? "réécrit par le modèle" : "règle du correcteur");
    mark.title = `${edit.before} → ${edit.after || "(supprimé)"} : ${why}`;
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
  const source = mark.classList.contains("llm") ? "modèle" : "règle";
  $("detail").textContent = `« ${mark.dataset.before} » → « ${mark.textContent} » (${source}) : ${mark.dataset.message}`;
}

function renderRefused(result) {
  const items = result.refused.map((refusal) => {
    const item = document.createElement("li");
    item.className = "refused";
    const sentence = result.corrected.slice(refusal.start, refusal.end).trim();
    item.textContent = `Réécriture du modèle refusée pour « ${sentence} » (${refusal.reason}) : ` +
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
  if (mode === "hybrid" && $("model").value) body.model = $("model").value;
  $("run").disabled = true;
  $("run").textContent = "Correction…";
  try {
    const response = await api("/v1/correct", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const result = await response.json();
    renderCorrected(result);
    renderRefused(result);
    const count = result.edits.length;
    $("detail").textContent = count ? `${count} correction${count > 1 ? "s" : ""} : cliquez sur un mot pour la raison.`
                                    : "Aucune correction.";
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

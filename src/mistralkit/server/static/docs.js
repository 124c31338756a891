// Answers from a document collection on the chat page: /v1/responses with the file_search tool, the
// sources under each answer, and each citation [n] a link that opens its passage. Text only, never HTML.
"use strict";

const COLLECTION = "mistralkit.collection";
const CITATION = /\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]/g;
let answers = 0;

async function loadCollections() {
  const { data } = await (await api("/v1/vector_stores?limit=100")).json();
  const label = (s) => `${s.name} (${s.file_counts.completed} file${s.file_counts.completed === 1 ? "" : "s"})`;
  $("collection").replaceChildren(new Option("None", ""), ...data.map((s) => new Option(label(s), s.id)));
  const kept = localStorage.getItem(COLLECTION);
  if (data.some((s) => s.id === kept)) $("collection").value = kept;
}

/** The chat request `body` as a Responses request that searches the vector store `storeId`. */
function docsRequestBody(body, storeId) {
  const system = body.messages.find((m) => m.role === "system");
  return {
    model: body.model,
    stream: true,
    temperature: body.temperature,
    max_output_tokens: body.max_tokens,
    instructions: system ? system.content : undefined,
    input: body.messages.filter((m) => m.role !== "system").map(({ role, content }) => ({ role, content })),
    tools: [{ type: "file_search", vector_store_ids: [storeId], max_num_results: 5 }],
    include: ["file_search_call.results"],
  };
}

/** Stream the answer, calling onText with each piece; resolves to the finished response object. */
async function streamDocsAnswer(body, signal, onText) {
  const response = await api("/v1/responses", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  let final = null;
  await readEvents(response, (event) => {
    if (event.type === "error") throw new Error(event.message);
    if (event.type === "response.output_text.delta") onText(event.delta);
    if (event.type === "response.completed" || event.type === "response.incomplete") final = event.response;
  });
  return final;
}

/** The sources, the file citations and the citations that do not hold, of a finished response. */
function groundingOf(response) {
  const search = response.output.find((item) => item.type === "file_search_call");
  const message = response.output.find((item) => item.type === "message");
  const part = message ? message.content[0] : {};
  return { sources: (search && search.results) || [], annotations: part.annotations || [],
           invalid: part.invalid_citations || [] };
}

/** Show `text` in the message `view`, each valid citation a link to its source, the sources below it. */
function showGrounded(view, text, grounding) {
  const id = `answer-${++answers}`;
  const content = view.querySelector(".content");
  content.replaceChildren();
  const cited = new Set(grounding.annotations.map((a) => a.index));
  let at = 0;
  for (const match of text.matchAll(CITATION)) {
    content.append(text.slice(at, match.index));
    const number = Number(match[1].split(/[,;]/)[0]);
    if (cited.has(match.index) && number >= 1 && number <= grounding.sources.length) {
      const link = document.createElement("a");
      link.className = "citation";
      link.href = `#${id}-source-${number}`;
      link.textContent = match[0];
      link.addEventListener("click", (event) => {
        event.preventDefault();
        openSource(`${id}-source-${number}`);
      });
      content.append(link);
    } else {
      const span = document.createElement("span");
      span.className = "citation invalid";
      span.textContent = match[0];
      const problem = grounding.invalid.find((c) => c.start === match.index);
      if (problem) span.title = problem.problem;
      content.append(span);
    }
    at = match.index + match[0].length;
  }
  content.append(text.slice(at));
  for (const old of view.querySelectorAll(".sources, .problems")) old.remove();
  view.append(sourceList(id, grounding.sources));
  if (grounding.invalid.length) {
    const note = document.createElement("p");
    note.className = "problems";
    note.textContent = grounding.invalid.map((c) => `[${c.number}]: ${c.problem}`).join("; ");
    view.append(note);
  }
}

function sourceList(id, sources) {
  const list = document.createElement("ol");
  list.className = "sources";
  list.setAttribute("aria-label", "Sources");
  sources.forEach((source, i) => {
    const details = document.createElement("details");
    details.id = `${id}-source-${i + 1}`;
    const summary = document.createElement("summary");
    const place = source.attributes && source.attributes.place ? ` · ${source.attributes.place}` : "";
    summary.textContent = `[${i + 1}] ${source.filename}${place}`;
    const passage = document.createElement("blockquote");
    passage.className = "passage";
    passage.textContent = source.text;
    details.append(summary, passage);
    const item = document.createElement("li");
    item.append(details);
    list.append(item);
  });
  if (!sources.length) {
    const none = document.createElement("li");
    none.textContent = "No passage found in the collection.";
    list.append(none);
  }
  return list;
}

function openSource(id) {
  const details = document.getElementById(id);
  details.open = true;
  details.scrollIntoView({ block: "nearest" });
  details.querySelector("summary").focus();
}

// The chat page of `mistralkit serve`: plain fetch calls to this server's /v1 API, nothing else.
"use strict";

const MODEL = "mistralkit.model";

const state = { sessionId: null, messages: [], controller: null };

/** Read an SSE body (`data: {json}` events, then `data: [DONE]`), calling onChunk on each. */
async function readEvents(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      const data = event.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      onChunk(chunk);
    }
  }
}

// --- models and sessions ------------------------------------------------------------------------

async function loadModels() {
  const models = await (await api("/v1/models")).json();
  const health = await fetch("/health").then((r) => r.json()).catch(() => ({}));
  const chat = models.data.filter((m) => m.kind === "llm").map((m) => m.id);
  const select = $("model");
  select.replaceChildren(...chat.map((id) => new Option(id, id)));
  const preferred = [localStorage.getItem(MODEL), ...(health.models_loaded || []), health.default_model];
  const wanted = preferred.find((id) => chat.includes(id));
  if (wanted) select.value = wanted;
  if (!chat.length) showError("No chat model here: add one with `mistralkit models pull`");
}

async function loadSessions() {
  const { data } = await (await api("/v1/sessions?limit=50")).json();
  $("sessions").replaceChildren(...data.map(sessionItem));
}

function sessionItem(session) {
  const title = session.title || "(untitled)";
  const open = document.createElement("button");
  open.type = "button";
  open.className = "session";
  open.dataset.id = session.id;
  const name = document.createElement("span");
  name.textContent = title;
  const about = document.createElement("small");
  about.textContent = `${session.model} · ${session.message_count} messages`;
  open.append(name, about);
  if (session.id === state.sessionId) open.setAttribute("aria-current", "true");
  open.addEventListener("click", () => run(openSession(session.id)));

  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "delete";
  remove.textContent = "×";
  remove.setAttribute("aria-label", `Delete session “${title}”`);
  remove.addEventListener("click", () => run(deleteSession(session.id, title)));

  const item = document.createElement("li");
  item.append(open, remove);
  return item;
}

async function openSession(id) {
  stop();
  const session = await (await api(`/v1/sessions/${encodeURIComponent(id)}`)).json();
  state.sessionId = session.id;
  state.messages = session.messages.filter((m) => m.role !== "system")
    .map(({ role, content, partial }) => ({ role, content, partial }));
  $("system").value = session.system_prompt || "";
  if (chatModels().includes(session.model)) $("model").value = session.model;
  showError("");
  render();
  $("prompt").focus();
}

async function deleteSession(id, title) {
  if (!confirm(`Delete the session “${title}”?`)) return;
  await api(`/v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
  if (id === state.sessionId) newChat();
  await loadSessions();
}

function newChat() {
  stop();
  state.sessionId = null;
  state.messages = [];
  showError("");
  render();
  $("prompt").focus();
}

const chatModels = () => [...$("model").options].map((o) => o.value);

// --- the conversation ---------------------------------------------------------------------------

function requestBody(model) {
  const system = $("system").value.trim();
  const history = state.messages.map(({ role, content }) => ({ role, content }));
  return {
    model,
    messages: system ? [{ role: "system", content: system }, ...history] : history,
    stream: true,
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value) || undefined,
    session_id: state.sessionId || "new",
  };
}

async function send() {
  const text = $("prompt").value;
  const model = $("model").value;
  if (!text.trim() || state.controller || !model) return;
  showError("");
  $("prompt").value = "";
  const conversation = state.messages;  // "New chat" mid-stream replaces it: leave that one alone
  const user = { role: "user", content: text };
  const reply = { role: "assistant", content: "" };
  const body = requestBody(model);
  body.messages.push(user);
  const userView = showMessage(user);
  const replyView = showMessage(reply);
  replyView.dataset.streaming = "true";
  const controller = new AbortController();
  setStreaming(controller);
  let failed = false;
  const storeId = $("collection").value;
  const show = (piece) => {
    reply.content += piece;
    replyView.querySelector(".content").textContent = reply.content;
    scrollToEnd();
  };
  try {
    if (storeId) {  // answered from a collection: sources under the answer, citations link to them
      const final = await streamDocsAnswer(docsRequestBody(body, storeId), controller.signal, show);
      if (final) {
        reply.grounding = groundingOf(final);
        showGrounded(replyView, reply.content, reply.grounding);
      }
    } else {
      const response = await api("/v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body), signal: controller.signal,
      });
      await readEvents(response, (chunk) => {
        if (chunk.session_id && chunk.session_id !== state.sessionId) {
          state.sessionId = chunk.session_id;  // a new session: show it in the sidebar right away
          run(loadSessions());
        }
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) show(delta.content);
      });
    }
  } catch (error) {
    reply.partial = true;
    if (error.name !== "AbortError") {
      failed = true;
      showError(error.message);
    }
  } finally {
    delete replyView.dataset.streaming;
    setStreaming(null);
  }
  if (failed && !reply.content) {  // nothing came back: take the turn back to edit and resend
    userView.remove();
    replyView.remove();
    if (!$("prompt").value) $("prompt").value = text;
  } else {
    conversation.push(user, reply);
    if (reply.partial) markStopped(replyView);
  }
  localStorage.setItem(MODEL, model);
  await run(loadSessions());
}

function stop() {
  if (state.controller) state.controller.abort();
}

function setStreaming(controller) {
  state.controller = controller;
  $("stop").disabled = !controller;
  $("send").disabled = Boolean(controller);
  $("messages").setAttribute("aria-busy", String(Boolean(controller)));
  const lost = document.activeElement === $("stop") || document.activeElement === document.body;
  if (!controller && lost) $("prompt").focus();
}

function render() {
  $("messages").replaceChildren();
  for (const message of state.messages) {
    const view = showMessage(message);
    if (message.grounding) showGrounded(view, message.content, message.grounding);
    if (message.partial) markStopped(view);
  }
  for (const button of document.querySelectorAll("#sessions .session")) {
    if (button.dataset.id === state.sessionId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function showMessage(message) {
  const item = document.createElement("li");
  item.className = `message ${message.role}`;
  const who = document.createElement("span");
  who.className = "role";
  who.textContent = message.role === "user" ? "You" : "Model";
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = message.content;  // text, never HTML: model output is untrusted
  item.append(who, content);
  $("messages").append(item);
  scrollToEnd();
  return item;
}

function markStopped(view) {
  const note = document.createElement("small");
  note.className = "note";
  note.textContent = "stopped";
  view.append(note);
}

function scrollToEnd() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

/** Run an async action from an event handler, showing its failure in the page. */
async function run(promise) {
  try {
    await promise;
  } catch (error) {
    showError(error.message);
  }
}

// --- wiring -------------------------------------------------------------------------------------

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    run(send());
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      run(send());
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller) stop();
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  $("model").addEventListener("change", () => localStorage.setItem(MODEL, $("model").value));
  $("collection").addEventListener("change", () => localStorage.setItem(COLLECTION, $("collection").value));
  $("temperature").addEventListener("input", () => {
    $("temperature-value").value = $("temperature").value;
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("key-dialog").close("save");
  });
  $("key-cancel").addEventListener("click", () => $("key-dialog").close(""));
  $("change-key").addEventListener("click", async () => {
    if (await askKey("Enter the API key for this server.")) run(start());
  });
}

async function start() {
  await loadModels();
  await loadSessions();
  await loadCollections();
}

wire();
run(start());

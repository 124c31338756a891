// What every page of `mistralkit serve` shares: the API key (asked in a dialog, kept in localStorage)
// and fetch() calls that carry it and turn the server's errors into messages.
"use strict";

const KEY = "mistralkit.apiKey";
const $ = (id) => document.getElementById(id);

/** The API key dialog, the same on every page (built here so that each page need not repeat it). */
function buildKeyDialog() {
  const dialog = document.createElement("dialog");
  dialog.id = "key-dialog";
  dialog.setAttribute("aria-labelledby", "key-title");
  dialog.innerHTML = `
    <form method="dialog" id="key-form">
      <h2 id="key-title">API key</h2>
      <p id="key-reason">This server needs an API key.</p>
      <label for="key-input">Key</label>
      <input id="key-input" type="password" autocomplete="off" required>
      <div class="actions">
        <button type="submit" value="save">Save</button>
        <button type="button" id="key-cancel">Cancel</button>
      </div>
    </form>`;
  document.body.append(dialog);
}

buildKeyDialog();

// --- talking to the server ----------------------------------------------------------------------

let keyRequest = null;

/** Ask for the API key in a dialog, once for all waiting calls; resolves to the key or null. */
function askKey(reason) {
  if (keyRequest) return keyRequest;
  const dialog = $("key-dialog");
  $("key-reason").textContent = reason;
  $("key-input").value = "";
  dialog.returnValue = "";
  keyRequest = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      keyRequest = null;
      const key = $("key-input").value.trim();
      if (dialog.returnValue === "save" && key) localStorage.setItem(KEY, key);
      resolve(dialog.returnValue === "save" && key ? key : null);
    }, { once: true });
  });
  dialog.showModal();
  return keyRequest;
}

/** fetch() with the stored key; asks for a key on 401; throws the server's error message. */
async function api(path, options = {}) {
  for (;;) {
    const key = localStorage.getItem(KEY);
    const headers = { ...options.headers };
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) {
      if (!response.ok) throw new Error(await errorMessage(response));
      return response;
    }
    const asked = await askKey(key ? "The server refused this API key. Enter another one."
                                    : "This server needs an API key.");
    if (!asked) throw new Error("This server needs an API key: enter it with “API key…”.");
  }
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON: fall back to the status line */ }
  return `${response.status} ${response.statusText}`.trim();
}

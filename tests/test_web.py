"""The web chat page in real headless Chromium against a real ``mistralkit serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

KEY = "web-page-test-key"
MODEL = "gemma-3-270m:q4_k_m"
# Greedy replies of the embedded base model: the second runs long (to be stopped); others tried
# ("Once upon a time, a small cat", then any request) loop on a ten-character answer.
FIRST = "Write a short story about a dragon."
SECOND = "Tell me the whole story, chapter by chapter. Chapter 1:"
STREAMING_REPLY = ".message.assistant[data-streaming] .content"

# Records the live reply's length at every change, to prove the text arrives in pieces.
RECORD_GROWTH = """() => {
  window.replyLengths = [];
  new MutationObserver(() => {
    const live = document.querySelector(".message.assistant[data-streaming] .content");
    if (live) window.replyLengths.push(live.textContent.length);
  }).observe(document.getElementById("messages"),
             { childList: true, subtree: true, characterData: true });
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, key: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def server(model, mk_home, tmp_path):
    """``python -m mistralkit serve`` on a free port with an API key; yields (url, process, log)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    env["MISTRALKIT_HOME"] = str(mk_home)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        command = [sys.executable, "-m", "mistralkit", "serve", "--port", str(port),
                   "--model", MODEL, "--api-key", KEY]
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: process.poll() is not None or _get(f"{url}/health")["status"] == "ok",
                    60, "the server's /health")
        assert process.poll() is None, f"the server exited early:\n{log.read_text()}"
        yield url, process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_chat_page_streams_stops_and_reopens_a_session(server, browser):
    from playwright.sync_api import expect

    url, process, log = server
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)  # generation shares 2 cores with everything else
    page.goto(url)

    # No key stored yet: the first API call gets a 401 and the page asks for one.
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    page.get_by_label("Key", exact=True).fill(KEY)
    page.get_by_label("Key", exact=True).press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.get_by_label("Model")).to_have_value(MODEL)

    page.get_by_text("Settings").click()
    page.get_by_label("Temperature").press("Home")  # 0: greedy, the same reply every run
    expect(page.locator("#temperature-value")).to_have_text("0")
    page.get_by_label("Max tokens").fill("24")

    # First turn: the reply arrives piece by piece.
    page.evaluate(RECORD_GROWTH)
    prompt = page.get_by_label("Message")
    prompt.fill(FIRST)
    prompt.press("Enter")
    expect(page.locator(".message.assistant")).to_have_count(1)
    expect(page.locator(".message.assistant[data-streaming]")).to_have_count(0)
    first_reply = page.locator(".message.assistant .content").first.inner_text()
    growth = sorted({n for n in page.evaluate("window.replyLengths") if n > 0})
    assert len(growth) >= 3, f"the reply did not grow while streaming: lengths seen {growth}"
    assert first_reply.strip()
    session_button = page.locator('#sessions .session[aria-current="true"]')
    expect(session_button).to_have_count(1)
    session_id = session_button.get_attribute("data-id")

    # Second turn in the same session, long: Stop cuts it short.
    page.get_by_label("Max tokens").fill("2000")
    prompt.fill(SECOND)
    prompt.press("Enter")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_enabled()
    page.wait_for_function(
        f"() => (document.querySelector('{STREAMING_REPLY}')?.textContent.length || 0) > 20")
    stop.click()
    expect(stop).to_be_disabled()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.locator(".message.assistant .note")).to_have_text("stopped")
    shown_partial = page.locator(".message.assistant .content").nth(1).inner_text()

    # The server saves the partial reply once it sees the client gone.
    def saved_turns():
        session = _get(f"{url}/v1/sessions/{session_id}", KEY)
        return session if len(session["messages"]) == 4 else None

    saved = _wait_until(saved_turns, 15, "the stopped turn to be saved")
    assert saved["messages"][3]["partial"] is True

    # Reload: the key is remembered, the session is in the sidebar, and opening it shows the turns.
    page.reload()
    entry = page.locator(f'#sessions .session[data-id="{session_id}"]')
    expect(entry).to_contain_text(FIRST)
    expect(dialog).to_be_hidden()
    entry.click()
    messages = page.locator("#messages .message .content")
    expect(messages).to_have_count(4)
    texts = messages.all_inner_texts()
    assert texts[0] == FIRST
    assert texts[1] == first_reply
    assert texts[2] == SECOND
    assert texts[3].startswith(shown_partial.rstrip())
    expect(page.locator(".message.assistant .note")).to_have_text("stopped")

    # A prompt over the context window: the server's 400 is shown, the text given back to edit.
    prompt.fill("word " * 6000)
    prompt.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("context window")
    expect(messages).to_have_count(4)
    assert prompt.input_value().startswith("word word")

    assert not errors, f"errors in the page: {errors}"
    page.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, f"the server did not exit cleanly:\n{log.read_text()}"


@pytest.fixture
def another_model(model, mk_home):
    """The embedded GGUF registered under a name listed before it, as a store that holds more would."""
    from conftest import run_cli

    assert run_cli("models", "import", str(model.path), "--name", "aaa-other", home=mk_home).returncode == 0
    yield "aaa-other"
    run_cli("models", "rm", "aaa-other", home=mk_home)


def test_correction_page_highlights_edits_and_refusals(another_model, server, browser):
    from playwright.sync_api import expect

    url, process, log = server
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(120_000)
    expect.set_options(timeout=120_000)
    page.goto(f"{url}/correct")

    # Rules mode: the first call asks for the key, then every edit is a highlighted <mark>.
    page.get_by_label("Texte à corriger").fill("Il a manger une pome.\n\nM. Leblanc est venu hier.")
    page.get_by_role("button", name="Corriger").click()
    page.get_by_label("Key", exact=True).fill(KEY)
    page.get_by_label("Key", exact=True).press("Enter")
    marks = page.locator("#corrected mark.edit.rule")
    expect(marks).to_have_count(2)
    assert marks.all_inner_texts() == ["mangé", "pomme"]
    assert "manger → mangé" in marks.first.get_attribute("title")
    marks.first.click()
    expect(page.locator("#detail")).to_contain_text("participe passé")
    expect(page.locator("#corrected")).to_have_text("Il a mangé une pomme.\n\nM. Leblanc est venu hier.")
    expect(page.locator("#corrected span.protected")).to_contain_text(["Leblanc"])

    # Hybrid mode: what the page shows is what the server answered, refusals included.
    page.get_by_label("Mode").select_option("hybrid")
    expect(page.get_by_label("Modèle")).to_have_value(MODEL)
    page.get_by_label("Texte à corriger").fill("Hier, Lucas et sa soeur son allé au cinema avec 3 amis.")
    with page.expect_response(lambda r: r.url.endswith("/v1/correct")) as answer:
        page.get_by_role("button", name="Corriger").click()
    result = answer.value.json()
    assert result["mode"] == "hybrid"
    expect(page.locator("#corrected mark.edit")).to_have_count(len(result["edits"]))
    expect(page.locator("#corrected mark.edit.llm")).to_have_count(
        sum(e["source"] == "llm" for e in result["edits"]))
    expect(page.locator("#refused li.refused")).to_have_count(len(result["refused"]))
    for item, refusal in zip(page.locator("#refused li").all_inner_texts(), result["refused"]):
        assert "résultat des règles est gardé" in item  # the reason in French, its quoted words as they are
        assert refusal["reason"].split(":")[0] not in item or refusal["reason"].startswith("model error"), item
        corrected = result["corrected"]
        assert f"« {corrected[refusal['start']:refusal['end']].strip()} »" in item  # the sentence, from its start
    expect(page.locator("#corrected")).to_have_text(result["corrected"])

    # Rank mode: the model's choices are marked as such, with how sure it was.
    page.get_by_label("Mode").select_option("rank")
    page.get_by_label("Texte à corriger").fill("Mes cousins on gagné le tournoi de Brest.")
    with page.expect_response(lambda r: r.url.endswith("/v1/correct")) as answer:
        page.get_by_role("button", name="Corriger").click()
    result = answer.value.json()
    assert result["mode"] == "rank"
    chosen = page.locator("#corrected mark.edit.lm")
    expect(chosen).to_have_count(sum(e["source"] == "lm" for e in result["edits"]))
    expect(page.locator("#corrected mark.edit.unsure")).to_have_count(len(result["proposed"]))
    assert "confiance" in chosen.first.get_attribute("title")
    expect(page.locator("#corrected")).to_contain_text("ont gagné")

    # The chat page links here and back; the key is remembered across them.
    page.get_by_role("link", name="Chat").click()
    expect(page).to_have_url(f"{url}/")
    page.get_by_role("link", name="Correction").click()
    expect(page).to_have_url(f"{url}/correct")
    expect(page.get_by_role("dialog")).to_be_hidden()

    assert not errors, f"errors in the page: {errors}"
    page.close()

"""The chat page's collection panel in real headless Chromium against a real ``mistralkit serve``: pick a
vector store, ask, see the sources under the answer, open a cited passage."""

from __future__ import annotations

import pytest
from test_server_api import KEY, MODEL, ONE_THREAD, Serve

pytestmark = pytest.mark.slow

ZORBANIA = b"# Zorbania\n\nThe capital of Zorbania is Quelmont. It lies on the Silverkeld river.\n"
FRIMPS = b"# Frimps\n\nFrimps eat only copper leaves, and they sleep in the winter.\n"


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "docs-web.log", "--api-key", KEY, "--model", MODEL,
                  *ONE_THREAD)
    client = serve.client()
    ids = [client.files.create(file=(name, data), purpose="assistants").id
           for name, data in (("zorbania.md", ZORBANIA), ("frimps.md", FRIMPS))]
    client.vector_stores.create(name="web-notes", file_ids=ids)
    yield serve
    serve.stop()


def test_collection_panel_shows_sources_and_opens_cited_passages(server, browser):
    from playwright.sync_api import expect

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(60_000)
    expect.set_options(timeout=60_000)
    page.add_init_script(f"localStorage.setItem('mistralkit.apiKey', {KEY!r})")
    page.goto(server.url)

    picker = page.get_by_label("Documents")
    expect(picker.locator("option[value='vs_web-notes']")).to_have_text("web-notes (2 files)")
    picker.select_option("vs_web-notes")
    page.get_by_text("Settings").click()
    page.get_by_label("Temperature").press("Home")
    page.get_by_label("Max tokens").fill("24")
    prompt = page.get_by_label("Message")
    prompt.fill("What is the capital of Zorbania?")
    prompt.press("Enter")

    answer = page.locator(".message.assistant").last
    expect(page.locator(".message.assistant[data-streaming]")).to_have_count(0)
    sources = answer.get_by_role("list", name="Sources").locator("details")
    expect(sources.first.locator("summary")).to_have_text("[1] zorbania.md · line 3")
    expect(sources.first.locator(".passage")).to_be_hidden()
    assert answer.locator(".content").inner_text().strip()
    assert page.evaluate("localStorage.getItem('mistralkit.collection')") == "vs_web-notes"

    # Whatever the small model cited, the page links a server-checked citation to its passage: render an
    # answer that cites source 1 (valid) and source 9 (not given), with the sources this answer got.
    page.evaluate("""() => {
        const message = state.messages[state.messages.length - 1];
        const text = "Quelmont is the capital [1], with nine bridges [9].";
        const grounding = {...message.grounding, annotations: [{type: "file_citation", index: text.indexOf("[1]")}],
                           invalid: [{number: 9, start: text.indexOf("[9]"),
                                      problem: "cites source 9, which was not given"}]};
        message.content = text;
        message.grounding = grounding;
        render();
    }""")
    answer = page.locator(".message.assistant").last
    link = answer.get_by_role("link", name="[1]")
    expect(answer.locator(".citation.invalid")).to_have_text("[9]")
    expect(answer.locator(".citation.invalid")).to_have_attribute("title", "cites source 9, which was not given")
    link.click()
    passage = answer.get_by_role("list", name="Sources").locator("details").first.locator(".passage")
    expect(passage).to_be_visible()
    expect(passage).to_contain_text("The capital of Zorbania is Quelmont.")
    expect(answer.locator(".problems")).to_contain_text("[9]")

    # Back to no collection: a plain chat answer, without sources.
    picker.select_option("")
    prompt.fill("Count: 1, 2, 3,")
    prompt.press("Enter")
    expect(page.locator(".message.assistant")).to_have_count(2)
    expect(page.locator(".message.assistant[data-streaming]")).to_have_count(0)
    expect(page.locator(".message.assistant").last.locator(".sources")).to_have_count(0)
    assert not errors, f"errors in the page: {errors}"
    page.close()

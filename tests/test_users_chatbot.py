"""The chatbot template's README (../shared/users/chatbot-readme.md), its names replayed: ``--local-path``,
``LLM_QUANT_ENABLED``/``LLM_QUANT_BITS``, ``--session-id NAME`` that creates or resumes, a session on a
model given as a path that resumes from anywhere, and ``--quant 4`` on a GGUF that says why not."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_a_named_session_is_created_then_resumed(mk_home):
    first = run_cli("chat", "--session-id", "project-alpha", "--greedy", "-n", "4", "--prompt", "hello", home=mk_home)
    assert first.returncode == 0, first.stderr
    assert "New session 'project-alpha'" in first.stderr and "Session saved: project-alpha" in first.stderr
    again = run_cli("chat", "--session-id", "project-alpha", "--greedy", "-n", "4", "--prompt", "again",
                    home=mk_home)
    assert again.returncode == 0 and "Resumed session project-alpha (2 messages)" in again.stderr
    shown = json.loads(run_cli("sessions", "show", "project-alpha", "--json", home=mk_home).stdout)
    assert [m["content"] for m in shown["messages"] if m["role"] == "user"] == ["hello", "again"]


def test_a_session_on_a_model_path_resumes_from_another_folder(mk_home, model, tmp_path):
    (tmp_path / "models").mkdir()
    mine = tmp_path / "models" / "mygemma.gguf"
    shutil.copyfile(model.path, mine)
    made = run_cli("chat", "--local-path", str(mine), "--session-id", "gemma-notes", "--greedy", "-n", "4",
                   "--prompt", "hello", home=mk_home)
    assert made.returncode == 0, made.stderr
    shown = json.loads(run_cli("sessions", "show", "gemma-notes", "--json", home=mk_home).stdout)
    assert shown["model"] == str(mine)
    resumed = run_cli("chat", "--session-id", "gemma-notes", "--greedy", "-n", "4", "--prompt", "more",
                      home=mk_home)
    assert resumed.returncode == 0 and "Resumed session gemma-notes" in resumed.stderr, resumed.stderr


def test_local_path_is_the_model_and_two_models_are_refused(mk_home, model):
    ran = run_cli("run", "--local-path", str(model.path), "--greedy", "-n", "4", "The sky is", home=mk_home)
    assert ran.returncode == 0, ran.stderr
    both = run_cli("run", "-m", "smollm2-135m-instruct", "--local-path", str(model.path), "hi", home=mk_home)
    assert both.returncode == 2 and "--model and --local-path name two models" in both.stderr


def test_llm_quant_variables_ask_for_4_bits_and_a_gguf_says_it_is_already_quantized(mk_home):
    env = {"LLM_QUANT_ENABLED": "1", "LLM_QUANT_BITS": "4"}
    shown = run_cli("config", "show", "--json", home=mk_home, env=env)
    assert json.loads(shown.stdout)["settings"]["quant"]["value"] == 4, shown.stdout
    refused = run_cli("run", "hi", home=mk_home, env=env)
    assert refused.returncode != 0 and "already quantized (Q4_K_M)" in refused.stderr
    assert "Traceback" not in refused.stderr
    off = run_cli("config", "show", "--json", home=mk_home, env={"LLM_QUANT_ENABLED": "0", "LLM_QUANT_BITS": "4"})
    assert json.loads(off.stdout)["settings"]["quant"]["value"] is None


def test_a_program_holds_a_conversation_sends_turns_and_saves_it(mk_home):
    """The Python side the template has (an engine object, history, send, save), as ``mistralkit.Conversation``."""
    import mistralkit
    from mistralkit.chat.history import Store

    with mistralkit.Conversation({"greedy": True, "max_tokens": 6}, system="Be brief.") as chat:
        first = chat.send("The capital of France is")
        seen: list[str] = []
        second = chat.send("And of Spain?", on_text=seen.append)
        assert "".join(seen) == second.text
        assert second.usage.prompt_tokens > first.usage.prompt_tokens + 4  # the first exchange is in the prompt
        assert [m["role"] for m in chat.messages] == ["user", "assistant"] * 2
        assert chat.save("py-chat") == "py-chat"
        chat.send("One more")
        chat.save()
    store = Store()
    try:
        saved = store.messages("py-chat")
        assert [m.content for m in saved if m.role == "user"] == ["The capital of France is", "And of Spain?",
                                                                   "One more"]
        assert store.get_session("py-chat").system_prompt == "Be brief."
    finally:
        store.close()

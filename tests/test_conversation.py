import pytest

from mistralkit.chat.conversation import fit
from mistralkit.errors import ContextOverflow


def words(messages):
    return sum(len(m["content"].split()) for m in messages)


def convo(n_turns):
    msgs = [{"role": "system", "content": "sys " * 5}]
    for i in range(n_turns):
        msgs += [{"role": "user", "content": f"q{i} " * 10}, {"role": "assistant", "content": f"a{i} " * 10}]
    return [*msgs, {"role": "user", "content": "last " * 10}]


def test_everything_fits():
    fitted = fit(convo(2), words, n_ctx=100, max_tokens=10)
    assert fitted.dropped_turns == 0 and fitted.prompt_tokens == 5 + 40 + 10


def test_oldest_turns_dropped_system_kept():
    fitted = fit(convo(4), words, n_ctx=60, max_tokens=10)  # room for system + 1 turn + last
    assert fitted.dropped_turns == 3
    assert fitted.messages[0]["role"] == "system"
    assert fitted.messages[1]["content"].startswith("q3")
    assert fitted.messages[-1]["content"].startswith("last")


def test_single_message_too_big_gives_sizes():
    with pytest.raises(
        ContextOverflow, match="15 tokens; with max_tokens 10 that needs 25, over the context window of 20"
    ):
        fit(convo(3), words, n_ctx=20, max_tokens=10)


def test_real_tokenizer(engine):
    long_history = convo(40)
    fitted = fit(long_history, engine.count_tokens, engine.n_ctx, 512)
    assert fitted.dropped_turns > 0
    assert fitted.prompt_tokens + 512 <= engine.n_ctx
    assert engine.count_tokens(fitted.messages) == fitted.prompt_tokens

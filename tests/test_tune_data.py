"""Training data: JSONL shapes and their errors, loss masks per chat format, and `mistralkit data`.

The Mistral tests use mistral-common's real v1/v3/v7/tekken tokenizers; the plain and Jinja tests
the embedded Gemma's real vocabulary through llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistralkit.errors import DatasetError
from mistralkit.formats.jinja import JinjaFormat
from mistralkit.formats.mistral import TOKENIZER_FILES, MistralFormat
from mistralkit.tune.data import check, convert, describe_shapes, parse_line, read_samples, shape_counts, split
from mistralkit.formats.layout import IGNORE, encode, encoder_for, pad_batch
from mistralkit.tune.stats import histogram, percentile, stats, validate

PROMPT = {"prompt": "What is 2+2?", "response": "4."}
CHAT = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!", "weight": 0},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]}
TWO_TRAINED = {"messages": [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]}
TEXT = {"text": "Once upon a time."}


def sample(obj, line=1):
    return parse_line(json.dumps(obj), path="d.jsonl", line=line)


def write(path: Path, *lines) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def trained_and_not(encoder, obj, **kwargs):
    encoded = encode(sample(obj), encoder, **kwargs)
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
    ignored = [t for t, label in zip(encoded.input_ids, encoded.labels) if label == IGNORE]
    return encoded, encoder.decode(trained), encoder.decode(ignored)


def show(encoder, encoded) -> None:
    """Print each token with whether it carries loss (visible with pytest -s)."""
    print(f"\n{encoder.format.name}:")
    for token, label in zip(encoded.input_ids, encoded.labels):
        print(f"  {'LOSS' if label != IGNORE else '    '} {token:>7} {encoder.decode([token])!r}")


# --- reading ----------------------------------------------------------------------------------

def test_three_shapes_become_samples():
    p = sample({**PROMPT, "system": "Be brief."})
    assert p.shape == "prompt" and [m["role"] for m in p.messages] == ["system", "user", "assistant"]
    assert p.weights == (0, 0, 1)
    assert sample({"prompt": "a", "completion": "b"}).messages[-1]["content"] == "b"
    c = sample(CHAT)
    assert c.shape == "messages" and c.weights == (0, 0, 0, 0, 1)
    t = sample(TEXT)
    assert t.shape == "text" and t.text == "Once upon a time." and not t.messages


@pytest.mark.parametrize("line, field, phrase", [
    ("{not json", "", "invalid JSON"),
    ("[1, 2]", "", "must be a JSON object"),
    ('{"question": "a"}', "", "no known shape"),
    ('{"prompt": "a"}', "response", "needs a \"response\""),
    ('{"prompt": "a", "response": "   "}', "response", "empty assistant turn"),
    ('{"prompt": 3, "response": "b"}', "prompt", "must be a string"),
    ('{"text": "a", "messages": []}', "text", "one shape per line"),
    ('{"messages": []}', "messages", "non-empty list"),
    ('{"messages": [{"role": "bot", "content": "a"}]}', "messages[0].role", "unknown role 'bot'"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}',
     "messages[1].content", "empty assistant turn"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
     "messages[1].role", "after a user turn"),
    ('{"messages": [{"role": "assistant", "content": "a"}]}', "messages[0].role", "cannot come first"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "messages", "last message must be an assistant"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0.5}]}',
     "messages[1].weight", "must be 0 or 1"),
    ('{"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]}',
     "messages[0].weight", "only assistant turns"),
    ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}', "messages[0].content", "missing"),
])
def test_errors_name_file_line_and_field(line, field, phrase):
    with pytest.raises(DatasetError) as caught:
        parse_line(line, path="train.jsonl", line=7)
    error = caught.value
    assert (error.path, error.line, error.field) == ("train.jsonl", 7, field)
    assert error.message.startswith(f"train.jsonl:7: {field + ': ' if field else ''}")
    assert phrase in error.message


def test_check_reports_every_problem_and_skips_blank_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(PROMPT).encode() + b"\n\n"
                     + json.dumps(CHAT).encode() + b"\n{oops\n\xff\xfe\n" + json.dumps(PROMPT).encode() + b"\n")
    samples, errors = check(path)  # mixed shapes are read, each line in its own
    assert [(s.line, s.shape) for s in samples] == [(1, "prompt"), (3, "messages"), (6, "prompt")]
    assert [(e.line, e.reason.split(" (")[0].split(":")[0]) for e in errors] == [(4, "invalid JSON"),
                                                                                (5, "not UTF-8 text")]
    strict_samples, strict = check(path, allow_mixed=False)  # --strict-shapes
    assert [s.line for s in strict_samples] == [1, 6] and [e.line for e in strict] == [3, 4, 5]
    assert strict[0].reason.startswith("shape 'messages' differs from 'prompt'") and "--strict-shapes" in strict[0].hint
    with pytest.raises(DatasetError, match="mixed.jsonl:4"):
        read_samples(path)
    with pytest.raises(DatasetError, match="mixed.jsonl:3"):
        read_samples(path, allow_mixed=False)
    with pytest.raises(DatasetError, match="no such file"):
        read_samples(tmp_path / "nope.jsonl")
    assert check(write(tmp_path / "empty.jsonl", ""))[1][0].reason.startswith("no samples")


def test_mixed_shapes_are_counted_and_said_to_be_mixed(tmp_path):
    path = write(tmp_path / "legal.jsonl", *[CHAT] * 10, *[PROMPT] * 3, TEXT)
    shapes = shape_counts(read_samples(path))
    assert list(shapes.items()) == [("messages", 10), ("prompt", 3), ("text", 1)]  # most first
    assert describe_shapes(shapes) == "messages 10, prompt 3, text 1 (mixed)"
    assert describe_shapes({"prompt": 3}) == "prompt 3" and describe_shapes({}) == "none"
    report = validate(path)
    assert report.ok and report.samples == 14 and report.to_dict()["mixed"] is True
    assert validate(write(tmp_path / "one.jsonl", PROMPT)).to_dict()["mixed"] is False


def test_tune_reads_mixed_shapes_and_its_summary_says_so(tmp_path):
    from mistralkit.tune.config import TuneConfig
    from mistralkit.tune.train import encode_file

    path = write(tmp_path / "legal.jsonl", CHAT, CHAT, PROMPT)
    config = TuneConfig(data=str(path), out=str(tmp_path / "run"), max_length=256)
    dataset = encode_file(str(path), encoder_for(MistralFormat("v3")), config)
    assert len(dataset.samples) == 3 and dataset.stats()["shapes"] == {"messages": 2, "prompt": 1}
    assert dataset.stats()["mixed"] is True
    assert dataset.notes(256) == [f"{path}: shapes: messages 2, prompt 1 (mixed); "
                                  "each line is trained in its own shape"]
    single = write(tmp_path / "one.jsonl", PROMPT)
    assert encode_file(str(single), encoder_for(MistralFormat("v3")), config).notes(256) == []


# --- masks: Mistral ---------------------------------------------------------------------------

# For each tokenizer: (trained text, untrained text) of PROMPT, CHAT, TWO_TRAINED and TEXT.
# v1 puts the system prompt in the first [INST], v3/tekken in the last one, v7 in its own block.
EXPECTED = {
    "v1": [("4.</s>", "<s>[INST] What is 2+2? [/INST]"),
           ("Paris.</s>", "<s>[INST] Be brief.\n\nHi [/INST] Hello!</s>[INST] Capital of France? [/INST]"),
           ("Hello!</s>Paris.</s>", "<s>[INST] Hi [/INST] [INST] Capital of France? [/INST]"),  # one decode: a space
           ("Once upon a time.</s>", "<s>")],
    "v3": [("4.</s>", "<s>[INST]What is 2+2?[/INST]"),
           ("Paris.</s>", "<s>[INST]Hi[/INST]Hello!</s>[INST]Be brief.\n\nCapital of France?[/INST]"),
           ("Hello!</s>Paris.</s>", "<s>[INST]Hi[/INST][INST]Capital of France?[/INST]"),
           ("Once upon a time.</s>", "<s>")],
    "v7": [("4.</s>", "<s>[INST]What is 2+2?[/INST]"),
           ("Paris.</s>", "<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]Hi[/INST]Hello!</s>"
                          "[INST]Capital of France?[/INST]"),
           ("Hello!</s>Paris.</s>", "<s>[INST]Hi[/INST][INST]Capital of France?[/INST]"),
           ("Once upon a time.</s>", "<s>")],
    "tekken": [("4.</s>", "<s>[INST]What is 2+2?[/INST]"),
               ("Paris.</s>", "<s>[INST]Hi[/INST]Hello!</s>[INST]Be brief.\n\nCapital of France?[/INST]"),
               ("Hello!</s>Paris.</s>", "<s>[INST]Hi[/INST][INST]Capital of France?[/INST]"),
               ("Once upon a time.</s>", "<s>")],
}


@pytest.mark.parametrize("version", EXPECTED)
def test_mistral_loss_is_on_assistant_turns_and_their_eos(version):
    encoder = encoder_for(MistralFormat(version))
    for obj, (trained, ignored) in zip([PROMPT, CHAT, TWO_TRAINED, TEXT], EXPECTED[version]):
        encoded, got_trained, got_ignored = trained_and_not(encoder, obj)
        show(encoder, encoded)
        assert (got_trained, got_ignored) == (trained, ignored), obj
        assert encoded.labels[0] == IGNORE or "text" in obj  # BOS
        if "text" not in obj:
            assert encoded.labels[-1] == encoder.eos_id and encoded.input_ids[-1] == encoder.eos_id


@pytest.mark.parametrize("version", list(TOKENIZER_FILES))
def test_mistral_tokens_are_mistral_commons_own(version):
    """The message-by-message build equals mistral-common's whole-conversation encoding (finetuning
    mode), and everything before the last answer is exactly the inference prompt."""
    import mistral_common
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from mistralkit.formats.mistral import load_tokenizer, to_mistral

    path = load_tokenizer(version).instruct_tokenizer.tokenizer.file_path  # tekken-v7: the relabelled copy
    assert path.parent == Path(mistral_common.__file__).parent / "data" or version == "tekken-v7"
    reference = MistralTokenizer.from_file(path, mode=ValidationMode.finetuning)
    chat_format = MistralFormat(version)
    encoder = encoder_for(chat_format)
    for obj in (PROMPT, CHAT, TWO_TRAINED, {**PROMPT, "system": "Answer in French. "}):
        s = sample(obj)
        whole = reference.encode_chat_completion(ChatCompletionRequest(messages=to_mistral(s.messages))).tokens
        segments = encoder.segments(s)
        assert encode(s, encoder).input_ids == whole
        prompt = [t for segment in segments[:-1] for t in segment.tokens]
        assert prompt == chat_format.encode(list(s.messages[:-1]))


@pytest.mark.parametrize("version", ["v3", "tekken"])
def test_train_on_inputs_weights_and_no_trainable_token(version):
    encoder = encoder_for(MistralFormat(version))
    for obj in (PROMPT, CHAT, TEXT):
        encoded = encode(sample(obj), encoder, train_on_inputs=True)
        assert encoded.labels == encoded.input_ids
    silent = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "weight": 0}]}
    with pytest.raises(DatasetError) as caught:
        encode(sample(silent, line=12), encoder)
    assert caught.value.message.startswith("d.jsonl:12: messages: no trainable token")
    assert encode(sample(silent), encoder, train_on_inputs=True).trainable > 0


@pytest.mark.parametrize("version", ["v1", "v7", "tekken"])
def test_padding_never_hides_eos(version):
    encoder = encoder_for(MistralFormat(version))
    batch = [encode(sample(obj), encoder) for obj in (PROMPT, CHAT)]
    assert encoder.pad_id != encoder.eos_id
    padded = pad_batch(batch, encoder.pad_id, multiple_of=8)
    width = len(padded["input_ids"][0])
    assert width % 8 == 0 and width >= max(map(len, batch))
    for row, labels, mask, encoded in zip(padded["input_ids"], padded["labels"], padded["attention_mask"], batch):
        n = len(encoded)
        assert row[n:] == [encoder.pad_id] * (width - n) and labels[n:] == [IGNORE] * (width - n)
        assert mask == [1] * n + [0] * (width - n)
        assert labels[n - 1] == encoder.eos_id and encoder.eos_id not in row[n:]


# --- masks: the embedded model's plain layout, and a Jinja template ----------------------------

# Gemma 3's chat template, reduced to text content (the system prompt joins the first user turn).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}{%- set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


class InstructGemmaVocab:
    """The embedded Gemma's real vocabulary with EOS = <end_of_turn>, as gemma-3 *-it* GGUFs declare
    it (the embedded model is the base model, whose EOS is <eos>)."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.bos_id, self.add_bos = engine.bos_id, engine.add_bos
        self.eos_id = engine.tokenize("<end_of_turn>", special=True)[0]

    def tokenize(self, text, *, special):
        return self._engine.tokenize(text, special=special)

    def token_text(self, token_id):
        return self._engine.token_text(token_id)


@pytest.mark.slow
def test_plain_format_of_the_embedded_model(engine):
    assert engine.format.name == "plain"
    encoder = encoder_for(engine.format, engine)
    cases = [
        (PROMPT, " 4.<eos>", "<bos>User: What is 2+2?\nAssistant:"),
        (CHAT, " Paris.<eos>", "<bos>Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Capital of France?\nAssistant:"),
        (TWO_TRAINED, " Hello! Paris.<eos>", "<bos>User: Hi\nAssistant:\nUser: Capital of France?\nAssistant:"),
        (TEXT, "Once upon a time.<eos>", "<bos>"),
    ]
    for obj, trained, ignored in cases:
        encoded, got_trained, got_ignored = trained_and_not(encoder, obj)
        show(encoder, encoded)
        assert (got_trained, got_ignored) == (trained, ignored)
        if "text" not in obj:  # the prompt before the last answer is the inference prompt
            s = sample(obj)
            prompt = [t for segment in encoder.segments(s)[:-2] for t in segment.tokens]
            assert prompt == engine.format.encode(list(s.messages[:-1]))
    assert encoder.pad_id != encoder.eos_id


@pytest.mark.slow
def test_jinja_template_trains_the_end_of_turn(engine):
    vocab = InstructGemmaVocab(engine)
    chat_format = JinjaFormat(GEMMA_TEMPLATE, vocab)
    encoder = encoder_for(chat_format, vocab)
    cases = [(PROMPT, "4.<end_of_turn>"), (CHAT, "Paris.<end_of_turn>"),
             (TWO_TRAINED, "Hello!<end_of_turn>Paris.<end_of_turn>"), (TEXT, "Once upon a time.<end_of_turn>")]
    for obj, trained in cases:
        encoded, got_trained, got_ignored = trained_and_not(encoder, obj)
        show(encoder, encoded)
        assert got_trained == trained
        if "text" not in obj:
            s = sample(obj)
            segments = encoder.segments(s)
            assert [t for seg in segments[:-1] for t in seg.tokens] == chat_format.encode(list(s.messages[:-1]))
            assert "<start_of_turn>" in got_ignored and "<start_of_turn>" not in got_trained
    _, trained, ignored = trained_and_not(encoder, CHAT)
    assert ignored == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
                       "<end_of_turn>\n<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n")


# --- stats, split, convert --------------------------------------------------------------------

def test_stats_and_validate_with_a_mistral_tokenizer(tmp_path):
    path = write(tmp_path / "train.jsonl", PROMPT, {"prompt": "Tell me a story", "response": "Once " * 40}, PROMPT)
    encoder = encoder_for(MistralFormat("v3"))
    result = stats(path, encoder, max_length=20, bins=4)
    assert result.samples == 3 and result.shapes == {"prompt": 3} and result.format == "mistral-v3"
    short, long = (encode(s, encoder) for s in read_samples(path)[:2])
    assert result.tokens == {"total": 2 * len(short) + len(long), "min": len(short), "median": len(short),
                             "p95": len(long), "max": len(long)}
    assert long.trainable == 41 and result.trainable == 2 * short.trainable + 41  # 40 x "Once", EOS
    assert len(short) <= 20 < len(long) and result.over_max_length == 1
    assert sum(b.count for b in result.histogram) == 3
    report = validate(path, encoder, max_length=20)
    assert not report.ok and report.samples == 2
    assert report.errors[0].message.startswith(f"{path}:2: ") and "over --max-length 20" in report.errors[0].message
    assert validate(path, encoder).ok


def test_histogram_and_percentiles():
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile(list(range(1, 101)), 95) == 95
    bins = histogram([3, 7, 12, 48, 95], bins=10)
    assert (bins[0].low, bins[-1].high) == (0, 99) and [b.count for b in bins][:2] == [2, 1]
    assert sum(b.count for b in bins) == 5


def test_split_is_deterministic_byte_exact_and_safe(tmp_path):
    lines = [json.dumps({"prompt": f"q{i}", "response": f"a{i}"}, separators=(",", ":")) for i in range(50)]
    source = write(tmp_path / "all.jsonl", *lines)
    before = source.read_bytes()
    first = split(source, valid=0.1, seed=3)
    assert (first.train_samples, first.valid_samples) == (45, 5)
    train, valid = Path(first.train).read_text().splitlines(), Path(first.valid).read_text().splitlines()
    assert sorted(train + valid) == sorted(lines) and not set(train) & set(valid)
    assert train == [line for line in lines if line in train]  # original order kept
    with pytest.raises(DatasetError, match="already exists"):
        split(source, valid=0.1, seed=3)
    again = split(source, valid=0.1, seed=3, out=tmp_path / "out")
    assert (tmp_path / "out" / "valid.jsonl").read_text().splitlines() == valid
    assert Path(again.train).name == "train.jsonl"
    other = split(source, valid=5, seed=4, out=tmp_path / "other")
    assert Path(other.valid).read_text().splitlines() != valid
    assert source.read_bytes() == before

    broken = write(tmp_path / "broken.jsonl", *lines[:3], "{bad")
    with pytest.raises(DatasetError, match="broken.jsonl:4"):
        split(broken, valid=0.5)
    assert not list(tmp_path.glob("broken.*.jsonl"))
    with pytest.raises(DatasetError, match="no training samples"):
        split(write(tmp_path / "one.jsonl", PROMPT), valid=0.5)


def test_convert_to_messages(tmp_path):
    source = write(tmp_path / "qa.jsonl", {**PROMPT, "system": "Be brief."}, {"prompt": "a", "completion": "b"}, CHAT)
    where, count = convert(source)
    assert count == 3 and where.endswith("qa.messages.jsonl")
    back = read_samples(where)
    assert [s.shape for s in back] == ["messages"] * 3
    assert [s.messages for s in back] == [s.messages for s in read_samples(source)]
    assert back[2].weights == (0, 0, 0, 0, 1)
    with pytest.raises(DatasetError, match="overwrite the input"):
        convert(source, out=source)
    with pytest.raises(DatasetError, match="t.jsonl:1: text: a text sample has no turns"):
        convert(write(tmp_path / "t.jsonl", TEXT))


# --- the CLI ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_validate_reports_every_bad_line(cli, tmp_path):
    bad = write(tmp_path / "bad.jsonl", TWO_TRAINED, '{"messages": [{"role": "bot", "content": "x"}]}', "{oops",
                {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]})
    before = bad.read_bytes()
    result = cli("data", "validate", str(bad), "--tokenizer", "v7")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert [e.split(": ")[1] for e in errors] == [f"{bad}:2", f"{bad}:3", f"{bad}:4"]
    assert all(e.startswith("error: ") for e in errors) and "unknown role 'bot'" in errors[0]
    assert "3 problem(s); 1 good samples" in result.stdout
    data = json.loads(cli("data", "validate", str(bad), "--tokenizer", "v7", "--json").stdout)
    assert data["ok"] is False and [e["line"] for e in data["files"][0]["errors"]] == [2, 3, 4]
    assert data["files"][0]["errors"][0]["field"] == "messages[0].role"
    assert bad.read_bytes() == before

    good = write(tmp_path / "good.jsonl", PROMPT, CHAT)
    ok = cli("data", "validate", str(good))  # mixed shapes pass by default; the embedded model's format
    assert ok.returncode == 0, ok.stderr
    assert "ok; 2 good samples; shapes: messages 1, prompt 1 (mixed)" in ok.stdout and not ok.stderr
    alias = cli("data", "validate", str(good), "--allow-mixed", "--tokenizer", "v3", "--json")  # old scripts
    assert alias.returncode == 0, alias.stderr
    report = json.loads(alias.stdout)["files"][0]
    assert report["shapes"] == {"messages": 1, "prompt": 1} and report["mixed"] is True
    strict = cli("data", "validate", str(good), "--strict-shapes", "--tokenizer", "v3")
    assert strict.returncode == 1 and f"{good}:2" in strict.stderr and "differs from 'prompt'" in strict.stderr


@pytest.mark.slow
def test_cli_stats_split_convert(cli, tmp_path):
    source = write(
        tmp_path / "all.jsonl", *[{"prompt": f"q{i}", "response": "word " * i + "end"} for i in range(1, 21)]
    )
    text = cli("data", "stats", str(source), "--tokenizer", "tekken", "--max-length", "20")
    assert text.returncode == 0, text.stderr
    assert "samples    20" in text.stdout and "would be cut" in text.stdout and "#" in text.stdout
    split_out = json.loads(cli("data", "split", str(source), "--valid", "0.2", "--seed", "1",
                               "--out", str(tmp_path / "d"), "--json").stdout)
    assert (split_out["train_samples"], split_out["valid_samples"]) == (16, 4)
    both = json.loads(cli("data", "stats", split_out["train"], split_out["valid"], "--tokenizer", "v3",
                          "--json").stdout)
    assert [f["samples"] for f in both["files"]] == [16, 4]
    converted = cli("data", "convert", str(source), "--to", "messages", "-o", "-")
    assert len(converted.stdout.splitlines()) == 20 and '"messages"' in converted.stdout
    refused = cli("data", "convert", str(source), "--to", "prompt")
    assert refused.returncode == 1 and refused.stderr.startswith("error: --to 'prompt'")
    missing = cli("data", "stats", str(tmp_path / "nope.jsonl"), "--tokenizer", "v3")
    assert missing.returncode == 1 and "nope.jsonl: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr + refused.stderr


@pytest.mark.slow
def test_cli_help_has_examples(cli):
    for command in (["data"], ["data", "validate"], ["data", "stats"], ["data", "split"], ["data", "convert"]):
        assert "Example" in cli(*command, "--help").stdout, command

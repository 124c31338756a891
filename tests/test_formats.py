"""Mistral prompts must be token-for-token what mistral-common produces, for every tokenizer."""

from pathlib import Path

import numpy as np
import pytest

from mistralkit.formats import mistral_version, select
from mistralkit.formats.mistral import TOKENIZER_FILES, MistralFormat, load_tokenizer
from mistralkit.formats.plain import PlainFormat
from mistralkit.models.gguf_info import GGUFInfo

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Bonjour, corrige: je suis aller a l'ecole."}],
    "system": [{"role": "system", "content": "You are a concise assistant."},
               {"role": "user", "content": "What is LoRA?"}],
    "multi_turn": [{"role": "system", "content": "Answer in French."},
                   {"role": "user", "content": "Hello!"},
                   {"role": "assistant", "content": "Bonjour !"},
                   {"role": "user", "content": "How are you?"},
                   {"role": "assistant", "content": "Très bien, merci."},
                   {"role": "user", "content": "Summarize our chat."}],
    "no_system_multi": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                        {"role": "user", "content": "2+2?"}],
}
VERSIONS = ["v1", "v2", "v3", "v7", "tekken", "tekken-v7"]
SYSTEM_BLOCK = ("v7", "tekken-v7")  # the versions that give the system prompt its own block

# The tekken-v7 tokenizer is written to the cache once: keep it in the test home.
pytestmark = pytest.mark.usefixtures("mk_home")


def reference_tokens(version, messages):
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    request = ChatCompletionRequest(messages=[kinds[m["role"]](content=m["content"]) for m in messages])
    return load_tokenizer(version).encode_chat_completion(request).tokens


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_tokens_match_mistral_common(version, name):
    messages = CONVERSATIONS[name]
    assert MistralFormat(version).encode(messages) == reference_tokens(version, messages)


def _control(version, text):
    return load_tokenizer(version).instruct_tokenizer.tokenizer.get_special_token(text)


@pytest.mark.parametrize("version", VERSIONS)
def test_layout_bos_inst_and_system_placement(version):
    fmt = MistralFormat(version)
    tokens = fmt.encode(CONVERSATIONS["multi_turn"])
    raw = load_tokenizer(version).instruct_tokenizer.tokenizer
    assert tokens[0] == raw.bos_id
    assert tokens.count(raw.eos_id) == 2  # each earlier answer is closed with EOS
    assert fmt.stop_token_ids == {raw.eos_id}
    text = fmt.decode(tokens)
    if version == "v1":  # v1 spells [INST] as ordinary text
        segments = text.split("[INST]")
        assert text.rstrip().endswith("[/INST]")
    else:
        inst, end_inst = _control(version, "[INST]"), _control(version, "[/INST]")
        assert tokens[-1] == end_inst
        segments = [fmt.decode(seg) for seg in _split(tokens, inst)]
    assert len(segments) == 4  # three user turns
    if version in SYSTEM_BLOCK:
        assert _control(version, "[SYSTEM_PROMPT]") in tokens
        assert "Answer in French." not in "".join(segments[1:])
    elif version == "v1":  # the first user message carries the system prompt
        assert "Answer in French." in segments[1] and "Answer in French." not in segments[-1]
    else:  # v2, v3, tekken: the last user message carries it
        assert "Answer in French." in segments[-1] and "Answer in French." not in segments[1]
    assert "Summarize our chat." in text


def _split(tokens, sep):
    parts, current = [], []
    for token in tokens:
        if token == sep:
            parts.append(current)
            current = []
        else:
            current.append(token)
    return [*parts, current]


def _info(**metadata):
    lengths = {"tokenizer.ggml.tokens": metadata.pop("vocab", 32000)}
    return GGUFInfo(path=None, version=3, metadata=metadata, array_lengths=lengths, tensors=[],  # type: ignore[arg-type]
                    data_offset=0, file_size=0)


@pytest.mark.parametrize("metadata, expected", [
    ({"general.name": "Mistral 7B Instruct v0.2", "tokenizer.ggml.model": "llama", "vocab": 32000}, "v1"),
    ({"general.name": "mistralai_mistral-7b-instruct-v0.3", "tokenizer.ggml.model": "llama", "vocab": 32768,
      "tokenizer.chat_template": "{{ '[INST] ' }}"}, "v3"),
    ({"general.name": "Mistral Small", "tokenizer.ggml.model": "llama", "vocab": 32768,
      "tokenizer.chat_template": "[SYSTEM_PROMPT] [INST]"}, "v7"),
    ({"general.name": "Ministral 8B Instruct", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "tekken",
      "vocab": 131072}, "tekken"),
    ({"general.name": "Mistral Small 3.1 24B Instruct 2503", "tokenizer.ggml.model": "gpt2",
      "tokenizer.ggml.pre": "tekken", "vocab": 131072, "tokenizer.chat_template": "[SYSTEM_PROMPT]{{ s }}"},
     "tekken-v7"),
    ({"general.name": "Gemma 3 270m", "tokenizer.ggml.model": "llama", "vocab": 262144}, None),
    ({"general.name": "TinyLlama Chat", "tokenizer.ggml.model": "llama", "vocab": 32000,
      "tokenizer.chat_template": "<|user|>"}, None),
])
def test_mistral_version_from_gguf_metadata(metadata, expected):
    assert mistral_version(_info(**metadata)) == expected


def write_gguf(path: Path, name: str, template: str, pre: str = "tekken") -> Path:
    """A tiny GGUF with a Mistral tokenizer's metadata (no real vocabulary: mistral-common tokenizes)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(256)
    writer.add_block_count(1)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "hello"])
    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((6, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# The start of Mistral Small 3.1's own template (abridged): the system prompt gets its own block.
SMALL3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}[SYSTEM_PROMPT]{{ m.content }}"
                   "[/SYSTEM_PROMPT]{% elif m.role == 'user' %}[INST]{{ m.content }}[/INST]{% else %}{{ m.content }}"
                   "{{ eos_token }}{% endif %}{% endfor %}")


def mistral_common_v7_tekken_tokens(messages):
    """mistral-common's own v7 encoder over its shipped tekken vocabulary, built by hand from its parts."""
    import mistral_common
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.normalize import get_normalizer
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode, get_validator
    from mistral_common.tokens.tokenizers.base import TokenizerVersion
    from mistral_common.tokens.tokenizers.instruct import InstructTokenizerV7
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    raw = Tekkenizer.from_file(Path(mistral_common.__file__).parent / "data" / "tekken_240718.json")
    tokenizer = MistralTokenizer(InstructTokenizerV7(raw), get_validator(TokenizerVersion.v7, ValidationMode.test),
                                 get_normalizer(TokenizerVersion.v7))
    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    request = ChatCompletionRequest(messages=[kinds[m["role"]](content=m["content"]) for m in messages])
    return tokenizer.encode_chat_completion(request).tokens


def test_tekken_gguf_with_a_system_prompt_template_gets_the_v7_layout(tmp_path):
    from mistralkit.models.store import resolve

    path = write_gguf(tmp_path / "Mistral-Small-3.1-24B-Instruct-2503-Q4_K_M.gguf",
                      "Mistral Small 3.1 24B Instruct 2503", SMALL3_TEMPLATE)
    fmt = select(resolve(str(path)), _WordTokenizer())
    assert fmt.name == "mistral-tekken-v7"
    messages = CONVERSATIONS["multi_turn"]
    tokens = fmt.encode(messages)
    assert tokens == mistral_common_v7_tekken_tokens(messages)
    raw = load_tokenizer("tekken-v7").instruct_tokenizer.tokenizer
    begin, end = _control("tekken-v7", "[SYSTEM_PROMPT]"), _control("tekken-v7", "[/SYSTEM_PROMPT]")
    assert tokens[:2] == [raw.bos_id, begin] and tokens.count(begin) == 1
    assert fmt.decode(tokens[2:tokens.index(end)]) == "Answer in French."
    after = fmt.decode(tokens[tokens.index(end):])
    assert "Answer in French." not in after and "Summarize our chat." in after
    assert tokens != MistralFormat("tekken").encode(messages)  # v3 puts it in the last [INST]


def test_tekken_v7_is_the_shipped_tekken_vocabulary_declared_v7():
    import mistral_common
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    shipped = Tekkenizer.from_file(Path(mistral_common.__file__).parent / "data" / TOKENIZER_FILES["tekken-v7"].file)
    assert shipped.version.value == "v3"  # a mistral-common that ships a real v7 tekken file should use it
    v7 = load_tokenizer("tekken-v7").instruct_tokenizer.tokenizer
    assert v7.version.value == "v7"
    text = "Bonjour, corrige: je suis aller a l'ecole."
    assert v7.encode(text, bos=True, eos=False) == shipped.encode(text, bos=True, eos=False)


@pytest.mark.parametrize("file, expected", [
    ("Ministral-3-3B-Instruct-2512-Q4_K_M.gguf", "jinja"),  # catalog: chat_format = "jinja"
    ("Ministral-8B-Instruct-2410-Q4_K_M.gguf", "mistral-tekken"),  # catalog: mistral, tokenizer tekken
    ("my-ministral-finetune.Q4_K_M.gguf", "mistral-tekken-v7"),  # no entry: the metadata decides
])
def test_catalog_chat_format_decides_over_the_metadata(tmp_path, file, expected):
    from mistralkit.models.store import resolve

    path = write_gguf(tmp_path / file, "Ministral 3 3B Instruct 2512", SMALL3_TEMPLATE)
    model = resolve(str(path))
    assert (model.entry is None) == file.startswith("my-")
    assert select(model, _WordTokenizer()).name == expected


def test_format_is_chosen_from_metadata(engine):
    assert engine.format.name == "plain"  # the embedded model is a base model without a template


class _WordTokenizer:
    bos_id, eos_id, add_bos = 1, 2, True

    def tokenize(self, text, *, special):
        return [len(word) for word in text.split()]

    def token_text(self, token_id):
        return "<s>"


def test_plain_format_layout():
    fmt = PlainFormat(_WordTokenizer())
    text = fmt.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": " Hello.\n"}, {"role": "user", "content": "Bye"}])
    assert text == "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
    assert fmt.stop_strings == ("\nUser:",)
    assert fmt.encode([{"role": "user", "content": "Hi"}])[0] == 1


def test_jinja_format_renders_template_and_adds_bos():
    from mistralkit.formats.jinja import JinjaFormat

    template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    fmt = JinjaFormat(template, _WordTokenizer())
    assert fmt.render([{"role": "user", "content": "Hi"}]) == "<|user|>Hi</s><|assistant|>"
    assert fmt.encode([{"role": "user", "content": "Hi"}])[0] == 1


@pytest.mark.parametrize("messages, message", [
    ([], "empty"),
    ([{"role": "robot", "content": "x"}], "unknown role"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last message"),
])
def test_bad_conversations(messages, message):
    from mistralkit.errors import InvalidParameter

    with pytest.raises(InvalidParameter, match=message):
        MistralFormat("v3").encode(messages)

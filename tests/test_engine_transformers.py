"""The transformers engine on tiny random models with the real Mistral tokenizers from mistral-common.

Its output is compared with transformers' own: ``model.generate`` for greedy tokens, a plain
forward pass for log-probabilities, PEFT's merged model for an attached adapter. Tests that only
a CUDA GPU can run skip elsewhere, and say so.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import peft  # noqa: F401  (the [test] extra installs it; missing = failure)
import pytest

from conftest import run_cli
import torch

from mistralkit.engines import GenerationParams, complete, load_engine
from mistralkit.engines import transformers as hf_engine
from mistralkit.models.store import run_folder_model
from mistralkit.engines.transformers import TransformersEngine
from mistralkit.errors import (
    ContextOverflow,
    InvalidModelFile,
    InvalidParameter,
    MissingDependency,
    ModelNotFound,
    Unsupported,
)
from mistralkit.formats.mistral import MistralFormat, load_tokenizer

MESSAGES = [{"role": "user", "content": "Bonjour ! Corrige cette phrase : il a manger une pomme."}]
GREEDY = GenerationParams(max_tokens=12, greedy=True, repeat_penalty=1.0)
SAMPLED = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
needs_cuda = pytest.mark.skipif("not torch.cuda.is_available()", reason="needs a CUDA GPU")


def shipped(name: str) -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / name


def save_tiny(folder: Path, *, vocab: int = 32768, hidden: int = 64, seed: int = 0) -> Path:
    """A random 2-layer Mistral, weights scaled up so that greedy tokens tell models apart."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = MistralForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(5)
    model.save_pretrained(folder)
    return folder


def with_v3(folder: Path) -> Path:
    shutil.copy(shipped("mistral_instruct_tokenizer_240323.model.v3"), folder / "tokenizer.model.v3")
    return folder


def hf_model(folder: Path, adapter: Path | None = None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    return (PeftModel.from_pretrained(model, str(adapter)) if adapter else model).eval()


def forward_logprobs(model, tokens: list[int], start: int) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].double().log_softmax(-1)
    return [float(logits[i - 1, tokens[i]]) for i in range(start, len(tokens))]


def generate_greedy(model, tokens: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([tokens]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    return out[0, len(tokens):].tolist()


def save_lora(base: Path, out: Path, seed: int = 1) -> Path:
    """A random LoRA (B not zero, so it changes the model) on every projection of ``base``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(hf_model(base), config).save_pretrained(out)
    return out


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and exc.value.hint
    return text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return with_v3(save_tiny(tmp_path_factory.mktemp("tiny") / "tiny-mistral"))


@pytest.fixture(scope="module")
def local(tiny, mk_home):
    from mistralkit.models import resolve

    return resolve(str(tiny))


@pytest.fixture(scope="module")
def engine(local):
    eng = load_engine(local, device="cpu")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(tiny):
    return hf_model(tiny)


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory) -> Path:
    return save_lora(tiny, tmp_path_factory.mktemp("lora") / "adapter")


# --- loading and prompts ---------------------------------------------------------------------

def test_hf_folder_loads_with_mistral_common_prompts(engine, local):
    assert isinstance(engine, TransformersEngine) and engine.kind == "transformers" and engine.device == "cpu"
    assert engine.format.name == "mistral-v3" and engine.n_ctx == 512  # min(4096, max_position_embeddings)
    assert engine.capabilities.logprobs and engine.capabilities.adapters and not engine.capabilities.grammar
    assert engine.prompt_tokens(MESSAGES) == MistralFormat("v3").encode(MESSAGES)
    assert engine.count_tokens(MESSAGES) == len(MistralFormat("v3").encode(MESSAGES))
    raw = load_tokenizer("v3").instruct_tokenizer.tokenizer
    assert engine.encode_text("il a mangé") == raw.encode("il a mangé", bos=True, eos=False)
    assert engine.prompt_tokens("Salut") == MistralFormat("v3").encode([{"role": "user", "content": "Salut"}])


def test_greedy_tokens_and_text_are_transformers_own(engine, reference):
    tokens = engine.prompt_tokens(MESSAGES)
    expected = generate_greedy(reference, tokens, GREEDY.max_tokens)
    raw = load_tokenizer("v3").instruct_tokenizer.tokenizer
    for request in (MESSAGES, tokens):
        done = complete(engine, request, GREEDY)
        assert done.token_ids == expected and done.finish_reason == "length"
        assert done.text == raw.decode(expected)


def test_stream_pieces_join_to_the_text_with_usage(engine):
    params = GenerationParams(max_tokens=24, seed=5, **SAMPLED)
    chunks = list(engine.generate(MESSAGES, params))
    ids = [t for c in chunks for t in c.token_ids]
    assert all(c.text for c in chunks[:-1]) and len(chunks) > 2
    assert "".join(c.text for c in chunks) == load_tokenizer("v3").instruct_tokenizer.tokenizer.decode(ids)
    usage = chunks[-1].usage
    assert chunks[-1].finish_reason == "length" and usage.completion_tokens == len(ids) == 24
    assert usage.prompt_tokens == len(engine.prompt_tokens(MESSAGES))
    assert 0 < usage.ttft_s <= usage.total_s


def test_seed_reproduces_a_sample(engine):
    runs = [complete(engine, MESSAGES, GenerationParams(max_tokens=16, seed=seed, **SAMPLED)).token_ids
            for seed in (7, 7, 8)]
    assert runs[0] == runs[1] != runs[2]
    default = GenerationParams(max_tokens=8, seed=7)  # llama.cpp's defaults: top-k, top-p, min-p, penalty
    assert complete(engine, MESSAGES, default).token_ids == complete(engine, MESSAGES, default).token_ids


def test_stop_string_ends_the_text_before_it(engine):
    full = complete(engine, MESSAGES, GREEDY).text
    stop = full[len(full) // 2: len(full) // 2 + 3]
    done = complete(engine, MESSAGES, GenerationParams(max_tokens=12, greedy=True, repeat_penalty=1.0, stop=(stop,)))
    assert done.finish_reason == "stop" and done.text == full[: full.index(stop)]


def test_end_of_text_stops_unless_ignored(tiny, tmp_path, engine, mk_home):
    """A copy whose EOS row outscores the first greedy token: it ends at once, or runs on with ignore_eos."""
    from mistralkit.models import resolve

    first = complete(engine, MESSAGES, GREEDY).token_ids[0]
    model = hf_model(tiny)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[engine.eos_id] = 3 * head[first]
    model.save_pretrained(tmp_path / "eos")
    with TransformersEngine(resolve(str(with_v3(tmp_path / "eos"))), device="cpu") as eos_engine:
        done = complete(eos_engine, MESSAGES, GREEDY)
        assert done.finish_reason == "stop" and done.usage.completion_tokens == 0 and done.text == ""
        run_on = complete(eos_engine, MESSAGES, GenerationParams(max_tokens=5, greedy=True, ignore_eos=True))
        assert run_on.finish_reason == "length" and run_on.usage.completion_tokens == 5


def test_cancel_stops_within_a_token(engine):
    cancel = threading.Event()
    stream = engine.generate(MESSAGES, GenerationParams(max_tokens=50, greedy=True, ignore_eos=True), cancel)
    first = next(stream)
    cancel.set()
    rest = list(stream)
    assert rest[-1].finish_reason == "cancelled"
    assert rest[-1].usage.completion_tokens == len(first.token_ids) + sum(len(c.token_ids) for c in rest)
    assert rest[-1].usage.completion_tokens <= len(first.token_ids) + 1
    done = complete(engine, MESSAGES, GREEDY, cancel)  # already cancelled: one token at most
    assert done.finish_reason == "cancelled" and done.usage.completion_tokens == 1


class ForwardSizes(list):
    """How many tokens each forward pass of the engine's model is given, while in a ``with``."""

    def __init__(self, engine) -> None:
        super().__init__()
        self.net = engine._net

    def __enter__(self) -> "ForwardSizes":
        self.handle = self.net.register_forward_pre_hook(
            lambda _module, _args, kwargs: self.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def test_a_chat_turn_evaluates_only_what_the_last_one_did_not(engine, reference):
    first = engine.prompt_tokens(MESSAGES)
    answer = complete(engine, first, GREEDY)
    turn = engine.prompt_tokens([*MESSAGES, {"role": "assistant", "content": answer.text},
                                 {"role": "user", "content": "Merci ! Et celle-ci : nous avons manger."}])
    assert turn[:len(first)] == first
    with ForwardSizes(engine) as sizes:
        done = complete(engine, turn, GREEDY)
    assert sizes[0] <= len(turn) - len(first) and sizes[1:] == [1] * (GREEDY.max_tokens - 1)
    assert done.usage.cached_tokens == len(turn) - sizes[0]
    assert done.token_ids == generate_greedy(reference, turn, GREEDY.max_tokens)  # as if from scratch


def test_a_prompt_that_parts_from_the_last_one_crops_the_cache_there(engine, reference):
    first = engine.prompt_tokens(MESSAGES)
    complete(engine, first, GREEDY)
    parted = first[:9] + [first[9] + 1] + first[10:]  # one token changed: the cache is kept up to it
    with ForwardSizes(engine) as sizes:
        done = complete(engine, parted, GREEDY)
    assert sizes[0] == len(parted) - 9 and done.usage.cached_tokens == 9
    assert done.token_ids == generate_greedy(reference, parted, GREEDY.max_tokens)
    with ForwardSizes(engine) as sizes:  # the same prompt again: only its last token is evaluated
        again = complete(engine, parted, GREEDY)
    assert sizes[0] == 1 and again.token_ids == done.token_ids


def test_logprobs_are_a_forward_pass(engine, reference, monkeypatch):
    tokens = engine.prompt_tokens(MESSAGES) + complete(engine, MESSAGES, GREEDY).token_ids
    expected = forward_logprobs(reference, tokens, 3)
    assert engine.logprobs(tokens, 3) == pytest.approx(expected, abs=1e-5)
    monkeypatch.setattr(hf_engine, "LOGPROB_CHUNK", 4)  # several passes over the KV cache: the same numbers
    assert engine.logprobs(tokens, 3) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(InvalidParameter, match="start 0"):
        engine.logprobs(tokens, 0)
    with pytest.raises(InvalidParameter, match="outside the vocabulary"):
        engine.logprobs([1, 40000], 1)



def test_generated_tokens_carry_their_logprobs(engine, reference):
    """top_logprobs: each generated token's log-probability is the forward pass's, with sorted alternatives."""
    from dataclasses import replace

    done = list(engine.generate(MESSAGES, replace(GREEDY, top_logprobs=3)))
    entries = [e for chunk in done for e in chunk.logprobs]
    ids = [t for chunk in done for t in chunk.token_ids]
    prompt = engine.prompt_tokens(MESSAGES)
    assert len(entries) == len(ids) and ids == complete(engine, MESSAGES, GREEDY).token_ids
    assert [e.logprob for e in entries] == pytest.approx(
        forward_logprobs(reference, prompt + ids, len(prompt)), abs=1e-4
    )
    for entry in entries:
        assert [v for _, v in entry.top] == sorted((v for _, v in entry.top), reverse=True) and len(entry.top) == 3
        assert entry.top[0][1] == pytest.approx(entry.logprob)  # greedy took the best
    assert not any(chunk.logprobs for chunk in engine.generate(MESSAGES, GREEDY))

def test_score_is_logprobs_with_texts_and_alternatives(engine):
    """``score`` (the server's echo) gives ``logprobs``' values, each token's text, the best tokens sorted;
    ``logprob_of_end`` lists the end-of-text token that stopped an answer; ``detokenize`` round-trips."""
    from dataclasses import replace

    tokens = engine.prompt_tokens(MESSAGES) + complete(engine, MESSAGES, GREEDY).token_ids
    scored = engine.score(tokens, 3, top=2)
    assert [e.logprob for e in scored] == engine.logprobs(tokens, 3)
    assert [e.token for e in scored] == [engine.token_text(t).encode() for t in tokens[3:]]
    for entry in scored:
        assert len(entry.top) == 2 and entry.top[0][1] >= entry.top[1][1] and entry.top[0][1] >= entry.logprob
    ended = list(engine.generate(MESSAGES, replace(GREEDY, max_tokens=200, top_logprobs=1, logprob_of_end=True)))
    if ended[-1].finish_reason == "stop":
        assert len([e for c in ended for e in c.logprobs]) == len([t for c in ended for t in c.token_ids]) + 1
    assert engine.detokenize(tokens, special=True).startswith(engine.token_text(tokens[0]))


# --- adapters ------------------------------------------------------------------------------------

def test_adapter_output_is_the_merged_model(local, tiny, adapter, engine, reference):
    merged = hf_model(tiny, adapter).merge_and_unload()
    with TransformersEngine(local, adapter=str(adapter), device="cpu") as tuned:
        tokens = tuned.prompt_tokens(MESSAGES)
        assert complete(tuned, MESSAGES, GREEDY).token_ids == generate_greedy(merged, tokens, GREEDY.max_tokens)
        ids = tokens + generate_greedy(merged, tokens, 6)
        scored = tuned.logprobs(ids, 1)
        assert scored == pytest.approx(forward_logprobs(merged, ids, 1), abs=1e-4)
        assert max(abs(a - b) for a, b in zip(scored, engine.logprobs(ids, 1))) > 0.1  # the adapter does something


def test_adapter_for_another_base_is_refused(local, tmp_path):
    other = save_tiny(tmp_path / "other-mistral", hidden=32)
    lora = save_lora(other, tmp_path / "other-lora")
    with pytest.raises(InvalidParameter, match="was trained for .*other-mistral, not tiny-mistral") as exc:
        TransformersEngine(local, adapter=str(lora))
    assert "hidden_size 32 vs 64" in one_line(exc)
    config = json.loads((lora / "adapter_config.json").read_text())
    (lora / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "someone/else"}))
    with pytest.raises(InvalidParameter, match="trained for someone/else, not tiny-mistral") as exc:
        TransformersEngine(local, adapter=str(lora))  # no config to compare: PEFT's size mismatch
    one_line(exc)
    (tmp_path / "lora.gguf").write_bytes(b"GGUF")
    with pytest.raises(InvalidParameter, match="GGUF LoRA adapter, which only llama.cpp applies") as exc:
        TransformersEngine(local, adapter=str(tmp_path / "lora.gguf"))
    one_line(exc)
    with pytest.raises(ModelNotFound):
        TransformersEngine(local, adapter=str(tmp_path / "nowhere"))
    (lora / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InvalidParameter, match="are damaged") as exc:
        TransformersEngine(local, adapter=str(lora), device="cpu")
    one_line(exc)


# --- a tune run folder ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory, mk_home) -> Path:
    from mistralkit.tune.config import TuneConfig
    from mistralkit.tune.train import train

    folder = tmp_path_factory.mktemp("run")
    data = folder / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": q, "response": a}) + "\n"
            for q, a in [("Corrige : il a manger.", "Il a mangé."), ("Corrige : ils sont aller.", "Ils sont allés.")]
        )
    )
    train(TuneConfig(base=str(tiny), tokenizer="v3", data=str(data), out=str(folder / "run"), rank=4, alpha=8,
                     lr=5e-2, batch_size=2, max_steps=2, warmup_ratio=0.0, dropout=0.0), progress=False)
    return folder / "run"


def test_run_folder_loads_as_base_plus_adapter(run_dir, tiny, engine):
    model = run_folder_model(run_dir)
    assert model is not None and model.format == "hf-run" and model.name == "run"
    assert run_folder_model(tiny) is None and run_folder_model(run_dir / "adapter") is None
    tuned = hf_model(tiny, run_dir / "adapter")
    with load_engine(model, device="cpu") as run:
        assert isinstance(run, TransformersEngine) and run.format.name == "mistral-v3" and run.name == "run"
        tokens = run.prompt_tokens(MESSAGES)
        ids = tokens + generate_greedy(tuned, tokens, 6)
        scored = run.logprobs(ids, 1)
        assert scored == pytest.approx(forward_logprobs(tuned, ids, 1), abs=1e-4)
        assert max(abs(a - b) for a, b in zip(scored, engine.logprobs(ids, 1))) > 1e-3
        assert complete(run, MESSAGES, GREEDY).token_ids == generate_greedy(tuned, tokens, GREEDY.max_tokens)
    with pytest.raises(InvalidParameter, match="brings its own adapter"):
        TransformersEngine(model, adapter=str(run_dir / "adapter"))


def test_run_on_a_gguf_base_dequantizes_it(tiny, reference, adapter, tmp_path, mk_home):
    """A run folder laid out as tune/train.py writes it, over an f32 GGUF of the tiny model: tune's own
    GGUF loader gives back the HF weights, and the tokens come from the GGUF's Mistral metadata."""
    from mistralkit.tune.to_gguf import write_gguf

    gguf = write_gguf(reference.state_dict(), reference.config, "v3", tmp_path / "tiny-mistral-f32.gguf", "f32")
    run = tmp_path / "gguf-run"
    shutil.copytree(adapter, run / "adapter")
    (run / "training_summary.json").write_text(json.dumps({"base": {"ref": str(gguf), "name": gguf.stem,
                                                                     "path": str(gguf), "format": "gguf"}}))
    with TransformersEngine(run_folder_model(run), device="cpu") as eng:
        assert eng.format.name == "mistral-v3"
        tokens = eng.prompt_tokens(MESSAGES)
        assert eng.logprobs(tokens, 1) == pytest.approx(forward_logprobs(hf_model(tiny, adapter), tokens, 1), abs=1e-3)
    gguf.unlink()
    with pytest.raises(ModelNotFound, match="is gone"):
        TransformersEngine(run_folder_model(run))


# --- other architectures and tokenizers ---------------------------------------------------------------

def test_mistral3_generates_text_through_its_language_model(tmp_path, mk_home):
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralVisionConfig,
    )

    from mistralkit.models import resolve

    torch.manual_seed(0)
    text = MistralConfig(vocab_size=131072, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=8192)
    vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 image_size=64, patch_size=16, head_dim=16)
    model = Mistral3ForConditionalGeneration(Mistral3Config(text_config=text, vision_config=vision,
                                                            image_token_index=10, vision_feature_layer=-1))
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(5)
    folder = tmp_path / "tiny-ministral3"
    model.save_pretrained(folder)
    shutil.copy(shipped("tekken_240718.json"), folder / "tekken.json")
    with TransformersEngine(resolve(str(folder)), device="cpu") as eng:
        assert eng.format.name == "mistral-tekken" and eng.n_ctx == 4096
        tokens = eng.prompt_tokens(MESSAGES)
        assert tokens == MistralFormat("tekken").encode(MESSAGES)
        assert complete(eng, MESSAGES, GREEDY).token_ids == generate_greedy(model.eval(), tokens, GREEDY.max_tokens)


def test_hf_tokenizer_folder_uses_its_own_chat_template(tmp_path, mk_home):
    """Tekken converted to a Hugging Face tokenizer (no tekken.json): the folder's template renders the
    same tokens mistral-common encodes."""
    from transformers import AutoTokenizer
    from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

    from mistralkit.models import resolve

    folder = save_tiny(tmp_path / "tiny-nemo", vocab=131072, hidden=32)
    convert_tekken_tokenizer(str(shipped("tekken_240718.json"))).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    with TransformersEngine(resolve(str(folder)), device="cpu") as eng:
        assert eng.format.name == "jinja"
        assert eng.prompt_tokens(MESSAGES) == MistralFormat("tekken").encode(MESSAGES)
        assert eng.prompt_tokens(MESSAGES) == list(tok.apply_chat_template(MESSAGES, add_generation_prompt=True,
                                                                           tokenize=True)["input_ids"])
        done = complete(eng, MESSAGES, GREEDY)
        assert done.text == tok.decode(done.token_ids, skip_special_tokens=True) and done.text


@pytest.mark.parametrize("version", ["v3", "tekken"])
def test_pieces_never_cut_a_character(version, mk_home):
    from mistralkit.engines.hf_vocab import IncrementalDecoder, MistralVocab

    vocab = MistralVocab(version)
    text = "Voilà : 日本語 🎉 — « ça marche » naïf Ωmega 🧑‍🔬"
    tokens = vocab.tokenize(text, special=False)
    decoder = IncrementalDecoder(vocab)
    pieces = [decoder.feed(t) for t in tokens] + [decoder.flush()]
    assert "".join(pieces) == vocab.decode(tokens) == text
    assert not any("\ufffd" in piece for piece in pieces) and sum(map(bool, pieces)) > 5


def test_folder_files_name_the_tokenizer_and_template(tmp_path):
    from mistralkit.formats.folder import folder_chat_template, folder_mistral_version

    assert folder_mistral_version(tmp_path) is None and folder_chat_template(tmp_path) is None
    shutil.copy(shipped("mistral_instruct_tokenizer_240323.model.v3"), tmp_path / "tokenizer.model")
    assert folder_mistral_version(tmp_path) == "v3"  # Mistral 7B v0.3's repo: v3 under the generic name
    shutil.copy(shipped("tokenizer.model.v1"), tmp_path / "tokenizer.model")
    assert folder_mistral_version(tmp_path) == "v1"
    (tmp_path / "tekken.json").write_text(json.dumps({"config": {"version": "v13"}}))  # Ministral 3
    assert folder_mistral_version(tmp_path) == "tekken-v7"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}))
    assert folder_chat_template(tmp_path) == "D"
    (tmp_path / "chat_template.jinja").write_text("J")
    assert folder_chat_template(tmp_path) == "J"


def test_unknown_architecture_is_refused(tmp_path, mk_home):
    from mistralkit.models import resolve

    folder = tmp_path / "whisper"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (folder / "model.safetensors").write_bytes(b"")
    with_v3(folder)
    with pytest.raises(InvalidModelFile, match="does not run 'whisper' models") as exc:
        TransformersEngine(resolve(str(folder)))
    one_line(exc)


def test_damaged_weights_are_a_one_line_error(tiny, tmp_path, mk_home):
    from mistralkit.models import resolve

    folder = tmp_path / "damaged"
    shutil.copytree(tiny, folder)
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InvalidModelFile, match="transformers could not load") as exc:
        TransformersEngine(resolve(str(folder)), device="cpu")
    one_line(exc)


# --- errors -----------------------------------------------------------------------------------------

def test_devices_are_checked_before_loading(local):
    with pytest.raises(InvalidParameter, match="unknown device") as exc:
        TransformersEngine(local, device="tpu")
    one_line(exc)
    available = {
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.is_available() or torch.backends.mps.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    for device, here in available.items():
        if here:  # a GPU machine: it loads there
            with TransformersEngine(local, device=device) as eng:
                assert eng.device in ("cuda", "mps")
        else:
            with pytest.raises(InvalidParameter, match=f"device={device}, but torch sees no") as exc:
                TransformersEngine(local, device=device)
            one_line(exc)


def test_quant_needs_cuda_and_bitsandbytes(local):
    with pytest.raises(InvalidParameter) as exc:
        TransformersEngine(local, device="cpu", quant=4)
    assert "--quant needs a CUDA GPU and `pip install bitsandbytes`" in one_line(exc)
    with pytest.raises(InvalidParameter, match="must be 4 or 8"):
        TransformersEngine(local, device="cpu", quant=3)


def test_context_window(engine, local):
    with pytest.raises(ContextOverflow, match="the prompt is 512 tokens but this model's context window is 512 tokens"):
        engine.generate([1] * 512, GREEDY)
    with pytest.raises(InvalidParameter, match="larger than tiny-mistral's context length"):
        TransformersEngine(local, n_ctx=1024)
    threads = torch.get_num_threads()
    try:
        with TransformersEngine(local, n_ctx=20, threads=1, device="cpu") as small:
            assert torch.get_num_threads() == 1
            done = complete(small, [1] * 16, GenerationParams(max_tokens=10, greedy=True, ignore_eos=True))
            assert done.finish_reason == "length" and done.usage.completion_tokens == 4  # what the window leaves
    finally:
        torch.set_num_threads(threads)


def test_grammar_is_refused_not_ignored(engine):
    with pytest.raises(Unsupported, match="constrained output"):
        engine.check_grammar('root ::= "yes" | "no"')
    with pytest.raises(Unsupported):
        engine.generate(MESSAGES, GenerationParams(grammar='root ::= "yes"'))


def test_closed_engine_says_so(local):
    eng = TransformersEngine(local, device="cpu")
    eng.close()
    eng.close()
    with pytest.raises(InvalidParameter, match="closed"):
        complete(eng, MESSAGES, GREEDY)


# --- GPU only -----------------------------------------------------------------------------------------

@needs_cuda
def test_cuda_loads_in_half_precision_with_cpu_like_scores(local, engine):
    from mistralkit.engines.hf_load import native_bf16

    with TransformersEngine(local, device="cuda") as gpu:
        weight = next(gpu._net.parameters())
        assert weight.device.type == "cuda" and weight.dtype == (
            torch.bfloat16 if native_bf16(torch) else torch.float16
        )
        tokens = engine.prompt_tokens(MESSAGES)
        on_cpu, on_gpu = engine.logprobs(tokens, 1), gpu.logprobs(tokens, 1)
        assert max(abs(a - b) for a, b in zip(on_cpu, on_gpu)) < 0.05 * max(abs(v) for v in on_cpu)
        done = complete(gpu, MESSAGES, GenerationParams(max_tokens=4, seed=1, ignore_eos=True))
        assert done.usage.completion_tokens == 4


@needs_cuda
@pytest.mark.parametrize("bits", [4, 8])
def test_quant_loads_through_bitsandbytes(local, adapter, bits):
    try:
        import bitsandbytes as bnb
    except ImportError:
        with pytest.raises(MissingDependency, match="bitsandbytes"):
            TransformersEngine(local, device="cuda", quant=bits)
        return
    layer = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    with TransformersEngine(local, device="cuda", quant=bits, adapter=str(adapter)) as quantized:
        assert any(isinstance(module, layer) for module in quantized._net.modules())
        done = complete(quantized, MESSAGES, GenerationParams(max_tokens=4, greedy=True, ignore_eos=True))
        assert done.usage.completion_tokens == 4


# --- through the commands --------------------------------------------------------------------

def test_run_and_serve_take_hf_folders_and_tuned_runs(run_dir, tiny, mk_home, cli, tmp_path):
    """`mistralkit run -m RUN_DIR` (no export), `--adapter RUN_DIR` alone, and `serve` with an HF folder."""
    import openai
    from test_server_api import Serve

    with load_engine(run_folder_model(run_dir), device="cpu") as run:  # greedy = transformers' (tested above)
        text = complete(run, MESSAGES, GenerationParams(max_tokens=6, greedy=True)).text
    for how in (["-m", str(run_dir)], ["--adapter", str(run_dir)]):
        # In a home with no default model configured: --adapter alone then means the run's own base.
        done = run_cli("run", *how, "--greedy", "-n", "6", "--json", MESSAGES[-1]["content"], home=tmp_path / "home")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["text"] == text and answer["model"] == "run" and answer["usage"]["completion_tokens"] == 6
    for flags, phrase in ((["--device", "cuda"], "cuda"), (["--quant", "4"], "bitsandbytes"),
                          (["--device", "tpu"], "device")):
        refused = cli("run", "-m", str(tiny), *flags, "hi")
        assert refused.returncode != 0 and phrase in refused.stderr and "Traceback" not in refused.stderr, (
            refused.stderr
        )

    serve = Serve(mk_home, tmp_path / "serve.log", "--threads", "1", "--allow-model-paths", str(tiny.parent))
    try:
        client = openai.OpenAI(base_url=f"{serve.url}/v1", api_key="unused", max_retries=0, timeout=120)
        with load_engine(resolve_path(tiny), device="cpu") as base:
            want = complete(base, MESSAGES, GenerationParams(max_tokens=5, greedy=True)).text
        got = client.chat.completions.create(model=str(tiny), messages=MESSAGES, max_tokens=5, temperature=0)
        assert got.choices[0].message.content == want and got.usage.completion_tokens == 5
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=str(tiny), messages=MESSAGES, max_tokens=5,
                                           response_format={"type": "json_object"})
        assert caught.value.body["code"] == "unsupported_by_engine"
    finally:
        serve.stop()


def resolve_path(folder: Path):
    from mistralkit.models import resolve

    return resolve(str(folder))


TOOL_TEMPLATE = (  # a Hermes-like template that takes tools (written for this test)
    "{{ bos_token }}{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<tool_call>{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>{% endfor %}\n"
    "{% elif m.role == 'tool' %}Result of {{ m.name }} ({{ m.tool_call_id }}): {{ m.content }}\n"
    "{% else %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}")


def test_a_template_that_takes_tools_gets_them_as_transformers_renders_them(tmp_path, mk_home):
    """A folder whose chat template reads ``tools``: the server's tool prompt equals transformers'
    ``apply_chat_template(..., tools=...)`` of the same conversation (a call, its result), and the
    template's ``<tool_call>`` answers are read back."""
    from transformers import AutoTokenizer
    from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

    from mistralkit.models import resolve
    from mistralkit.server.schemas import ChatRequest

    folder = save_tiny(tmp_path / "tiny-tools", vocab=131072, hidden=32)
    convert_tekken_tokenizer(str(shipped("tekken_240718.json"))).save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    tok = AutoTokenizer.from_pretrained(folder)
    weather = {"name": "get_weather", "description": "Forecast <3 days>, été",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    asked = {"role": "user", "content": "Weather in Paris?"}
    openai_turns = [
        asked,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123XYZ",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123XYZ", "content": "sunny"},
    ]
    hf_turns = [
        asked,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_abc123XYZ",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123XYZ", "name": "get_weather", "content": "sunny"},
    ]
    with TransformersEngine(resolve(str(folder)), device="cpu") as eng:
        assert eng.format.name == "jinja" and eng.format.supports_tools
        body = ChatRequest.model_validate({"model": "m", "messages": openai_turns,
                                           "tools": [{"type": "function", "function": weather}]})
        turn = body.prepare(eng)
        expected = tok.apply_chat_template(hf_turns, tools=[{"type": "function", "function": weather}],
                                           add_generation_prompt=True, tokenize=True)
        assert turn.prompt == list(expected["input_ids"])
        assert "été" in tok.decode(turn.prompt) and "<3 days>" in tok.decode(turn.prompt)
        (call,) = turn.calls('<tool_call>{"name": "get_weather", "arguments": {"city": "Lyon"}}</tool_call>', [])
        assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Lyon"}'}
        assert turn.calls("It is sunny.", []) is None

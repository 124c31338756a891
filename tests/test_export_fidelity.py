"""``export --merged`` proves itself, and the merged model keeps the chat format it was trained with.

The check (tune/fidelity.py) compares the export with base + adapter on held-out samples of the run.
These tests make its cases happen for real and look at the effect some other way: a weak adapter
(the facts run's, at a tenth of its scale) whose change to the weights is below q4_k_m's rounding is
washed out at q4_k_m, and the tensors of the export show it. The q8_0 case
of the full adapter is in test_tune_e2e.py (its export answers the facts). Slow: the facts run
(conftest) trains for about 80 s; an export with its check takes about a minute on two cores
(100 s on a loaded machine), so the CLI calls get a long timeout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_tune_mistral_gguf import run_dir, tiny  # noqa: F401  (the tiny HF Mistral and its 4-step run)

pytestmark = pytest.mark.slow
# A Mistral-style template the HF base folder carries; the merge must hand it on unchanged.
TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]" \
           "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"


def weak_copy(run: Path, folder: Path, factor: float) -> Path:
    """The run with its adapter's scale (lora_alpha) times ``factor``: a real adapter, only weaker."""
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("checkpoints"))
    config_path = folder / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["lora_alpha"] *= factor
    config_path.write_text(json.dumps(config))
    return folder


def delta_survived(run: Path, base, exported: Path) -> float:
    """How much of the adapter's weight change the export holds: the projection of (export - base) on
    ``alpha / rank * B @ A`` over every adapted tensor (1: all of it, 0: the base's weights)."""
    import gguf

    from mistralkit.tune.export import find_peft_dir, gguf_alpha, gguf_tensors, load_lora_tensors, read_peft_config

    peft = find_peft_dir(run)
    lora = gguf_tensors(load_lora_tensors(peft), base)
    alpha = gguf_alpha(read_peft_config(peft))
    base_w = {t.name: t for t in gguf.GGUFReader(str(base.path)).tensors}
    out_w = {t.name: t for t in gguf.GGUFReader(str(exported)).tensors}
    along = total = 0.0
    for name in (n.removesuffix(".lora_a") for n in lora if n.endswith(".lora_a")):
        a, b = lora[f"{name}.lora_a"], lora[f"{name}.lora_b"]
        delta = alpha / a.shape[0] * (b @ a)

        def values(t):
            return gguf.quants.dequantize(t.data, t.tensor_type).reshape(delta.shape).astype(np.float64)

        along += float(((values(out_w[name]) - values(base_w[name])) * delta).sum())
        total += float((delta * delta).sum())
    return along / total


def test_the_f16_merge_is_base_plus_adapter_up_to_rounding(model, facts_run, tmp_path):
    """The check's reference is the f16 merge: measured against llama.cpp's base + GGUF adapter."""
    from mistralkit.models.runs import summary
    from mistralkit.tune import fidelity
    from mistralkit.tune.export import export_gguf_adapter
    from mistralkit.tune.merge import find_peft_dir, write_merged_f16

    samples, data = fidelity.held_out_samples(facts_run, limit=4)
    held = fidelity.encode_held_out(samples, data, model, None, summary(facts_run)["hyperparameters"])
    merged = write_merged_f16(find_peft_dir(facts_run), model, tmp_path / "merged-f16.gguf")
    adapter = export_gguf_adapter(facts_run, model, tmp_path / "adapter.gguf", "f32")
    with_adapter = list(fidelity.log_probs(model.path, held, adapter=adapter))
    agreement, kl, positions = fidelity.compare(with_adapter, fidelity.log_probs(merged, held))
    base_agreement, base_kl, _ = fidelity.compare(with_adapter, fidelity.log_probs(model.path, held))
    assert positions > 30
    assert agreement >= 0.98 and kl < 1e-3, (agreement, kl)  # f16 rounding: ~1e-4 nats
    assert base_agreement < 0.8 and base_kl > 1000 * kl, (base_agreement, base_kl)  # what the adapter moves


def test_q4_k_m_washes_a_weak_adapter_out_and_says_so(model, facts_run, cli, tmp_path):
    """One checked export (each is about a minute here): the proposed q5_k_m side, kept, is in the
    closing figures of stop 41 (retained 91%); the kept verdict itself is test_tune_e2e.py's q8_0 export."""
    from mistralkit.models import registry

    weak = weak_copy(facts_run, tmp_path / "weak", 0.1)
    washed = cli("export", str(weak), "--merged", "--quant", "q4_k_m", "--name", "weak-q4", timeout=600)
    assert washed.returncode == 0, washed.stderr[-2000:]
    assert "export: checking the export on 8 held-out samples" in washed.stderr  # progress as it goes
    assert "LOST the adapter" in washed.stdout
    warning = next(line for line in washed.stderr.splitlines() if line.startswith("warning:"))
    assert "washed the adapter out" in warning and "--quant q5_k_m" in warning and "--gguf-adapter" in warning
    assert registry.get("weak-q4").check["verdict"] == "washed-out"
    # What the verdict says, seen in the weights: q4_k_m rounded most of the adapter's change away.
    assert delta_survived(weak, model, Path(registry.get("weak-q4").path)) < 0.25


def test_held_out_samples_come_from_the_eval_split_else_the_last_training_lines(facts_run, tmp_path):
    from conftest import FACTS

    from mistralkit.tune.fidelity import held_out_samples

    samples, data = held_out_samples(facts_run)
    assert [s.messages[0]["content"] for s in samples] == [q for q, _ in FACTS[-8:]]
    assert data == "the last training samples (facts.jsonl)"
    run = weak_copy(facts_run, tmp_path / "run", 1.0)
    summary = json.loads((run / "training_summary.json").read_text())
    valid = tmp_path / "valid.jsonl"
    valid.write_text("".join(json.dumps({"prompt": q, "response": a}) + "\n" for q, a in FACTS[:3]))
    summary["data"]["valid"] = {"path": str(valid)}
    (run / "training_summary.json").write_text(json.dumps(summary))
    samples, data = held_out_samples(run)
    assert [s.messages[0]["content"] for s in samples] == [q for q, _ in FACTS[:3]] and "eval split" in data
    summary["data"] = {"train": {"path": "moved.jsonl"}, "valid": None}
    (run / "training_summary.json").write_text(json.dumps(summary))
    assert held_out_samples(run) == (None, "the data the run was trained on (moved.jsonl) is not found: "
                                           "run export from the folder tune ran in")


def test_no_check_skips_the_comparison(tiny, run_dir, cli):  # noqa: F811  (the tiny run: a merge in seconds)
    done = cli("export", str(run_dir), "--merged", "--quant", "q8_0", "--base", str(tiny), "--name", "no-check",
               "--no-check", "--json", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["check"] is None and "checking" not in done.stderr


def test_hf_merge_keeps_the_inst_format_it_was_trained_with(tiny, run_dir, cli, tmp_path):  # noqa: F811
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    from mistralkit.engines import load_engine
    from mistralkit.formats.mistral import GGUF_KEY, load_tokenizer
    from mistralkit.models import resolve
    from mistralkit.models.gguf_info import read_info
    from mistralkit.tune.merge import merge_to_gguf

    base = tmp_path / "base"  # neither its name nor a template says "Mistral": only what the merge records
    shutil.copytree(tiny, base)
    done = cli("export", str(run_dir), "--merged", "--quant", "q8_0", "--base", str(base), "--name", "hf-q8",
               "--json", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)
    assert record["check"]["positions"] > 0  # checked against the base, the f16 merge minus the adapter
    info = read_info(Path(record["path"]))
    assert "mistral" not in (info.name or "").lower() and info.chat_template is None
    assert info.metadata[GGUF_KEY] == "v3"
    engine = load_engine(resolve("hf-q8"), n_ctx=64)
    try:
        question = "Corrige : il a manger."
        expected = load_tokenizer("v3").encode_chat_completion(
            ChatCompletionRequest(messages=[UserMessage(content=question)])).tokens
        assert engine.format.name == "mistral-v3"
        assert engine.prompt_tokens([{"role": "user", "content": question}]) == expected  # [INST] ... [/INST]
    finally:
        engine.close()

    # A folder that carries its chat template hands it on, for llama.cpp's own tools.
    (base / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    templated = merge_to_gguf(run_dir, resolve(str(base)), tmp_path / "templated.gguf", "q8_0", tokenizer="v3")
    assert read_info(templated).chat_template == TEMPLATE


def test_the_negated_adapter_stands_for_an_hf_base(tiny, run_dir, tmp_path, mk_home):  # noqa: F811
    """An HF base has no GGUF to compare with: the f16 merge with the adapter at scale -1 is that base."""
    from transformers import AutoModelForCausalLM

    from mistralkit.models import resolve
    from mistralkit.models.runs import summary
    from mistralkit.tune import fidelity
    from mistralkit.tune.export import export_gguf_adapter
    from mistralkit.tune.merge import find_peft_dir, write_merged_hf
    from mistralkit.tune.to_gguf import write_gguf

    plain = AutoModelForCausalLM.from_pretrained(tiny)
    base_gguf = write_gguf(plain.state_dict(), plain.config, "v3", tmp_path / "base-f16.gguf", "f16")
    merged = write_merged_hf(find_peft_dir(run_dir), resolve(str(tiny)), tmp_path / "merged-f16.gguf", "v3")
    negated = export_gguf_adapter(run_dir, resolve(str(merged)), tmp_path / "negated.gguf", "f32")
    samples, data = fidelity.held_out_samples(run_dir)
    held = fidelity.encode_held_out(samples, data, resolve(str(tiny)), "v3", summary(run_dir)["hyperparameters"])
    true_base = list(fidelity.log_probs(base_gguf, held))
    agreement, kl, _ = fidelity.compare(true_base, fidelity.log_probs(merged, held, adapter=negated, scale=-1.0))
    _, tuned_kl, _ = fidelity.compare(true_base, fidelity.log_probs(merged, held))
    assert agreement == 1.0 and kl < 1e-3 and tuned_kl > 100 * kl, (agreement, kl, tuned_kl)


@pytest.mark.parametrize(("version", "vocab"), [("v1", 32000), ("v2", 32768), ("v3", 32768)])
def test_a_converted_gguf_names_the_tokenizer_it_was_written_with(version, vocab, tmp_path, mk_home):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from mistralkit.formats import mistral_tokenizer_of
    from mistralkit.models import resolve
    from mistralkit.tune.to_gguf import write_gguf

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    config._name_or_path = str(tmp_path / "base")
    model = MistralForCausalLM(config)
    path = write_gguf(model.state_dict(), config, version, tmp_path / "plain-name.gguf")
    assert mistral_tokenizer_of(resolve(str(path))) == version  # v2 too, which name and vocabulary cannot tell


def test_a_gguf_base_keeps_its_own_template(tmp_path, mk_home):
    """A merge into a GGUF base copies its metadata: the registered merge prompts as the base does."""
    import torch
    from safetensors.torch import save_file

    from mistralkit.engines import load_engine
    from mistralkit.models import resolve
    from mistralkit.tune.merge import merge_and_register

    base = resolve("smollm2-135m-instruct")
    peft = tmp_path / "peft"
    peft.mkdir()
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    torch.manual_seed(0)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    save_file({key.format("A"): torch.randn(2, 576), key.format("B"): torch.randn(576, 2) * 0.01},
              str(peft / "adapter_model.safetensors"))
    record = merge_and_register(peft, base, "smol-merged", "q8_0")
    assert "records no training data" in record.check["skipped"]  # a bare PEFT folder: nothing held out
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    prompts = []
    for model in (base, resolve("smol-merged")):
        assert model.info.chat_template == base.info.chat_template
        engine = load_engine(model, n_ctx=128)
        try:
            prompts.append((engine.format.name, engine.prompt_tokens(messages)))
        finally:
            engine.close()
    assert prompts[0] == prompts[1] and prompts[0][0] == "jinja"

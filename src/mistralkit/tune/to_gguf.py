"""An HF Llama/Mistral model (config + weights) as a GGUF that llama.cpp runs, written by our own code.

Covers the ``llama`` GGUF architecture (``LlamaForCausalLM``, ``MistralForCausalLM``) with a
SentencePiece Mistral tokenizer from mistral-common (v1, v2, v3): the vocabulary, scores and token
types come from Mistral's own ``tokenizer.model``, so llama.cpp tokenizes as mistral-common does.
The facts used here are the GGUF format's published key and tensor names; Q and K rows are stored
with each head's two rotary halves interleaved, as llama.cpp's ``llama`` architecture expects.

    write_llama_gguf(model.state_dict(), model.config, "v3", Path("tiny.gguf"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from .export import DECODER_MODULES, rope_permute_rows

MODEL_TYPES = ("llama", "mistral")
SENTENCEPIECE = ("v1", "v2", "v3")
# GGUF token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
TOP_LEVEL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
LAYER_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _vocab(version: str) -> tuple[list[str], list[float], list[int], Any]:
    from ..formats.mistral import load_tokenizer

    raw = load_tokenizer(version).instruct_tokenizer.tokenizer
    sp = raw._model  # mistral-common's SentencePieceProcessor: pieces, scores and kinds
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        kind = (UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else BYTE if sp.is_byte(i)
                else NORMAL)
        types.append(kind)
    return tokens, scores, types, raw


def _tensor_name(key: str) -> tuple[str, str | None]:
    """HF state-dict key -> (GGUF name, head-count key when its rows need the rotary permutation)."""
    if key in TOP_LEVEL:
        return TOP_LEVEL[key], None
    parts = key.split(".")
    if len(parts) >= 5 and parts[:2] == ["model", "layers"] and parts[-1] == "weight":
        layer, module = parts[2], ".".join(parts[3:-1])
        if module in LAYER_NORMS:
            return f"blk.{layer}.{LAYER_NORMS[module]}.weight", None
        if module in DECODER_MODULES:
            permute = {"self_attn.q_proj": "head_count", "self_attn.k_proj": "head_count_kv"}.get(module)
            return f"blk.{layer}.{DECODER_MODULES[module]}.weight", permute
    raise InvalidParameter(f"cannot write the weight {key!r} to a llama GGUF",
                           hint="only plain Llama/Mistral decoders (no biases, no extra modules) convert")


def write_llama_gguf(state: dict[str, Any], config, tokenizer: str, out: Path, dtype: str = "f16") -> Path:
    """Write ``state`` (an HF state dict of torch tensors) with ``config`` as a llama GGUF."""
    import gguf
    import numpy as np

    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_TYPES:
        raise InvalidParameter(f"GGUF conversion covers {', '.join(MODEL_TYPES)} models, not {model_type!r}")
    if tokenizer not in SENTENCEPIECE:
        raise InvalidParameter(f"GGUF conversion covers the SentencePiece Mistral tokenizers "
                               f"({', '.join(SENTENCEPIECE)}), not {tokenizer!r}")
    tokens, scores, types, raw = _vocab(tokenizer)
    if config.vocab_size != len(tokens):
        raise InvalidParameter(f"the model has {config.vocab_size} token embeddings but the {tokenizer} "
                               f"tokenizer {len(tokens)} tokens", hint="pass the tokenizer it was trained with")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(getattr(config, "_name_or_path", "") or "mistralkit model")
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(getattr(config, "rope_theta", None)
                               or (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(raw.bos_id)
    w.add_eos_token_id(raw.eos_id)
    w.add_unk_token_id(raw.unk_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    counts = {"head_count": heads, "head_count_kv": kv_heads}
    tied = getattr(config, "tie_word_embeddings", False)
    for key in sorted(state):
        if key == "lm_head.weight" and tied:
            continue  # llama.cpp reads token_embd when output is absent
        name, permute = _tensor_name(key)
        array = state[key].detach().float().cpu().numpy()
        if permute:
            array = rope_permute_rows(array, counts[permute])
        keep_f32 = array.ndim == 1 or dtype == "f32"
        w.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32 if keep_f32 else np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out

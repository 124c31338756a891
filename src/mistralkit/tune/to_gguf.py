"""An HF Mistral-family model (config + weights) as a GGUF that llama.cpp runs, written by our own code.

``LAYOUTS`` says, per ``model_type``, which GGUF architecture llama.cpp runs the model as and where
its decoder sits in the state dict: Llama/Mistral as ``llama``; Ministral 3 (its language model on
its own, or inside ``Mistral3ForConditionalGeneration``) as ``mistral3``, with its YaRN RoPE and
attention temperature. The vision tower and projector of a Mistral 3 are not written: llama.cpp
keeps them in a separate mmproj GGUF, and a merged text adapter does not change them.

The vocabulary comes from mistral-common, so llama.cpp tokenizes as it does: SentencePiece
(v1, v2, v3: pieces, scores and kinds of Mistral's own ``tokenizer.model``) or tekken (``tekken``,
``tekken-v7``: byte-level BPE with the merges recovered from its ranks, pre-tokenizer ``tekken``).
The facts used here are the GGUF format's published key and tensor names; Q and K rows are stored
with each head's two rotary halves interleaved, as llama.cpp's ``llama`` and ``mistral3`` expect.

    write_gguf(model.state_dict(), model.config, "v3", Path("tiny.gguf"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from .export import DECODER_MODULES, rope_permute_rows

SENTENCEPIECE = ("v1", "v2", "v3")
TEKKEN = ("tekken", "tekken-v7")
# GGUF token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
TOP_LEVEL = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
LAYER_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


@dataclass(frozen=True)
class Layout:
    """How one HF architecture is written: GGUF architecture, decoder prefix, parts left to mmproj."""

    arch: str
    decoder: str = "model."
    elsewhere: tuple[str, ...] = ()


LAYOUTS = {
    "llama": Layout("llama"),
    "mistral": Layout("llama"),
    "ministral3": Layout("mistral3"),
    "mistral3": Layout("mistral3", "model.language_model.", ("model.vision_tower.", "model.multi_modal_projector.")),
}
MODEL_TYPES = tuple(LAYOUTS)


def _sentencepiece_vocab(raw) -> tuple[list[str], list[float], list[int], list[str]]:
    sp = raw._model  # mistral-common's SentencePieceProcessor: pieces, scores and kinds
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        kind = (UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else BYTE if sp.is_byte(i)
                else NORMAL)
        types.append(kind)
    return tokens, scores, types, []


def _tekken_vocab(raw) -> tuple[list[str], list[float], list[int], list[str]]:
    """Control tokens, then the BPE tokens as byte-level strings, and the merges that build them.

    A token's merges are every split of it into two tokens, ordered by their ranks, as the HF
    tiktoken converter (and llama.cpp's) recovers them.
    """
    from gguf.vocab import bytes_to_unicode

    byte_text = bytes_to_unicode()

    def text(piece: bytes) -> str:
        return "".join(byte_text[b] for b in piece)

    ranks: dict[bytes, int] = raw._model._mergeable_ranks
    pieces = sorted(ranks, key=ranks.__getitem__)
    specials = raw.num_special_tokens
    tokens = [raw.id_to_piece(i) for i in range(specials)] + [text(p) for p in pieces]
    types = [CONTROL] * specials + [NORMAL] * len(pieces)
    merges = []
    for piece in pieces:
        splits = [(piece[:j], piece[j:]) for j in range(1, len(piece))]
        found = sorted((ranks[a], ranks[b], a, b) for a, b in splits if a in ranks and b in ranks)
        merges += [f"{text(a)} {text(b)}" for _, _, a, b in found]
    return tokens, [0.0] * len(tokens), types, merges


def _vocab(version: str):
    from ..formats.mistral import load_tokenizer

    raw = load_tokenizer(version).instruct_tokenizer.tokenizer
    return (*(_tekken_vocab(raw) if version in TEKKEN else _sentencepiece_vocab(raw)), raw)


def _tensor_name(key: str, layout: Layout) -> tuple[str, str | None] | None:
    """HF state-dict key -> (GGUF name, head-count key when its rows need the rotary permutation);
    None for the parts llama.cpp keeps in an mmproj GGUF."""
    if key == "lm_head.weight":
        return "output.weight", None
    if layout.elsewhere and key.startswith(layout.elsewhere):
        return None
    local = key.removeprefix(layout.decoder) if key.startswith(layout.decoder) else None
    if local in TOP_LEVEL:
        return TOP_LEVEL[local], None
    parts = (local or "").split(".")
    if len(parts) >= 4 and parts[0] == "layers" and parts[-1] == "weight":
        layer, module = parts[1], ".".join(parts[2:-1])
        if module in LAYER_NORMS:
            return f"blk.{layer}.{LAYER_NORMS[module]}.weight", None
        if module in DECODER_MODULES:
            permute = {"self_attn.q_proj": "head_count", "self_attn.k_proj": "head_count_kv"}.get(module)
            return f"blk.{layer}.{DECODER_MODULES[module]}.weight", permute
    raise InvalidParameter(f"cannot write the weight {key!r} to a {layout.arch} GGUF",
                           hint="only plain Llama/Mistral decoders (no biases, no extra modules) convert")


def _add_rope(w, text, arch: str) -> None:
    """RoPE base, and YaRN scaling with Ministral 3's attention temperature, as llama.cpp reads them."""
    import gguf

    rope = dict(getattr(text, "rope_parameters", None) or {})
    w.add_rope_freq_base(float(getattr(text, "rope_theta", None) or rope.get("rope_theta", 10000.0)))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return
    if kind != "yarn":
        raise InvalidParameter(f"GGUF conversion covers default and YaRN RoPE, not {kind!r}")
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(float(rope["factor"]))
    w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    w.add_rope_scaling_yarn_beta_fast(float(rope.get("beta_fast", 32.0)))
    w.add_rope_scaling_yarn_beta_slow(float(rope.get("beta_slow", 1.0)))
    if arch == "mistral3":
        w.add_rope_scaling_yarn_log_mul(float(rope.get("mscale_all_dim", 0.0)))
        if rope.get("llama_4_scaling_beta"):
            w.add_attn_temperature_scale(float(rope["llama_4_scaling_beta"]))


def _tied(head, embed) -> bool:
    """Whether the LM head is the token embedding (shared storage, or equal values)."""
    return embed is not None and head.shape == embed.shape and (
        head.data_ptr() == embed.data_ptr() or bool((head == embed).all()))


def write_gguf(state: dict[str, Any], config, tokenizer: str, out: Path, dtype: str = "f16",
               chat_template: str | None = None) -> Path:
    """Write ``state`` (an HF state dict of torch tensors) with ``config`` as a GGUF llama.cpp runs.

    The file records ``tokenizer`` (``formats.mistral.GGUF_KEY``), so mistralkit prompts it with the
    layout it was trained with, and carries ``chat_template`` (the HF folder's own) for other tools.
    """
    import gguf
    import numpy as np

    from ..formats.mistral import GGUF_KEY

    model_type = getattr(config, "model_type", "")
    if model_type not in LAYOUTS:
        raise InvalidParameter(f"GGUF conversion covers {', '.join(MODEL_TYPES)} models, not {model_type!r}")
    if tokenizer not in SENTENCEPIECE + TEKKEN:
        raise InvalidParameter(f"GGUF conversion covers the Mistral tokenizers {', '.join(SENTENCEPIECE + TEKKEN)}, "
                               f"not {tokenizer!r}")
    layout = LAYOUTS[model_type]
    text = config.get_text_config()
    tokens, scores, types, merges, raw = _vocab(tokenizer)
    if text.vocab_size != len(tokens):
        raise InvalidParameter(f"the model has {text.vocab_size} token embeddings and the {tokenizer} tokenizer "
                               f"{len(tokens)} tokens: its tokenizer is not {tokenizer!r}",
                               hint="pass the tokenizer it was trained with")
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    w = gguf.GGUFWriter(str(tmp), layout.arch)
    w.add_name(getattr(config, "_name_or_path", "") or "mistralkit model")
    w.add_context_length(text.max_position_embeddings)
    w.add_embedding_length(text.hidden_size)
    w.add_block_count(text.num_hidden_layers)
    w.add_feed_forward_length(text.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    _add_rope(w, text, layout.arch)
    w.add_layer_norm_rms_eps(float(text.rms_norm_eps))
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2" if merges else "llama")
    if merges:
        w.add_tokenizer_pre("tekken")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    if merges:
        w.add_token_merges(merges)
    w.add_bos_token_id(raw.bos_id)
    w.add_eos_token_id(raw.eos_id)
    w.add_unk_token_id(raw.unk_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_string(GGUF_KEY, tokenizer)
    if chat_template:
        w.add_chat_template(chat_template)
    counts = {"head_count": heads, "head_count_kv": kv_heads}
    embed = state.get(f"{layout.decoder}embed_tokens.weight")
    for key in sorted(state):
        if key == "lm_head.weight" and _tied(state[key], embed):
            continue  # tied: llama.cpp reads token_embd when output is absent
        named = _tensor_name(key, layout)
        if named is None:
            continue  # vision tower / projector: the mmproj GGUF's
        name, permute = named
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


write_llama_gguf = write_gguf  # the name merge.py and earlier callers use

"""Models with random weights at a real architecture's exact shapes, as llama.cpp reads them: a llama
GGUF written in f16 tensor by tensor (one in memory at a time), then quantized by llama.cpp.

Speed and memory do not depend on the values of the weights, so such a file loads, decodes and
batches as the real one would: bench/real_shape.py measures mistralkit at 1B/3B/7B with them, and the
speed planner (``speed.py``) calibrates this machine on a small one. A file gets its final name only
after the quantizer finished it, so a half-written one is never taken for a model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    """A llama-architecture decoder, as llama.cpp reads it."""

    layers: int
    embedding: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int
    rope_theta: float
    tied: bool  # the output projection is the token embedding (no output.weight)
    catalog: str = ""  # the catalog model it stands for, when the catalog has it


def tensors(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """(GGUF name, numpy shape) of every tensor, in llama.cpp's order."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    out = [("token_embd.weight", (shape.vocab, shape.embedding))]
    for i in range(shape.layers):
        out += [(f"blk.{i}.attn_norm.weight", (shape.embedding,)), (f"blk.{i}.attn_q.weight", (q, shape.embedding)),
                (f"blk.{i}.attn_k.weight", (kv, shape.embedding)), (f"blk.{i}.attn_v.weight", (kv, shape.embedding)),
                (f"blk.{i}.attn_output.weight", (shape.embedding, q)), (f"blk.{i}.ffn_norm.weight", (shape.embedding,)),
                (f"blk.{i}.ffn_gate.weight", (shape.ffn, shape.embedding)),
                (f"blk.{i}.ffn_up.weight", (shape.ffn, shape.embedding)),
                (f"blk.{i}.ffn_down.weight", (shape.embedding, shape.ffn))]
    out.append(("output_norm.weight", (shape.embedding,)))
    if not shape.tied:
        out.append(("output.weight", (shape.vocab, shape.embedding)))
    return out


def write_f16(path: Path, shape: Shape, name: str) -> None:
    """The whole model in f16, written tensor by tensor (one tensor in memory at a time)."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"{name} (random weights, real shape)")
    w.add_context_length(shape.context)
    w.add_block_count(shape.layers)
    w.add_embedding_length(shape.embedding)
    w.add_feed_forward_length(shape.ffn)
    w.add_head_count(shape.heads)
    w.add_head_count_kv(shape.kv_heads)
    w.add_key_length(shape.head_dim)
    w.add_value_length(shape.head_dim)
    w.add_rope_dimension_count(shape.head_dim)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    w.add_token_list([*specials, *(f"\u2581w{i}" for i in range(shape.vocab - len(specials)))])
    w.add_token_scores([0.0] * shape.vocab)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (shape.vocab - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ")
    block = (np.random.default_rng(0).standard_normal(1 << 22, dtype=np.float32) * 0.02).astype(np.float16)
    layout = tensors(shape)
    for tensor, dims in layout:
        norm = len(dims) == 1
        dtype = np.float32 if norm else np.float16
        w.add_tensor_info(tensor, dims, np.dtype(dtype), int(np.prod(dims)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for tensor, dims in layout:
        data = np.ones(dims, np.float32) if len(dims) == 1 else np.resize(block, dims)
        w.write_tensor_data(data)
    w.close()


def quantize(source: Path, target: Path, quant: str) -> None:
    import llama_cpp

    kinds = {"q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
             "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = kinds[quant]
    params.nthread = os.cpu_count() or 2
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source}")


def build(name: str, shape: Shape, cache: Path, quant: str = "q4_k_m", quiet: bool = False) -> Path:
    """The cached file of ``name`` at ``shape`` (built first when missing: minutes for 7B)."""
    target = cache / f"{name}-{quant}.gguf"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    f16, partial = cache / f"{name}-f16.gguf.partial", cache / f"{target.name}.partial"
    started = time.perf_counter()
    try:
        write_f16(f16, shape, name)
        quantize(f16, partial, quant)
        os.replace(partial, target)  # only a finished file gets the final name
    finally:
        f16.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    if not quiet:
        print(f"built {target} ({target.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - started:.0f} s",
              flush=True)
    return target

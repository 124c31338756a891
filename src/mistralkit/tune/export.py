"""A trained PEFT LoRA adapter -> a GGUF LoRA adapter that llama.cpp applies on top of a GGUF base.

The GGUF adapter holds, per adapted weight ``W`` of the base (llama.cpp name ``blk.N.attn_q.weight``),
``blk.N.attn_q.weight.lora_a`` (PEFT ``lora_A``, rows = rank) and ``.lora_b`` (PEFT ``lora_B``,
columns = rank); llama.cpp adds ``alpha / rank * B @ A`` to ``W``, PEFT's own scaling.

    path = export_gguf_adapter(Path("runs/smoke/adapter"), resolve("gemma-3-270m"), Path("smoke.gguf"))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidModelFile, InvalidParameter, MissingDependency
from ..models import LocalModel

ADAPTER_FORMAT = "gguf-adapter"
EXPORT_HINT = "pip install 'mistralkit[tune]'"

# HF decoder-layer module -> llama.cpp tensor stem (``blk.N.<stem>.weight``). These names are shared by
# the Llama/Mistral, Gemma 2/3 and Qwen 2/3 implementations in transformers.
DECODER_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@dataclass(frozen=True)
class ArchMap:
    """How one GGUF architecture names decoder modules, and which output rows it stores permuted.

    ``rope_permuted``: module -> GGUF key of the head count it was permuted with. llama.cpp's
    ``llama`` architecture (Llama and Mistral GGUFs) stores Q and K with the two rotary halves of
    each head interleaved, so a LoRA ``B`` on them must have its rows permuted the same way.
    """

    modules: dict[str, str]
    rope_permuted: dict[str, str]


ROPE_INTERLEAVED = {"self_attn.q_proj": "attention.head_count", "self_attn.k_proj": "attention.head_count_kv"}
ARCHITECTURES = {
    "llama": ArchMap(DECODER_MODULES, ROPE_INTERLEAVED),
    # Ministral 3 / Mistral Small 3.1 text model (llama-cpp-python >= 0.3.17 knows the arch): the
    # converter permutes Q/K as for llama (its Ministral3Model is a LlamaModel) and runs "normal" RoPE.
    "mistral3": ArchMap(DECODER_MODULES, ROPE_INTERLEAVED),
    "gemma3": ArchMap(DECODER_MODULES, {}),
    "gemma2": ArchMap(DECODER_MODULES, {}),
    "qwen2": ArchMap(DECODER_MODULES, {}),
    "qwen3": ArchMap(DECODER_MODULES, {}),
}

# A decoder-layer LoRA tensor of a causal LM (``base_model.model.model.layers.N...``) or of the language model
# inside a multimodal one (Mistral 3: ``base_model.model.model.language_model.layers.N...``, or
# ``...language_model.model.layers.N...`` as transformers < 4.52 named it).
PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?:model\.)?(?:language_model\.)?(?:model\.)?"
                      r"layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")
# Parts of a multimodal model that a llama.cpp text adapter cannot carry (they live in the mmproj GGUF).
NOT_TEXT = ("vision_tower.", "multi_modal_projector.", "vision_model.", "audio_tower.")


def find_peft_dir(path: Path) -> Path:
    """The folder with adapter_config.json: ``path`` itself, ``path/adapter``, or the newest below it."""
    path = path.expanduser()
    for candidate in (path, path / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    found = sorted(path.rglob("adapter_config.json"), key=lambda p: p.stat().st_mtime) if path.is_dir() else []
    if not found:
        raise InvalidParameter(
            f"no PEFT adapter (adapter_config.json) in {path}",
            hint="pass a run folder of `mistralkit tune` or a folder saved by peft's save_pretrained",
        )
    return found[-1].parent


PEFT_DEFAULTS = {"r": 8, "lora_alpha": 8}  # what PEFT's LoraConfig takes when the file leaves them out


def read_peft_config(peft_dir: Path) -> dict:
    """``adapter_config.json``, checked; a missing ``r`` or ``lora_alpha`` is PEFT's own default (8),
    as PEFT itself reads the file."""
    from ..text import read_json_object

    path = peft_dir / "adapter_config.json"
    config = {**PEFT_DEFAULTS, **read_json_object(path)}
    for key in PEFT_DEFAULTS:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
            raise InvalidParameter(f"{path}: {key} is {value!r}, not a positive number")
    kind = config.get("peft_type", "LORA")
    if kind != "LORA":
        raise InvalidParameter(f"{peft_dir} holds a {kind} adapter; only LoRA exports to GGUF")
    for flag, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA biases")):
        if config.get(flag):
            raise InvalidParameter(f"{peft_dir}: {what} cannot be expressed as a llama.cpp LoRA adapter",
                                   hint="train without it to export a GGUF adapter")
    if len(set((config.get("alpha_pattern") or {}).values()) | {config["lora_alpha"]}) > 1:
        raise InvalidParameter(f"{peft_dir}: per-module alpha (alpha_pattern) is not supported by llama.cpp adapters",
                               hint="train with one lora_alpha for every module")
    return config


def gguf_alpha(config: dict) -> float:
    """The alpha llama.cpp needs so that alpha / rank equals PEFT's scaling."""
    alpha, rank = float(config["lora_alpha"]), int(config["r"])
    if config.get("use_rslora"):  # PEFT scales by alpha / sqrt(rank)
        if config.get("rank_pattern"):
            raise InvalidParameter("rsLoRA with per-module ranks cannot be expressed as one llama.cpp alpha")
        return alpha * math.sqrt(rank)
    return alpha


def load_lora_tensors(peft_dir: Path) -> dict[str, "object"]:
    """PEFT tensor name -> float32 numpy array (bf16/fp16 files included)."""
    weights = peft_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise InvalidParameter(f"{weights} is missing", hint="save the adapter with safetensors (peft's default)")
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise MissingDependency(f"exporting an adapter needs torch and safetensors ({exc.name} is missing)",
                                hint=EXPORT_HINT) from exc
    return {name: tensor.float().numpy() for name, tensor in load_file(str(weights)).items()}


def rope_permute_rows(rows, n_head: int):
    """Reorder output rows the way llama.cpp's llama GGUFs store Q/K: per head, interleave the two halves."""
    shape = rows.shape
    return rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def gguf_tensors(tensors: dict, base: LocalModel) -> dict[str, "object"]:
    """PEFT tensors -> {llama.cpp name: array}, checked against the base's tensor table."""
    info = base.info
    if info is None or base.format != "gguf":
        raise InvalidParameter(f"the base {base.name} is not a GGUF model", hint="pass a GGUF base with --base")
    arch = info.metadata.get("general.architecture", "")
    if arch not in ARCHITECTURES:
        raise InvalidParameter(f"no LoRA name mapping for the {arch!r} architecture",
                               hint=f"supported: {', '.join(ARCHITECTURES)}")
    mapping = ARCHITECTURES[arch]
    shapes = {t.name: t.shape for t in info.tensors}  # GGUF order: (in, out)
    out = {}
    for key, value in tensors.items():
        match = PEFT_KEY.match(key)
        module = match.group(2) if match else key
        outside = next((part.rstrip(".") for part in NOT_TEXT if part in key), None)
        if outside:
            raise InvalidParameter(f"the LoRA tensor {key!r} adapts the {outside}, outside the language model, "
                                   f"which a llama.cpp adapter of the {arch} text model cannot hold",
                                   hint="train LoRA on the language model only (mistralkit tune's default)")
        if match is None or module not in mapping.modules:
            raise InvalidParameter(f"cannot map the LoRA tensor {key!r} to a llama.cpp tensor of {arch}",
                                   hint=f"export supports LoRA on {', '.join(mapping.modules)}")
        layer, side = match.group(1), match.group(3)
        target = f"blk.{layer}.{mapping.modules[module]}.weight"
        if target not in shapes:
            raise InvalidParameter(f"{key}: the base {base.name} has no tensor {target}",
                                   hint="pass the base the adapter was trained on with --base")
        n_in, n_out = shapes[target][0], shapes[target][1]
        expected = n_in if side == "A" else n_out
        actual = value.shape[1] if side == "A" else value.shape[0]
        if actual != expected:
            raise InvalidParameter(f"{key} has shape {list(value.shape)} but {target} of {base.name} is {n_out}x{n_in}",
                                   hint="pass the base the adapter was trained on with --base")
        if side == "B" and module in mapping.rope_permuted:
            value = rope_permute_rows(value, int(info.metadata[f"{arch}.{mapping.rope_permuted[module]}"]))
        out[f"{target}.lora_{side.lower()}"] = value
    stems = {name.rsplit(".lora_", 1)[0] for name in out}
    unpaired = sorted(s for s in stems if not (f"{s}.lora_a" in out and f"{s}.lora_b" in out))
    if unpaired:
        raise InvalidModelFile(f"LoRA tensors without their A/B pair: {', '.join(unpaired)}")
    return out


def write_gguf_adapter(path: Path, arch: str, alpha: float, tensors: dict, dtype: str = "f16") -> Path:
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    numpy_type = {"f16": np.float16, "f32": np.float32}[dtype]
    for name in sorted(tensors):
        writer.add_tensor(name, np.ascontiguousarray(tensors[name], dtype=numpy_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def export_gguf_adapter(peft_dir: Path, base: LocalModel, out: Path, dtype: str = "f16") -> Path:
    """Write the PEFT LoRA adapter in ``peft_dir`` (or a run folder holding one) as a GGUF adapter for ``base``."""
    if dtype not in ("f16", "f32"):
        raise InvalidParameter(f"dtype {dtype!r}: must be f16 or f32")
    peft_dir = find_peft_dir(Path(peft_dir))
    config = read_peft_config(peft_dir)
    tensors = gguf_tensors(load_lora_tensors(peft_dir), base)
    if not tensors:
        raise InvalidParameter(f"{peft_dir} holds no LoRA weights")
    arch = base.info.metadata["general.architecture"]  # type: ignore[union-attr]
    return write_gguf_adapter(Path(out), arch, gguf_alpha(config), tensors, dtype)


def export_and_register(source: Path, base: LocalModel, name: str, out: Path | None = None,
                        dtype: str = "f16", force: bool = False):
    """Export and record the adapter in the model store as ``name`` (``--adapter NAME``, ``BASE+NAME``).

    Without ``out`` the file goes into the store (``models/NAME/adapter.gguf``) and ``models rm``
    deletes it; with ``out`` it stays where it was written.
    """
    from ..models import catalog, registry
    from ..models.hashing import sha256_path
    from ..models.store import NAME_PATTERN, store_dir

    name = name.strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidParameter(f"bad adapter name {name!r}", hint="use letters, digits, '.', '-', '_' and one ':'")
    if not force and (registry.get(name) or catalog.find(name)):
        raise InvalidParameter(f"the name {name!r} is taken", hint="pass --name NEW_NAME, or --force to replace it")
    target = Path(out).expanduser().resolve() if out else store_dir(name) / "adapter.gguf"
    export_gguf_adapter(source, base, target, dtype)
    record = registry.Record(name=name, path=str(target), format=ADAPTER_FORMAT, sha256=sha256_path(target),
                             size=target.stat().st_size, source="export", managed=out is None, base=base.name)
    registry.add(record)
    return record

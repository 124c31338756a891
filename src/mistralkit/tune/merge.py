"""A LoRA adapter merged into its base as one GGUF model, then quantized with llama.cpp's own quantize function.

The merge happens in GGUF space: every adapted weight ``W`` of the base is dequantized (``gguf``'s
numpy dequantizers), ``alpha / rank * B @ A`` is added with the same tensors ``export`` writes for
llama.cpp (names mapped, Q/K rows permuted where the architecture needs it), and the sum is
written as f16; every other tensor and all metadata are copied unchanged. llama.cpp then
quantizes that file to the chosen type (``allow_requantize``: untouched tensors keep their values
up to the new type's rounding). Tensors stream one at a time, so memory stays near one weight.
An HF Llama/Mistral base is merged by PEFT instead and written by ``to_gguf`` before quantizing.

    merge_to_gguf(Path("runs/smoke"), resolve("gemma-3-270m"), Path("smoke-q8_0.gguf"), "q8_0")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import InvalidParameter, MistralkitError
from ..models import LocalModel
from .export import find_peft_dir, gguf_alpha, gguf_tensors, load_lora_tensors, read_peft_config

# --quant name -> llama.cpp's llama_ftype (LLAMA_FTYPE_MOSTLY_*)
QUANTS = {"f16": 1, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17}


class QuantizeError(MistralkitError):
    exit_code = 1


def _copy_metadata(reader, writer, skip: tuple[str, ...] = ()) -> None:
    import gguf

    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (gguf.Keys.General.ARCHITECTURE, *skip):
            continue  # the writer writes its own header and architecture
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), main, sub_type=sub)


def _deltas(peft_dir: Path, base: LocalModel) -> dict[str, tuple[object, object, float]]:
    """llama.cpp tensor name -> (B, A, scale) of the adapter."""
    config = read_peft_config(peft_dir)
    tensors = gguf_tensors(load_lora_tensors(peft_dir), base)
    alpha = gguf_alpha(config)
    out = {}
    for name in tensors:
        if name.endswith(".lora_a"):
            stem = name.removesuffix(".lora_a")
            a, b = tensors[name], tensors[f"{stem}.lora_b"]
            out[stem] = (b, a, alpha / a.shape[0])  # llama.cpp: alpha / rank, rank = rows of A
    if not out:
        raise InvalidParameter(f"{peft_dir} holds no LoRA weights")
    return out


def write_merged_f16(peft_dir: Path, base: LocalModel, target: Path, tokenizer: str | None = None) -> Path:
    """The base GGUF with the adapter added to its weights (merged tensors as f16). Its metadata is the
    base's (chat template included); ``tokenizer``, the Mistral tokenizer the run encoded with, is recorded."""
    import gguf
    import numpy as np

    from ..formats import mistral_tokenizer_of
    from ..formats.mistral import GGUF_KEY

    deltas = _deltas(peft_dir, base)
    reader = gguf.GGUFReader(str(base.path))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(str(target), arch)
    tokenizer = tokenizer or mistral_tokenizer_of(base)
    _copy_metadata(reader, writer, skip=(GGUF_KEY,) if tokenizer else ())
    if tokenizer:
        writer.add_string(GGUF_KEY, tokenizer)
    plan = []
    for tensor in reader.tensors:
        if tensor.name in deltas:
            rows = tuple(int(n) for n in reversed(tensor.shape))  # numpy order: (out, in)
            writer.add_tensor_info(tensor.name, rows, np.dtype(np.float16), int(np.prod(rows)) * 2)
        else:
            writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                                   raw_dtype=tensor.tensor_type)
        plan.append(tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in plan:
        if tensor.name in deltas:
            b, a, scale = deltas[tensor.name]
            weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
            weight = weight.reshape(b.shape[0], a.shape[1]) + scale * (b @ a)
            writer.write_tensor_data(weight.astype(np.float16))
        else:
            writer.write_tensor_data(tensor.data)
    writer.close()
    return target


def quantize(source: Path, target: Path, quant: str, threads: int = 0) -> Path:
    """llama.cpp's quantize (``llama_model_quantize``) from ``source`` to ``target``."""
    import llama_cpp

    from ..engines.llama_native import route_native_logs

    route_native_logs()  # its per-tensor report goes to the log file, not over the progress lines
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.allow_requantize = True
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        raise QuantizeError(f"llama.cpp could not quantize {source.name} to {quant} (status {status})",
                            hint="see the log (mistralkit config path) for llama.cpp's message")
    return target


def write_merged_hf(peft_dir: Path, base: LocalModel, target: Path, tokenizer: str | None) -> Path:
    """An HF Llama/Mistral/Mistral 3 base with the adapter merged by PEFT, written as an f16 GGUF that records
    the Mistral tokenizer and carries the folder's own chat template."""
    from ..formats.folder import folder_chat_template
    from .arch import arch_of_base, default_tokenizer
    from .base import require_torch
    from .to_gguf import write_gguf

    torch = require_torch()
    import transformers
    from peft import PeftModel

    tokenizer = tokenizer or default_tokenizer(base)
    if tokenizer is None:
        raise InvalidParameter(f"merging the HF model {base.name} into a GGUF needs its Mistral tokenizer",
                               hint="pass --tokenizer v1|v2|v3 (the one used for training)")
    loader = getattr(transformers, arch_of_base(base)[1].loader)
    model = loader.from_pretrained(str(base.path), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(peft_dir)).merge_and_unload()
    return write_gguf(merged.state_dict(), merged.config, tokenizer, target, "f16",
                      chat_template=folder_chat_template(base.path))


def merge_to_gguf(source: Path, base: LocalModel, out: Path, quant: str = "q4_k_m", threads: int = 0,
                  tokenizer: str | None = None, *, inspect: Callable[[Path, Path], None] | None = None,
                  say: Callable[[str], None] = lambda text: None) -> Path:
    """Merge the LoRA adapter in ``source`` (a run folder or PEFT folder) into ``base`` and quantize it.

    A GGUF base is merged in GGUF space; an HF Llama/Mistral directory is merged by PEFT and written
    as a GGUF first (``tokenizer``: its Mistral SentencePiece tokenizer, v1/v2/v3). ``inspect(f16, out)``
    runs once ``out`` is written, while the f16 merge it was quantized from still exists.
    """
    if quant not in QUANTS:
        raise InvalidParameter(f"--quant {quant!r}: unknown", hint=f"use one of {', '.join(QUANTS)}")
    if base.format not in ("gguf", "hf"):
        raise InvalidParameter(f"{base.name} is a {base.format} model, not a base to merge into")
    peft_dir = find_peft_dir(Path(source))
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = out.with_name(f".{out.name}.f16.tmp")
    quantized = out.with_name(f".{out.name}.tmp")
    try:
        say(f"merging {peft_dir} into {base.name} (f16)")
        if base.format == "gguf":
            write_merged_f16(peft_dir, base, merged, tokenizer)
        else:
            write_merged_hf(peft_dir, base, merged, tokenizer)
        say(f"quantizing to {quant}")
        quantize(merged, quantized, quant, threads)
        quantized.replace(out)  # the file appears whole or not at all
        if inspect is not None:
            inspect(merged, out)
    finally:
        merged.unlink(missing_ok=True)
        quantized.unlink(missing_ok=True)
    return out


def merge_and_register(source: Path, base: LocalModel, name: str, quant: str = "q4_k_m",
                       out: Path | None = None, force: bool = False, tokenizer: str | None = None, *,
                       check: bool = True, say: Callable[[str], None] = lambda text: None):
    """Merge, quantize and record the model in the store as ``name`` (``chat --model NAME``).

    With ``check`` the export is compared with base + adapter on the run's held-out samples
    (``fidelity.prove``); the figures, or why there are none, are the record's ``check``.
    """
    from ..models import catalog, registry
    from ..models.hashing import sha256_path
    from ..models.store import NAME_PATTERN, store_dir
    from .fidelity import prove

    name = name.strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidParameter(f"bad model name {name!r}", hint="use letters, digits, '.', '-', '_' and one ':'")
    if not force and (registry.get(name) or catalog.find(name)):
        raise InvalidParameter(f"the name {name!r} is taken", hint="pass --name NEW_NAME, or --force to replace it")
    target = Path(out).expanduser().resolve() if out else store_dir(name) / f"{store_dir(name).name}.gguf"
    found: dict = {}

    def inspect(reference: Path, exported: Path) -> None:
        try:
            found.update(prove(source, base, reference, exported, quant, tokenizer, say=say).to_dict())
        except MistralkitError as exc:  # no held-out data, or llama.cpp refused: the export stands
            found["skipped"] = str(exc)
            say(f"not checked: {exc}")

    merge_to_gguf(source, base, target, quant, tokenizer=tokenizer, inspect=inspect if check else None, say=say)
    record = registry.Record(name=name, path=str(target), format="gguf", sha256=sha256_path(target),
                             size=target.stat().st_size, source="export", managed=out is None, quant=quant,
                             base=base.name, check=found or None)
    registry.add(record)
    return record

"""Real-shape models for measurement: a GGUF with random weights at the exact architecture, tensor names
and vocabulary size of a real model, quantized by llama.cpp (Q4_K_M by default).

Speed and memory do not depend on the values of the weights, so such a file loads, decodes and batches
as the real download would; nothing is downloaded and no weights are committed. Files are cached
outside the repository (``~/.cache/mistralkit/real-shape/``, or ``--cache``); a file is only ever
renamed into place after llama.cpp's quantizer finished it, so a half-written one is never used.

Shapes (from each model's config.json): Llama 3.2 1B, Ministral 3B (the text model of Ministral 3
3B), Mistral 7B v0.3. The vocabulary is a made-up SentencePiece one of the real size.

Run:   .venv/bin/python bench/real_shape.py [NAME...] [--quant q4_k_m]     # prints each file's path
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mistralkit.models import synthetic
from mistralkit.models.synthetic import Shape

CACHE = Path(os.environ.get("MISTRALKIT_REAL_SHAPE_CACHE", Path.home() / ".cache" / "mistralkit" / "real-shape"))


SHAPES = {
    "llama-3.2-1b": Shape(16, 2048, 8192, 32, 8, 64, 128256, 131072, 500000.0, True),
    "ministral-3b": Shape(26, 3072, 9216, 32, 8, 128, 131072, 262144, 1000000.0, True, "ministral-3b-instruct"),
    "mistral-7b-v0.3": Shape(32, 4096, 14336, 32, 8, 128, 32768, 32768, 1000000.0, False,
                             "mistral-7b-instruct-v0.3"),
}


def build(name: str, quant: str = "q4_k_m", cache: Path = CACHE) -> Path:
    """The cached real-shape file of ``name`` (built first when missing: minutes for 7B)."""
    return synthetic.build(name, SHAPES[name], cache, quant)


tensors = synthetic.tensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "names", nargs="*", default=list(SHAPES), help=f"shapes to build (default all: {', '.join(SHAPES)})"
    )
    ap.add_argument("--quant", default="q4_k_m", choices=["q4_k_m", "q8_0", "q4_0"])
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"where the files are kept (default {CACHE})")
    args = ap.parse_args()
    for name in args.names:
        print(build(name, args.quant, args.cache))


if __name__ == "__main__":
    main()

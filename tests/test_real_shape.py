"""models/synthetic.py and bench/real_shape.py: random-weight GGUFs at a real model's shapes, quantized
by llama.cpp. Checked on a tiny shape (the real ones take minutes): the file passes the same header
checks as a download, matches the shape it was asked for, runs, and a half-written file is never taken
for a finished one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import real_shape  # noqa: E402
from mistralkit.models import synthetic  # noqa: E402

TINY = synthetic.Shape(layers=2, embedding=64, ffn=160, heads=4, kv_heads=2, head_dim=32, vocab=512,
                        context=1024, rope_theta=10000.0, tied=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("real-shape")
    (cache / "tiny-q8_0.gguf.partial").write_bytes(b"GGUF half a file")  # a build killed midway
    return synthetic.build("tiny", TINY, cache, "q8_0")


def test_the_file_has_the_asked_shape_and_passes_the_header_checks(built):
    from mistralkit.models.checks import check_model
    from mistralkit.models.gguf_info import read_info

    info = read_info(built)
    check_model(info)
    assert info.architecture == "llama" and info.metadata["llama.block_count"] == 2
    shapes = {t.name: tuple(reversed(t.shape)) for t in info.tensors}  # GGUF lists (columns, rows)
    assert shapes == dict(real_shape.tensors(TINY))
    assert info.metadata["llama.attention.key_length"] == 32 and info.metadata["llama.embedding_length"] == 64
    assert sorted(p.name for p in built.parent.iterdir()) == ["tiny-q8_0.gguf"]  # no partial left, none used


def test_the_file_runs(built):
    from mistralkit.engines import GenerationParams, complete, load_engine
    from mistralkit.models import resolve

    model = resolve(str(built))
    engine = load_engine(model, n_ctx=256, threads=1)
    try:
        done = complete(engine, "w1 w2 w3", GenerationParams(max_tokens=4, greedy=True, ignore_eos=True))
    finally:
        engine.close()
    assert done.usage.completion_tokens == 4


def test_the_real_shapes_are_the_models_parameter_counts():
    """Each shape's parameters agree with what its makers publish (1.24B, 3.85B text, 7.25B)."""
    counts = {name: sum(_size(dims) for _, dims in real_shape.tensors(shape)) / 1e9
              for name, shape in real_shape.SHAPES.items()}
    assert counts["llama-3.2-1b"] == pytest.approx(1.24, abs=0.02)
    assert counts["mistral-7b-v0.3"] == pytest.approx(7.25, abs=0.02)
    assert 3.0 < counts["ministral-3b"] < 4.0


def _size(dims: tuple[int, ...]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total

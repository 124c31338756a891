"""The RAM planner: shapes from the bundled GGUF, KV bytes against llama.cpp's own log, plans,
fit reports and suggestions, the --kv-type / --strict-memory flags and ``models fit``."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mistralkit import api
from mistralkit.errors import InsufficientMemory, InvalidParameter
from mistralkit.models import catalog, memory
from mistralkit.models.fitting import fit_report
from mistralkit.models.memory import GIB, MIB, ModelShape, parse_size, plan

ROOT = Path(__file__).resolve().parents[1]


def kv_by_hand(n_ctx: int, bytes_per_element: float) -> int:
    """The bundled Gemma 3 270M: 18 layers, 1 KV head, key and value length 256; with swa_full all
    18 layers (15 sliding-window ones included) keep every cell; llama.cpp rounds cells up to 256."""
    cells = -(-n_ctx // 256) * 256
    return int(18 * cells * (256 + 256) * 1 * bytes_per_element)


@pytest.fixture(scope="module")
def shape(model) -> ModelShape:
    return ModelShape.from_model(model)


def test_shape_comes_from_the_gguf_header(shape, model):
    assert (shape.layers, shape.heads, shape.kv_heads) == (18, 4, 1)
    assert (shape.key_length, shape.value_length, shape.embedding, shape.feed_forward) == (256, 256, 640, 2048)
    assert (shape.sliding_window, shape.swa_layers, shape.vocab) == (512, 15, 262144)
    assert shape.weights == model.path.stat().st_size
    assert shape.source == "gguf" and "Gemma 3 270M" in shape.title


@pytest.mark.parametrize("kv_type, per_element", [("f16", 2), ("q8_0", 34 / 32), ("q4_0", 18 / 32)])
@pytest.mark.parametrize("n_ctx", [512, 1000, 2048, 8192])
def test_kv_cache_matches_the_hand_computation(shape, n_ctx, kv_type, per_element):
    assert plan(shape, n_ctx, kv_type).kv_cache == kv_by_hand(n_ctx, per_element)


def test_catalog_shapes_agree_with_the_bundled_file(shape):
    from_catalog = ModelShape.from_catalog(*catalog.lookup("gemma-3-270m"))
    for kv_type in ("f16", "q4_0"):
        assert plan(from_catalog, 4096, kv_type).kv_cache == plan(shape, 4096, kv_type).kv_cache
    assert from_catalog.weights == catalog.find("gemma-3-270m").files["q4_k_m"].size


@pytest.mark.parametrize(("kv_type", "parallel"), [("f16", 1), ("q8_0", 1), ("f16", 2)])
def test_kv_cache_matches_what_llama_cpp_allocates(model, shape, caplog, kv_type, parallel):
    """llama.cpp logs each cache it creates at debug level ("llama_kv_cache: size = X MiB"), and
    whether flash attention is on: as the plan says (a quantized cache or several sequences)."""
    from mistralkit.engines import load_engine

    with caplog.at_level(logging.DEBUG, logger="llama.cpp"):
        engine = load_engine(model, n_ctx=1000 // parallel, kv_type=kv_type, parallel=parallel)
        engine.close()
    sizes = [float(r.getMessage().split("size =")[1].split("MiB")[0]) for r in caplog.records
             if r.name == "llama.cpp" and "llama_kv_cache: size =" in r.getMessage()]
    assert len(sizes) == 2  # the full-attention cache (3 layers) and the sliding-window one (15)
    expected = plan(shape, 1000 // parallel, kv_type, parallel=parallel)
    assert sum(sizes) * MIB == pytest.approx(expected.kv_cache, abs=0.01 * MIB)
    state = "enabled" if expected.flash_attn else "disabled"
    assert expected.flash_attn == (kv_type != "f16" or parallel > 1)
    assert any("flash_attn" in r.getMessage() and state in r.getMessage() for r in caplog.records)


def test_plan_parts_add_up(shape):
    f16, q8 = plan(shape, 8192, "f16"), plan(shape, 8192, "q8_0")
    assert f16.total == f16.weights + f16.kv_cache + f16.compute + f16.overhead
    assert f16.peak_rss == f16.total + f16.repacked
    assert not f16.flash_attn and q8.flash_attn  # a quantized V cache needs flash attention
    assert plan(shape, 2048, "f16", parallel=4).flash_attn  # so do several sequences in one cache
    assert q8.kv_cache < f16.kv_cache and q8.compute < f16.compute  # no attention score matrices
    assert plan(shape, 8192, used=300).compute < f16.compute  # a short prompt attends to fewer cells
    assert set(f16.to_dict()) >= {"weights", "kv_cache", "compute", "overhead", "total", "peak_rss"}
    with pytest.raises(InvalidParameter):
        plan(shape, 2048, "q5_0")


def test_peak_rss_is_predicted_within_ten_percent(mk_home):
    """One config of bench/memory_plan.py: a fresh process loads, prompts and generates; its peak
    RSS (VmHWM) against the plan. The bench covers more configs and prints the table."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_plan.py"), "--child", "1024", "q8_0", "300"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    from mistralkit.models import resolve

    used = measured["prompt_tokens"] + measured["completion_tokens"]
    predicted = plan(ModelShape.from_model(resolve("gemma-3-270m")), 1024, "q8_0", used=used).peak_rss
    assert predicted == pytest.approx(measured["after_generate"]["VmHWM"], rel=0.10)


def test_peak_rss_with_four_slots_is_predicted_within_ten_percent(mk_home):
    """serve --parallel 4's memory: four sequences decoded together in one context (a KV cache of
    4 x n_ctx cells, four logits rows a step), each with its own 300-token prompt."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_plan.py"), "--child", "1024", "f16", "300",
                          "--parallel", "4", "--gen-tokens", "8"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    from mistralkit.models import resolve

    used = measured["prompt_tokens"] + measured["completion_tokens"]
    assert measured["parallel"] == 4 and used == 4 * (300 + 8)
    shape = ModelShape.from_model(resolve("gemma-3-270m"))
    predicted = plan(shape, 1024, "f16", used=used, parallel=4)
    assert predicted.peak_rss == pytest.approx(measured["after_generate"]["VmHWM"], rel=0.10)
    assert predicted.kv_cache == pytest.approx(measured["llama_kv_cache_mib"] * MIB, rel=0.01)
    assert predicted.kv_cache == 4 * plan(shape, 1024, "f16").kv_cache


def write_llama_gguf(path: Path) -> Path:
    """A tiny random model of another architecture that llama.cpp runs: llama, 2 layers, hidden 256,
    8 heads, 2 KV heads (grouped-query attention), no sliding window, 1000-token vocabulary."""
    spec = importlib.util.spec_from_file_location("memory_plan", ROOT / "bench" / "memory_plan.py")
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))  # as when the script runs: its folder (report.py) importable
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return bench.write_synthetic_llama(path, layers=2, embd=256, heads=8, kv_heads=2, ff=512, vocab=1000)


def test_other_architectures_plan_from_their_header(tmp_path, caplog):
    from mistralkit.engines import load_engine
    from mistralkit.models.store import resolve

    model = resolve(str(write_llama_gguf(tmp_path / "tiny.gguf")))
    shape = ModelShape.from_model(model)
    assert (shape.layers, shape.heads, shape.kv_heads, shape.key_length, shape.swa_layers) == (2, 8, 2, 32, 0)
    assert plan(shape, 2048).kv_cache == 2 * 2048 * (32 + 32) * 2 * 2
    with caplog.at_level(logging.DEBUG, logger="llama.cpp"):
        load_engine(model, n_ctx=1000, kv_type="q4_0").close()
    sizes = [float(r.getMessage().split("size =")[1].split("MiB")[0]) for r in caplog.records
             if r.name == "llama.cpp" and "llama_kv_cache: size =" in r.getMessage()]
    assert len(sizes) == 1 and sizes[0] * MIB == pytest.approx(plan(shape, 1000, "q4_0").kv_cache, abs=0.01 * MIB)


@pytest.mark.parametrize("text, expected", [("4G", 4 * GIB), ("3.5GB", int(3.5 * GIB)), ("512M", 512 * MIB),
                                            ("4GiB", 4 * GIB), ("2048k", 2 * MIB), ("1000", 1000), (" 1 t ", 1 << 40)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "four gigs", "-1G", "4X"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(InvalidParameter):
        parse_size(text)


def test_fit_report_for_a_catalog_model_that_does_not_fit(mk_home):
    report = fit_report("mistral-7b-instruct-v0.3", 4 * GIB, 4096)
    assert report.source == "catalog" and not report.fits
    assert report.plan.total > 4 * GIB
    assert report.options and all(o.total <= 4 * GIB for o in report.options)
    changes = {o.change for o in report.options}
    assert "quant" in changes and "model" in changes
    assert all(o.ref != "mistral-7b-instruct-v0.3:q4_k_m" or o.n_ctx < 4096 or o.kv_type != "f16"
               for o in report.options)
    assert report.message.startswith("Mistral 7B Instruct v0.3 Q4_K_M needs ~")
    assert "over 4.0 GiB. Fits: " in report.message


def test_fit_report_suggests_a_quantized_cache_or_a_smaller_context(mk_home, shape):
    needed = plan(shape, 32768).total
    report = fit_report("gemma-3-270m", needed - 1, 32768)
    assert not report.fits and report.source == "gguf"
    first = report.options[0]
    assert (first.change, first.kv_type, first.n_ctx) == ("kv_type", "q8_0", 32768)
    context = next(o for o in report.options if o.change == "context")
    assert context.n_ctx in (16384, 8192, 4096, 2048, 1024, 512) and context.kv_type == "f16"


def test_fit_report_that_fits_and_the_default_context(mk_home):
    report = fit_report("gemma-3-270m", 64 * GIB)
    assert report.fits and report.options == [] and report.plan.n_ctx == 4096
    assert "fits in 64.0 GiB" in report.message
    with pytest.raises(InvalidParameter):
        fit_report("tinyllama-1.1b-chat", GIB, 4096)  # its context is 2048


def test_check_before_load_warns_or_refuses(mk_home, model, monkeypatch, caplog):
    """Stands in for a machine short of memory: available_memory() is patched (this one has plenty)."""
    assert memory.check_before_load(model, 2048) is None
    monkeypatch.setattr(memory, "available_memory", lambda: 100 * MIB)
    warning = memory.check_before_load(model, 2048, "f16")
    assert warning and "needs ~" in warning and "--kv-type q8_0" in warning
    with pytest.raises(InsufficientMemory) as refused:
        memory.check_before_load(model, 2048, "f16", strict=True)
    assert "models fit" in refused.value.hint
    strict = api.load_settings({"strict_memory": True, "ctx": 1024}).settings
    with pytest.raises(InsufficientMemory):
        api.load(strict)
    with caplog.at_level(logging.WARNING, logger="mistralkit.api"):
        loaded = api.load(api.load_settings({"ctx": 1024, "kv_type": "q8_0"}).settings)
    try:
        assert loaded.engine.kv_type == "q8_0"
        assert any("needs ~" in r.getMessage() for r in caplog.records if r.name == "mistralkit.api")
    finally:
        loaded.close()


def test_settings_kv_type_and_strict_memory_from_the_environment(mk_home):
    loaded = api.load_settings(environ={"MISTRALKIT_KV_TYPE": "Q4_0", "MISTRALKIT_STRICT_MEMORY": "yes"})
    assert (loaded.settings.kv_type, loaded.settings.strict_memory) == ("q4_0", True)
    assert loaded.sources["kv_type"] == "env MISTRALKIT_KV_TYPE"
    with pytest.raises(InvalidParameter):
        api.load_settings({"kv_type": "q5_1"})


def test_run_with_a_quantized_kv_cache(cli):
    done = cli("run", "--kv-type", "q4_0", "--strict-memory", "--ctx", "1024", "--max-tokens", "4", "--greedy",
               "--json", "Count: 1 2 3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["usage"]["completion_tokens"] >= 1
    bad = cli("run", "--kv-type", "q5_0", "hello")
    assert bad.returncode == 2 and "kv_type" in bad.stderr and "Traceback" not in bad.stderr


def test_models_fit_cli(cli, speed_calibrated, tmp_path):
    done = cli("models", "fit", "--ram", "8G")
    assert done.returncode == 0, done.stderr
    for part in ("weights", "KV cache", "compute", "runtime", "total", "fits in 8.0 GiB"):
        assert part in done.stdout
    over = cli("models", "fit", "mistral-7b-instruct-v0.3", "--ram", "4G", "--json")
    assert over.returncode == 1
    data = json.loads(over.stdout)
    assert data["fits"] is False and data["source"] == "catalog" and data["plan"]["n_ctx"] == 4096
    assert data["options"] and "Fits: " in data["message"]
    path = cli("models", "fit", str(write_llama_gguf(tmp_path / "tiny.gguf")), "--ctx", "1024", "--kv-type", "q8_0",
               "--json")
    assert path.returncode == 0, path.stderr
    assert json.loads(path.stdout)["plan"]["kv_cache"] == 2 * 1024 * 64 * 2 * 34 // 32
    bad = cli("models", "fit", "--ram", "lots")
    assert bad.returncode == 2 and "4G" in bad.stderr

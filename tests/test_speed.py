"""The speed planner (models/speed.py): its arithmetic on fixed calibration numbers, its calibration
(measured with llama.cpp, cached, rebuilt when damaged, an estimate when it cannot run) and its
prediction against a measured run of the embedded chat model (a loose bound: the bench checks the
+-25% at real shapes)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from mistralkit.errors import InvalidParameter
from mistralkit.models import speed
from mistralkit.models.memory import ModelShape

TOY = ModelShape(title="toy", layers=1, heads=1, kv_heads=1, key_length=2, value_length=2, embedding=2,
                 feed_forward=2, vocab=4, context_length=64, weights=44)


def test_the_cost_model_on_a_shape_small_enough_to_count_by_hand():
    """1 layer: q, k, v, o = 2x2 each (16 weights) and three 2x2 FFN matrices (12): 28 layer weights; an
    untied 4x2 embedding and output: 16 more, 44 bytes in all (1 byte a weight). A prompt token costs
    2 x 28 FLOPs plus 4 x 2 per token before it; a decoded token reads 28 + 8 weights and 8 bytes of KV
    cache per token before it."""
    calibration = speed.Calibration(threads=2, flops_per_s=560.0, bytes_per_s=360.0, source="measured")
    got = speed.predict(TOY, calibration, prompt_tokens=10, answer_tokens=2)
    prefill = 560.0 / (56 + 8 * 5)  # the prompt's tokens see 5 before them on average
    decode = 360.0 / (36 + 8 * 11)  # the answer's middle token sees 11
    assert got.prefill_tps == pytest.approx(prefill) and got.decode_tps == pytest.approx(decode)
    assert got.answer_s == pytest.approx(10 / prefill + 2 / decode) and got.threads == 2


def test_speed_scales_as_the_machine_and_the_file_do():
    from mistralkit.models import catalog

    entry = catalog.find("mistral-7b-instruct-v0.3")
    q4, q8 = ModelShape.from_catalog(entry, "q4_k_m"), ModelShape.from_catalog(entry, "q8_0")
    slow, fast = speed.Calibration(2, 40e9, 10e9, "measured"), speed.Calibration(2, 80e9, 20e9, "measured")
    assert speed.predict(q4, fast).prefill_tps == pytest.approx(2 * speed.predict(q4, slow).prefill_tps)
    assert speed.predict(q4, fast).decode_tps == pytest.approx(2 * speed.predict(q4, slow).decode_tps)
    ratio = speed.predict(q4, slow, 10, 10).decode_tps / speed.predict(q8, slow, 10, 10).decode_tps
    assert ratio == pytest.approx(q8.weights / q4.weights, rel=0.05)  # decode reads the weights
    with pytest.raises(InvalidParameter, match="answer tokens"):
        speed.predict(q4, slow, answer_tokens=0)


@pytest.fixture(scope="module")
def calibrated(mk_home, speed_calibrated) -> speed.Calibration:
    return speed.calibrate(2)


def test_calibration_is_measured_once_and_kept(calibrated):
    assert calibrated.source == "measured" and calibrated.flops_per_s > 1e9 and calibrated.bytes_per_s > 1e8
    assert speed.calibrate(2) == calibrated  # from the cache: the same numbers, not a second run
    stored = json.loads((speed._cache_file()).read_text())
    assert stored[speed.machine_key(2)]["flops_per_s"] == calibrated.flops_per_s


def test_a_damaged_calibration_is_measured_again(calibrated, mk_home):
    cache = speed._cache_file()
    cache.write_text("{not json")
    again = speed.calibrate(2)
    assert again.source == "measured" and json.loads(cache.read_text())[speed.machine_key(2)]


def test_prediction_is_near_a_measured_run_of_the_embedded_model(calibrated, mk_home):
    """Gemma 3 270M, a real model (the calibration ran on synthetic ones): predicted within 3x of what
    llama.cpp does (the bench holds the planner to +-25% at 1B-7B; a 270M model is all overheads)."""
    from mistralkit.engines import GenerationParams, complete, load_engine
    from mistralkit.models import resolve

    model = resolve("gemma-3-270m")
    predicted = speed.predict(ModelShape.from_model(model), calibrated, prompt_tokens=200, answer_tokens=64)
    idle = _idle_cpu()  # for the message: a thread left busy by an earlier test would slow this decode
    engine = load_engine(model, n_ctx=1024, threads=2)
    try:
        prompt = engine.encode_text(" ".join(f"word{i}" for i in range(200)))[:200]
        complete(engine, prompt, GenerationParams(max_tokens=64, greedy=True, ignore_eos=True))
        # The fastest of three answers: one answer on a shared 2-core machine can be slowed 3x by a moment's
        # contention (seen once in CI), which says nothing of the planner.
        runs = [complete(engine, [*prompt[:-1], prompt[-1] + n], GenerationParams(max_tokens=64, greedy=True,
                                                                                  ignore_eos=True)) for n in (1, 2, 3)]
        done = max(runs, key=lambda run: run.usage.gen_tps)
    finally:
        engine.close()
    # Within 3x: inside the full suite this answer ran at 40-47 tok/s against ~100 alone (twice in CI, not found why).
    assert 1 / 3 < predicted.decode_tps / done.usage.gen_tps < 3, (predicted, done.usage, idle)


def _idle_cpu(seconds: float = 0.5) -> str:
    """CPU this process burns while the test waits, and its threads: what competes with a decode."""
    import threading
    import time

    start = time.process_time()
    time.sleep(seconds)
    busy = time.process_time() - start
    names = sorted(t.name for t in threading.enumerate())
    return f"process CPU while idle: {busy / seconds:.0%} of one core; threads: {names}"


def test_fit_and_info_print_the_speed_and_refuse_a_bad_answer_length(mk_home, calibrated):
    done = run_cli("models", "fit", "mistral-7b-instruct-v0.3", "--ram", "8G", "--threads", "2", "--json", home=mk_home)
    answer = json.loads(done.stdout)["speed"]
    assert answer["answer_tokens"] == 200 and answer["prompt_tokens"] == 100 and answer["source"] == "measured"
    assert answer["answer_s"] > answer["answer_tokens"] / answer["decode_tps"]
    info = run_cli("models", "info", "mistral-7b-instruct-v0.3", "--threads", "2", home=mk_home)
    assert "speed: prefill ~" in info.stdout and "s for 200 tokens after a 100-token prompt" in info.stdout
    bad = run_cli("models", "fit", "mistral-7b-instruct-v0.3", "--answer-tokens", "0", home=mk_home)
    assert bad.returncode == 2 and "--answer-tokens 0" in bad.stderr and "Traceback" not in bad.stderr


def test_the_ram_advice_prices_each_option_with_the_planner(mk_home, calibrated):
    """`models fit --ram 4G` of a 7B: every configuration offered instead carries the planner's seconds
    for an answer on this machine, the same figure `models fit` gives that option on its own."""
    done = run_cli("models", "fit", "mistral-7b-instruct-v0.3", "--ram", "4G", "--threads", "2", "--json",
                   home=mk_home)
    assert done.returncode == 1, done.stderr  # does not fit
    options = json.loads(done.stdout)["options"]
    assert options and all(o["answer_s"] > 0 for o in options)
    smaller = next(o for o in options if o["change"] == "model")
    alone = run_cli("models", "fit", smaller["ref"], "--ram", "4G", "--threads", "2", "--json", home=mk_home)
    assert json.loads(alone.stdout)["speed"]["answer_s"] == pytest.approx(smaller["answer_s"])
    text = run_cli("models", "fit", "mistral-7b-instruct-v0.3", "--ram", "4G", "--threads", "2", home=mk_home).stdout
    assert f"~{smaller['answer_s']:,.0f} s an answer" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to another user, which needs root")
def test_a_calibration_that_cannot_run_falls_back_to_the_estimate_and_says_so():
    """A home whose model and cache folders the user may not write: no calibration model can be built
    there, so nothing can be measured; the documented estimate stands in, marked as one."""
    import tempfile
    from pathlib import Path

    home = Path(tempfile.mkdtemp(prefix="mk-locked-"))  # under /tmp: traversable by nobody
    for private in (home / "data" / "models", home / "cache"):  # root's, read-only for the user below
        private.mkdir(parents=True)
        os.chmod(private, 0o755)
    for folder in (home, home / "data"):
        os.chmod(folder, 0o755)
        os.chown(folder, 65534, 65534)
    try:
        done = run_cli("models", "fit", "mistral-7b-instruct-v0.3", "--ram", "8G", "--threads", "2", home=home,
                       user=65534)
    finally:
        __import__("shutil").rmtree(home, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert "(estimate: no calibration could run)" in done.stdout and "Traceback" not in done.stderr

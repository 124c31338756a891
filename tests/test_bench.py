"""``mistralkit bench`` on the embedded model: real llama.cpp timings, JSON and chart (no timing asserted)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_bench_reports_pp_tg_ttft_and_memory_per_thread_count(cli, model, tmp_path):
    png = tmp_path / "bench.png"
    done = cli("bench", "--threads", "1,2", "-p", "64", "-n", "8", "-r", "2", "--png", str(png), "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["threads"] for r in results] == [1, 2]
    for r in results:
        assert r["model"] == model.name and r["prompt_tokens"] == 64 and r["gen_tokens"] == 8
        assert len(r["pp_tps"]) == len(r["tg_tps"]) == len(r["ttft_s"]) == 2
        assert r["pp"]["mean"] > 0 and r["tg"]["mean"] > 0 and r["ttft_median_s"] > 0 and r["load_s"] > 0
        assert r["peak_rss"] > model.path.stat().st_size // 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = cli("bench", "-t", "1", "-p", "16", "-n", "4", "-r", "1")
    assert table.returncode == 0 and "pp tok/s" in table.stdout and "\n      1 |" in table.stdout


def test_bench_refuses_bad_parameters(cli):
    bad = cli("bench", "--threads", "two")
    assert bad.returncode == 2 and "--threads 'two'" in bad.stderr
    zero = cli("bench", "-r", "0")
    assert zero.returncode == 2 and ">= 1" in zero.stderr

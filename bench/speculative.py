"""Speculative decoding: our ``--speculative ngram`` against decoding one token a step, and llama.cpp's
``llama-server --spec-type ngram-simple`` / ``ngram-mod`` on the same file, threads and prompt tokens.

Workloads (the kinds of answer that copy their input, and one that does not):
  rewrite   a French paragraph to correct, with few changes to make
  summary   a long discharge note to summarize (the answer quotes it)
  quote     a question answered from a numbered source, quoting it
  free      free chat (nothing to copy: drafts must not cost)

For each model, workload and mode: decode tokens/s (generated tokens after the first / their time;
the median of ``--reps``), the share of drafted tokens kept, and whether the greedy tokens are those of
decoding without drafts (every run evaluates its prompt from the start: a prompt half-cached is cut into
other calls, whose rounding differs). Ours runs in-process on two engines: the default one (no flash attention for
one sequence) and one loaded with ``speculative="ngram"`` (flash attention on, which speculation
needs), whose requests run once with drafts and once without: that pair is the identity check.
llama-server gets the same token ids on /completion (``n_predict``, ``temperature`` 0) and reports
its own ``timings``. ``--sampled`` adds a seeded run at temperature 0.7 (identity of the seeded text).
``--parallel 4`` sends each prompt 4 times at once (4 sequences decoded together; ours drafts only
for a sequence decoding alone, so this shows the cost of having it on).

llama-server: ``--llama-server PATH``, or bench/build_llama_server.sh's cached build.

Run:   .venv/bin/python bench/speculative.py [--models gemma-3-270m smollm2] [--reps 3] [--tokens 96]
       [--threads 2] [--sampled] [--parallel 4] [--json bench-speculative.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from report import table  # noqa: E402
from serve_throughput import find_llama_server, free_port, running  # noqa: E402

PARAGRAPH = ("Hier, Lucas et sa soeur son allé au cinéma avec trois amis. Le film commencait a huit heure et "
             "demi, mais ils sont arrivés en retard parce que le bus etait plein. Apres le film, ils ont mangé "
             "une glace sur la place du marché et ils sont rentré a pied en parlant des acteurs.")
NOTE = ("Patient: Mrs Jeanne Durand, 82 years old. Admitted on 3 March 2026 after a fall at home at night. "
        "History: hypertension treated with amlodipine 5 mg once a day; type 2 diabetes treated with "
        "metformin 500 mg twice a day; no known allergy. On arrival: pain in the left hip, able to bear "
        "weight with help, blood pressure 150/85, glucose 8.2 mmol/L. The X-ray of the hip and pelvis showed "
        "no fracture. A CT scan of the head showed no bleeding. She was given paracetamol 1 g three times a "
        "day, and physiotherapy started on day two: she walked 20 metres with a frame. An occupational "
        "therapist visited her flat with her daughter and advised a night light and a raised toilet seat. "
        "Discharged on 6 March 2026 to her home, with her daughter staying for a week, follow-up with her "
        "general practitioner in ten days and physiotherapy twice a week for four weeks.")
SOURCE = ("[1] Tenancy rules, article 4: The deposit may not exceed two months of rent. It is returned within "
          "one month of the end of the lease when the inventory shows no damage, and within two months "
          "otherwise. A landlord who returns it late owes ten percent of the monthly rent for each month of "
          "delay.")
WORKLOADS = {
    "rewrite": ("Corrige les fautes de ce paragraphe sans rien changer d'autre, et recopie-le en entier "
                f"corrigé.\n\n{PARAGRAPH}", f"Texte : {PARAGRAPH}\nTexte corrigé : "),
    "summary": (f"Summarize this discharge note for the patient's GP, keeping every drug and date.\n\n{NOTE}",
                f"{NOTE}\n\nSummary for the GP (every drug and date kept): Mrs Jeanne Durand, 82,"),
    "quote": (f"{SOURCE}\n\nQuestion: when must the deposit be returned? Answer by quoting the source as [1].",
              f"{SOURCE}\n\nQuestion: when must the deposit be returned?\nAnswer, quoting [1]: The deposit"),
    "free": ("Write a short story about a lighthouse keeper who finds a cat.",
             "Once upon a time, a lighthouse keeper found a cat on the rocks. The"),
}


def prompt_ids(engine, workload: str) -> list[int]:
    """Chat prompt for an instruct model (its template), raw text for a base model."""
    chat, raw = WORKLOADS[workload]
    if engine.model.name.startswith("gemma-3-270m"):  # the embedded base model
        return engine.encode_text(raw)
    return engine.prompt_tokens(chat)


def at_once(one, parallel: int) -> list[dict]:
    """``one(i)`` for i < ``parallel``, all at the same time; their results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(parallel)))


def ours(engine, ids: list[int], params, parallel: int) -> list[dict]:
    from mistralkit.engines import complete

    engine.reset_cache()  # a prompt evaluated from its start each time, as llama-server's cache_prompt false

    def one(_: int) -> dict:
        done = complete(engine, ids, params)
        u = done.usage
        return {"tokens": list(done.token_ids), "tps": u.gen_tps, "drafted": u.drafted_tokens,
                "accepted": u.accepted_tokens, "n": u.completion_tokens, "span": u.total_s - u.ttft_s}

    return at_once(one, parallel)


def server(url: str, ids: list[int], tokens: int, sampled: bool, parallel: int) -> list[dict]:
    body = {"prompt": ids, "n_predict": tokens, "temperature": 0.7 if sampled else 0.0, "seed": 11,
            "cache_prompt": False, "return_tokens": True, "repeat_penalty": 1.1, "repeat_last_n": 64,
            "top_k": 40, "top_p": 0.95, "min_p": 0.05, "ignore_eos": True}

    def one(_: int) -> dict:
        answer = httpx.post(f"{url}/completion", json=body, timeout=600).json()
        t = answer.get("timings", {})
        return {"tokens": answer.get("tokens", []), "tps": t.get("predicted_per_second", 0.0),
                "drafted": t.get("draft_n", 0), "accepted": t.get("draft_n_accepted", 0),
                "n": t.get("predicted_n", 0), "span": t.get("predicted_ms", 0.0) / 1000}

    return at_once(one, parallel)


def summarize(runs: list[list[dict]], reference: list[list[dict]] | None, parallel: int) -> dict:
    """Median tokens/s (one sequence: its rate; several: all their tokens over the longest span)."""
    rates = [r[0]["tps"] if parallel == 1 else sum(x["n"] - 1 for x in r) / max(x["span"] for x in r)
             for r in runs]
    drafted = sum(x["drafted"] for r in runs for x in r)
    accepted = sum(x["accepted"] for r in runs for x in r)
    same = None if reference is None else all(
        a["tokens"] == b["tokens"] for r, ref in zip(runs, reference) for a, b in zip(r, ref))
    return {"tps": statistics.median(rates), "drafted": drafted, "accepted": accepted,
            "acceptance": accepted / drafted if drafted else None, "identical": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["gemma-3-270m", "smollm2"])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sampled", action="store_true", help="also a seeded run at temperature 0.7")
    ap.add_argument("--parallel", type=int, default=1, help="copies of each prompt sent at once")
    ap.add_argument("--llama-server", type=Path, metavar="PATH")
    ap.add_argument("--spec-types", nargs="*", default=["ngram-simple", "ngram-mod"])
    ap.add_argument("--json", type=Path, metavar="FILE")
    args = ap.parse_args()

    from mistralkit.engines import GenerationParams, load_engine
    from mistralkit.models import resolve

    llama_server = find_llama_server(args.llama_server)
    kinds = [("greedy", False)] + ([("sampled", True)] if args.sampled else [])
    rows, out = [], []
    for name in args.models:
        model = resolve(name)
        options = {"n_ctx": 2048, "threads": args.threads, "parallel": args.parallel}
        plain_engine = load_engine(model, **options)
        spec_engine = load_engine(model, **options, speculative="ngram")
        ids = {w: prompt_ids(spec_engine, w) for w in args.workloads}
        found: dict[tuple, dict] = {}
        for kind, sampled in kinds:
            params = GenerationParams(max_tokens=args.tokens, greedy=not sampled, temperature=0.7 if sampled else 0,
                                      seed=11, ignore_eos=True)
            for w in args.workloads:
                print(f"{name} {w} {kind}: ours", file=sys.stderr, flush=True)
                base = [ours(plain_engine, ids[w], replace(params, speculative="off"), args.parallel)
                        for _ in range(args.reps)]
                off = [ours(spec_engine, ids[w], replace(params, speculative="off"), args.parallel)
                       for _ in range(args.reps)]
                on = [ours(spec_engine, ids[w], replace(params, speculative="ngram"), args.parallel)
                      for _ in range(args.reps)]
                found[(w, kind, "ours plain")] = summarize(base, None, args.parallel)
                found[(w, kind, "ours plain (flash)")] = summarize(off, None, args.parallel)
                found[(w, kind, "ours ngram")] = summarize(on, off, args.parallel)
                found[(w, kind, "ours ngram")]["identical_to_default"] = summarize(on, base, args.parallel)["identical"]
        plain_engine.close()
        spec_engine.close()
        if llama_server is not None:
            for spec in ["none", *args.spec_types]:
                port = free_port()
                command = [str(llama_server), "-m", str(model.path), "--port", str(port), "-t", str(args.threads),
                           "-tb", str(args.threads), "-c", str(2048 * args.parallel), "-np", str(args.parallel),
                           "-fa", "on", "--no-webui"]
                if spec != "none":
                    command += ["--spec-type", spec]
                with running(command, port, f"llama-server {spec}") as (url, _):
                    for kind, sampled in kinds:
                        for w in args.workloads:
                            print(f"{name} {w} {kind}: llama-server {spec}", file=sys.stderr, flush=True)
                            runs = [server(url, ids[w], args.tokens, sampled, args.parallel) for _ in range(args.reps)]
                            found[(w, kind, f"llama-server {spec}")] = {"runs": runs}
            raw = {key: value["runs"] for key, value in found.items() if "runs" in value}
            for (w, kind, mode), runs in raw.items():
                reference = None if mode.endswith("none") else raw[(w, kind, "llama-server none")]
                found[(w, kind, mode)] = summarize(runs, reference, args.parallel)
        for (w, kind, mode), value in found.items():
            plain = found[(w, kind, "ours plain")]["tps"]
            server_none = found.get((w, kind, "llama-server none"), {}).get("tps")
            ref = server_none if mode.startswith("llama-server") else plain
            speedup = value["tps"] / ref if ref else None
            out.append({"model": name, "workload": w, "kind": kind, "mode": mode, "parallel": args.parallel,
                        "threads": args.threads, "speedup": speedup, **value})
            acceptance = "" if value["acceptance"] is None else f"{value['acceptance']:.0%}"
            identical = {None: "", True: "yes", False: "NO"}[value["identical"]]
            rows.append([name, w, kind, mode, f"{value['tps']:.1f}", f"x{speedup:.2f}" if speedup else "",
                         acceptance, identical])
    print(table(["model", "workload", "kind", "mode", "tok/s", "speedup", "kept", "identical"], rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit(130) from None

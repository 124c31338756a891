"""Every command line the README shows (in its ``sh`` blocks) and every ``--help`` example, run as written.

The lines are collected from the README and from the help text of every command; each one must be in
``LINES`` below, which says how it is checked, and ``LINES`` may hold nothing else. Most lines run
for real, in order, in one working folder (where ``train.jsonl``, ``qa.jsonl``, ``~/models`` and the
rest exist, made by ``workspace``), as a subprocess with a fresh ``MISTRALKIT_HOME``: their exit code
is checked, and what they print where the line pipes it (``| jq`` must get JSON). Servers (``serve``,
``datagen serve``) are started as written, on their default ports, asked ``/health``, used by the
lines that need them, and stopped with SIGTERM. ``datagen work``, which runs until its goal, is
stopped with Ctrl-C once it holds a lease. A line that needs the network (a model not on this
machine, a hosted API) or a GPU is parsed by the real command-line parser instead, with the reason
given. Generation is kept short with ``MISTRALKIT_MAX_TOKENS``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import share_tune_bases
from test_server_api import write_lora

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KEY, TOKEN = "doc-key-0123456789", "doc-token-0123456789"


# --- what the documentation shows ----------------------------------------------------------------

def _joined(lines: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(lines):
        line = lines[i].rstrip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1].rstrip() + " " + lines[i].strip()
        out.append(line.strip())
        i += 1
    return out


def normal(line: str) -> str:
    """A command line as one spacing, without ``.venv/bin/`` and comments."""
    return " ".join(shlex.quote(word) for word in shlex.split(line.replace(".venv/bin/", ""), comments=True))


def readme_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [line for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in _joined(block.split("\n"))
            if line and not line.startswith("#")]


def help_lines() -> list[str]:
    import typer.main

    from mistralkit.cli.main import app

    def walk(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    return [line for command in walk(typer.main.get_command(app)) for line in _joined((command.help or "").split("\n"))
            if re.match(r"^(\S+=\S+ )*mistralkit\s", line)]


# --- how each is checked -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """Run it; ``code`` is the exit code it must give, ``says`` a phrase of its output."""

    code: int | tuple[int, ...] = 0
    says: str = ""
    stdin: str | None = None
    cwd: str = "."


@dataclass(frozen=True)
class Serve:
    """A server: started, asked ``health``, used by the ``then`` lines, stopped with SIGTERM."""

    health: str
    then: tuple[str, ...] = ()


@dataclass(frozen=True)
class Interrupt:
    """A command that runs until its goal: stopped with Ctrl-C once ``ready`` (a /stats key) is > 0."""

    stats: str
    ready: str


@dataclass(frozen=True)
class Parse:
    """Checked by the command-line parser only (or ``--help`` for a script, ``make -n`` for make)."""

    why: str


NET = "needs the network: a model or API not on this machine"
GPU = "needs a CUDA GPU"
QUIT = "hello\n/quit\n"
LOCAL = "http://127.0.0.1:8080"
DG = "http://127.0.0.1:8765"

LINES: dict[str, Run | Serve | Interrupt | Parse] = {
    # README: set-up and first steps
    "make chat": Parse("the Makefile target CI's clean-clone run builds; `make -n` checks it"),
    "make test": Parse("this very suite; `make -n` checks the target"),
    "mistralkit models fit mistral-7b-instruct-v0.3 --ram 4G": Run(1, "Fits:"),
    "mistralkit models pull mistral-7b-instruct-v0.3": Parse(NET),
    "mistralkit chat -m mistral-7b-instruct-v0.3 --system 'Answer in French.'": Parse(NET),
    "mistralkit chat -m mistralai/Mistral-7B-Instruct-v0.2 --device cuda --quant 4 --adapter runs/support": Parse(GPU),
    # help of the root command
    "mistralkit chat": Run(stdin=QUIT),
    "mistralkit run 'Write a haiku'": Run(),
    "mistralkit correct 'il a manger'": Run(says="mangé"),
    "mistralkit datagen init legal/": Run(),
    "mistralkit datagen init --example succession-fr successions/": Run(),
    "mistralkit datagen init legal/ && mistralkit datagen check legal/spec.yaml": Run(cwd="again"),  # a new folder
    "mistralkit datagen check legal/spec.yaml": Run(),
    # chat and run
    "mistralkit chat -m '~/models/Mistral-7B-Instruct-v0.3-Q4_K_M.gguf' -s 'Answer in French.'": Parse(NET),
    "mistralkit chat --greedy -p 'What is 2+2?'": Run(),
    "mistralkit chat --ctx 8192 --kv-type q8_0": Run(stdin=QUIT),
    "mistralkit sessions list": Run(),
    "mistralkit chat --session-id 3f2a": Run(stdin=QUIT),  # workspace() names a saved session 3f2a...
    "mistralkit sessions export 3f2a --format md > chat.md": Run(),
    "mistralkit run 'Explain LoRA in one sentence.'": Run(),
    "mistralkit run --json --greedy 2+2= | jq .usage": Run(),
    "mistralkit run --speculative ngram --json 'Repeat: the cat sat on the mat.' | jq .usage":
        Run(says="accepted_tokens"),
    "mistralkit run --adapter ./my-tune.gguf Hello": Run(),
    "mistralkit chat -m gpt": Parse(NET),
    # document collections
    "mistralkit docs add notes ./records": Run(says="added"),
    "mistralkit docs add contracts '~/legal/*.pdf' --embed-model multilingual-e5-small": Parse(NET),
    "mistralkit docs add notes ./records --json | jq .summary": Run(),
    "mistralkit docs sync notes": Run(says="unchanged"),
    "mistralkit docs list": Run(says="notes"),
    "mistralkit docs status notes": Run(says="chunks"),
    "mistralkit docs search notes 'insulin dose after surgery'": Run(says="hartley.md"),
    "mistralkit docs search notes 'délai de résiliation' --mode keyword -k 3 --json": Run(says="résiliation"),
    "mistralkit docs reembed notes --embed-model all-minilm-l6-v2": Run(says="chunks embedded"),
    "mistralkit run --docs notes 'When was Mr Hartley discharged?'": Run(says="Sources:"),
    "mistralkit chat --docs notes": Run(stdin=QUIT, says="Sources:"),
    "mistralkit docs rm notes": Run(says="removed"),
    # embeddings, correction
    "mistralkit embed 'The cat sat on the mat.' 'A kitten rests on a rug.'": Run(says="cosine"),
    "mistralkit embed --file sentences.txt --json > vectors.json": Run(),
    "mistralkit embed -m '~/models/nomic-embed-text-v1.5.Q8_0.gguf' 'search_query: local LLMs'": Parse(NET),
    "mistralkit embed -m multilingual-e5-small 'query: dolor torácico' 'passage: dolor en el pecho'": Parse(NET),
    "mistralkit correct 'Hier, Lucas et sa soeur son allé au cinéma avec 3 amis.'": Run(says="sœur sont allés"),
    "mistralkit correct --diff --protect Leblanc 'M. Leblanc et sa femme son partit.'": Run(
        says="[-son-]{+sont+} [-partit-]{+partis+}"),
    "mistralkit correct --mode rank --diff --lang fr 'Mes cousins on gagné le tournoi a Brest.'": Run(
        says="[-on-]{+ont+}"),
    "mistralkit correct --mode rank --diff 'Mes cousins on gagné le tournoi de Brest en 2022.'": Run(
        says="Mes cousins [-on-]{+ont+} gagné le tournoi de Brest en 2022."),
    "mistralkit correct -f devoir.txt -o devoir.corrige.txt --mode hybrid -m ministral-3b-instruct --explain": Parse(
        NET
    ),
    "mistralkit correct -f devoir.txt -o devoir.corrige.txt --mode hybrid -m ministral-3b-instruct": Parse(NET),
    "mistralkit correct --checker languagetool --languagetool-url http://127.0.0.1:8081 'Sa va ?'": Parse(
        "needs the user's own LanguageTool server (Java, not packaged here)"
    ),
    # data, tune, export
    "mistralkit data validate train.jsonl": Run(),
    "mistralkit data validate train.jsonl --max-length 2048": Run(),
    "mistralkit data validate train.jsonl valid.jsonl --model mistral-7b-instruct-v0.3 --max-length 4096": Parse(NET),
    "mistralkit data validate train.jsonl --tokenizer tekken --json | jq '.files[].errors'": Run(),
    "mistralkit data stats train.jsonl valid.jsonl": Run(),
    "mistralkit data stats train.jsonl valid.jsonl --tokenizer v3": Run(),
    "mistralkit data stats train.jsonl --tokenizer v3 --max-length 2048": Run(),
    "mistralkit data stats train.jsonl --json": Run(),
    "mistralkit data split all.jsonl --valid 0.1 --seed 0 --out data/": Run(),
    "mistralkit data split all.jsonl --valid 0.1 --seed 0": Run(),
    "mistralkit data split all.jsonl --valid 200 --out data/ --force": Run(),
    "mistralkit data convert pairs.jsonl --to messages -o pairs.messages.jsonl": Run(),
    "mistralkit data convert pairs.jsonl --to messages": Run(),
    "mistralkit data convert pairs.jsonl --to messages -o - | head": Run(),
    "mistralkit tune --config cpu-smoke --data train.jsonl --out runs/smoke": Run(),
    "mistralkit tune --base gemma-3-270m --data train.jsonl --out runs/base --max-steps 4": Run(),
    "mistralkit export runs/smoke --gguf-adapter --name smoke": Run(),
    "mistralkit export runs/smoke --gguf-adapter": Run(),
    "mistralkit chat --adapter smoke": Run(stdin=QUIT),
    "mistralkit chat --adapter my-tune": Run(stdin=QUIT),
    "mistralkit export runs/smoke --merged --quant q8_0 --name smoke-merged --json | jq .check": Run(),
    "mistralkit chat --model smoke-merged": Run(stdin=QUIT),
    "mistralkit run -m runs/support Bonjour": Run(),
    "mistralkit chat -m runs/support": Run(stdin=QUIT),
    "mistralkit export runs/support --gguf-adapter --base mistral-7b-instruct-v0.3:q4_k_m --name support": Parse(NET),
    "mistralkit run --adapter support 'How do I reset my password?'": Run(),
    "mistralkit tune --base ./tiny-mistral --tokenizer v3 --data train.jsonl --valid valid.jsonl --out runs/a "
    "--rank 8 --max-steps 100 --eval-every 20 --save-every 50": Run(),
    "mistralkit tune --config runs/a.yaml --out runs/a --resume": Run(),
    "mistralkit tune --config runs/a.yaml --out runs/a --resume-from-checkpoint runs/a/checkpoints/step-000050": Run(),
    "mistralkit tune --config mistral-7b-qlora --base ./Mistral-7B-Instruct-v0.3 --data train.jsonl --out runs/m7b":
        Parse(GPU),
    # eval and bench
    "mistralkit eval --suite qa.jsonl --model gemma-3-270m --adapter facts --vs gemma-3-270m": Run(),
    "mistralkit eval --suite qa.jsonl --adapter support --vs gemma-3-270m --min-accuracy 0.75 --max-latency 15s "
    "--out eval-out": Run((0, 1), "Decision.", cwd="fresh"),  # 1 when the tuned model misses the bar
    "mistralkit eval -s qa.jsonl -m mistral-7b-instruct-v0.3 --adapter tutor --vs premium": Parse(NET),
    "mistralkit eval --suite qa.jsonl -m mistral-7b-instruct-v0.3 --adapter tutor --min-accuracy 0.75 "
    "--max-latency 15s": Parse(NET),
    "mistralkit eval -s qa.jsonl -m mistral-7b-instruct-v0.3:q4_k_m --adapter tutor --name free --vs premium "
    "--min-accuracy 0.75 --max-latency 15s": Parse(NET),
    "mistralkit eval --suite open.jsonl --judge mistral-7b-instruct-v0.3 --rubric rubric.txt --out ev --resume": Parse(
        NET
    ),
    "mistralkit eval --perplexity notes.txt -m mistral-7b-instruct-v0.3 --adapter notes": Parse(NET),
    "mistralkit eval -s qa.jsonl -m mistral-7b-instruct-v0.3 --adapter tutor --vs "
    "prompt=mistral-7b-instruct-v0.3::@tutor.txt --vs both=mistral-7b-instruct-v0.3+tutor::@tutor.txt "
    "--vs premium=gpt": Parse(NET),
    "mistralkit bench": Run(),
    "mistralkit bench --adapter support --threads 1,2 -p 128 -n 32 --png bench.png": Run(),
    "mistralkit bench --adapter support --json": Run(),
    "mistralkit bench -m mistral-7b-instruct-v0.3 --threads 1,2,4 -p 512 -n 128 --png bench.png": Parse(NET),
    # models
    "mistralkit models fit mistral-7b-instruct-v0.3 --ram 4G --language fr": Run(1, "Fits:"),
    "mistralkit models fit ./my-model.gguf --ctx 16384 --kv-type q8_0": Run(),
    "mistralkit models fit ministral-8b-instruct:q3_k_m --ram 6G --json": Run(),
    "mistralkit models fit mistral-7b-instruct-v0.3 --parallel 4 --ram 8G": Run(),
    "mistralkit models fit mistral-7b-instruct-v0.3 --answer-tokens 200 --threads 2": Run((0, 1), "s for 200 tokens"),
    "mistralkit models fit mistral-nemo --ram 8G && mistralkit models pull mistral-nemo": Parse(NET),
    "mistralkit models list": Run(),
    "mistralkit models list --available --json": Run(),
    "mistralkit models info mistral-7b-instruct-v0.3": Run(says="apache-2.0"),
    "mistralkit models info ./my-model.gguf --json": Run(),
    "mistralkit models pull ministral-8b-instruct:q5_k_m": Parse(NET),
    "mistralkit models pull --llm --embeddings": Parse(NET),
    "mistralkit models pull --alternative-llm mistral-7b": Parse(NET),
    "mistralkit models pull https://example.org/my-model.Q4_K_M.gguf --name mine": Parse(NET),
    "mistralkit models pull hf:mistralai/Mistral-7B-Instruct-v0.3": Parse(NET),
    "mistralkit models rm mistral-7b-instruct-v0.3:q4_k_m": Parse(NET + " (it removes a pulled model)"),
    "mistralkit models verify": Run(),
    "mistralkit models verify mistral-7b-instruct-v0.3 --json": Parse(NET + " (it verifies a pulled model)"),
    "mistralkit models import '~/Downloads/Mistral-7B-Instruct-v0.3-Q4_K_M.gguf' --name mistral-local": Parse(NET),
    "mistralkit models import ./my-model.gguf --name my-model --copy": Run(),
    # remotes and vLLM
    "mistralkit remotes add premium --url https://api.mistral.ai/v1 --model mistral-small-latest "
    "--key-env MISTRAL_API_KEY": Run(),
    "mistralkit remotes add gpt --url https://api.openai.com/v1 --model gpt-4o-mini --key-env OPENAI_API_KEY": Run(),
    "mistralkit remotes add claude --api anthropic --url https://api.anthropic.com --model claude-sonnet-4-5 "
    "--key-env ANTHROPIC_API_KEY": Run(),
    "mistralkit remotes add vllm --url http://127.0.0.1:8000/v1 --model mistral-7b --flavor vllm": Run(),
    "mistralkit remotes list": Run(says="premium"),
    "mistralkit remotes list --json | jq '.[].name'": Run(),
    "mistralkit run -m gpt Hello": Parse(NET),
    "mistralkit remotes check gpt": Parse(NET),
    "MODEL_TYPE=openai OPENAI_MODEL=gpt-4o-mini mistralkit remotes check openai": Parse(NET),
    "mistralkit remotes remove gpt": Run(),
    "mistralkit vllm serve mistralai/Mistral-7B-Instruct-v0.3 --adapter runs/support --dry-run": Run(says="vllm serve"),
    "mistralkit vllm serve ./Mistral-7B-Instruct-v0.3 --tensor-parallel-size 4 --max-model-len 16384": Parse(GPU),
    "mistralkit vllm serve mistralai/Mistral-7B-Instruct-v0.3 --name m7b -- --enable-prefix-caching": Parse(GPU),
    "mistralkit chat --model m7b": Parse(GPU + " (a vLLM server it starts)"),
    "mistralkit run --model support 'How do I reset my password?'": Parse(GPU + " (a vLLM server it starts)"),
    # servers, and what runs against them
    "mistralkit serve": Serve(
        f"{LOCAL}/health",
        then=(
            "MODEL_TYPE=openai OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_MODEL=gemma-3-270m mistralkit run hi",
            "MODEL_TYPE=openai OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=K OPENAI_MODEL=gemma-3-270m "
            "mistralkit run hi",
        ),
    ),
    "mistralkit serve --api-key '$KEY'": Serve(
        f"{LOCAL}/health", then=("OPENAI_BASE_URL=http://127.0.0.1:8080/v1 'OPENAI_API_KEY=$KEY' python your_app.py",)
    ),
    "mistralkit serve --host 0.0.0.0 --api-key-file keys.txt --cors-origin https://app.example": Serve(
        f"{LOCAL}/health"
    ),
    "mistralkit serve --allow-model-paths '~/models'": Serve(f"{LOCAL}/health"),
    "mistralkit serve --parallel 8 --ctx 2048": Serve(f"{LOCAL}/health"),
    "mistralkit serve -m mistral-7b-instruct-v0.3 --ctx 8192 --api-key '$KEY'": Parse(NET),
    "mistralkit datagen serve legal/spec.yaml --state legal/state": Serve(
        f"{DG}/health",
        then=(
            "mistralkit datagen work --model gemma-3-270m --agents 4",
            "mistralkit datagen work --server http://127.0.0.1:8765 --model gemma-3-270m --agents 4",
        ),
    ),
    "mistralkit datagen serve spec.yaml --host 0.0.0.0 --token '$TOKEN' --allow-host datagen.lan": Serve(
        f"{DG}/health"
    ),
    "mistralkit datagen work --model gemma-3-270m --agents 4": Interrupt(f"{DG}/stats", "leased"),
    "mistralkit datagen work --server http://127.0.0.1:8765 --model gemma-3-270m --agents 4": Interrupt(
        f"{DG}/stats", "leased"
    ),
    "mistralkit datagen work --server http://10.0.0.5:8765 --token '$TOKEN' -m ministral-3b --count 100": Parse(NET),
    "mistralkit tune --config cpu-smoke --data legal/state/exports/full_training_cases_mistral.jsonl --out runs/legal":
        Run(),
    # benchmarks: programs of minutes that compare against llama.cpp; their --help is checked
    "python bench/chat_speed.py": Parse("a benchmark of minutes"),
    "python bench/memory_plan.py": Parse("a benchmark of minutes"),
    "python bench/tune_speed.py": Parse("a benchmark of minutes"),
    "python bench/correct_quality.py": Parse("a benchmark of minutes"),
    "python bench/datagen_load.py": Parse("a benchmark of minutes"),
    "python bench/grammar_speed.py": Parse("a benchmark of minutes"),
    "python bench/datagen_agents.py --agents 1 4": Parse("a benchmark of minutes"),
    "bash bench/build_llama_server.sh && python bench/serve_throughput.py": Parse(
        "builds llama.cpp's server (~11 min), then a benchmark"
    ),
    "bash bench/gpu_check.sh": Run(says="SKIP"),  # no GPU here: every check says so, exit 0
    "python bench/real_shape_speed.py --threads 2": Parse("a benchmark of an hour (it builds a 7B file first)"),
}


def documented() -> dict[str, str]:
    """Normalized line -> the line as written, README first."""
    out: dict[str, str] = {}
    for line in [*readme_lines(), *help_lines()]:
        out.setdefault(normal(line), line)
    return out


def test_every_documented_line_is_in_the_table_and_nothing_else():
    during = [then for check in LINES.values() if isinstance(check, Serve) for then in check.then]
    shown, known = set(documented()), {normal(line) for line in [*LINES, *during]}
    assert not shown - known, f"documented but not checked here: {sorted(shown - known)}"
    assert not known - shown, f"checked here but no longer documented: {sorted(known - shown)}"


# --- the working folder ----------------------------------------------------------------------------

@dataclass
class Place:
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


def _messages(q: str, a: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})


QA = [("What is the capital of France?", "Paris"), ("What is 2+2?", "4"), ("Opposite of hot?", "cold")]


@pytest.fixture(scope="module")
def place(model, gemma_dequantized, speed_calibrated, tmp_path_factory) -> Place:
    """The folder the lines run in, and their environment (HOME, MISTRALKIT_HOME, $KEY, $TOKEN)."""
    root = tmp_path_factory.mktemp("documented")
    cwd, home, mk = root / "work", root / "home", root / "mistralkit"
    cwd.mkdir()
    (home / "models").mkdir(parents=True)
    share_tune_bases(mk, tmp_path_factory)  # the cpu-smoke lines would each pay a minute of dequantization
    (mk / "state").mkdir(parents=True)
    shutil.copyfile(speed_calibrated, mk / "state" / speed_calibrated.name)  # and `models fit` half a minute
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_", "OPENAI_", "MODEL_TYPE"))}
    env.update(
        HOME=str(home),
        MISTRALKIT_HOME=str(mk),
        MISTRALKIT_MAX_TOKENS="12",
        KEY=KEY,
        TOKEN=TOKEN,
        PY=sys.executable,
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    )
    lines = [_messages(f"Question {i}: {q}", a) for i in range(3) for q, a in QA]
    (cwd / "train.jsonl").write_text("\n".join(lines) + "\n")
    (cwd / "valid.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (cwd / "all.jsonl").write_text("".join(_messages(f"Question {i}?", f"Answer {i}.") + "\n" for i in range(260)))
    (cwd / "qa.jsonl").write_text("".join(json.dumps({"id": str(i), "prompt": q, "expected": a}) + "\n"
                                          for i, (q, a) in enumerate(QA)))
    (cwd / "pairs.jsonl").write_text("".join(json.dumps({"prompt": q, "response": a}) + "\n" for q, a in QA))
    (cwd / "sentences.txt").write_text("The cat sat on the mat.\nA kitten rests on a rug.\n")
    (cwd / "records").mkdir()
    (cwd / "records" / "hartley.md").write_text(
        "# Discharge summary: Mr John Hartley\n\nAdmitted on 3 March for a hip replacement. After surgery the "
        "insulin dose was lowered to 12 units at night.\n\n## Discharge\n\nMr Hartley was discharged on "
        "9 March 2026, walking with a frame.\n")
    (cwd / "records" / "bail.txt").write_text(
        "Contrat de location\n\nLe délai de résiliation est de trois mois pour le locataire.\n")
    (cwd / "keys.txt").write_text(KEY + "\n")
    shutil.copyfile(model.path, cwd / "my-model.gguf")
    write_lora(cwd / "my-tune.gguf", model.path, 0.0)
    (cwd / "your_app.py").write_text(
        "import openai\nclient = openai.OpenAI()\n"
        "reply = client.chat.completions.create(model='gemma-3-270m', max_tokens=4,\n"
        "                                       messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print(reply.choices[0].message.content)\n")
    _tiny_mistral(cwd / "tiny-mistral")
    (cwd / "runs").mkdir()
    (cwd / "runs" / "a.yaml").write_text(
        "base: ./tiny-mistral\ntokenizer: v3\ndata: train.jsonl\nvalid: valid.jsonl\nrank: 8\nmax_steps: 100\n"
        "eval_every: 20\nsave_every: 50\n")
    return Place(cwd, env)


def _tiny_mistral(path: Path) -> None:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32768, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    MistralForCausalLM(config).save_pretrained(path)


def _setup_before(line: str, place: Place) -> None:
    """What a line needs that an earlier line or the user would have made."""
    cwd, env = place.cwd, place.env
    if line.startswith("mistralkit chat --session-id 3f2a") or line.startswith("mistralkit sessions export 3f2a"):
        db = Path(env["MISTRALKIT_HOME"]) / "data" / "history.db"
        with sqlite3.connect(db) as con:
            if not con.execute("SELECT 1 FROM sessions WHERE id LIKE '3f2a%'").fetchone():
                (old,) = con.execute("SELECT id FROM sessions ORDER BY created_at LIMIT 1").fetchone()
                con.execute("PRAGMA foreign_keys = OFF")
                con.execute("UPDATE sessions SET id = ? WHERE id = ?", ("3f2a" + old[4:], old))
                con.execute("UPDATE messages SET session_id = ? WHERE session_id = ?", ("3f2a" + old[4:], old))
    if "--adapter my-tune" in line or "--adapter support" in line or "--adapter facts" in line:
        for name in ("my-tune", "support", "facts"):
            if not (Path(env["MISTRALKIT_HOME"]) / "data" / "adapters" / f"{name}.gguf").exists():
                _call(f"mistralkit export runs/smoke --gguf-adapter --name {name}", place)
    if line == "mistralkit data convert pairs.jsonl --to messages":
        (cwd / "pairs.messages.jsonl").unlink(missing_ok=True)  # the line before wrote it
    if line == "mistralkit export runs/smoke --gguf-adapter":
        _call("mistralkit models rm smoke", place)  # the README's line named it smoke already
    if "runs/support" in line and not (cwd / "runs" / "support").exists():
        shutil.copytree(cwd / "runs" / "smoke", cwd / "runs" / "support")
    exports = cwd / "legal" / "state" / "exports" / "full_training_cases_mistral.jsonl"
    if line.startswith("mistralkit tune") and "legal/state/exports" in line:
        exports.write_text((cwd / "train.jsonl").read_text())  # cases a datagen run would have accepted


def _command(line: str, env: dict[str, str]) -> tuple[list[str], dict[str, str], str | None, str | None]:
    """(argv, environment, what stdout is piped to, the file stdout goes to) of one command."""
    words = [w.replace("$KEY", KEY).replace("$TOKEN", TOKEN) for w in shlex.split(line, comments=True)]
    words = [str(Path(env["HOME"]) / w[2:]) if w.startswith("~/") else w for w in words]
    extra = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        extra[name] = value
    pipe = redirect = None
    if "|" in words:
        pipe = " ".join(words[words.index("|") + 1:])
        words = words[:words.index("|")]
    if ">" in words:
        redirect = words[words.index(">") + 1]
        words = words[:words.index(">")]
    if words[0] == "mistralkit":
        words = [sys.executable, "-m", "mistralkit", *words[1:]]
    elif words[0] == "bash" and words[1].startswith("bench/"):
        words = ["bash", str(ROOT / words[1]), *words[2:]]
    elif words[0] == "python":
        words = [sys.executable, *words[1:]]
    return words, {**env, **extra}, pipe, redirect


def _call(line: str, place: Place, stdin: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``line`` (``a && b`` as a then b) in the working folder, as a shell would."""
    done = None
    for part in line.split(" && "):
        argv, env, pipe, redirect = _command(part, place.env)
        done = subprocess.run(argv, cwd=place.cwd, env=env, input=stdin, capture_output=True, text=True,
                              timeout=timeout)
        if redirect:
            (place.cwd / redirect).write_text(done.stdout)
        if pipe and pipe.startswith("jq") and done.returncode == 0:
            json.loads(done.stdout)  # what jq would have to read
        if done.returncode:
            break
    return done


def _parses(line: str, place: Place, why: str) -> None:
    """The line's arguments pass the real parser (click), or its ``--help`` / ``make -n`` works."""
    import click
    import typer.main

    from mistralkit.cli.main import app

    assert why
    for part in line.split(" && "):
        argv, *_ = _command(part, place.env)
        if argv[:3] == [sys.executable, "-m", "mistralkit"]:
            command, args = typer.main.get_command(app), argv[3:]
            context = command.make_context("mistralkit", list(args), resilient_parsing=False)
            while isinstance(command, click.Group):
                name, command, args = command.resolve_command(context, context.protected_args + context.args)
                context = command.make_context(name, list(args), parent=context)
        elif argv[0] == "make":
            assert subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True).returncode == 0
        elif argv[0] == "bash":
            assert (ROOT / argv[1]).is_file()
        else:
            done = subprocess.run(
                [*argv, "--help"], cwd=ROOT, env=place.env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-1000:]


def _free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            pytest.fail(f"port {port} is taken: the documented servers run on their default ports")


def _serve(line: str, check: Serve, place: Place) -> None:
    _free(int(check.health.split(":")[2].split("/")[0]))
    argv, env, _, _ = _command(line, place.env)
    cwd = place.cwd / "legal" if "datagen serve spec.yaml" in line else place.cwd
    server = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                if httpx.get(check.health, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no /health in 120 s"
            time.sleep(0.3)
        for then in check.then:
            _check(then, LINES.get(then, Run()), place)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            out, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
    assert server.returncode == 0 and "Traceback" not in out, out[-3000:]


def _interrupt(line: str, check: Interrupt, place: Place) -> None:
    argv, env, _, _ = _command(line, place.env)
    worker = subprocess.Popen(argv, cwd=place.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while httpx.get(check.stats, timeout=10).json()[check.ready] < 1:
            assert worker.poll() is None, worker.stderr.read()[-3000:]
            assert time.monotonic() < deadline, f"{check.ready} stayed 0 for 300 s"
            time.sleep(0.3)
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 130 and "Traceback" not in err, err[-3000:]


def _check(line: str, check, place: Place) -> None:
    _setup_before(line, place)
    if isinstance(check, Parse):
        _parses(line, place, check.why)
    elif isinstance(check, Serve):
        _serve(line, check, place)
    elif isinstance(check, Interrupt):
        _interrupt(line, check, place)
    else:
        done = _call(line, replace_cwd(place, check.cwd), check.stdin)
        output = done.stdout + done.stderr
        codes = check.code if isinstance(check.code, tuple) else (check.code,)
        assert done.returncode in codes, f"{line}\nexit {done.returncode}\n{output[-3000:]}"
        assert "Traceback" not in output and check.says in output, f"{line}\n{output[-3000:]}"


def replace_cwd(place: Place, cwd: str) -> Place:
    """The place, or a folder of its own beside it with copies of the input files (a line that would
    otherwise find what an earlier line left)."""
    if cwd == ".":
        return place
    folder = place.cwd / cwd
    folder.mkdir(exist_ok=True)
    for source in place.cwd.glob("*.jsonl"):
        shutil.copyfile(source, folder / source.name)
    return Place(folder, place.env)


FIRST = ("mistralkit datagen init legal/", "mistralkit chat --greedy",  # files and a session others use
         "mistralkit tune --config cpu-smoke --data train.jsonl --out runs/smoke", "mistralkit tune --base ./tiny")
LAST = (
    "mistralkit docs rm notes",
    "mistralkit tune --config runs/a.yaml",
    "mistralkit datagen serve",
    "mistralkit tune --config cpu-smoke --data legal",
)


def stage(line: str) -> int:
    return 0 if line.startswith(FIRST) else 2 if line.startswith(LAST) else 1


# The lines in table order within each stage; the lines a Serve runs while its server is up are
# checked there, not on their own.
ORDER = sorted((line for line in LINES if not any(line in check.then for check in LINES.values()
                                                  if isinstance(check, Serve))), key=stage)


@pytest.mark.parametrize("line", ORDER, ids=[line[:70] for line in ORDER])
def test_the_documented_line_works(line, place):
    _check(line, LINES[line], place)

"""Issue 11's bad-input table: what a hostile or clumsy user sends, and what each must get back.

The CLI rows run ``python -m mistralkit`` as a subprocess, the server rows go over HTTP to one real
``mistralkit serve``. Every row checks the exit code or status, that no traceback is printed, no
segfault (exit 139) and no 5xx happen, and that no byte of a probed file comes back; afterwards
the server must still answer and the history must be unchanged.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest

from conftest import run_cli
from mistralkit.models.gguf_info import read_info
from test_server_api import KEY, MODEL, Serve

pytestmark = pytest.mark.slow

SECRET = "SECRET-CONTENT-7f3a9"  # the first bytes of the file a request probes; never echoed


# --- files a user might hand over ----------------------------------------------------------------

def write_adapter(path: Path, arch: str, pairs: dict[str, tuple[tuple[int, int], tuple[int, int]]],
                  general_type: str = "adapter") -> Path:
    """A GGUF LoRA adapter: ``pairs`` maps a base tensor to the (numpy) shapes of its A and B."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(general_type)
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 16.0)
    for name, (a, b) in pairs.items():
        writer.add_tensor(f"{name}.lora_a", np.zeros(a, dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.zeros(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    q = next(t for t in read_info(model.path).tensors if t.name == "blk.0.attn_q.weight")
    n_in, n_out = q.shape  # GGUF order: (columns, rows)
    good_pair = ((8, n_in), (n_out, 8))  # numpy shapes: A is (rank, n_in), B is (n_out, rank)
    out = {
        "secret": folder / "secret.txt",
        "notes": folder / "notes.txt",
        "wrong_shape": write_adapter(folder / "wrong-shape.gguf", "gemma3",
                                     {"blk.0.attn_q.weight": ((8, n_in + 1), (n_out, 8))}),
        "wrong_arch": write_adapter(folder / "llama.gguf", "llama", {"blk.0.attn_q.weight": good_pair}),
        "no_such_tensor": write_adapter(folder / "ghost.gguf", "gemma3", {"blk.99.attn_q.weight": good_pair}),
        "model_as_adapter": model.path,
        "adapter_as_model": write_adapter(folder / "fine.gguf", "gemma3", {"blk.0.attn_q.weight": good_pair}),
        "bad_text_jsonl": folder / "surrogate.jsonl",
        "bad_text_suite": folder / "surrogate-suite.jsonl",
        "bad_bytes_jsonl": folder / "latin1.jsonl",
        "bad_bytes_txt": folder / "latin1.txt",
        "plain_file": folder / "a-file",
        "good_jsonl": folder / "good.jsonl",
    }
    out["secret"].write_text(SECRET + "\nroot:x:0:0\n")
    out["notes"].write_text(SECRET + " my notes\n")
    out["plain_file"].write_text("")
    out["bad_text_jsonl"].write_text(
        '{"prompt": "ok", "response": "fine"}\n{"prompt": "caf\\ud800", "response": "x"}\n'
    )
    out["bad_text_suite"].write_text('{"id": "1", "prompt": "ok", "expected": "x"}\n'
                                     '{"id": "2", "prompt": "caf\\ud800", "expected": "x"}\n')
    out["bad_bytes_jsonl"].write_bytes(b'{"id": "1", "prompt": "ok", "expected": "fine"}\n'
                                       b'{"id": "2", "prompt": "caf\xe9", "expected": "x"}\n')
    out["bad_bytes_txt"].write_bytes(b"fine\ncaf\xe9\n")
    out["good_jsonl"].write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n"
                                         for i in range(6)))
    return out


# --- the CLI table ---------------------------------------------------------------------------------

@dataclass
class Cli:
    args: tuple[str, ...]  # "{name}" is replaced by the path of files[name]
    code: int  # expected exit code
    says: str  # a phrase of the one-line error (or of the output, for code 0)
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)


CLI_ROWS = {
    "adapter that is a text file": Cli(("run", "hi", "--adapter", "{notes}"), 1, "is not a GGUF file"),
    "adapter that is /etc/passwd-like": Cli(("run", "hi", "--adapter", "{secret}"), 1, "is not a GGUF file"),
    "adapter that is a model": Cli(("run", "hi", "--adapter", "{model_as_adapter}"), 1, "not a LoRA adapter"),
    "adapter with wrong shapes": Cli(("run", "hi", "--adapter", "{wrong_shape}"), 1, "do not fit the model's"),
    "adapter for another architecture": Cli(("run", "hi", "--adapter", "{wrong_arch}"), 1,
                                            "adapter for a llama model"),
    "adapter for a missing tensor": Cli(("run", "hi", "--adapter", "{no_such_tensor}"), 1,
                                        "a tensor the model does not have"),
    "adapter given as the model": Cli(("run", "-m", "{adapter_as_model}", "hi"), 1, "is a LoRA adapter, not a model"),
    "invalid UTF-8 on stdin": Cli(("run",), 2, "standard input: not valid UTF-8 text (byte 0xff", stdin=b"a\xffb"),
    "invalid UTF-8 argument": Cli(("run", "a\udcffb"), 2, "argument 2 is not valid UTF-8"),
    "invalid UTF-8 system prompt": Cli(("chat", "-s", "\udce9", "--prompt", "hi"), 2, "argument 3 is not valid UTF-8"),
    "invalid UTF-8 line in the chat": Cli(("chat", "-n", "2"), 0, "not valid UTF-8 text (an invalid UTF-8 byte 0xff",
                                          stdin=b"a\xffb\n/quit\n"),
    "empty chat prompt": Cli(("chat", "--prompt", ""), 2, "the prompt is empty"),
    "blank run prompt": Cli(("run", "  "), 2, "the prompt is empty"),
    "temperature inf": Cli(("run", "--temperature", "inf", "hi"), 2, "must be a finite number"),
    "temperature 1e400 from env": Cli(("run", "hi"), 2, "MISTRALKIT_TEMPERATURE: temperature must be a finite",
                                      env={"MISTRALKIT_TEMPERATURE": "1e400"}),
    "top_p nan": Cli(("run", "--top-p", "nan", "hi"), 2, "must be a finite number"),
    "n-gpu-layers -5": Cli(("run", "--n-gpu-layers", "-5", "hi"), 2, "must be -1 (all layers) or a count >= 0"),
    "seed -5": Cli(("run", "--seed", "-5", "hi"), 2, "or -1 for a random seed"),
    "seed 2**32": Cli(("run", "--seed", str(2**32), "hi"), 2, "between 0 and 4294967294"),
    "seed -1 means random": Cli(("run", "--seed", "-1", "--json", "-n", "2", "hi"), 0, '"finish_reason"'),
    "split --valid nan": Cli(("data", "split", "{good_jsonl}", "--valid", "nan"), 1, "--valid nan"),
    "training JSONL with a \\ud800 escape": Cli(("data", "validate", "{bad_text_jsonl}"), 1,
                                                "surrogate.jsonl:2: prompt: not valid UTF-8 text (a lone surrogate"),
    "training JSONL in Latin-1": Cli(("data", "validate", "{bad_bytes_jsonl}"), 1, "latin1.jsonl:2: not UTF-8 text"),
    "eval suite with a \\ud800 escape": Cli(("eval", "--suite", "{bad_text_suite}"), 1,
                                            "surrogate-suite.jsonl:2: prompt: not valid UTF-8 text"),
    "eval suite in Latin-1": Cli(("eval", "--suite", "{bad_bytes_jsonl}"), 2, "latin1.jsonl:2: not valid UTF-8 text"),
    "perplexity text in Latin-1": Cli(("eval", "--perplexity", "{bad_bytes_txt}"), 2, "not UTF-8 text"),
    "embed file in Latin-1": Cli(("embed", "-f", "{bad_bytes_txt}"), 2, "latin1.txt:2: not valid UTF-8 text"),
    "tune --out an existing file": Cli(("tune", "--data", "{good_jsonl}", "--out", "{plain_file}"), 2,
                                       "is a file"),
    "fit --ctx -1": Cli(("models", "fit", "--ctx", "-1"), 2, "context size -1"),
    "serve --api-key empty": Cli(("serve", "--api-key", ""), 2, "--api-key is empty"),
    "serve with MISTRALKIT_API_KEY empty": Cli(("serve",), 2, "MISTRALKIT_API_KEY is set but empty",
                                               env={"MISTRALKIT_API_KEY": ""}),
    "serve --allow-model-paths not a folder": Cli(("serve", "--allow-model-paths", "{notes}"), 2, "not a folder"),
    "serve --body-timeout 0": Cli(("serve", "--body-timeout", "0"), 2, "body timeout"),
}


@pytest.fixture(scope="module")
def history_digest(mk_home):
    def digest() -> str:
        db = mk_home / "data" / "history.db"
        rows = []
        if db.exists():
            with sqlite3.connect(db) as con:
                rows = con.execute("SELECT * FROM messages ORDER BY id").fetchall()
        return hashlib.sha256(repr(rows).encode()).hexdigest()

    return digest


def clean(stderr: str, stdout: str = "") -> None:
    assert "Traceback" not in stderr + stdout, stderr
    assert SECRET not in stderr + stdout and "root:x" not in stderr + stdout


@pytest.mark.parametrize("case", CLI_ROWS, ids=list(CLI_ROWS))
def test_cli_row(case, files, mk_home, history_digest):
    row = CLI_ROWS[case]
    before = history_digest()
    args = [arg.format(**files) if "{" in arg else arg for arg in row.args]
    done = run_cli(*args, home=mk_home, stdin=row.stdin, env=row.env, text=False)
    stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == row.code, stderr
    clean(stderr, stdout)
    if row.code:
        error = stderr[stderr.index("error: "):]
        assert len(error.strip().splitlines()) <= 2, stderr
    assert row.says in (stderr if row.code else stdout), stderr
    assert history_digest() == before


def test_serve_on_a_busy_port_says_so_before_any_banner(mk_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_cli("serve", "--port", str(taken.getsockname()[1]), home=mk_home)
    assert done.returncode == 2 and "the port is in use" in done.stderr
    assert "web page" not in done.stderr and "Traceback" not in done.stderr


def test_a_sample_with_nothing_to_train_within_max_length_is_named(tmp_path):
    from mistralkit.tune.config import TuneConfig
    from mistralkit.formats.layout import open_encoder
    from mistralkit.tune.train import encode_file

    data = tmp_path / "train.jsonl"
    rows = [{"prompt": "short", "response": "yes"}, {"prompt": "word " * 200, "response": "late"},
            {"prompt": "also short", "response": "no"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open_encoder(None, "v3") as encoder:
        dataset = encode_file(str(data), encoder, TuneConfig(data=str(data), out=str(tmp_path / "run"), max_length=64))
    assert len(dataset.samples) == 2 and dataset.left_out == [f"{data}:2"]
    assert f"{data}:2" in dataset.note(64) and "--max-length 64" in dataset.note(64)


# --- the server table --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def allowed(files, tmp_path_factory) -> Path:
    """The folder given to --allow-model-paths: copies of the bad adapters, and a link pointing out of it."""
    folder = tmp_path_factory.mktemp("allowed")
    for name in ("notes", "wrong_shape", "wrong_arch"):
        (folder / files[name].name).write_bytes(files[name].read_bytes())
    (folder / "escape.gguf").symlink_to(files["secret"])
    return folder


@pytest.fixture(scope="module")
def server(model, mk_home, allowed, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "bad.log", "--api-key", KEY, "--threads", "1",
                  "--body-timeout", "1", "--allow-model-paths", str(allowed))
    yield serve
    serve.stop()


def chat_body(model_ref: str = MODEL, content="hi", **extra) -> bytes:
    return json.dumps({"model": model_ref, "messages": [{"role": "user", "content": content}], "max_tokens": 2,
                       "temperature": 0, **extra}).encode()


@dataclass
class Http:
    body: bytes  # "{secret}" and "{allowed}" stand for those paths
    status: int
    code: str | None
    path: str = "/v1/chat/completions"
    method: str = "POST"
    content_type: str | None = "application/json"


HTTP_ROWS = {
    "adapter path to a secret file": Http(chat_body(MODEL + "+{secret}"), 404, "model_not_found"),
    "model path to a secret file": Http(chat_body("{secret}"), 404, "model_not_found"),
    "adapter path that does not exist": Http(chat_body(MODEL + "+/nonexistent/x.gguf"), 404, "model_not_found"),
    "relative path out of the allowed folder": Http(chat_body("../../../../etc/passwd"), 404, "model_not_found"),
    "name of a file in the server's folder": Http(chat_body("pyproject.toml"), 404, "model_not_found"),
    "home folder of a user this machine lacks": Http(chat_body("~nosuchuser/x.gguf"), 404, "model_not_found"),
    "tokenizer of such a model": Http(b"", 404, "model_not_found", path="/tokenizer_info?model=~nosuchuser",
                                      method="GET"),
    "allowed folder: text file as adapter": Http(chat_body(MODEL + "+{allowed}/notes.txt"), 400, None),
    "allowed folder: adapter with wrong shapes": Http(chat_body(MODEL + "+wrong-shape.gguf"), 400, None),
    "allowed folder: adapter for llama": Http(chat_body(MODEL + "+{allowed}/llama.gguf"), 400, None),
    "allowed folder: link to a file outside": Http(chat_body(MODEL + "+{allowed}/escape.gguf"), 404, "model_not_found"),
    "allowed folder: text file as model": Http(chat_body("{allowed}/notes.txt"), 400, None),
    "embeddings model path": Http(
        json.dumps({"model": "{secret}", "input": "x"}).encode(), 404, "model_not_found", path="/v1/embeddings"
    ),
    "lone surrogate in content": Http(chat_body(content="a\ud800b"), 400, "invalid_text"),
    "lone surrogate in a stop string": Http(chat_body(stop=["\udfff"]), 400, "invalid_text"),
    "lone surrogate in embeddings input": Http(
        json.dumps({"model": "all-minilm-l6-v2", "input": ["x", "\ud800"]}).encode(),
        400,
        "invalid_text",
        path="/v1/embeddings",
    ),
    "invalid UTF-8 bytes in the body": Http(chat_body(content="a-b").replace(b"a-b", b"a\xffb"), 400, "invalid_json"),
    "content null for a user": Http(chat_body(content=None), 400, "invalid_request"),
    "no Content-Type": Http(chat_body(), 400, "invalid_request", content_type=None),
    "broken JSON": Http(b'{"model": "x", "messages": [', 400, "invalid_json"),
    "temperature 1e400": Http(
        chat_body().replace(b'"temperature": 0', b'"temperature": 1e400'), 400, "invalid_request"
    ),
    "seed -5": Http(chat_body(seed=-5), 400, "invalid_request"),
    "seed -1 means random": Http(chat_body(seed=-1), 200, None),
    "session id prefix in DELETE": Http(b"", 404, "session_not_found", path="/v1/sessions/{prefix}", method="DELETE"),
    "session id prefix in GET": Http(b"", 404, "session_not_found", path="/v1/sessions/{prefix}", method="GET"),
}


@pytest.fixture(scope="module")
def session(server) -> str:
    reply = httpx.post(f"{server.url}/v1/chat/completions", content=chat_body(session_id="new"),
                       headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["session_id"]


@pytest.mark.parametrize("case", HTTP_ROWS, ids=list(HTTP_ROWS))
def test_http_row(case, server, session, files, allowed, history_digest):
    row = HTTP_ROWS[case]
    before = history_digest()
    names = {**{k: str(v) for k, v in files.items()}, "allowed": str(allowed), "prefix": session[0]}
    body = row.body.replace(b"{secret}", names["secret"].encode()).replace(b"{allowed}", names["allowed"].encode())
    headers = {"Authorization": f"Bearer {KEY}", **({"Content-Type": row.content_type} if row.content_type else {})}
    reply = httpx.request(row.method, server.url + row.path.format(**names), content=body, headers=headers,
                          timeout=120)
    assert reply.status_code == row.status, reply.text
    if row.status >= 400:
        error = reply.json()["error"]  # OpenAI's shape, never plain text
        assert error["message"] and (row.code is None or error["code"] == row.code), error
    assert SECRET not in reply.text and "root:x" not in reply.text
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200 and server.proc.poll() is None
    assert history_digest() == before
    if "session id prefix" in case:
        assert httpx.get(f"{server.url}/v1/sessions/{session}", headers=headers).status_code == 200


def test_probing_a_path_tells_nothing_about_it(server, files):
    """An existing file and a missing one get the same answer, apart from the name sent."""
    def message(path: str) -> str:
        reply = httpx.post(f"{server.url}/v1/chat/completions", content=chat_body(f"{MODEL}+{path}"),
                           headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        return reply.json()["error"]["message"].replace(path, "PATH")

    assert message(str(files["secret"])) == message(str(files["secret"]) + ".missing")


def test_a_body_that_stalls_gets_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 200\r\n\r\n{\"model\":")
        started = time.monotonic()
        answer = b""
        while chunk := conn.recv(4096):  # the server closes the connection after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer
    assert time.monotonic() - started < 8


def test_zz_wrong_keys_lock_the_address_out(server):
    """Last in the module: it locks 127.0.0.1 out of this server for a minute."""
    url = f"{server.url}/v1/models"
    statuses = [httpx.get(url, headers={"Authorization": f"Bearer wrong-{i}"}).status_code for i in range(10)]
    assert statuses == [401] * 10
    locked = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert locked.json()["error"]["code"] == "too_many_wrong_keys"
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_zz_server_log_has_no_traceback(server):
    assert "Traceback" not in server.output() and server.proc.poll() is None

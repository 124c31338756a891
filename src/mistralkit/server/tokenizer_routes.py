"""``/tokenize``, ``/detokenize`` and ``/tokenizer_info`` at the server's root, in vLLM's shapes (llama.cpp's
bodies too): lm-evaluation-harness's remote tokenizer probes ``GET /tokenizer_info`` (it needs ``eos_token``)
and ``POST /tokenize``, then sends ``/v1/completions`` token ids that these give.

No model named: the server's default model (``serve -m``), which is what lm-eval, naming none, gets.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..engines import require
from ..engines.base import check_ids
from .prompt_schemas import DetokenizeRequest, TokenizeRequest

router = APIRouter(tags=["tokenizer"])


def _model(request: Request, named: str | None) -> str:
    return named or request.app.state.default_model


def tokenize(engine, text: str, bos: bool) -> list[int]:
    """``text``'s token ids (control-token texts read as the tokens), BOS first when asked and the model has one."""
    tokens = engine.tokenize(text, special=True)
    return [engine.bos_id, *tokens] if bos and engine.bos_id is not None else tokens


@router.post("/tokenize")
async def tokenize_route(body: TokenizeRequest, request: Request) -> dict:
    """Text to the model's token ids: ``{"tokens", "count", "max_model_len"}``."""
    async with request.app.state.pool.use(_model(request, body.model)) as resident:
        engine = resident.worker.engine
        require(engine, "tokens", "/tokenize")
        tokens = await run_in_threadpool(tokenize, engine, body.text, body.bos)
    return {"tokens": tokens, "count": len(tokens), "max_model_len": engine.n_ctx}


@router.post("/detokenize")
async def detokenize_route(body: DetokenizeRequest, request: Request) -> dict:
    """Token ids back to text, control tokens written as their text (``<bos>``), so that ``/tokenize`` gives
    the same ids back: ``{"prompt"}`` (vLLM's, which lm-eval reads) and ``{"content"}`` (llama.cpp's)."""
    async with request.app.state.pool.use(_model(request, body.model)) as resident:
        engine = resident.worker.engine
        require(engine, "tokens", "/detokenize")
        tokens = check_ids(body.tokens, engine.n_vocab, "tokens")
        text = await run_in_threadpool(lambda: engine.detokenize(tokens, special=True))
    return {"prompt": text, "content": text}


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request, model: str | None = None) -> dict:
    """The model's special tokens, chat template and window, as vLLM's ``/tokenizer_info`` names them."""
    async with request.app.state.pool.use(_model(request, model)) as resident:
        engine = resident.worker.engine
        require(engine, "tokens", "/tokenizer_info")
        text = lambda token: None if token is None else engine.token_text(token)
        bos, eos = await run_in_threadpool(lambda: (text(engine.bos_id), text(engine.eos_id)))
    info = resident.model.info
    return {"model": resident.model.name, "tokenizer_class": engine.kind, "bos_token": bos, "eos_token": eos,
            "pad_token": None, "add_bos_token": engine.add_bos, "chat_template": info.chat_template if info else None,
            "model_max_length": engine.n_ctx, "vocab_size": engine.n_vocab}

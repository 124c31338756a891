"""A streamed chat answer that may be tool calls, in OpenAI's delta shapes (``/v1/chat/completions``
with ``stream: true``; ``/v1/responses`` turns the same deltas into its events)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..formats.tools import new_call_id
from ..turn import RequiredCall, Turn


def tool_deltas(turn: Turn):
    """OpenAI's streamed tool call: id and name first, then argument fragments; finish "tool_calls".

    A forced single function streams its arguments as they are generated, and so does a ``required``
    call once its name is written (``turn.RequiredCall``). Otherwise the answer is
    held while it may still be a call (``Turn.may_be_call``: it opens as calls do); once it
    cannot, it streams as text; an answer held to the end is sent as its calls (or as text).
    """
    async def deltas(run) -> AsyncIterator[dict]:  # the route's Run: its chunks, text, token ids, finish
        if turn.named:
            call = new_call_id()
            yield {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": call, "type": "function", "function": {"name": turn.named, "arguments": ""}}]}
            async for chunk in run.chunks():
                if chunk.text:
                    yield {"tool_calls": [{"index": 0, "function": {"arguments": chunk.text}}]}
            run.finish = "tool_calls" if run.finish == "stop" else run.finish
            return
        if turn.mode == "required" and turn.native is None:
            reader = RequiredCall()
            async for chunk in run.chunks():
                had_name = reader.name is not None
                fragment = reader.feed(chunk.text)
                if reader.name is not None and not had_name:
                    yield {"role": "assistant", "content": None, "tool_calls": [
                        {"index": 0, "id": new_call_id(), "type": "function",
                         "function": {"name": reader.name, "arguments": ""}}]}
                if fragment:
                    yield {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
            if reader.name is None:  # cut short before the name: what was written, as text
                yield {"role": "assistant", "content": run.text}
                return
            run.finish = "tool_calls" if run.finish == "stop" else run.finish
            return
        chunks = run.chunks().__aiter__()
        said = False  # text went out
        async for _ in chunks:
            if turn.may_be_call(run.text, run.token_ids):
                continue
            yield {"role": "assistant", "content": run.text}  # what was held, then the rest as it comes
            said = True
            async for chunk in chunks:
                if chunk.text:
                    yield {"content": chunk.text}
            if turn.native is None:  # text is the whole answer; an API with native tools may call after it
                return
        calls = turn.calls(run.text, run.token_ids, run.tool_calls)
        if not calls:
            if not said:
                yield {"role": "assistant", "content": run.text}
            return
        for index, call in enumerate(calls):
            head = {"index": index, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}
            first = index == 0 and not said
            yield {"role": "assistant", "content": None, "tool_calls": [head]} if first else {"tool_calls": [head]}
            yield {"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]}
        run.finish = "tool_calls" if run.finish == "stop" else run.finish
    return deltas

"""``/v1/responses`` through the official ``openai`` client against a real ``mistralkit serve``:
text, instructions and max_output_tokens as the chat endpoint answers them, the event stream,
JSON schema output, function calls (forced, streamed, continued with their output), and 400s."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from test_server_api import MODEL, ONE_THREAD, Serve
from test_tools import WEATHER

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "max_output_tokens": 12}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather forecast for a city",
                "parameters": WEATHER}
ASK = "What is the weather in Paris for the next 3 days?"


@pytest.fixture(scope="module")
def client(model, mk_home, tmp_path_factory) -> openai.OpenAI:
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "responses.log", *ONE_THREAD)
    yield serve.client()
    serve.stop()


def test_text_answers_match_the_chat_endpoint(client):
    reply = client.responses.create(model=MODEL, input="Count: 1, 2, 3,", instructions="Answer briefly.", **GREEDY)
    chat = client.chat.completions.create(model=MODEL, max_tokens=12, temperature=0, messages=[
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Count: 1, 2, 3,"}])
    assert reply.id.startswith("resp_") and reply.object == "response"
    assert reply.output_text == chat.choices[0].message.content and reply.output_text
    (item,) = reply.output
    assert item.type == "message" and item.role == "assistant" and item.content[0].type == "output_text"
    assert reply.usage.output_tokens == chat.usage.completion_tokens <= 12
    assert reply.usage.input_tokens == chat.usage.prompt_tokens
    expected = "incomplete" if chat.choices[0].finish_reason == "length" else "completed"
    assert reply.status == expected
    if expected == "incomplete":
        assert reply.incomplete_details.reason == "max_output_tokens"
    messages = client.responses.create(model=MODEL, **GREEDY, instructions="Answer briefly.", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "Count: 1, 2, 3,"}]}])
    assert messages.output_text == reply.output_text


def test_the_event_stream_reassembles_to_the_answer(client):
    whole = client.responses.create(model=MODEL, input="Count: 1, 2, 3,", **GREEDY)
    events = list(client.responses.create(model=MODEL, input="Count: 1, 2, 3,", stream=True, **GREEDY))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == whole.output_text == final.output_text and final.usage.output_tokens == whole.usage.output_tokens
    assert events[-4].text == text


def test_json_schema_output(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "legs": {"type": "integer"}},
              "required": ["name", "legs"], "additionalProperties": False}
    reply = client.responses.create(model=MODEL, input="Describe a cat as JSON.", temperature=0, max_output_tokens=64,
                                    text={"format": {"type": "json_schema", "name": "animal", "schema": schema}})
    jsonschema.validate(json.loads(reply.output_text), schema)


def test_a_forced_function_call_streamed_and_not(client):
    forced = {"model": MODEL, "input": ASK, "tools": [WEATHER_TOOL], "temperature": 0, "max_output_tokens": 48,
              "tool_choice": {"type": "function", "name": "get_weather"}}
    reply = client.responses.create(**forced)
    (call,) = reply.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    events = list(client.responses.create(**forced, stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments == call.arguments
    assert events[-1].response.output[0].arguments == call.arguments


def test_a_function_result_continues_the_conversation(client):
    reply = client.responses.create(model=MODEL, temperature=0, max_output_tokens=16, tools=[WEATHER_TOOL], input=[
        {"role": "user", "content": ASK},
        {"type": "function_call", "call_id": "abcDEF123", "name": "get_weather",
         "arguments": json.dumps({"city": "Paris", "days": 3})},
        {"type": "function_call_output", "call_id": "abcDEF123", "output": json.dumps({"forecast": "sunny"})}],
        tool_choice="none")
    assert reply.output[0].type == "message" and reply.output_text


@pytest.mark.parametrize("extra, param", [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools.0"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input.0"),
    ({"tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER_TOOL]}, "tool_choice"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
])
def test_what_is_not_supported_is_a_400(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(**{"model": MODEL, "input": "hi", "max_output_tokens": 4, **extra})
    assert caught.value.body["param"] == param, caught.value.body


def test_a_truncated_answer_is_incomplete_in_its_item_too(client):
    """Cut at max_output_tokens: the response and its message item both say incomplete, streamed or not."""
    ask = {"model": MODEL, "input": "Count: 1, 2, 3,", "temperature": 0, "max_output_tokens": 4}
    whole = client.responses.create(**ask)
    assert whole.status == "incomplete" and whole.output[0].status == "incomplete"
    events = list(client.responses.create(**ask, stream=True))
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert events[-1].type == "response.incomplete" and [item.status for item in done] == ["incomplete"]
    assert events[-1].response.output[0].status == "incomplete"

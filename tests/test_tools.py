"""OpenAI tool calling against ``mistralkit serve`` (the embedded base model), and Mistral's tool layout
checked token by token against mistral-common (no weights needed)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from test_server_api import KEY, MODEL, ONE_THREAD, Serve

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
        "required": ["zone"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast for a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Current time in a zone",
                                           "parameters": TIME}}]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
FAST = {"temperature": 0, "max_tokens": 48, "seed": 1}


@pytest.fixture(scope="module")
def served(model, mk_home, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "tools.log", "--api-key", KEY, *ONE_THREAD)
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def client(served):
    return served.client()


@pytest.fixture(scope="module")
def mistral(served):
    from mistralai.client import Mistral

    return Mistral(api_key=KEY, server_url=served.url, timeout_ms=120_000)


def _valid(call) -> dict:
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, SCHEMAS[call.function.name])
    return arguments


def test_a_named_function_is_called_with_valid_arguments(client):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, **FAST,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    _valid(call)


def test_a_streamed_forced_call_reassembles(client):
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, stream=True, **FAST,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}})
    ids, names, arguments, finish = [], [], "", None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                assert delta.index == 0
                ids += [delta.id] if delta.id else []
                names += [delta.function.name] if delta.function and delta.function.name else []
                arguments += (delta.function.arguments or "") if delta.function else ""
            finish = choice.finish_reason or finish
    assert len(ids) == 1 and names == ["get_weather"] and finish == "tool_calls"
    jsonschema.validate(json.loads(arguments), WEATHER)


def test_required_picks_one_of_the_tools(client):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", **FAST)
    assert reply.choices[0].finish_reason == "tool_calls"
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name in SCHEMAS
    _valid(call)


def test_a_streamed_required_call_streams_its_arguments_and_reassembles(client):
    """tool_choice required streams as OpenAI does: the call's id and name once written, then argument
    fragments as they are generated; they join to the call the same request gets unstreamed."""
    whole = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                           **FAST).choices[0].message.tool_calls[0]
    heads, fragments, finish = [], [], None
    for chunk in client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                                stream=True, **FAST):
        for choice in chunk.choices:
            assert choice.delta.content is None
            for delta in choice.delta.tool_calls or ():
                heads += [(delta.id, delta.function.name)] if delta.id else []
                fragments += [delta.function.arguments] if delta.function.arguments else []
            finish = choice.finish_reason or finish
    assert [name for _, name in heads] == [whole.function.name] and finish == "tool_calls"
    assert len(fragments) > 1 and json.loads("".join(fragments)) == json.loads(whole.function.arguments)


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_a_required_call_is_read_piece_by_piece(size):
    from mistralkit.turn import RequiredCall

    arguments = '{"q": "a \\"}{[\\" b", "n": [1, {"m": "}"}]}'
    answer = f' {{ "name" : "search\\u00e9", "arguments" :  {arguments} \n}}'
    reader = RequiredCall()
    streamed = "".join(reader.feed(answer[i:i + size]) for i in range(0, len(answer), size))
    assert reader.name == "searché" and reader.done and streamed == arguments
    assert json.loads(streamed) == json.loads(answer)["arguments"]


def test_a_conversation_with_a_tool_result_continues_with_text(client):
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc123XYZ", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_abc123XYZ", "content": '{"forecast": "sunny, 24 C"}'}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="none",
                                           temperature=0, max_tokens=8)
    assert reply.choices[0].message.tool_calls is None and isinstance(reply.choices[0].message.content, str)
    streamed = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0,
                                              max_tokens=8, stream=True)  # auto: the model decides
    assert [c for c in streamed]


def test_auto_streams_a_text_answer_as_it_comes(client):
    """With tools and tool_choice auto, an answer that does not open like a call streams piece by piece
    (it is not held to the end), and reassembles to the answer given unstreamed."""
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story about a dragon."}],
           "tools": TOOLS, "temperature": 0, "max_tokens": 24, "seed": 1}
    whole = client.chat.completions.create(**ask).choices[0]
    assert whole.message.tool_calls is None and not whole.message.content.lstrip().startswith(("{", "["))
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(**ask, stream=True)
              if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == whole.message.content and len(pieces) > 5


@pytest.mark.parametrize("tools, choice, param", [
    ([{"type": "function", "function": {"description": "no name"}}], None, "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "has space"}}], None, "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}], None,
     "tools[0].function.parameters"),
    (TOOLS, {"type": "function", "function": {"name": "nope"}}, "tool_choice"),
    (None, "required", "tool_choice"),
])
def test_bad_tool_requests_are_400(client, tools, choice, param):
    extra = {k: v for k, v in (("tools", tools), ("tool_choice", choice)) if v is not None}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, **extra)
    assert info.value.status_code == 400
    body = info.value.body or {}
    assert body.get("param") == param


@pytest.mark.parametrize("legacy", [{"functions": [TOOLS[0]["function"]]}, {"function_call": "auto"}])
def test_legacy_function_fields_are_400_not_ignored(client, legacy):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, **legacy)
    (name,) = legacy
    assert info.value.body.get("param") == name and "send tool" in info.value.body["message"]


def test_unparsable_arguments_in_history_are_400(client):
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=4)
    assert info.value.body.get("param") == "messages[1].tool_calls[0].function.arguments"
    assert "JSON object" in info.value.body["message"]


# --- Mistral's own layout, token-exact against mistral-common -------------------------------------------

HISTORY = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
           {"role": "assistant", "content": "", "tool_calls": [
               {"id": "call_abc123XYZ", "name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'}]},
           {"role": "tool", "tool_call_id": "call_abc123XYZ", "content": '{"forecast": "sunny"}'}]


def _reference(version: str, messages: list[dict], tools: list[dict]) -> list[int]:
    from mistral_common.protocol.instruct.messages import (AssistantMessage, SystemMessage, ToolMessage,
                                                           UserMessage)
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool, ToolCall
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from mistralkit.formats.mistral import TOKENIZER_FILES, _data_dir

    built = []
    for m in messages:
        if m["role"] == "tool":
            built.append(ToolMessage(content=m["content"], tool_call_id="abc123XYZ", name="get_weather"))
        elif m.get("tool_calls"):
            built.append(AssistantMessage(tool_calls=[ToolCall(id="abc123XYZ", function=FunctionCall(
                name="get_weather", arguments='{"city": "Paris", "days": 3}'))]))
        else:
            built.append({"system": SystemMessage, "user": UserMessage}[m["role"]](content=m["content"]))
    tokenizer = MistralTokenizer.from_file(str(_data_dir() / TOKENIZER_FILES[version].file))
    request = ChatCompletionRequest(messages=built, tools=[
        Tool(function=Function(name=t["name"], description=t["description"], parameters=t["parameters"]))
        for t in tools])
    return tokenizer.encode_chat_completion(request).tokens


@pytest.mark.parametrize("version", ["v3", "v7", "tekken"])
@pytest.mark.parametrize("turns", [2, 4])  # a question with tools; a tool result to answer
def test_mistral_tool_prompts_are_token_exact(version, turns):
    from mistralkit.formats.mistral import MistralFormat

    tools = [{"name": t["function"]["name"], "description": t["function"]["description"],
              "parameters": t["function"]["parameters"]} for t in TOOLS]
    ours = MistralFormat(version).encode_with_tools(HISTORY[:turns], tools)
    assert ours == _reference(version, HISTORY[:turns], tools)


@pytest.mark.parametrize("version", ["v3", "v7"])
def test_mistral_tool_call_output_is_parsed(version):
    from mistralkit.formats.mistral import MistralFormat
    from mistralkit.formats.tools import parse_mistral

    fmt = MistralFormat(version)
    answer = '[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]'
    tokens = [fmt.tool_calls_token, *fmt._tokenizer.instruct_tokenizer.tokenizer.encode(answer, bos=False, eos=False)]
    text = fmt._tokenizer.instruct_tokenizer.tokenizer.decode(tokens[1:])  # llama.cpp drops the control token
    (call,) = parse_mistral(text, tokens[0] == fmt.tool_calls_token)
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris", "days": 3}
    assert parse_mistral("[TOOL_CALLS]" + answer) == [call]
    assert parse_mistral("It is sunny in Paris.") is None


def test_parallel_tool_calls_false_keeps_the_first_call():
    from mistralkit.formats.tools import parse_fallback
    from mistralkit.turn import Turn

    answer = "\n".join(json.dumps({"tool_call": {"name": name, "arguments": {"zone": zone}}})
                       for name, zone in (("get_time", "UTC"), ("get_time", "CET")))
    both = Turn([], [], None, None, lambda text, ids: parse_fallback(text)).calls(answer, [])
    one = Turn([], [], None, None, lambda text, ids: parse_fallback(text), parallel=False).calls(answer, [])
    assert [json.loads(c["function"]["arguments"])["zone"] for c in both] == ["UTC", "CET"]
    assert [json.loads(c["function"]["arguments"])["zone"] for c in one] == ["UTC"]


@pytest.mark.parametrize(
    "answer, expected",
    [
        (
            '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>',
            ["UTC", "CET"],
        ),
        ('{"name": "get_time", "parameters": {"zone": "PST"}}', ["PST"]),
        (
            '<|python_tag|>{"name": "get_time", "parameters": {"zone": "UTC"}}; '
            '{"name": "get_time", "parameters": {"zone": "CET"}}',
            ["UTC", "CET"],
        ),
        ('[TOOL_CALLS][{"name": "get_time", "arguments": {"zone": "UTC"}}]', ["UTC"]),
        ('{"tool_call": {"name": "get_time", "arguments": {"zone": "CET"}}}', ["CET"]),
        ("The time is noon.", None),
        ('{"answer": 42}', None),
        ('<tool_call>{"name": "get_time", "arguments": {"zo', None),
    ],
)
def test_template_answers_are_read_as_calls(answer, expected):
    from mistralkit.formats.tools import parse_template

    calls = parse_template(answer)
    assert (None if calls is None else [json.loads(c["arguments"])["zone"] for c in calls]) == expected


def _tekken_with_named_calls(version: str, tmp_path):
    """mistral-common's tokenizer of ``version`` (v11, v13) on the shipped tekken vocabulary, with the
    ``[ARGS]`` and ``[CALL_ID]`` control tokens those versions add (no such file ships here)."""
    import mistral_common
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    spec = json.loads((Path(mistral_common.__file__).parent / "data" / "tekken_240911.json").read_text())
    specials = [{"rank": t["rank"], "token_str": str(t["token_str"]), "is_control": True}
                for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    specials += [
        {"rank": len(specials) + i, "token_str": s, "is_control": True} for i, s in enumerate(("[ARGS]", "[CALL_ID]"))
    ]
    path = tmp_path / f"tekken_{version}.json"
    path.write_text(json.dumps(spec | {"config": spec["config"] | {"version": version}, "special_tokens": specials}))
    return MistralTokenizer.from_file(str(path))


@pytest.mark.parametrize("version", ["v11", "v13"])
def test_named_call_answers_are_parsed_as_mistral_common_writes_them(version, tmp_path):
    """v11/v13 write ``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`` per call; llama.cpp's text drops the
    control tokens, so calls are read from the token ids with them written out."""
    from mistral_common.protocol.instruct.messages import AssistantMessage
    from mistral_common.protocol.instruct.tool_calls import FunctionCall, ToolCall
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

    from mistralkit.formats.tools import parse_mistral, parse_template, with_control_tokens
    from mistralkit.turn import Turn

    tokenizer = _tekken_with_named_calls(version, tmp_path)
    instruct = tokenizer.instruct_tokenizer
    wanted = [("get_weather", "k3Xp9Qz1b", {"city": "Paris", "days": 3}), ("get_time", "Zz0aB1cC2", {"zone": "CET"})]
    message = AssistantMessage(tool_calls=[ToolCall(id=i, function=FunctionCall(name=n, arguments=json.dumps(a)))
                                           for n, i, a in wanted])
    tokens = instruct._encode_tool_calls_in_assistant_message(message)  # the answer as the model writes it
    vocab = instruct.tokenizer

    def token_text(token: int) -> str:
        return vocab.decode([token], special_token_policy=SpecialTokenPolicy.KEEP)

    text = with_control_tokens(tokens, token_text)
    for calls in (parse_template(text), parse_mistral(text)):
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [(n, a) for n, _, a in wanted]
        assert [c.get("id") for c in calls] == ([i for _, i, _ in wanted] if version == "v11" else [None, None])
    answered = Turn([], [], None, None, lambda answer, ids: parse_template(answer)).calls(text, tokens)
    if version == "v11":  # the model's own ids are kept (the next turn sends them back)
        assert [c["id"] for c in answered] == [i for _, i, _ in wanted]
    assert parse_template(vocab.decode(tokens, special_token_policy=SpecialTokenPolicy.IGNORE)) is None
    assert parse_template(text[:-4]) is None  # cut short inside the last call's arguments


# --- Mistral's API dialect, through its own SDK (mistralai) ---------------------------------------------

def test_mistral_sdk_tool_choice_any_whole_and_streamed(mistral):
    """``tool_choice: "any"`` is Mistral's "required"; streamed, every tool-call chunk names its function
    (the SDK requires it) and the last chunk carries the usage, as Mistral's API sends them."""
    ask = {"model": MODEL, "messages": ASK, "tools": TOOLS, "tool_choice": "any", "temperature": 0, "max_tokens": 48}
    (call,) = mistral.chat.complete(**ask).choices[0].message.tool_calls
    assert call.function.name in SCHEMAS
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    events = [event.data for event in mistral.chat.stream(**ask)]
    deltas = [d for e in events for c in e.choices for d in c.delta.tool_calls or ()]
    assert len(deltas) > 1 and {d.function.name for d in deltas} == {call.function.name}
    assert json.loads("".join(d.function.arguments for d in deltas)) == json.loads(call.function.arguments)
    assert events[-1].choices[0].finish_reason == "tool_calls" and events[-1].usage.completion_tokens > 0


def test_mistral_sdk_random_seed_embeddings_and_models(mistral, served):
    ask = {"model": MODEL, "messages": ASK, "temperature": 1.0, "max_tokens": 12}
    answers = {mistral.chat.complete(**ask, random_seed=7).choices[0].message.content for _ in range(2)}
    others = {mistral.chat.complete(**ask, random_seed=s).choices[0].message.content for s in (8, 9, 10)}
    assert len(answers) == 1 and others - answers  # the seed decides the sampling
    both = httpx.post(f"{served.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={**ask, "seed": 1, "random_seed": 2})
    assert both.status_code == 400 and "random_seed" in both.json()["error"]["message"]
    embedded = mistral.embeddings.create(model="all-minilm-l6-v2", inputs=["hello", "world"])
    assert embedded.id and len(embedded.data) == 2 and len(embedded.data[0].embedding) == 384
    listed = {m.id: m for m in mistral.models.list().data}
    assert listed[MODEL].type == "base" and listed[MODEL].capabilities.completion_chat
    assert mistral.models.retrieve(model_id="gemma-3-270m").id == MODEL  # the name chat takes


ANSWER = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 40}}, "required": ["answer"],
          "additionalProperties": False}
AS_ANSWER = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}}


def test_response_format_holds_with_tools(client):
    """response_format is not dropped when tools are given or the history holds tool turns: with
    tool_choice none the answer follows the schema; with auto it is a valid call or a schema'd answer."""
    none = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none",
                                          response_format=AS_ANSWER, **FAST).choices[0]
    assert none.message.tool_calls is None
    jsonschema.validate(json.loads(none.message.content), ANSWER)
    for messages in (ASK, [*ASK, {"role": "assistant", "content": "It is sunny."},
                           {"role": "user", "content": "And in Rome?"}]):
        auto = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, response_format=AS_ANSWER,
                                              **FAST).choices[0]
        if auto.message.tool_calls:
            assert auto.finish_reason == "tool_calls" and all(_valid(call) for call in auto.message.tool_calls)
        else:
            jsonschema.validate(json.loads(auto.message.content), ANSWER)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none", response_format=AS_ANSWER, stream=True, **FAST)
        if c.choices)
    assert streamed == none.message.content

"""Samples to ``input_ids`` and ``labels``: the tokens inference would see, loss only where we train.

The one prompt layout shared by training (``tune``) and scoring (``evaluate``'s multiple choice).

By default loss is on every assistant turn of weight 1 and on the token that closes it (EOS for
Mistral, the template's end-of-turn for Jinja templates); system and user turns, the chat
markup around them and the BOS get label ``-100``. ``train_on_inputs=True`` trains every token.
A ``{"text"}`` sample trains every token, followed by EOS.

How the per-message token spans are found, by format:

* **Mistral** (``MistralFormat``): the request goes through mistral-common's own normalizer, then
  each message is encoded with the instruct tokenizer's per-message encoders
  (``encode_user_message``, ``encode_assistant_message``, ``encode_system_message``) with the
  same arguments ``encode_instruct`` passes, after its ``start()`` (BOS). So the concatenation is
  exactly mistral-common's encoding, system prompt placement included (v1: first user turn;
  v2/v3/tekken: last user turn; v7/tekken-v7: its own block) -- no diffing of prefixes. An assistant span
  is its content plus the EOS mistral-common appends.
* **Text formats** (``PlainFormat``, ``JinjaFormat``): the format's own ``render`` gives the
  prompt text before each assistant turn (``render(messages[:i])``, the very prompt inference
  tokenizes) and the whole conversation (``render(messages + [sentinel user turn])``); every
  prompt must be a prefix of the whole, else the template is not prefix-stable and we refuse.
  The assistant span runs from the end of its prompt to its content's end, extended through the
  first EOS text (``<end_of_turn>``, ``</s>``, ``<|im_end|>``...) before the next turn. Each
  span is tokenized on its own, prompts exactly as ``format.encode`` does, so training prompts
  match inference prompts and the answer's tokens are those the model generates after them.
  Where no EOS text closes a turn (the plain layout, where ``\\nUser:`` ends a turn), the last
  turn gets an EOS token and earlier turns train their content only.

Padding (``pad_batch``): labels are padded with ``-100`` by position, never by token id, so the
EOS of every answer keeps its loss; input ids are padded with the tokenizer's pad token, or unk
(mistral-common v1/v3/v7) or 0 where it has none -- never with the EOS id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .base import ChatFormat, Message, Tokenizer
from .jinja import JinjaFormat
from .mistral import TOKENIZER_FILES, MistralFormat, load_tokenizer, to_mistral
from .plain import PlainFormat

if TYPE_CHECKING:
    from ..tune.data import Sample

IGNORE = -100
# A user turn nobody writes: it makes templates render the end of the last assistant turn.
SENTINEL = "\ue000mistralkit-next-turn\ue000"


@dataclass
class Segment:
    tokens: list[int]
    trained: bool


@dataclass
class Encoded:
    """One sample, ready for a causal LM: ``labels[i]`` is ``input_ids[i]`` or ``IGNORE``."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trainable(self) -> int:
        return sum(label != IGNORE for label in self.labels)


class SampleEncoder(Protocol):
    format: ChatFormat
    bos_id: int | None
    eos_id: int
    pad_id: int

    def segments(self, sample: Sample) -> list[Segment]: ...

    def decode(self, tokens: Sequence[int]) -> str:
        """Tokens to text with special tokens shown (``</s>``, ``[INST]``)."""
        ...


def encode(sample: Sample, encoder: SampleEncoder, *, train_on_inputs: bool = False) -> Encoded:
    """``input_ids`` and ``labels`` of a sample; a sample with nothing to train on is an error."""
    input_ids: list[int] = []
    labels: list[int] = []
    for segment in encoder.segments(sample):
        input_ids += segment.tokens
        labels += segment.tokens if segment.trained or train_on_inputs else [IGNORE] * len(segment.tokens)
    encoded = Encoded(input_ids, labels)
    if not encoded.trainable:
        raise sample.error("no trainable token: every assistant turn has weight 0", "messages",
                           hint="give at least one assistant turn weight 1, or drop the line")
    return encoded


def pad_batch(batch: Sequence[Encoded], pad_id: int, *, multiple_of: int = 1) -> dict[str, list[list[int]]]:
    """Right-pad to the longest sample (rounded up to ``multiple_of``): input ids, labels, mask."""
    longest = max(len(e) for e in batch)
    longest = -(-longest // multiple_of) * multiple_of
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    for e in batch:
        gap = longest - len(e)
        out["input_ids"].append(e.input_ids + [pad_id] * gap)
        out["labels"].append(e.labels + [IGNORE] * gap)
        out["attention_mask"].append([1] * len(e) + [0] * gap)
    return out


# --- Mistral: mistral-common's per-message encoders -------------------------------------------

class MistralEncoder:
    def __init__(self, chat_format: MistralFormat) -> None:
        from mistral_common.protocol.instruct.normalize import get_normalizer

        self.format = chat_format
        self._instruct = load_tokenizer(chat_format.version).instruct_tokenizer
        raw = self._instruct.tokenizer
        self._raw = raw
        self._normalizer = get_normalizer(raw.version)
        self.bos_id, self.eos_id = raw.bos_id, raw.eos_id
        self.pad_id = raw.pad_id if raw.pad_id >= 0 and raw.pad_id != raw.eos_id else raw.unk_id

    def decode(self, tokens: Sequence[int]) -> str:
        # Runs of text tokens decode together (so SentencePiece spacing comes out right).
        parts: list[str] = []
        run: list[int] = []
        for token in [*tokens, None]:
            if token is not None and not self._raw.is_special(token):
                run.append(token)
                continue
            if run:
                parts.append(self._raw.decode(run))
                run = []
            if token is not None:
                parts.append(self._raw.id_to_piece(token))
        return "".join(parts)

    def segments(self, sample: Sample) -> list[Segment]:
        if sample.text is not None:
            return [Segment([self.bos_id], False), Segment(self._raw.encode(sample.text, bos=False, eos=True), True)]
        try:
            return self._chat_segments(sample)
        except Exception as exc:  # mistral-common raises assertions and its own exceptions alike
            raise sample.error(f"mistral-common refused the conversation: {exc}", "messages") from exc

    def _chat_segments(self, sample: Sample) -> list[Segment]:
        from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        it = self._instruct
        chat = ChatCompletionRequest(messages=to_mistral(sample.messages))
        request = self._normalizer.from_chat_completion_request(chat)
        # Alternating turns normalize one to one; only v1-v3/tekken lift the system turn out.
        kept = [i for i, m in enumerate(sample.messages) if m["role"] != "system" or request.system_prompt is None]
        assert len(kept) == len(request.messages), "normalization merged turns; data.py forbids that"
        it.validate_messages(request.messages)
        first, last = it.find_first_last_user(request)
        segments = [Segment(it.start(), False)]
        for index, (origin, message) in enumerate(zip(kept, request.messages)):
            if isinstance(message, UserMessage):
                tokens, _, _ = it.encode_user_message(
                    message, request.available_tools, index == last, index == first,
                    system_prompt=request.system_prompt, force_img_first=True, settings=request.settings)
            elif isinstance(message, AssistantMessage):
                tokens = it.encode_assistant_message(message=message, is_before_last_user_message=index < last)
            elif isinstance(message, SystemMessage):
                tokens, _ = it.encode_system_message(message)
            else:  # pragma: no cover - data.py admits three roles
                raise AssertionError(type(message))
            segments.append(Segment(list(tokens), sample.weights[origin] > 0))
        return segments


# --- text formats: render prompts and the whole, tokenize span by span -------------------------

class TextEncoder:
    # Whether rendered text may contain special-token markup, as each format's encode() does.
    SPECIAL = {"plain": False, "jinja": True}

    def __init__(self, chat_format: PlainFormat | JinjaFormat, tokenizer: Tokenizer) -> None:
        if tokenizer.eos_id is None:
            raise ValueError("the tokenizer has no EOS token; loss masks need one")
        self.format = chat_format
        self._tok = tokenizer
        self._special = self.SPECIAL[chat_format.name]
        self.bos_id, self.eos_id = tokenizer.bos_id, tokenizer.eos_id
        # Texts that close an assistant turn: EOS, or another stop token (<|eot_id|>, <end_of_turn>).
        stops = [tokenizer.eos_id, *sorted(chat_format.stop_token_ids - {tokenizer.eos_id})]
        self._closers = [text for text in map(tokenizer.token_text, stops) if text]
        pad = getattr(tokenizer, "pad_id", None)
        self.pad_id = pad if pad is not None and pad != self.eos_id else (0 if self.eos_id != 0 else 1)

    def decode(self, tokens: Sequence[int]) -> str:
        return "".join(self._tok.token_text(t) for t in tokens)

    def _start(self, tokens: list[int]) -> list[int]:
        bos = self.bos_id
        if self._tok.add_bos and bos is not None and (not tokens or tokens[0] != bos):
            return [bos, *tokens]
        return tokens

    def segments(self, sample: Sample) -> list[Segment]:
        if sample.text is not None:
            body = self._tok.tokenize(sample.text, special=False) + [self.eos_id]
            return [Segment(self._start([]), False), Segment(body, True)]
        spans, closed = self._spans(sample)
        segments: list[Segment] = []
        for start, trained, text in spans:
            tokens = self._tok.tokenize(text, special=self._special) if text else []
            segments.append(Segment(self._start(tokens) if start == 0 else tokens, trained))
        if not closed:
            segments.append(Segment([self.eos_id], sample.weights[-1] > 0))
        return segments

    def _spans(self, sample: Sample) -> tuple[list[tuple[int, bool, str]], bool]:
        """(start, trained, text) spans of the rendered conversation, and whether EOS text ends it."""
        messages: list[Message] = list(sample.messages)
        render = self.format.render
        try:
            whole = render([*messages, {"role": "user", "content": SENTINEL}])
        except Exception as exc:
            raise sample.error(f"the chat format refused the conversation: {exc}", "messages") from exc
        cut = whole.find(SENTINEL)
        spans: list[tuple[int, bool, str]] = []
        position, closed = 0, False
        assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        for i in assistants:
            prompt = render(messages[:i])
            if not whole.startswith(prompt):
                raise sample.error("the chat template renders earlier turns differently once later turns "
                                   "follow, so loss masks cannot be placed", f"messages[{i}]")
            content = messages[i]["content"].strip()
            found = whole.find(content, len(prompt), cut)
            if found < 0:
                raise sample.error("the chat template does not show this turn's content", f"messages[{i}].content")
            end = found + len(content)
            bound = len(render(messages[: i + 2])) if i + 1 < len(messages) else cut
            closings = [(at, len(text)) for text in self._closers if (at := whole.find(text, end, bound)) >= 0]
            closed = bool(closings)
            if closed:
                at, size = min(closings)
                end = at + size
            spans.append((position, False, whole[position:len(prompt)]))
            spans.append((len(prompt), sample.weights[i] > 0, whole[len(prompt):end]))
            position = end
        return spans, closed


ENCODERS = ((MistralFormat, MistralEncoder), (PlainFormat, TextEncoder), (JinjaFormat, TextEncoder))


def encoder_for(chat_format: ChatFormat, tokenizer: Tokenizer | None = None) -> SampleEncoder:
    """The encoder for a format; text formats also need the model's tokenizer (the engine)."""
    for kind, make in ENCODERS:
        if isinstance(chat_format, kind):
            if make is MistralEncoder:
                return MistralEncoder(chat_format)  # type: ignore[arg-type]
            if tokenizer is None:
                raise ValueError(f"the {chat_format.name} format needs the model's tokenizer")
            return make(chat_format, tokenizer)  # type: ignore[call-arg,arg-type]
    raise ValueError(f"no loss masks for the {getattr(chat_format, 'name', chat_format)!r} format")


@contextmanager
def open_encoder(model: str | None = None, tokenizer: str | None = None) -> Iterator[SampleEncoder]:
    """The encoder of a model (default: the embedded Gemma, what ``tune`` trains by default) or of a
    bare Mistral ``tokenizer`` version.

    A Mistral model needs no weights (mistral-common tokenizes); other GGUFs load llama.cpp's
    vocabulary through the engine, which is closed on exit.
    """
    from ..errors import InvalidParameter

    if tokenizer is not None:
        if tokenizer not in TOKENIZER_FILES:
            raise InvalidParameter(f"unknown tokenizer {tokenizer!r}", hint=f"use one of {', '.join(TOKENIZER_FILES)}")
        yield MistralEncoder(MistralFormat(tokenizer))
        return
    from ..engines import load_engine
    from . import mistral_tokenizer_of
    from ..models.catalog import BASE_MODEL
    from ..models.store import resolve

    local = resolve(model or BASE_MODEL)
    version = mistral_tokenizer_of(local)
    if version:
        yield MistralEncoder(MistralFormat(version))
        return
    if local.format != "gguf":
        raise InvalidParameter(f"{local.name} is a {local.format} model without a known Mistral tokenizer",
                               hint="pass --tokenizer v1|v3|v7|tekken|tekken-v7, or a .gguf model")
    engine = load_engine(local, n_ctx=512)
    try:
        yield encoder_for(engine.format, engine)  # type: ignore[arg-type]
    finally:
        engine.close()

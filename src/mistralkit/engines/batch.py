"""Continuous batching on one llama.cpp context: N sequences decoded together, one ``llama_decode`` a step.

``Batcher`` owns the context and a loop thread. Callers (any thread) hand it a ``Seq`` and read
what comes back on the sequence's queue: token ids as they are sampled (``(id, (log-probability,
top alternatives))`` when the sampler was asked for log-probabilities), lists of (log-probability,
top alternatives) for a scoring job, then an ``End`` (or an exception); a sequence stopped by an
end-of-generation token names it in its ``End``. Each step puts into one batch the next token
of every generating sequence, then prompt chunks of newly admitted ones, up to ``n_batch`` tokens
(chunked prefill: a long prompt never stalls the running streams for more than one step, and a
cancel stops it within a chunk). New sequences are admitted between steps.

Sampling (``sampling.Sampler``): logit bias and penalties change the sequence's row of the step's logits
in place, then greedy is an argmax and the rest a per-sequence llama.cpp sampler chain (grammar,
top-k, top-p, min-p, temperature, seeded dist; the order llama-cpp-python's ``Llama`` uses).

Every slot (llama.cpp sequence id) keeps the KV cache of what it last held after its sequence
ends. A new sequence takes the free slot whose cache it shares most of (``choose_slot``) and
evaluates only the rest, so turn N of a chat reuses turn N-1. The KV cache is unified (one pool of
``n_slots x n_ctx`` cells): a sequence may use up to ``n_ctx`` of them, steps that mix prompt
chunks with decode tokens stay in one ubatch, and a start of the prompt that another slot holds
(a system prompt every client sends) is shared into the new one without a copy (``_borrow``).

The spike and the reasons for writing this rather than using llama-server: docs/batching.md.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import MistralkitError
from .sampling import Sampler
from .speculate import F16_CELLS, MAX_ROWS, NgramDrafter

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class End:
    """The last item of a sequence's queue: why it ended."""

    reason: str  # "stop", "length" or "cancelled"
    token: int | None = None  # the end-of-generation token that stopped it
    logprobs: tuple | None = None  # that token's (log-probability, top alternatives), when the sampler reports them


@dataclass(eq=False)
class Seq:
    """One generation (``sampler`` set) or one scoring job (``score_from`` >= 1) inside a ``Batcher``."""

    tokens: list[int]  # the prompt, or the tokens to score
    sampler: Sampler | None = None
    max_tokens: int = 0
    stop_ids: frozenset[int] = frozenset()  # besides the vocabulary's end-of-generation tokens
    ignore_eos: bool = False
    score_from: int = 0  # scoring: log P(tokens[i] | tokens[:i]) for every i >= score_from
    top: int = 0  # scoring: the most likely tokens reported at each place
    cancel: threading.Event | None = None  # the caller's (client gone, Ctrl-C)
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    dropped: threading.Event = field(default_factory=threading.Event)  # the caller stopped reading
    slot: Slot | None = None
    n_past: int = 0  # tokens of this sequence in its slot's KV cache
    cached: int = 0  # prompt tokens reused from the slot's cache
    next_token: int | None = None  # sampled, not yet decoded
    generated: int = 0
    drafter: NgramDrafter | None = None  # speculative decoding's proposals (engines/speculate.py), when on

    @property
    def cancelled(self) -> bool:
        return self.dropped.is_set() or (self.cancel is not None and self.cancel.is_set())

    @property
    def prefilling(self) -> bool:
        return self.n_past < self._prompt_end

    @property
    def _prompt_end(self) -> int:
        """Tokens to evaluate before sampling starts (a scoring job never needs its last token's row)."""
        return len(self.tokens) - 1 if self.sampler is None else len(self.tokens)


@dataclass(eq=False)
class Slot:
    id: int  # llama.cpp sequence id
    tokens: list[int] = field(default_factory=list)  # what its KV cache holds, position by position
    seq: Seq | None = None
    last_used: float = 0.0


@dataclass
class Stats:
    """Counters since start, for /metrics and benches (the loop updates them; readers just read)."""

    steps: int = 0
    prompt_tokens: int = 0  # prompt tokens evaluated
    generated_tokens: int = 0  # tokens sampled
    prefill_s: float = 0.0  # llama_decode time of steps that carried prompt tokens
    decode_s: float = 0.0  # llama_decode time of steps with generating tokens only
    sample_s: float = 0.0
    drafted: int = 0  # speculative decoding: tokens proposed and verified
    accepted: int = 0  # of those, the ones the sampler picked (each saves a step)
    unspeculated: dict[str, int] = field(default_factory=dict)  # requests that asked for drafts, by why not


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


REUSE_SHARE = 0.5  # a slot's cache is reused when it holds more than this share of the prompt


def choose_slot(free: Sequence[Slot], prompt: Sequence[int]) -> Slot:
    """The free slot for ``prompt``: the one whose cache holds the longest start of it, when that is
    more than half of the prompt (llama-server's ``--slot-prompt-similarity``, 0.5); else the one
    unused the longest (an empty one first). A prompt that merely starts like another conversation
    (the BOS and a chat template's first tokens) never takes that conversation's slot: its next turn
    would find its cache gone."""
    shared = {slot.id: common_prefix(slot.tokens, prompt) for slot in free}
    reusable = [slot for slot in free if shared[slot.id] > REUSE_SHARE * len(prompt)]
    if reusable:
        return max(reusable, key=lambda slot: (shared[slot.id], -slot.last_used))
    return min(free, key=lambda slot: slot.last_used)


MIX_TOKENS = 64  # a step of at most this many tokens costs about one decode step: prompts share it


class Batcher:
    """The scheduler: a loop thread that owns ``ctx`` and decodes every running sequence each step."""

    def __init__(self, L, ctx, vocab, *, n_slots: int, n_batch: int, n_ctx_seq: int, rows_per_step: int = 64,
                 name: str = "model", kv_f16: bool = True) -> None:
        import numpy as np

        self.L, self.ctx, self.vocab, self.np = L, ctx, vocab, np
        self.n_batch, self.n_ctx_seq, self.rows_per_step = n_batch, n_ctx_seq, rows_per_step
        self.n_vocab = int(L.llama_vocab_n_tokens(vocab))
        self.mem = L.llama_get_memory(ctx)
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        self.slots = [Slot(i) for i in range(n_slots)]
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.stats = Stats()
        self.cv = threading.Condition()
        self.step_lock = threading.Lock()  # held while the loop touches the context
        self.stopped = False
        self.no_reuse: set[str] = set()  # why a cached prefix could not be kept (logged once each)
        model = L.llama_get_model(ctx)  # cells can be shared between slots, except a recurrent state's
        self.can_share = not (L.llama_model_is_recurrent(model) or L.llama_model_is_hybrid(model))
        self.kv_f16 = kv_f16  # an f16 (or f32) cache: drafts only while its view stays small (speculate.py)
        self.thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self.thread.start()

    # -- caller side -------------------------------------------------------------------------------
    def submit(self, seq: Seq) -> None:
        with self.cv:
            if self.stopped:
                raise MistralkitError("the model is being unloaded")
            self.waiting.append(seq)
            self.cv.notify()

    def items(self, seq: Seq):
        """What the loop sends for ``seq``, up to its ``End``; leaving early frees its slot at the next step."""
        try:
            while True:
                item = seq.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, End):
                    return
        finally:
            seq.dropped.set()
            with self.cv:
                self.cv.notify()

    @property
    def busy_slots(self) -> int:
        return sum(slot.seq is not None for slot in self.slots)

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def reset(self) -> None:
        """Forget the cached prompts of idle slots (the next prompt is evaluated from position 0)."""
        with self.step_lock:
            for seq in [s for s in self.running if s.cancelled]:  # callers gone, slots not yet freed
                self._finish(seq, End("cancelled"))
            for slot in self.slots:
                if slot.seq is None:
                    self.L.llama_memory_seq_rm(self.mem, slot.id, -1, -1)
                    slot.tokens = []

    def perf(self) -> tuple[int, int]:
        """llama.cpp's own counts of (prompt tokens evaluated, single-token decodes) since the context began."""
        data = self.L.llama_perf_context(self.ctx)
        return int(data.n_p_eval), int(data.n_eval)

    def close(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify()
        self.thread.join(timeout=60)
        self.L.llama_batch_free(self.batch)

    # -- loop side ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.cv:
                while not self.stopped and not self.waiting and not self.running:
                    self.cv.wait()
                if self.stopped:
                    break
            try:
                with self.step_lock:
                    self._admit()
                    self._step()
            except Exception as exc:  # noqa: BLE001 - fail the sequences, keep the loop for the next ones
                log.exception("batched decode failed")
                error = exc if isinstance(exc, MistralkitError) else MistralkitError(
                    f"generation failed: {exc.__class__.__name__}: {exc}")
                for seq in list(self.running):
                    self._finish(seq, error, keep=False)
        for seq in [*self.running, *self.waiting]:
            self._finish(seq, MistralkitError("the model was unloaded during the generation"), keep=False)
        self.waiting.clear()

    def _admit(self) -> None:
        while True:
            with self.cv:
                free = [slot for slot in self.slots if slot.seq is None]
                if not free or not self.waiting:
                    return
                seq = self.waiting.popleft()
            if seq.cancelled:
                self._end(seq, End("cancelled"))
                continue
            slot = choose_slot(free, seq.tokens)
            limit = max(0, seq._prompt_end - 1 if seq.sampler is not None else seq.score_from - 1)
            keep = self._cut(slot, min(common_prefix(slot.tokens, seq.tokens), limit))
            del slot.tokens[keep:]
            keep = self._borrow(slot, seq.tokens, keep, limit)
            seq.slot, seq.n_past, seq.cached = slot, keep, keep
            slot.seq = seq
            self.running.append(seq)

    def _cut(self, slot: Slot, keep: int) -> int:
        """Drop the slot's cache past ``keep`` tokens; what is left (0 where llama.cpp cannot keep a prefix)."""
        L = self.L
        if keep and L.llama_memory_seq_pos_min(self.mem, slot.id) > 0:
            # A sliding-window cache that dropped early positions cannot serve a prefix again.
            self._no_reuse("the cache no longer holds the prompt's first positions (sliding-window layers)")
            keep = 0
        if keep < len(slot.tokens) and not L.llama_memory_seq_rm(self.mem, slot.id, keep, -1):
            self._no_reuse("llama.cpp cannot cut this model's cache at a position (recurrent or hybrid memory)")
            keep = 0
        if keep == 0:
            L.llama_memory_seq_rm(self.mem, slot.id, -1, -1)
        return keep

    def _borrow(self, slot: Slot, prompt: Sequence[int], keep: int, limit: int) -> int:
        """Share into ``slot`` a longer start of ``prompt`` that another slot's cache holds (a system
        prompt many clients send, a conversation continued in a new slot); what ``slot`` holds now.

        The context's cells are one pool (``kv_unified``): llama.cpp tags the cells with this sequence
        too, nothing is copied or computed, and the other slot keeps its cache for its own next turn."""
        L = self.L
        donor, shared = None, keep
        for other in self.slots:
            if other is not slot and (n := min(common_prefix(other.tokens, prompt), limit)) > shared:
                donor, shared = other, n
        if donor is None or not self.can_share or L.llama_memory_seq_pos_min(self.mem, donor.id) > 0:
            return keep  # nothing longer; recurrent memory; a sliding window that dropped the start
        L.llama_memory_seq_cp(self.mem, donor.id, slot.id, keep, shared)
        slot.tokens[keep:] = donor.tokens[keep:shared]
        return shared

    def _no_reuse(self, reason: str) -> None:
        if reason not in self.no_reuse:
            self.no_reuse.add(reason)
            log.warning("prompt cache not reused: %s; each prompt is evaluated in full", reason)

    def _add(self, token: int, seq: Seq, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, seq.n_past, 1, logits
        b.seq_id[i][0] = seq.slot.id  # type: ignore[union-attr]
        b.n_tokens = i + 1
        seq.slot.tokens.append(token)  # type: ignore[union-attr]
        seq.n_past += 1
        return i

    def _step(self) -> None:
        L = self.L
        for seq in [s for s in self.running if s.cancelled]:
            self._finish(seq, End("cancelled"))
        if not self.running:
            return
        self.batch.n_tokens = 0
        samples: list[tuple[list[int], Seq, list[int]]] = []  # (batch indexes, sequence, its drafts) to sample
        scores: list[tuple[int, Seq, int]] = []  # (batch index, scoring job, target token)
        for seq in self.running:
            if seq.next_token is not None:
                token, seq.next_token = seq.next_token, None
                rows = [self._add(token, seq, True)]
                drafts = self._drafts(seq)
                rows += [self._add(draft, seq, True) for draft in drafts]
                samples.append((rows, seq, drafts))
        prompt_tokens = 0
        prefills = 0  # prompts given tokens this step
        for seq in self.running:
            room = self.n_batch - self.batch.n_tokens
            if room <= 0:
                break
            if not seq.prefilling:
                continue
            # One prompt a step, in arrival order: the first one's answer starts after its own
            # prefill, not after everyone's (TTFT). A short prompt rides along while the step is small.
            if prefills and self.batch.n_tokens + seq._prompt_end - seq.n_past > MIX_TOKENS:
                continue
            prefills += 1
            end = min(seq._prompt_end, seq.n_past + room)
            if seq.sampler is None:  # rows from position score_from - 1 on, a bounded number a step
                end = min(end, max(seq.n_past, seq.score_from - 1) + self.rows_per_step - len(scores))
                if end <= seq.n_past:
                    continue
            prompt_tokens += end - seq.n_past
            while seq.n_past < end:
                pos = seq.n_past
                if seq.sampler is None:
                    wanted = pos >= seq.score_from - 1
                    index = self._add(seq.tokens[pos], seq, wanted)
                    if wanted:
                        scores.append((index, seq, seq.tokens[pos + 1]))
                else:
                    last = pos == len(seq.tokens) - 1
                    index = self._add(seq.tokens[pos], seq, last)
                    if last:
                        samples.append(([index], seq, []))
        if not self.batch.n_tokens:
            return
        started = time.perf_counter()
        status = L.llama_decode(self.ctx, self.batch)
        decoded = time.perf_counter()
        if status != 0:
            for seq in list(self.running):  # the cache of this step's tokens is in doubt: drop them
                seq.slot.tokens = seq.slot.tokens[:0]  # type: ignore[union-attr]
                L.llama_memory_seq_rm(self.mem, seq.slot.id, -1, -1)  # type: ignore[union-attr]
            reason = "the KV cache is full" if status == 1 else f"llama_decode returned {status}"
            raise MistralkitError(f"llama.cpp could not decode this step: {reason}",
                                  hint="retry, or lower --parallel / raise --ctx")
        stats = self.stats
        stats.steps += 1
        stats.prompt_tokens += prompt_tokens
        if prompt_tokens:
            stats.prefill_s += decoded - started
        else:
            stats.decode_s += decoded - started
        self._score(scores)
        self._sample(samples)
        stats.sample_s += time.perf_counter() - decoded

    def _drafts(self, seq: Seq) -> list[int]:
        """The tokens proposed after ``seq``'s next one, verified in this step (speculate.py says when)."""
        drafter = seq.drafter
        if drafter is None or len(self.running) != 1:  # other rows in the call change the kernels' rounding
            return []
        limit = min(MAX_ROWS - 1, seq.max_tokens - seq.generated - 1, self.n_ctx_seq - seq.n_past - 1)
        if self.kv_f16:
            limit = min(limit, F16_CELLS - sum(len(slot.tokens) for slot in self.slots))
        return drafter.propose(limit)

    def _sample(self, samples: list[tuple[list[int], Seq, list[int]]]) -> None:
        """Sample each sequence's rows in order: its next token, then one more for each draft the
        sampler picked (the first one it did not pick ends the sequence's step; its cache is cut there)."""
        L, stats = self.L, self.stats
        for rows, seq, drafts in samples:
            start = seq.n_past - len(rows)  # the position of the row sampled first
            sampler = seq.sampler
            for j, index in enumerate(rows):
                token = sampler.sample(self.ctx, index)  # type: ignore[union-attr]
                kept = j < len(drafts) and token == drafts[j]
                if not seq.ignore_eos and (token in seq.stop_ids or L.llama_vocab_is_eog(self.vocab, token)):
                    self._verified(seq, drafts, j, start)
                    self._finish(seq, End("stop", token, sampler.last))  # type: ignore[union-attr]
                    break
                seq.generated += 1
                stats.generated_tokens += 1
                seq.out.put(token if sampler.last is None else (token, sampler.last))  # type: ignore[union-attr]
                if seq.drafter is not None:
                    seq.drafter.append(token)
                if seq.generated >= seq.max_tokens or start + j + 1 >= self.n_ctx_seq:
                    self._verified(seq, drafts, j, start)
                    self._finish(seq, End("length"))
                    break
                if not kept:
                    self._verified(seq, drafts, j, start)
                    seq.next_token = token
                    break

    def _verified(self, seq: Seq, drafts: list[int], kept: int, start: int) -> None:
        """``kept`` of ``drafts`` were picked: count them, and cut the slot's cache after them."""
        if not drafts:
            return
        seq.drafter.verified(len(drafts), kept)  # type: ignore[union-attr]
        self.stats.drafted += len(drafts)
        self.stats.accepted += kept
        end = start + 1 + kept  # positions the cache keeps: up to the last kept draft
        if end < seq.n_past:
            slot = seq.slot
            self.L.llama_memory_seq_rm(self.mem, slot.id, end, -1)  # type: ignore[union-attr]
            del slot.tokens[end:]  # type: ignore[union-attr]
            seq.n_past = end

    def _score(self, scores: list[tuple[int, Seq, int]]) -> None:
        if not scores:
            return
        from .base import score_rows

        np, L = self.np, self.L
        rows = [np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))
                for index, _, _ in scores]  # views of llama.cpp's buffer, read before the next decode
        values = score_rows(rows, [target for _, _, target in scores], max(seq.top for _, seq, _ in scores))
        by_seq: dict[int, tuple[Seq, list]] = {}
        for (_, seq, _), (value, top) in zip(scores, values, strict=True):
            by_seq.setdefault(id(seq), (seq, []))[1].append((value, top[:seq.top]))
        for seq, part in by_seq.values():
            seq.out.put(part)
            if not seq.prefilling:
                self._finish(seq, End("stop"))

    def _finish(self, seq: Seq, item, keep: bool = True) -> None:
        """Take ``seq`` out of its slot (the slot keeps the cache for the next prompt unless ``keep`` is False)."""
        slot = seq.slot
        if slot is not None:
            if not keep:
                self.L.llama_memory_seq_rm(self.mem, slot.id, -1, -1)
                slot.tokens = []
            slot.seq, slot.last_used = None, time.monotonic()
            seq.slot = None
        if seq in self.running:
            self.running.remove(seq)
        self._end(seq, item)

    def _end(self, seq: Seq, item) -> None:
        if seq.sampler is not None:
            seq.sampler.free()
        seq.out.put(item)

"""Whether llama.cpp's own grammar engine accepts a text: the oracle for tests of the grammars we
write. The text is tokenized with the model's vocabulary; each token must be allowed by the grammar
in its state then, and the end of generation must be allowed after the last one."""

from __future__ import annotations

import ctypes

import llama_cpp as L


class Oracle:
    def __init__(self, model_path: str) -> None:
        L.llama_backend_init()
        params = L.llama_model_default_params()
        params.vocab_only = True
        self.model = L.llama_model_load_from_file(model_path.encode(), params)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.eos = L.llama_vocab_eos(self.vocab)
        self.one = (L.llama_token_data * 1)()
        self.picked = L.llama_token_data_array(self.one, 1, -1, False)

    def compiles(self, gbnf: str) -> bool:
        sampler = L.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        if sampler:
            L.llama_sampler_free(sampler)
        return bool(sampler)

    def tokens(self, text: str) -> list[int]:
        raw = text.encode()
        out = (L.llama_token * (len(raw) + 8))()
        n = L.llama_tokenize(self.vocab, raw, len(raw), out, len(out), False, False)
        return list(out[:n])

    def accepts(self, gbnf: str, text: str) -> bool:
        sampler = L.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        assert sampler, "the grammar does not compile"
        try:
            for token in self.tokens(text):
                if not self._allowed(sampler, token):
                    return False
                L.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, self.eos)
        finally:
            L.llama_sampler_free(sampler)

    def _allowed(self, sampler, token: int) -> bool:
        self.one[0].id, self.one[0].logit, self.one[0].p = token, 0.0, 0.0
        self.picked.selected, self.picked.sorted = -1, False
        L.llama_sampler_apply(sampler, ctypes.byref(self.picked))
        return self.one[0].logit != float("-inf")

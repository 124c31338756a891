"""The packaged catalog is complete and consistent; the user's catalog extends and overrides it."""

from __future__ import annotations

import pytest

from mistralkit.errors import InvalidParameter
from mistralkit.formats.mistral import TOKENIZER_FILES
from mistralkit.models import catalog

ASKED_FOR = {"mistral-7b-instruct-v0.2", "mistral-7b-instruct-v0.3", "ministral-3b-instruct", "ministral-8b-instruct",
             "mistral-nemo-instruct", "tinyllama-1.1b-chat", "llama-3.2-3b-instruct", "llama-3.1-8b-instruct",
             "gemma-3-4b-it", "gemma-3-270m", "multilingual-e5-small", "bge-m3", "all-minilm-l6-v2"}


def test_every_model_users_asked_for_is_there_with_what_pull_and_fit_need(mk_home):
    entries = {e.name: e for e in catalog.entries()}
    assert ASKED_FOR <= set(entries)
    for entry in entries.values():
        assert entry.repo.count("/") == 1 and entry.license and entry.good_for and entry.context_length > 0
        assert entry.arch is not None and entry.arch.layers > 0 and entry.arch.kv_heads <= entry.arch.heads
        assert all(spec.size > 0 and spec.file for spec in entry.files.values())
        if entry.kind == "llm" and not entry.bundled:
            assert {"q4_k_m", "q5_k_m", "q8_0"} <= set(entry.files), entry.name
        if entry.chat_format == "mistral":
            assert entry.mistral_tokenizer in TOKENIZER_FILES, entry.name  # one mistral-common can load


def test_references_default_to_q4_k_m_and_unknown_quants_name_the_known_ones(mk_home):
    entry, quant = catalog.lookup("Mistral-7B-Instruct-v0.3")
    assert quant == "q4_k_m" and entry.files[quant].file == "Mistral-7B-Instruct-v0.3-Q4_K_M.gguf"
    assert catalog.lookup("mistral:q8_0")[1] == "q8_0"
    assert catalog.lookup("nothing-like-it") is None
    with pytest.raises(InvalidParameter, match="q5_k_m"):
        catalog.lookup("mistral-7b-instruct-v0.3:q2_k")


def test_groups_name_catalog_models(mk_home):
    for ref in catalog.group("all"):
        assert catalog.lookup(ref) is not None, ref
    assert set(catalog.group("llm")) | set(catalog.group("embeddings")) == set(catalog.group("all"))
    with pytest.raises(InvalidParameter, match="groups"):
        catalog.group("videos")


def test_user_catalog_adds_and_overrides_and_bad_files_are_named(mk_home):
    user = catalog.user_catalog_file()
    user.parent.mkdir(parents=True, exist_ok=True)
    try:
        user.write_text('[[models]]\nname = "bge-m3"\ntitle = "mine"\nkind = "embedding"\nrepo = "me/bge"\n'
                        'license = "mit"\nparams = 0.5\ncontext_length = 8192\nchat_format = "none"\n'
                        'good_for = "x"\ndefault_quant = "f16"\n[models.files.f16]\nfile = "b.gguf"\nsize = 1\n')
        assert catalog.find("bge-m3").repo == "me/bge"
        user.write_text("[[models]]\nname = ")
        with pytest.raises(InvalidParameter, match="catalog.toml"):
            catalog.entries()
    finally:
        user.unlink()
    assert catalog.find("bge-m3").repo != "me/bge"

"""Grammars for constrained generation, built by mistralkit and bounded (docs/grammars.md).

``schema_grammar(schema)`` turns a JSON Schema into GBNF for llama.cpp; ``json_object_grammar()`` is
any JSON object. Every grammar is written within limits measured on llama.cpp (nesting, rule chains,
repetition counts, size), so no schema a client sends can crash or stall the native parser; a schema
beyond them raises ``GrammarError`` naming the place in the schema.
"""

from .gbnf import MAX_BOUND, GrammarError
from .schema import MAX_DEPTH, MAX_ENUM, MAX_NODES, MAX_OPTIONAL, MAX_TEXT, json_object_grammar, schema_grammar

__all__ = ["MAX_BOUND", "MAX_DEPTH", "MAX_ENUM", "MAX_NODES", "MAX_OPTIONAL", "MAX_TEXT", "GrammarError",
           "json_object_grammar", "schema_grammar"]

"""Conversations: the context budget, the SQLite history, and the interactive REPL."""

"""Evaluation and speed measurement of local models (``mistralkit bench``; ``eval`` comes later)."""

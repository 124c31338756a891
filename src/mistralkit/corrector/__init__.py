"""Guarded French correction: rule checkers, protected spans, an optional LLM rewrite, guards."""

from .pipeline import Corrector, correct
from .types import Correction, Edit, Issue, Protected, Refusal

__all__ = ["Correction", "Corrector", "Edit", "Issue", "Protected", "Refusal", "correct"]

"""Hybrid mode's rewrite: one sentence at a time, with the checker's remaining hints, in the prompt
layout of the model's own ChatFormat (the engine builds the tokens from these messages).

Names and numbers stay visible to the model (French agreement needs them: "Marie est allée");
the guards check afterwards that none of them changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..engines import GenerationParams
from ..formats.base import Message

SYSTEM = (
    "Tu corriges des phrases écrites par des élèves dyslexiques. Corrige seulement l'orthographe, la "
    "grammaire, les accords, les accents et la ponctuation. Garde les mots de l'élève autant que possible. "
    "Ne change jamais les noms propres, les nombres, les dates, les heures, les montants, les adresses "
    "e-mail ni les liens (les ⟦…⟧ restent tels quels). N'ajoute aucune information. Réponds seulement par "
    "la phrase corrigée, sur une ligne. Exemple : « Hier, Paul a manger 2 pome. » devient "
    "« Hier, Paul a mangé 2 pommes. »"
)

def messages(sentence: str, hints: Sequence[tuple[str, str, Sequence[str]]] = ()) -> list[Message]:
    """The chat for one sentence; ``hints`` are (word, the checker's message, its suggestions)."""
    lines = [f"Phrase : {sentence}"]
    if hints:
        lines.append("Remarques du correcteur :")
        for word, message, suggestions in hints:
            ideas = f" (suggestions : {', '.join(suggestions[:3])})" if suggestions else ""
            lines.append(f"- « {word} » : {message}{ideas}")
    lines.append("Phrase corrigée :")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def clean(reply: str, sentence: str) -> str:
    """The model's answer as one sentence: first non-empty line, without a label or quotes it added."""
    line = next((line.strip() for line in reply.splitlines() if line.strip()), "")
    for label in ("Phrase corrigée :", "Phrase corrigée:", "Phrase :", "Correction :"):
        line = line.removeprefix(label).strip()
    for left, right in (("«", "»"), ('"', '"'), ("“", "”")):
        if line.startswith(left) and line.endswith(right) and not sentence.lstrip().startswith(left):
            line = line[len(left):-len(right)].strip()
    first = sentence.lstrip()[:1]
    if line[:1] and first.isupper() and line[:1] == first.lower():  # a capital the sentence had stays
        line = first + line[1:]
    return line


def params(temperature: float, max_tokens: int, sentence_tokens: int) -> GenerationParams:
    """Room for the sentence twice over (a rewrite is about as long), within ``max_tokens``."""
    return GenerationParams(max_tokens=max(8, min(max_tokens, 2 * sentence_tokens + 16)), temperature=temperature,
                            top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, seed=0,
                            stop=("\n\n",))  # not "\n": some models open their answer with one


LOOP = "the rewrite ran far past the sentence's length (a repetition loop): stopped, the sentence is kept"


def limit_for(sentence: str) -> int:
    """Characters a rewrite may reach before it is taken for a loop: half as long again, and some."""
    return int(1.5 * len(sentence)) + 20


class FirstLine:
    """Collects a streamed answer and says when its first non-empty line is complete (stop there), or
    when it grew past ``limit`` characters (``overflow``: a model repeating itself)."""

    def __init__(self, limit: int | None = None) -> None:
        self.text, self.limit, self.overflow = "", limit, False

    def feed(self, piece: str) -> bool:
        self.text += piece
        head = self.text.lstrip()
        if "\n" in head:
            return True
        self.overflow = self.limit is not None and len(head) > self.limit
        return self.overflow


def first_line(engine, messages: list[Message], params: GenerationParams, limit: int | None = None) -> FirstLine:
    """Generate until the first non-empty line ends (base models go on with more turns) or passes
    ``limit`` characters."""
    import threading

    cancel, line = threading.Event(), FirstLine(limit)
    for chunk in engine.generate(messages, params, cancel):
        if line.feed(chunk.text):
            cancel.set()  # the engine stops before its next token
    return line

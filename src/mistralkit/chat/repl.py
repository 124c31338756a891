"""The interactive chat loop: streaming answers, slash commands, Ctrl-C to stop an answer.

Every finished turn is committed to the history store before the next prompt; an answer stopped
with Ctrl-C is saved with its ``partial`` flag. Ctrl-D or ``/quit`` leaves.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import TextIO

from ..api import Loaded, params_from
from ..engines import Completion, GenerationParams, complete
from ..errors import MistralkitError
from ..formats.base import Message
from ..settings import coerce
from ..text import problem
from .conversation import fit
from .history import Saved, Session, Store, StoredMessage

HELP = """Commands:
  /help                 this list
  /quit, /exit          save and leave (Ctrl-D does the same)
  /clear                forget the conversation and start a new session
  /save [TITLE]         name this session (turns are saved as they finish)
  /history              show the conversation so far
  /stream               turn streaming on or off
  /system [TEXT]        show or set the system prompt
  /set [PARAM VALUE]    show or change temperature, top_p, top_k, min_p, repeat_penalty,
                        max_tokens, seed, greedy
  /sessions             list saved sessions
Multi-line input: start with \"\"\" and end with \"\"\", or end a line with \\.
Ctrl-C stops an answer; Ctrl-D quits."""

SETTABLE = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed", "greedy")


@contextmanager
def sigint_sets(event: threading.Event):
    """While inside, Ctrl-C sets ``event`` (the engine stops between tokens) instead of raising."""
    previous = signal.signal(signal.SIGINT, lambda *_: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Repl:
    def __init__(self, loaded: Loaded, store: Store, session: Session | None = None,
                 out: TextIO = sys.stdout, read: Callable[[str], str] = input,
                 typed: frozenset[str] = frozenset(), docs=None, name: str | None = None) -> None:
        """``typed``: settings given as command-line flags; on resume they beat the session's saved values.
        ``docs``: a ``documents.answer.DocsChat`` that grounds each turn in a collection."""
        self.loaded = loaded
        self.docs = docs
        self.name = name  # the id a new session is saved under (else a random one)
        self.store = store
        self.session = session
        self.out = out
        self.read = read
        self.params: GenerationParams = params_from(loaded.settings)
        self.stream = loaded.settings.stream
        self.system = loaded.settings.system
        self.turns: list[Message] = []
        if session:
            saved = {k: v for k, v in _known_params(session.params).items() if k not in typed}
            self.params = dataclasses.replace(self.params, **saved)
            if "system" not in typed:
                self.system = session.system_prompt
            self.turns = [{"role": m.role, "content": m.content}  # type: ignore[typeddict-item]
                          for m in store.messages(session.id) if m.role in ("user", "assistant")]

    # Output helpers
    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    # Input
    def read_message(self) -> str | None:
        """One user message (possibly multi-line); None on Ctrl-D."""
        try:
            line = self.read(">>> ")
        except EOFError:
            return None
        if line.strip().startswith('"""'):
            return self._read_block(line.strip()[3:])
        lines = [line]
        while lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1]
            try:
                lines.append(self.read("... "))
            except EOFError:
                break
        return "\n".join(lines)

    def _read_block(self, first: str) -> str | None:
        if first.endswith('"""'):
            return first[:-3]
        lines = [first] if first else []
        while True:
            try:
                line = self.read("... ")
            except EOFError:
                return "\n".join(lines)
            if line.rstrip().endswith('"""'):
                lines.append(line.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(line)

    # The loop
    def loop(self) -> None:
        self.say("Type /help for commands, Ctrl-D or /quit to leave.")
        while True:
            try:
                text = self.read_message()
            except KeyboardInterrupt:
                self.say("\n(Use /quit or Ctrl-D to leave.)")
                continue
            if text is None:
                self.say()
                break
            if not text.strip():
                continue
            if (found := problem(text)) is not None:
                self.say(f"error: not valid UTF-8 text ({found[1]} at character {found[0] + 1}); nothing was sent")
                continue
            if text.startswith("/"):
                if self.command(text) == "quit":
                    break
                continue
            try:
                self.turn(text)
            except MistralkitError as exc:
                self.say(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""))
        if self.session:
            self.say(f"Session saved: {self.session.id} (resume with `mistralkit chat --session-id {self.session.id}`)")

    def messages(self, user_text: str) -> list[Message]:
        head: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.turns, {"role": "user", "content": user_text}]

    def turn(self, user_text: str) -> Completion:
        engine = self.loaded.engine
        grounded = None
        if self.docs is not None:
            grounded = self.docs.ground(user_text, self.system, self.turns, engine, self.params.max_tokens)
            messages, dropped = grounded.messages, grounded.dropped_turns
            prompt_tokens = engine.count_tokens(messages)
        else:
            fitted = fit(self.messages(user_text), engine.count_tokens, engine.n_ctx, self.params.max_tokens)
            messages, dropped, prompt_tokens = fitted.messages, fitted.dropped_turns, fitted.prompt_tokens
        if dropped:
            self.say(f"(context window full: left out the {dropped} oldest turn(s) of this answer's prompt)")
        cancel = threading.Event()
        on_text = (lambda piece: self.say(piece, end="")) if self.stream else None
        with sigint_sets(cancel):
            result = complete(engine, messages, self.params, cancel, on_text)
        if not self.stream:
            self.say(result.text, end="")
        self.say("\n^C (stopped)" if result.finish_reason == "cancelled" else "")
        if grounded is not None:
            self.say("\n".join(self.docs.report(result.text, grounded)))
        self.say(_stats(result))
        self.save_turn(user_text, prompt_tokens, result)
        return result

    def ensure_session(self, notify: bool = True) -> Session:
        """The current session, created on first use (kept in the journal while the database is busy)."""
        if self.session is None:
            self.session = self.store.create_session(_model_ref(self.loaded), self.system, self.params.to_dict(),
                                                     session_id=self.name)
            if notify and self.store.last_write is Saved.PENDING:
                self.say(_kept("this session", self.store))
        return self.session

    def save_turn(self, user_text: str, prompt_tokens: int, result: Completion) -> None:
        session = self.ensure_session(notify=False)  # one notice per turn, below
        if session.title is None:
            session = self.session = self.store.update_session(session.id, title=_title(user_text))
        saved = self.store.add_messages(session.id, [
            StoredMessage("user", user_text, tokens=prompt_tokens),
            StoredMessage("assistant", result.text, tokens=result.usage.completion_tokens,
                          timings=result.usage.to_dict(), partial=result.finish_reason == "cancelled"),
        ])
        if saved is Saved.PENDING:  # a saved turn also landed every write kept before it
            self.say(_kept("this turn", self.store))
        self.turns += [{"role": "user", "content": user_text}, {"role": "assistant", "content": result.text}]

    # Slash commands
    def command(self, line: str) -> str | None:
        name, _, arg = line[1:].partition(" ")
        handler = getattr(self, f"cmd_{name.lower()}", None)
        if handler is None:
            self.say(f"unknown command /{name}; type /help")
            return None
        try:
            return handler(arg.strip())
        except MistralkitError as exc:
            self.say(f"error: {exc.message}")
            return None

    def cmd_help(self, arg: str) -> None:
        self.say(HELP)

    def cmd_quit(self, arg: str) -> str:
        return "quit"

    cmd_exit = cmd_quit
    cmd_bye = cmd_quit

    def cmd_clear(self, arg: str) -> None:
        self.turns = []
        self.session = None
        self.say("Cleared. The next message starts a new session (the old one stays saved).")

    def cmd_save(self, arg: str) -> None:
        session = self.ensure_session()
        if arg:
            self.session = self.store.update_session(session.id, title=arg)
        self.say(f"Saved as session {session.id}" + (f" ({arg})" if arg else ""))

    def cmd_history(self, arg: str) -> None:
        if self.system:
            self.say(f"[system] {self.system}")
        for message in self.turns:
            self.say(f"[{message['role']}] {message['content'].strip()}")
        if not self.turns:
            self.say("(no messages yet)")

    def cmd_stream(self, arg: str) -> None:
        self.stream = not self.stream
        self.say(f"Streaming {'on' if self.stream else 'off'}.")

    def cmd_system(self, arg: str) -> None:
        if not arg:
            self.say(f"System prompt: {self.system!r}")
            return
        self.system = arg
        if self.session:
            self.store.update_session(self.session.id, system_prompt=arg)
        self.say("System prompt set.")

    def cmd_set(self, arg: str) -> None:
        name, _, value = arg.partition(" ")
        if not name:
            for key in SETTABLE:
                self.say(f"  {key} = {getattr(self.params, key)}")
            return
        if name not in SETTABLE or not value.strip():
            self.say(f"usage: /set PARAM VALUE, PARAM one of {', '.join(SETTABLE)}")
            return
        self.params = dataclasses.replace(self.params, **{name: coerce(name, value.strip(), f"/set {name}")})
        if self.session:
            self.store.update_session(self.session.id, params=self.params.to_dict())
        self.say(f"Set {name} = {getattr(self.params, name)}")

    def cmd_sessions(self, arg: str) -> None:
        for s in self.store.list_sessions(limit=20):
            marker = "*" if self.session and s.id == self.session.id else " "
            self.say(f"{marker} {s.id}  {s.updated_at[:16]}  {s.message_count:3d} msgs  {s.title or ''}")


def _known_params(saved: dict) -> dict:
    fields = {f.name for f in dataclasses.fields(GenerationParams)}
    return {k: (tuple(v) if k == "stop" else v) for k, v in saved.items() if k in fields}


def _title(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "untitled"
    return line[:60] + ("…" if len(line) > 60 else "")


def _kept(what: str, store: Store) -> str:
    return (f"(history database busy: {what} is kept in {store.journal.path} and will be saved as soon as the "
            "database is free)")


def _stats(result: Completion) -> str:
    u = result.usage
    return (f"[{u.completion_tokens} tokens · {u.gen_tps:.1f} tok/s · first token {u.ttft_s:.2f} s"
            f" · prompt {u.prompt_tokens} ({u.cached_tokens} cached)]")


def _model_ref(loaded: Loaded) -> str:
    """What a session records as its model: the path the user gave (resumable from any folder), else the name."""
    from pathlib import Path

    given = loaded.settings.model
    if given and Path(given).expanduser().exists():
        return str(Path(given).expanduser().resolve())
    return loaded.model.name

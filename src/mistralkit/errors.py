"""Exceptions that carry a message for people and a hint about what to do next.

The CLI prints ``error: <message>`` and ``hint: <hint>`` and exits non-zero; the server (later)
maps ``status`` to an HTTP code.
"""

from __future__ import annotations


class MistralkitError(Exception):
    """Base class: ``message`` says what went wrong, ``hint`` what to do about it."""

    status = 400
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"

    def report(self) -> int:
        """Print ``error:`` and ``hint:`` lines on stderr, as every command ends on one; its exit code."""
        import sys

        print(f"error: {self.message}", file=sys.stderr)
        if self.hint:
            print(f"hint: {self.hint}", file=sys.stderr)
        return self.exit_code


class InvalidParameter(MistralkitError):
    """A setting or generation parameter is out of range or of the wrong type."""

    exit_code = 2


class BadParameter(InvalidParameter):
    """An invalid request field, named in ``param`` (OpenAI's error body carries it)."""

    def __init__(self, message: str, param: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.param = param


class TooLarge(InvalidParameter):
    """A request (or a part of it) is larger than what is accepted at once; ``param`` names the field."""

    status = 413

    def __init__(self, message: str, hint: str | None = None, *, param: str | None = None) -> None:
        super().__init__(message, hint)
        self.param = param


class Cancelled(MistralkitError):
    """Work stopped because whoever waited for it left (an HTTP client gone, the server stopping)."""

    status = 499


class Unsupported(MistralkitError):
    """The engine running the model lacks what the request needs (log-probs, grammars, adapters...)."""


class RemoteError(MistralkitError):
    """A remote API (OpenAI-compatible, Anthropic) refused the request, failed or cannot be reached.

    ``status`` is the HTTP code to pass on: 401 for a wrong key, 404 for a model it lacks, 429 for
    its rate limit, 502 when it is down or answers nonsense, 504 when it timed out.
    """

    status = 502

    def __init__(self, message: str, hint: str | None = None, *, status: int = 502) -> None:
        super().__init__(message, hint)
        self.status = status


class RemoteRefused(MistralkitError):
    """A remote was asked for while remotes are off (``MISTRALKIT_OFFLINE=1``)."""

    status = 403


class ModelNotFound(MistralkitError):
    """A model reference names no file and no known model."""

    status = 404


class InvalidModelFile(MistralkitError):
    """The file exists but is not a usable GGUF (wrong magic, truncated, unreadable)."""


class ContextOverflow(MistralkitError):
    """A prompt cannot fit in the context window, even after dropping old turns."""


class SessionNotFound(MistralkitError):
    """No saved chat session has that id."""

    status = 404


class StorageError(MistralkitError):
    """The data directory or the history database cannot be written or read."""

    status = 500


class HistoryUnavailable(StorageError):
    """The history database cannot be used: damaged, unreadable or not writable."""

    status = 503


class HistoryBusy(StorageError):
    """Another program held the history database's write lock for longer than the wait budget."""

    status = 503

    def __init__(self, message: str, hint: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


class MissingDependency(MistralkitError):
    """An optional dependency is not installed; the hint names the extra."""

    status = 500


class IntegrityFailure(MistralkitError):
    """A model file's sha256 does not match the published or recorded one."""

    status = 500


class InsufficientMemory(MistralkitError):
    """The memory plan of a model exceeds the memory available (refused with --strict-memory)."""

    status = 503


class DatasetError(MistralkitError):
    """A line of a training data file is unusable; the message starts with ``FILE:LINE: FIELD:``."""

    def __init__(self, message: str, hint: str | None = None, *, path: str = "", line: int = 0,
                 field: str = "") -> None:
        where = ":".join(part for part in (path, str(line) if line else "") if part)
        prefix = f"{where}: " if where else ""
        prefix += f"{field}: " if field else ""
        super().__init__(prefix + message, hint)
        self.reason = message
        self.path, self.line, self.field = path, line, field


class CheckerUnavailable(MistralkitError):
    """A rule checker (Grammalecte, LanguageTool) is missing, unreachable or failed; the hint says how
    to install or start it."""

    status = 503

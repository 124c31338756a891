"""Datagen errors: each carries a message for people, a hint, and the HTTP ``status`` the server answers."""

from __future__ import annotations

from ..errors import MistralkitError


class DatagenError(MistralkitError):
    """A datagen request or file cannot be used (bad submission, unusable spec, target not sampleable)."""

    status = 400


class SpecError(DatagenError):
    """A problem in a spec, its schema or its seed file; the message reads ``FILE:LINE: what``."""

    def __init__(self, message: str, hint: str | None = None, *, path: str = "", line: int = 0) -> None:
        where = ":".join(part for part in (str(path), str(line) if line else "") if part)
        super().__init__(f"{where}: {message}" if where else message, hint)
        self.reason = message
        self.path, self.line = str(path), line


class NotFound(DatagenError):
    """No instruction has that id."""

    status = 404


class WrongAgent(DatagenError):
    """The instruction is leased to another agent."""

    status = 403


class LeaseExpired(DatagenError):
    """The agent's lease on the instruction ran out (and it went to someone else or back to the pool)."""

    status = 410


class Conflict(DatagenError):
    """The instruction was already answered with another text."""

    status = 409


class TooLarge(DatagenError):
    """The submitted case text is longer than the spec allows."""

    status = 413

"""Request bodies of every HTTP server of mistralkit: unknown fields ignored (as OpenAI's clients send
extras), and text that UTF-8 cannot encode refused as a 400 naming its place."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from ..text import bad_text


class BaseBody(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RequestBody(BaseBody):
    """A whole request body: text that UTF-8 cannot encode (a ``"\\ud800"`` escape) is a 400."""

    @model_validator(mode="before")
    @classmethod
    def _utf8(cls, data: Any) -> Any:
        found = bad_text(data)
        if found is not None:
            where, offset, what = found
            raise PydanticCustomError("invalid_text", "{place}: not valid UTF-8 text ({what} at character {at})",
                                      {"place": where or "body", "what": what, "at": offset + 1, "where": where})
        return data

"""A client for a LanguageTool server's ``/v2/check``, for users who run one.

LanguageTool counts ``offset`` and ``length`` in UTF-16 code units (it is Java); we map them to code
points, so an emoji before an error does not shift its span. It offers no dictionary lookup, so
``proper_nouns`` finds none: protection then rests on spaCy and the user's words.
"""

from __future__ import annotations

import threading

from typing import Any

from ..errors import CheckerUnavailable, InvalidParameter
from .types import Issue

START_HINT = "start your LanguageTool server or fix --languagetool-url"
# Same policy as for Grammalecte: spelling and grammar, no typography (it would rewrite apostrophes
# and spaces). A server that lacks the category ignores it.
DISABLED_CATEGORIES = "TYPOGRAPHY"

_KIND_BY_ISSUE_TYPE = {"misspelling": "spelling", "typographical": "typography", "style": "style",
                       "register": "style", "locale-violation": "style"}
_KIND_BY_CATEGORY = {"TYPOS": "spelling", "TYPOGRAPHY": "typography", "STYLE": "style",
                     "REDUNDANCY": "style"}


class LanguageToolChecker:
    """A LanguageTool server at ``url`` (e.g. ``http://127.0.0.1:8081``), checked when opened.

    >>> checker = LanguageToolChecker("http://127.0.0.1:8081")  # doctest: +SKIP
    >>> checker.check("Il mange des pomme.")[0].suggestions  # doctest: +SKIP
    ('pommes',)
    """

    name = "languagetool"

    def __init__(self, url: str | None, *, timeout_s: float = 30, language: str = "fr") -> None:
        import httpx

        if not url or not url.startswith(("http://", "https://")):
            raise InvalidParameter(f"LanguageTool needs the http(s) URL of its server, not {url!r}",
                                   "pass --languagetool-url http://127.0.0.1:8081")
        if not timeout_s > 0:
            raise InvalidParameter(f"timeout_s must be positive, not {timeout_s!r}")
        self.url = url.rstrip("/").removesuffix("/v2")
        self.language = language
        self.timeout_s = timeout_s  # for each whole call: a server that drips bytes is cut off too
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s)
        try:
            self._call("GET", "/v2/languages")  # fail now, not after the model has loaded
        except BaseException:
            self._client.close()
            raise

    def check(self, text: str) -> list[Issue]:
        if not text.strip():
            return []
        payload = self._call("POST", "/v2/check", data={
            "text": text, "language": self.language, "disabledCategories": DISABLED_CATEGORIES})
        to_code_points = utf16_to_code_points(text)
        issues = []
        for match in payload.get("matches") or ():
            try:
                start = to_code_points[match["offset"]]
                end = to_code_points[match["offset"] + match["length"]]
            except (KeyError, IndexError, TypeError):
                continue  # a span outside the text: drop it rather than guess
            issues.append(self._issue(match, start, end))
        return sorted(issues, key=lambda i: (i.start, i.end, i.rule))

    def proper_nouns(self, words: list[str]) -> set[str]:
        """Always empty: LanguageTool's HTTP API has no dictionary lookup."""
        return set()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LanguageToolChecker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        try:
            response = self._request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckerUnavailable(f"LanguageTool at {self.url} is unreachable: {reason}", START_HINT) from None
        if response.status_code != 200:
            body = " ".join(response.text.split())[:160]
            raise CheckerUnavailable(f"LanguageTool at {self.url} answered HTTP {response.status_code}"
                                     + (f": {body}" if body else ""), START_HINT)
        try:
            payload = response.json()
        except ValueError:
            raise CheckerUnavailable(f"LanguageTool at {self.url} answered something that is not JSON",
                                     START_HINT) from None
        return payload if isinstance(payload, dict) else {"items": payload}

    def _request(self, method: str, path: str, **kwargs: Any):
        """The response, within ``timeout_s`` in all (httpx's timeouts are per read: one byte a second
        would never trip them). Past the deadline the connection is closed under the waiting request."""
        import httpx

        outcome: list = []

        def send() -> None:
            try:
                outcome.append(self._client.request(method, path, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome.append(exc)

        worker = threading.Thread(target=send, name="languagetool", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            stuck, self._client = self._client, httpx.Client(base_url=self.url, timeout=self.timeout_s)
            stuck.close()
            raise CheckerUnavailable(f"LanguageTool at {self.url} did not answer within {self.timeout_s:g} s",
                                     START_HINT)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _issue(self, match: dict[str, Any], start: int, end: int) -> Issue:
        rule = match.get("rule") or {}
        category = (rule.get("category") or {}).get("id", "")
        kind = _KIND_BY_ISSUE_TYPE.get(rule.get("issueType", ""), _KIND_BY_CATEGORY.get(category, "grammar"))
        suggestions = tuple(r["value"] for r in match.get("replacements") or () if "value" in r)
        return Issue(start, end, match.get("message") or match.get("shortMessage", ""), suggestions,
                     rule.get("id", ""), kind, self.name)


def utf16_to_code_points(text: str) -> list[int]:
    """``table[u]`` is the code point index of UTF-16 offset ``u`` of ``text`` (``u`` up to its end).

    >>> utf16_to_code_points("😀a")  # the emoji takes two UTF-16 units
    [0, 1, 1, 2]
    """
    table: list[int] = []
    for index, char in enumerate(text):
        table.append(index)
        if ord(char) > 0xFFFF:
            table.append(index + 1)  # the low surrogate: a span ending there ends after the char
    table.append(len(text))
    return table

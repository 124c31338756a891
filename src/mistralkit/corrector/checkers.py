"""Open a rule checker by name: Grammalecte (a local child process) or a LanguageTool server.

>>> checker = open_checker("grammalecte")  # doctest: +SKIP
>>> [(i.start, i.end, i.suggestions[0]) for i in checker.check("Il mange des pomme.")]  # doctest: +SKIP
[(13, 18, 'pommes')]
>>> checker.close()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable

from ..errors import InvalidParameter
from .types import Checker


def _open_grammalecte(url: str | None, timeout_s: float) -> Checker:
    from .grammalecte import GrammalecteChecker

    return GrammalecteChecker(timeout_s=timeout_s)  # url is LanguageTool's: a configured one is ignored


def _open_languagetool(url: str | None, timeout_s: float) -> Checker:
    from .languagetool import LanguageToolChecker

    return LanguageToolChecker(url, timeout_s=timeout_s)


OPENERS: dict[str, Callable[[str | None, float], Checker]] = {
    "grammalecte": _open_grammalecte,
    "languagetool": _open_languagetool,
}
CHECKERS = tuple(OPENERS)


def open_checker(name: str = "grammalecte", *, url: str | None = None, timeout_s: float = 30) -> Checker:
    """A started checker; ``url`` is the LanguageTool server's base URL (needed for languagetool).

    Raises ``InvalidParameter`` for an unknown name and ``CheckerUnavailable`` when the checker is
    not installed or not reachable. Call ``close()`` when done (Grammalecte is a child process).
    """
    opener = OPENERS.get(name)
    if opener is None:
        raise InvalidParameter(f"unknown checker {name!r}: choose {' or '.join(CHECKERS)}",
                               "pass --checker grammalecte or --checker languagetool")
    return opener(url, timeout_s)

"""The one exception type that salt raises for problems a user can fix.

The `salt` entry point prints these as a short message (what was expected, what was found, where,
and what to do) instead of a traceback. Anything else that escapes is a bug in salt.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SaltError(Exception):
    """A problem with the user's input, config or environment, explained for a person."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the names closest to `name`, or ``""``."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""

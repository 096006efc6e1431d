"""Looking things up by name, with one error message for every table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def lookup(kind: str, table: Mapping[str, T], name: Any, extra: tuple[Any, ...] = ()) -> T:
    """``table[name.lower()]``; an unknown name raises ValueError listing the valid ones.

    ``extra`` are further accepted names shown first in the message (like ``None``).
    """
    key = str(name).lower()
    if key not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {[*extra, *table]}")
    return table[key]

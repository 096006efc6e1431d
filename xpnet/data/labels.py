"""DataFrame column labels as the user gave them: stored as JSON, matched back by value.

pandas labels columns with any hashable: text, integers (``pd.DataFrame(array)``
has ``0, 1, 2``), floats, booleans, tuples (a MultiIndex). A network fitted on
a DataFrame keeps its labels in its checkpoint's JSON metadata, so they are
kept in JSON's types (a tuple becomes a list) and compared by :func:`key`,
which gives a label and its JSON form the same key: ``1`` and ``1.0`` are one
label, ``1`` and ``"1"`` two, ``("a", 1)`` and ``["a", 1]`` one.

Labels JSON cannot keep as themselves (dates, NaN, arbitrary objects) and
duplicate labels are refused, in one ValueError naming them.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame([[1.0, 2.0]], columns=[0, "0"])
>>> stored(frame.columns)
[0, '0']
>>> positions(frame, ["0", 0])
[1, 0]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

SHOWN = 5
"""Labels named at most in one message."""


def _json(label: Any) -> Any:
    """``label`` in JSON's types, or raise TypeError when JSON cannot keep it as itself."""
    if isinstance(label, np.generic):
        label = label.item()
    if label is None or isinstance(label, (str, bool, int)):
        return label
    if isinstance(label, float):
        if not math.isfinite(label):
            raise TypeError(label)
        return label
    if isinstance(label, (tuple, list)):
        return [_json(part) for part in label]
    raise TypeError(label)


def key(label: Any) -> Hashable:
    """What two labels share when they name the same column (a label and its JSON form agree)."""
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, bool):
        return ("bool", label)
    if isinstance(label, (int, float)):
        return ("number", label)
    if isinstance(label, (tuple, list)):
        return ("tuple", tuple(key(part) for part in label))
    return (type(label).__name__, label)


def restored(label: Any) -> Any:
    """A stored label as pandas shows it (JSON lists back to tuples)."""
    return tuple(restored(part) for part in label) if isinstance(label, list) else label


def shown(label: Any) -> str:
    """A label as text, for messages and encoded feature names (``('a', 1)`` for a tuple)."""
    label = restored(label)
    return label if isinstance(label, str) else repr(label)


def _listed(labels: Sequence[Any]) -> str:
    more = f" and {len(labels) - SHOWN} more" if len(labels) > SHOWN else ""
    return f"[{', '.join(repr(restored(label)) for label in labels[:SHOWN])}]{more}"


def stored(columns: Iterable[Any], what: str = "X") -> list[Any]:
    """The column labels in JSON form, to save with a model.

    Raises
    ------
    ValueError
        Naming every label that is duplicated or that JSON cannot keep as
        itself (a date, NaN, an object), and what to do about it.
    """
    labels, unusable, seen, duplicated = [], [], set(), []
    for label in columns:
        try:
            labels.append(_json(label))
        except TypeError:
            unusable.append(label)
            continue
        k = key(label)
        if k in seen and label not in duplicated:
            duplicated.append(label)
        seen.add(k)
    problems = []
    if duplicated:
        problems.append(f"duplicate column labels {_listed(duplicated)}")
    if unusable:
        problems.append(
            f"column labels {_listed(unusable)} that a model file cannot store (labels must be text, "
            "numbers, booleans or tuples of them)"
        )
    if problems:
        raise ValueError(
            f"{what} has {' and '.join(problems)}; give every column its own name, e.g. "
            f"{what}.columns = [f'x{{i}}' for i in range({what}.shape[1])]"
        )
    return labels


def positions(frame: Any, names: Sequence[Any], what: str = "the model") -> list[int]:
    """Where each of ``names`` (stored labels) is among ``frame``'s columns.

    Raises
    ------
    ValueError
        Naming the labels ``frame`` lacks, or has more than once.
    """
    where: dict[Hashable, list[int]] = {}
    for i, label in enumerate(frame.columns):
        try:
            where.setdefault(key(label), []).append(i)
        except TypeError:  # an unhashable label cannot be one the model knows
            continue
    wanted = [(name, where.get(key(name), [])) for name in names]
    missing = [name for name, found in wanted if not found]
    if missing:
        raise ValueError(f"the data lacks {what}'s feature column(s) {_listed(missing)}")
    twice = [name for name, found in wanted if len(found) > 1]
    if twice:
        raise ValueError(
            f"the data has {what}'s feature column(s) {_listed(twice)} more than once; keep one of each"
        )
    return [found[0] for _, found in wanted]


def select(frame: Any, names: Sequence[Any], what: str = "the model") -> Any:
    """``frame``'s columns ``names``, in that order (the frame itself when it already is that)."""
    index = positions(frame, names, what)
    if index == list(range(frame.shape[1])):
        return frame
    return frame.iloc[:, index]

"""Boundary checks for ``fit``'s ``sample_weight``, ``class_weight`` and ``validation_split``.

Plain functions of host data. For in-memory data the weights they return go
to the device once per ``fit`` and are gathered there batch by batch with the
rows; for streamed data the class weights become a ``{label: weight}`` table
applied to each batch's labels as it is prepared, and memmaps of weights or
labels are read in chunks, never copied whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..backend import Array, to_numpy
from . import checks


def labels_of(t: Array, *, binary: bool) -> np.ndarray:
    """The class of each row of device targets ``t`` (one read): labels, argmax of one-hot, or 0/1."""
    host = to_numpy(t)
    if host.ndim == 1:
        return host.astype(np.int64)
    if binary:
        if host.shape[1] != 1:
            raise ValueError("class_weight needs one binary output (0/1 targets), not several labels per row")
        return (host[:, 0] > 0.5).astype(np.int64)
    return np.argmax(host, axis=1)


def class_table(
    class_weight: Any, counts: tuple[np.ndarray, np.ndarray] | None, labels: int | None = None
) -> dict[int, float]:
    """``{label: weight}`` from ``class_weight``: a dict, checked, or ``"balanced"`` from ``counts``.

    ``counts`` are the labels present and how many rows each has (needed by
    ``"balanced"`` only): scikit-learn's ``n_samples / (n_classes * count(label))``.
    ``labels`` is how many labels the network has (0 to ``labels - 1``): a dict
    naming others is refused, since no row can carry them.
    """
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"class_weight must be a dict {{label: weight}} or 'balanced', got {class_weight!r}"
            )
        if counts is None:
            raise ValueError(
                "class_weight='balanced' needs every label's count before training, which only arrays or "
                "a memmap of labels give; with batches or a file reader pass a dict {label: weight} "
                "(e.g. from sklearn.utils.class_weight.compute_class_weight)"
            )
        present, count = counts
        return dict(zip(present.tolist(), (int(count.sum()) / (present.size * count)).tolist()))
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be a dict {{label: weight}} or 'balanced', got {class_weight!r}")
    table = {}
    for label, weight in class_weight.items():
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"class_weight keys must be integer class labels, got {label!r}")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float, np.number))
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise ValueError(f"class_weight[{label}] must be a finite number >= 0, got {weight!r}")
        table[int(label)] = float(weight)
    unknown = [] if labels is None else sorted(label for label in table if not 0 <= label < labels)
    if labels is not None and unknown:
        raise ValueError(
            f"class_weight names label(s) {unknown}, but the network's labels are 0..{labels - 1} "
            f"({labels} classes): no row can have them"
        )
    return table


def label_counts(chunks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The labels present in ``chunks`` of labels (sorted) and how many rows each has."""
    total: dict[int, int] = {}
    for labels in chunks:
        present, count = np.unique(labels, return_counts=True)
        for label, c in zip(present.tolist(), count.tolist()):
            total[label] = total.get(label, 0) + c
    keys = sorted(total)
    return np.array(keys, dtype=np.int64), np.array([total[k] for k in keys], dtype=np.int64)


def row_weights(table: dict[int, float], labels: np.ndarray) -> np.ndarray:
    """Each row's weight from ``{label: weight}`` (absent labels weigh 1)."""
    return np.array([table.get(int(label), 1.0) for label in labels.tolist()], dtype=np.float64)


def class_weights(class_weight: Any, labels: np.ndarray, count: int | None = None) -> np.ndarray:
    """Each row's weight from ``{label: weight}`` (absent labels weigh 1) or ``"balanced"``.

    ``"balanced"`` is scikit-learn's ``n_samples / (n_classes * count(label))``;
    ``count`` the network's number of labels (see :func:`class_table`).
    """
    balanced = isinstance(class_weight, str) and class_weight == "balanced"
    counts = np.unique(labels, return_counts=True) if balanced else None
    return row_weights(class_table(class_weight, counts, count), labels)


def label_count(out_features: int, *, binary: bool) -> int | None:
    """How many class labels a network's targets can hold: 2 for one binary output, else its
    outputs (None for several binary outputs, which ``class_weight`` refuses anyway)."""
    if binary:
        return 2 if out_features == 1 else None
    return out_features


def stream_weights(sample_weight: Any, n: int) -> np.ndarray:
    """``sample_weight`` for ``n`` streamed rows: a ``(n,)`` host array or memmap view, never copied
    whole, checked as in-memory weights are; not all zero."""
    host = checks.sample_weights(sample_weight, n, copy=False)
    if not checks.any_positive(host):
        raise ValueError("every sample has weight 0: nothing would be learned")
    return host


def combined(
    sample_weight: Any, class_weight: Any, t: Array, n: int, *, binary: bool, outputs: int | None = None
) -> np.ndarray | None:
    """The product of the sample and class weights (None when neither is given), divided by the
    largest (see :func:`normalized`); ``outputs`` (the network's) bounds ``class_weight``'s labels."""
    if sample_weight is None and class_weight is None:
        return None
    weight = np.ones(n) if sample_weight is None else checks.sample_weights(sample_weight, n)
    if class_weight is not None:
        count = None if outputs is None else label_count(outputs, binary=binary)
        weight = weight * class_weights(class_weight, labels_of(t, binary=binary), count)
    if not np.any(weight > 0):
        raise ValueError("every sample has weight 0: nothing would be learned")
    return normalized(weight)


def normalized(weight: np.ndarray) -> np.ndarray:
    """Float64 host weights scaled by the power of two that puts the largest in ``[0.5, 1)``.

    Each batch's loss divides by its weights' sum, so a common factor changes
    nothing; without it, weights near float32's limits (3e38, 1e-40) would
    overflow a float32 sum or vanish when cast, and train nothing. A power of
    two scales exactly (casts and sums round the same), so weights scaled for
    the whole data and for one batch give that batch the same loss to the bit.
    """
    peak = float(weight.max(initial=0.0))
    if not peak > 0:
        return weight
    return np.ldexp(weight, -int(np.frexp(peak)[1]))


def split_fraction(validation_split: Any) -> float:
    """``validation_split`` checked: a number in ``[0, 1)``."""
    s = validation_split
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
        raise ValueError(f"validation_split must be a number in [0, 1), got {s!r}")
    return float(s)


def split_rows(n: int, validation_split: Any) -> int:
    """Rows that train under ``validation_split``: ``floor(n * (1 - s))``, the rest validate."""
    s = split_fraction(validation_split)
    train = math.floor(n * (1.0 - s))
    if s and (train < 1 or train == n):
        raise ValueError(
            f"validation_split={validation_split} leaves {train} of {n} rows to train: need some of both"
        )
    return train

"""Metrics computed on the device: pure functions of arrays and ``xp``."""

from __future__ import annotations

from typing import Any

Array = Any


def correct_count(
    y_prob: Array, y_true: Array, xp: Any, *, binary: bool, sample_weight: Array | None = None
) -> Array:
    """Number of correct predictions, as a 0-d array on the device.

    ``binary``: each element of ``y_prob`` is thresholded at 0.5 against 0/1
    targets of the same shape. Otherwise the argmax of each row is compared
    with the integer label ``y_true`` (or the argmax of a one-hot ``y_true``).
    Rows whose ``sample_weight`` is 0 are not counted (padding).
    """
    if binary:
        hit = (y_prob > 0.5) == (xp.reshape(y_true, y_prob.shape) > 0.5)
    else:
        labels = y_true if y_true.ndim == 1 else xp.argmax(y_true, axis=1)
        hit = xp.argmax(y_prob, axis=1) == labels
    hit = xp.astype(hit, y_prob.dtype)
    if sample_weight is not None:
        keep = xp.astype(sample_weight != 0, y_prob.dtype)
        hit = hit * (xp.reshape(keep, (-1, 1)) if hit.ndim > 1 else keep)
    return xp.sum(hit)


def prediction_count(y_prob: Array, *, binary: bool) -> int:
    """How many predictions :func:`correct_count` judges in ``y_prob``."""
    if binary:
        return int(y_prob.shape[0] * (y_prob.shape[1] if y_prob.ndim > 1 else 1))
    return int(y_prob.shape[0])

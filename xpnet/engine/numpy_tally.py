"""Correct predictions per epoch for NumPy's fused loop, counted as
:func:`~xpnet.nn.metrics.correct_count` counts them, at the fewest calls per step."""

from __future__ import annotations

from typing import Any

import numpy as np

from .plan import Plan

Array = Any

TALLY_ROWS = 4096
"""Data sets up to this many rows have their correct counts taken in bulk (see :class:`_Tally`)."""


def tally_kind(plan: Plan, t: Array) -> str | None:
    """How predictions are judged: thresholds, argmax against labels or against one-hot rows."""
    if plan.loss == "binary_crossentropy":
        return "binary"
    if plan.loss == "categorical_crossentropy":
        return "labels" if t.ndim == 1 else "onehot"
    return None


class Tally:
    """Correct predictions per epoch, counted as :func:`~xpnet.nn.metrics.correct_count` counts them.

    A small data set's steps only record their predictions (``p > 0.5``, or
    each row's argmax): one call per step instead of four. The predictions of
    many epochs are then compared with the targets at once, gathered in each
    epoch's row order; rows of weight 0 are not counted. Larger data sets
    (where per-step calls do not matter) count at every step.
    """

    def __init__(self, kind: str, t: Array, w: Array | None, counted: list[int]) -> None:
        self.kind, self.t, self.w = kind, t, w
        self.counted = counted
        self.n = int(t.shape[0])
        self.deferred = self.n <= TALLY_ROWS
        self.orders: list[Array | None] = []
        self.offset = 0
        self.current = 0
        if self.deferred:
            rows = max(1, TALLY_ROWS // self.n) * self.n
            shape = (rows, *t.shape[1:]) if kind == "binary" else (rows,)
            self.pred = np.empty(shape, bool if kind == "binary" else np.intp)

    def start(self, order: Array | None) -> None:
        """Begin an epoch that visits the rows in ``order`` (None: in their stored order)."""
        if not self.deferred:
            self.current = 0
            return
        if self.offset + self.n > self.pred.shape[0]:
            self.flush()
        self.orders.append(order)

    def record(self, p: Array, t: Array, w: Array | None, buf: Any) -> None:
        """One batch's probabilities ``p`` for targets ``t`` (weights ``w``)."""
        if not self.deferred:
            self.current += _count(self.kind, p, t, w, buf)
            return
        rows = p.shape[0]
        slot = self.pred[self.offset : self.offset + rows]
        if self.kind == "binary":
            np.greater(p, 0.5, out=slot)
        else:
            p.argmax(axis=1, out=slot)
        self.offset += rows

    def end(self) -> None:
        if not self.deferred:
            self.counted.append(self.current)

    def flush(self) -> None:
        """Count the recorded epochs' hits."""
        if not self.orders:
            return
        epochs, n = len(self.orders), self.n
        truth, keep = self._truth()
        if any(order is not None for order in self.orders):
            rows = np.concatenate([np.arange(n) if order is None else order for order in self.orders])
            truth = truth.take(rows, axis=0)
            keep = None if keep is None else keep.take(rows, axis=0)
        else:  # every epoch in the stored order: broadcast
            truth = np.broadcast_to(truth, (epochs, *truth.shape)).reshape(epochs * n, *truth.shape[1:])
            keep = None if keep is None else np.tile(keep, epochs)
        hit = self.pred[: epochs * n] == truth
        if keep is not None:
            hit &= keep.reshape(-1, *([1] * (hit.ndim - 1)))
        self.counted.extend(int(c) for c in np.count_nonzero(hit.reshape(epochs, -1), axis=1))
        self.orders.clear()
        self.offset = 0

    def _truth(self) -> tuple[Array, Array | None]:
        t = self.t
        truth = t > 0.5 if self.kind == "binary" else t if self.kind == "labels" else t.argmax(axis=1)
        return truth, None if self.w is None else self.w != 0


def _count(kind: str, p: Array, t: Array, w: Array | None, buf: Any) -> int:
    """One batch's correct count."""
    if kind == "binary":
        hit = np.greater(p, 0.5, out=buf.hits)
        np.equal(hit, np.greater(t, 0.5, out=buf.truth), out=hit)
        if w is not None:
            hit &= (w != 0).reshape(-1, 1)
    else:
        labels = t if kind == "labels" else t.argmax(axis=1)
        hit = np.equal(p.argmax(axis=1, out=buf.argmax), labels)
        if w is not None:
            hit &= w != 0
    return int(np.count_nonzero(hit))

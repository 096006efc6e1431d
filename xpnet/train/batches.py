"""Host batches to device batches: what ``fit``, ``predict`` and ``evaluate`` stream.

Data that is not copied whole to the device (a NumPy memmap, arrays with
``device_data=False``, an iterable of batches, an :mod:`xpnet.data.streams`
source) becomes a batch source (:mod:`xpnet.train.adapter`) and arrives as
host batches (:class:`~xpnet.data.streams.Batch`). A :class:`Preparer` checks
each one on the host as in-memory data is checked (:mod:`xpnet.train.checks`;
no device sync), weighs its rows by their labels' class
weights, applies the network's input scaling, draws its dropout masks, keeps
this rank's rows of it in data-parallel training, and moves it to the device
as a :class:`Ready` batch; an :class:`InferencePreparer` does the same for
``predict`` and scoring, as :class:`Rows`. They run in the background thread
of a :class:`~xpnet.data.streams.Prefetcher`, so every use of the network's
host generator happens there, in the order the in-memory path uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import streams
from ..distributed import Communicator
from ..nn.losses import CategoricalCrossentropy
from . import checks, inputs, weighting

Array = Any


# -- checks on the host ----------------------------------------------------------------------------


def host_features(net: Any, x: Any, index: int) -> np.ndarray:
    """A batch's features in the network's dtype, checked as in-memory ``X`` is (on the host)."""
    where = f"batch {index}: X_b"
    return inputs.host_features(net, inputs.numeric(net, x, where), where)


def host_targets(net: Any, y: Any, rows: int, index: int) -> np.ndarray:
    """A batch's targets as in-memory ``y`` becomes them (target scaling included), on the host."""
    if y is None:
        raise ValueError(f"batch {index} has no targets; expected (X_b, y_b) or (X_b, y_b, w_b)")
    return inputs.host_targets(net, y, rows, f"batch {index}: y_b")


def host_weights(w: Any, rows: int, index: int) -> np.ndarray:
    """A batch's sample weights as float64, checked as ``sample_weight`` is."""
    return checks.sample_weights(w, rows, f"batch {index}: w_b")


# -- device batches ----------------------------------------------------------------------------------


@dataclass
class Ready:
    """A training batch on the device, with what the step needs beside it.

    ``share`` is this rank's fraction of the global batch's weight (1 alone);
    ``rows`` the global batch's rows; ``empty`` marks a stand-in row of a rank
    the batch left without rows; ``judged`` counts the predictions accuracy
    judges here (those of rows with a non-zero weight).
    """

    x: Array
    y: Array
    w: Array | None
    noise: list[Any] | None
    rows: int
    local_rows: int
    share: float
    empty: bool
    judged: int = 0


class Preparer:
    """Turns host training batches into :class:`Ready` device batches (run in the prefetch thread).

    ``classes``, a ``{label: weight}`` table, multiplies each row's weight by
    its label's (rows of labels not named weigh 1), as ``class_weight`` does
    with in-memory data.
    """

    def __init__(self, net: Any, comm: Communicator | None, classes: dict[int, float] | None = None) -> None:
        self.net = net
        self.comm = comm if comm is not None and comm.size > 1 else None
        self.draw = net._draw()
        self.classes = classes
        self.binary = net._model().binary
        self.index = 0

    def __call__(self, batch: streams.Batch) -> Ready:
        with self.net.backend.scope():  # this thread's arrays on the network's device (CuPy)
            return self._prepare(batch)

    def weights(self, batch: streams.Batch, y: np.ndarray, index: int) -> np.ndarray | None:
        """The batch's weights in the network's dtype: its own times its labels' class weights."""
        n = int(y.shape[0])
        w = None if batch.w is None else host_weights(batch.w, n, index)
        if self.classes is not None:
            by_class = weighting.row_weights(self.classes, weighting.labels_of(y, binary=self.binary))
            w = by_class if w is None else w * by_class
        return None if w is None else weighting.normalized(w).astype(self.net.dtype)

    def _prepare(self, batch: streams.Batch) -> Ready:
        net, index = self.net, self.index
        self.index += 1
        x = host_features(net, batch.x, index)
        n = int(x.shape[0])
        y = host_targets(net, batch.y, n, index)
        w = self.weights(batch, y, index)
        noise = None if self.draw is None else self.draw(n)
        share, part, empty = 1.0, slice(0, n), False
        if self.comm is not None:
            share, part, empty = _part(self.comm, n, w)
        take = slice(0, 1) if empty else part
        if noise is not None:
            noise = [None if m is None else m[take] for m in noise]
        if empty:
            w = None
        elif w is not None:
            w = w[take]
        to = net.backend.asarray
        judged = 0 if empty else _judged(net, y[take], w)
        return Ready(
            inputs.scaled(net, to(x[take])),
            to(y[take]),
            None if w is None else to(w),
            None if noise is None else [None if m is None else to(m) for m in noise],
            n,
            0 if empty else part.stop - part.start,
            share,
            empty,
            judged,
        )


@dataclass
class Rows:
    """A batch to predict or score: this rank's rows of it on the device, and what scoring needs.

    Alone, a rank's rows are the whole batch. ``x`` is None when this rank has
    none of it; ``y`` is None when the batch has no targets; ``mass`` is the
    rows' total weight (their count when unweighted) and ``judged`` the
    predictions accuracy judges among them; ``y_all`` (ranks only, when
    metrics need it) the whole batch's targets.
    """

    x: Array | None
    y: Array | None
    w: Array | None
    mass: float
    judged: int
    rows: int
    part: slice
    y_all: Array | None = None


class InferencePreparer:
    """Host batches to :class:`Rows` for ``predict`` and scoring (no masks, no class weights)."""

    def __init__(
        self, net: Any, comm: Communicator | None = None, *, gather: bool = False, need_y: bool = False
    ) -> None:
        self.net = net
        self.comm = comm if comm is not None and comm.size > 1 else None
        self.gather = gather and self.comm is not None
        self.need_y = need_y
        self.index = 0

    def __call__(self, batch: streams.Batch) -> Rows:
        with self.net.backend.scope():
            return self._prepare(batch)

    def _prepare(self, batch: streams.Batch) -> Rows:
        net, index = self.net, self.index
        self.index += 1
        x = host_features(net, batch.x, index)
        n = int(x.shape[0])
        part = slice(0, n) if self.comm is None else self.comm.rows(n)
        if self.need_y and batch.y is None:
            raise ValueError("evaluate needs targets: pass y, or batches (X_b, y_b[, w_b])")
        y = None if batch.y is None else host_targets(net, batch.y, n, index)
        w = None if batch.w is None else host_weights(batch.w, n, index).astype(net.dtype)[part]
        mass = float(part.stop - part.start) if w is None else float(np.sum(w, dtype=np.float64))
        to, mine = net.backend.asarray, part.stop > part.start
        return Rows(
            inputs.scaled(net, to(x[part])) if mine else None,
            None if y is None or not mine else to(y[part]),
            None if w is None or not mine else to(w),
            mass,
            0 if y is None or not mine else _judged(net, y[part], w),
            n,
            part,
            to(y) if self.gather and y is not None else None,
        )


def _judged(net: Any, y: np.ndarray, w: np.ndarray | None) -> int:
    rows = int(y.shape[0]) if w is None else int(np.count_nonzero(w))
    binary = not isinstance(net.loss, CategoricalCrossentropy)
    return rows * (int(y.shape[1]) if binary and y.ndim > 1 else 1)


def _part(comm: Communicator, n: int, w: np.ndarray | None) -> tuple[float, slice, bool]:
    """This rank's share of the batch weight, its rows, and whether it has none (or none weighted)."""
    part = comm.rows(n)
    if w is None:
        mine, whole = float(part.stop - part.start), float(n)
    else:
        mine, whole = float(w[part].sum()), float(w.sum())
    if mine == 0.0:
        return 0.0, part, True
    return mine / whole, part, False

"""Host batches to device batches: what ``fit``, ``predict`` and ``evaluate`` stream.

Data that is not copied whole to the device (a NumPy memmap, arrays with
``device_data=False``, an iterable of batches, an :mod:`xpnet.data.streams`
source) arrives as host :class:`~xpnet.data.streams.Batch` es. A
:class:`Preparer` checks each one on the host (no device sync), applies the
network's input scaling, draws its dropout masks when training, keeps this
rank's rows of it in data-parallel training, and moves it to the device as a
:class:`Ready` batch. It runs in the background thread of a
:class:`~xpnet.data.streams.Prefetcher`, so every use of the network's host
generator happens there, in the order the in-memory path uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import streams
from ..distributed import Communicator
from ..nn.losses import CategoricalCrossentropy
from . import inputs

Array = Any


def streamed(X: Any, device_data: bool) -> bool:
    """Whether ``fit`` streams ``X`` from the host rather than copying it whole to the device."""
    if not device_data or isinstance(X, np.memmap):
        return True
    return isinstance(X, streams.BatchSource) or streams._looks_like_batches(X)


def source_of(net: Any, X: Any, y: Any, *, need_y: bool = False) -> streams.BatchSource:
    """``X`` (with ``y``) as a batch source on the host; the network is built for its width if known."""
    if X is None:
        raise ValueError("X is None; expected an array, a memmap or an iterable of batches")
    if not isinstance(X, (np.ndarray, streams.BatchSource)) and not streams._looks_like_batches(X):
        X = inputs.numeric(net, X, "X")
        y = None if y is None else inputs.numeric(net, y, "y")
    source = streams.as_source(X, y)
    width = _width(source)
    if width is not None and not net.built:
        net.build(width)
    if isinstance(source, streams.ArraySource):
        if source.n_rows == 0:
            raise ValueError("X is empty: it has no samples")
        if need_y and source.y is None:
            raise ValueError("y is None; expected one target per sample (or pass X as batches)")
    return source


def _width(source: Any) -> int | None:
    if isinstance(source, streams.ArraySource):
        return int(source.X.shape[1])
    features = getattr(source, "features", None)
    return None if features is None else len(features)


def refuse_in_memory_options(options: dict[str, Any]) -> None:
    """ValueError naming the options given that need in-memory data on one process."""
    given = [
        k
        for k, v in options.items()
        if v is not None and not (isinstance(v, (float, int, list, tuple, dict)) and not v)
    ]
    if given:
        raise ValueError(
            f"{given} need in-memory arrays on one process; with streamed or distributed data give "
            "sample weights as (X_b, y_b, w_b) batches and validation data as validation_data"
        )


# -- checks on the host ----------------------------------------------------------------------------


def host_features(net: Any, x: np.ndarray, index: int) -> np.ndarray:
    """A batch's features in the network's dtype, checked (on the host: no device sync)."""
    x = np.asarray(x, dtype=net.dtype)
    if not net.built:
        net.build(int(x.shape[1]))
    if x.shape[1] != net.in_features:
        raise ValueError(
            f"batch {index}: X_b has {x.shape[1]} features, but the network expects {net.in_features}"
        )
    with np.errstate(all="ignore"):
        finite = bool(np.isfinite(x.sum()))
    if not finite and not bool(np.isfinite(x).all()):
        raise ValueError(f"batch {index}: X_b contains NaN or infinity; remove or impute those values")
    return x


def host_targets(net: Any, y: Any, rows: int, index: int) -> np.ndarray:
    """A batch's targets as ``inputs.targets`` makes them, on the host."""
    if y is None:
        raise ValueError(f"batch {index} has no targets; expected (X_b, y_b) or (X_b, y_b, w_b)")
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"batch {index}: y_b has dtype {y.dtype}; expected numbers")
    k = net.out_features
    if isinstance(net.loss, CategoricalCrossentropy) and y.ndim == 1:
        if y.dtype.kind == "f" and not bool(np.all(y == np.round(y))):
            raise ValueError(f"batch {index}: y_b must hold integer class labels 0..{k - 1}")
        if y.size and (y.min() < 0 or y.max() >= k):
            bad = y.min() if y.min() < 0 else y.max()
            raise ValueError(f"batch {index}: y_b has label {bad}, but the network has {k} outputs")
        return y.astype(np.int32)
    y = y.astype(net.dtype).reshape(rows, -1)
    if y.shape[1] != k:
        raise ValueError(f"batch {index}: y_b must have shape ({rows},) or ({rows}, {k}), got {y.shape}")
    if not bool(np.isfinite(y).all()):
        raise ValueError(f"batch {index}: y_b contains NaN or infinity")
    if net._classification and not bool(np.all((y >= 0) & (y <= 1))):
        raise ValueError(f"batch {index}: y_b must hold targets in [0, 1] for {net.loss.name}")
    return y


# -- device batches ----------------------------------------------------------------------------------


@dataclass
class Ready:
    """A batch on the device, with what the step needs beside it.

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
    """Turns host training batches into :class:`Ready` device batches (run in the prefetch thread)."""

    def __init__(self, net: Any, comm: Communicator | None, train: bool) -> None:
        self.net = net
        self.comm = comm
        self.draw = net._draw() if train else None
        self.index = 0

    def __call__(self, batch: streams.Batch) -> Ready:
        with self.net.backend.scope():  # this thread's arrays on the network's device (CuPy)
            return self._prepare(batch)

    def _prepare(self, batch: streams.Batch) -> Ready:
        net, index = self.net, self.index
        self.index += 1
        x = host_features(net, batch.x, index)
        n = int(x.shape[0])
        y = host_targets(net, batch.y, n, index)
        w = None if batch.w is None else np.asarray(batch.w, dtype=net.dtype)
        noise = None if self.draw is None else self.draw(n)
        share, part, empty = 1.0, slice(0, n), False
        if self.comm is not None and self.comm.size > 1:
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


class InferencePreparer(Preparer):
    """Host batches to device batches for ``predict`` and ``evaluate`` (no masks; targets optional)."""

    def __init__(self, net: Any) -> None:
        super().__init__(net, None, False)

    def _prepare(self, batch: streams.Batch) -> Ready:
        net, index = self.net, self.index
        self.index += 1
        x = host_features(net, batch.x, index)
        n = int(x.shape[0])
        y = None if batch.y is None else net.backend.asarray(host_targets(net, batch.y, n, index))
        w = None if batch.w is None else net.backend.asarray(np.asarray(batch.w, dtype=net.dtype))
        return Ready(inputs.scaled(net, net.backend.asarray(x)), y, w, None, n, n, 1.0, False)


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

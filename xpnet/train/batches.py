"""Host batches to device batches: what ``fit``, ``predict`` and ``evaluate`` stream.

Data that is not copied whole to the device (a NumPy memmap, arrays with
``device_data=False``, an iterable of batches, an :mod:`xpnet.data.streams`
source) becomes a batch source (:func:`source_of`; ``fit``'s options act on it
through :func:`class_table_of` and :func:`split_source`) and arrives as host
batches (:class:`~xpnet.data.streams.Batch`). A :class:`Preparer` checks each
one on the host (no device sync), weighs its rows by their labels' class
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
from . import inputs, weighting

Array = Any


def streamed(X: Any, device_data: bool) -> bool:
    """Whether ``fit`` streams ``X`` from the host rather than copying it whole to the device."""
    if not device_data or isinstance(X, np.memmap):
        return True
    return isinstance(X, streams.BatchSource) or streams._looks_like_batches(X)


def source_of(
    net: Any, X: Any, y: Any, *, need_y: bool = False, sample_weight: Any = None
) -> streams.BatchSource:
    """``X`` (with ``y`` and ``sample_weight``) as a batch source on the host.

    The network is built for the source's width when it is known. Weights of
    arrays or memmaps are checked in chunks and stay where they are.
    """
    if X is None:
        raise ValueError("X is None; expected an array, a memmap or an iterable of batches")
    rows = not isinstance(X, streams.BatchSource) and not streams._looks_like_batches(X)
    if sample_weight is not None and not rows:
        raise ValueError(
            "sample_weight must be left out when X is batches or a batch source: give each batch's "
            "weights as its third element, (X_b, y_b, w_b) (a file reader: its weight column)"
        )
    if rows and not isinstance(X, np.ndarray):
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
        if sample_weight is not None:
            streams.check_mapped(sample_weight, "sample_weight")
            weight = weighting.stream_weights(sample_weight, source.n_rows)
            source = streams.ArraySource(source.X, source.y, weight)
    return source


def _width(source: Any) -> int | None:
    if isinstance(source, streams.ArraySource):
        return int(source.X.shape[1])
    features = getattr(source, "features", None)
    return None if features is None else len(features)


def class_table_of(net: Any, source: streams.BatchSource, class_weight: Any) -> dict[int, float] | None:
    """``class_weight`` as ``{label: weight}`` for streamed batches (None when not given).

    ``"balanced"`` counts the labels first, which arrays and memmaps allow
    (read in chunks); other sources are refused with what to pass instead.
    """
    if class_weight is None:
        return None
    counts = None
    if isinstance(class_weight, str) and isinstance(source, streams.ArraySource) and source.y is not None:
        y, step, binary = source.y, weighting.CHUNK_ROWS, net._model().binary
        parts = (y[i : i + step] for i in range(0, len(y), step))
        chunks = (
            weighting.labels_of(host_targets(net, part, len(part), i), binary=binary)
            for i, part in enumerate(parts)
        )
        counts = weighting.label_counts(chunks)
    labels = weighting.label_count(net.out_features, binary=net._model().binary) if net.built else None
    return weighting.class_table(class_weight, counts, labels)


def split_source(source: streams.BatchSource, split: Any, validation: Any) -> tuple[streams.BatchSource, Any]:
    """The training rows and the validation data after ``validation_split`` (the last rows, as in memory)."""
    if not weighting.split_fraction(split):
        return source, validation
    if not isinstance(source, streams.ArraySource):
        raise ValueError(
            "validation_split needs arrays or a memmap, whose rows are known before training; with "
            "batches or a file reader give validation_data instead (arrays, or batches of its own)"
        )
    train = weighting.split_rows(source.n_rows, split)
    if validation is not None:
        raise ValueError("give validation_data or validation_split, not both")
    X, y, w = source.X, source.y, source.sample_weight
    if w is not None and not weighting.any_positive(w[:train]):
        raise ValueError("every training sample has weight 0 after validation_split")
    head = streams.ArraySource(
        X[:train],
        None if y is None else y[:train],
        None if w is None else w[:train],
        block_rows=source.block_rows,
    )
    return head, streams.ArraySource(X[train:], None if y is None else y[train:])


# -- checks on the host ----------------------------------------------------------------------------


def host_features(net: Any, x: np.ndarray, index: int) -> np.ndarray:
    """A batch's features in the network's dtype, checked (on the host: no device sync) as
    in-memory features are: real numbers only, the network's width, finite."""
    x = np.asarray(inputs.real(np.asarray(x), f"batch {index}: X_b"), dtype=net.dtype)
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
    """A batch's targets as ``inputs.targets`` makes them (target scaling included), on the host."""
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
    scaling = net.metadata.get("target_scaling")
    if scaling and not net._classification:
        mean, scale = (
            np.asarray(scaling[key], dtype=np.float64).astype(net.dtype) for key in ("mean", "scale")
        )
        y = (y - mean) / scale
    if not bool(np.isfinite(y).all()):
        raise ValueError(f"batch {index}: y_b contains NaN or infinity")
    if net._classification and not bool(np.all((y >= 0) & (y <= 1))):
        raise ValueError(f"batch {index}: y_b must hold targets in [0, 1] for {net.loss.name}")
    return y


def host_weights(w: Any, rows: int, index: int) -> np.ndarray:
    """A batch's sample weights as float64, checked: ``(rows,)``, finite, ``>= 0``."""
    w = np.asarray(w)
    if w.dtype.kind not in "iuf":
        raise ValueError(f"batch {index}: w_b has dtype {w.dtype}; expected numbers")
    w = w.astype(np.float64)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (rows,):
        raise ValueError(f"batch {index}: w_b must have shape ({rows},), one weight per row, got {w.shape}")
    if not bool(np.all(np.isfinite(w))) or bool(np.any(w < 0)):
        raise ValueError(f"batch {index}: w_b must hold finite weights >= 0")
    return w


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

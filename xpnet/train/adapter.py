"""The data adapter: what ``fit``, ``predict`` and ``evaluate`` are given, decided once at their entry.

In the spirit of Keras's data adapters, :func:`~xpnet.data.streams.kind_of`
answers the one question "what is this input?" and :func:`for_fit` /
:func:`for_inference` turn the answer into what the loops consume:

- :class:`InMemory`: features, targets and row weights whole on the device,
  checked (``fit``'s device feed, ``predict``, ``evaluate``);
- :class:`Streamed`: a :class:`~xpnet.data.streams.BatchSource` read batch by
  batch on the host, each batch checked by the same functions as in-memory
  data (:mod:`xpnet.train.checks`) as it is prepared, with the class-weight
  table applied to its labels.

A DataFrame is matched to the fitted columns and encoded before anything
else, whichever way its rows then go, and what ``fit`` learns from the data
(column names, encoder, target scaling; :func:`~xpnet.train.inputs.prepare`)
is learned from arrays, DataFrames and memmaps alike, so ``device_data=True``
and ``False`` give the same numbers for every kind of input. In-memory host
features that come back to the same network unchanged are not copied to the
device again (:mod:`xpnet.train.copies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import streams
from . import checks, copies, inputs, weighting

Array = Any
STREAMED = ("source", "batches", "memmap")
"""Kinds that are read batch by batch whatever ``device_data`` says (a memmap is never copied whole)."""


@dataclass
class InMemory:
    """Rows whole on the device: features ``x``, targets ``t`` (None to predict), row weights."""

    x: Array
    t: Array | None = None
    weight: Array | None = None

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Streamed:
    """Rows read batch by batch: the source, and ``class_weight`` as a ``{label: weight}`` table."""

    source: streams.BatchSource
    classes: dict[int, float] | None = None


Data = InMemory | Streamed


def for_fit(
    net: Any,
    X: Any,
    y: Any,
    *,
    device_data: bool,
    distributed: bool,
    preprocess: str | None,
    sample_weight: Any,
    class_weight: Any,
    validation_data: Any,
    validation_split: Any,
) -> tuple[Data, Data | None]:
    """What ``fit`` trains on and validates on.

    ``distributed`` (several ranks) streams in-memory data too: each rank
    reads its rows of every global batch.
    """
    kind = streams.kind_of(X)
    if kind in ("rows", "frame", "memmap"):
        inputs.prepare(net, X, y, preprocess, sample_weight)
    val = validation(net, validation_data)
    if kind in STREAMED or distributed or not device_data:
        source = _source(net, X, y, kind, sample_weight=sample_weight, need_y=True)
        classes = _class_table(net, source, class_weight)
        source, val = _split_source(source, validation_split, val)
        return Streamed(source, classes), val
    x = copies.features(net, X)
    data = InMemory(x, inputs.targets(net, y, int(x.shape[0])))
    return _split(net, data, val, validation_split, sample_weight, class_weight)


def for_inference(net: Any, X: Any, y: Any = None, *, need_y: bool = False) -> Data:
    """What ``predict`` (``y`` left out) or ``evaluate`` reads."""
    kind = streams.kind_of(X)
    if kind in STREAMED:
        return Streamed(_source(net, X, y, kind, need_y=need_y))
    x = copies.features(net, X)
    return InMemory(x, None if y is None else inputs.targets(net, y, int(x.shape[0])))


def validation(net: Any, data: Any) -> Data | None:
    """``validation_data``: a pair ``(X_val, y_val)`` (a memmap ``X_val`` streamed), batches or a source."""
    if data is None:
        return None
    kind = streams.kind_of(data)
    if kind in ("source", "batches"):
        return Streamed(_source(net, data, None, kind))
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "validation_data must be a pair (X_val, y_val), batches (X_b, y_b[, w_b]) or a batch source"
        )
    Xv, yv = data
    kind = streams.kind_of(Xv)
    if kind in STREAMED:
        return Streamed(_source(net, Xv, yv, kind, need_y=True))
    xv = inputs.features(net, Xv, "validation X")
    return InMemory(xv, inputs.targets(net, yv, int(xv.shape[0]), "validation y"))


# -- streamed ------------------------------------------------------------------------------------------


def _source(
    net: Any, X: Any, y: Any, kind: str, *, sample_weight: Any = None, need_y: bool = False
) -> streams.BatchSource:
    """``X`` (with ``y`` and ``sample_weight``) as a batch source on the host.

    Rows (arrays, DataFrames) are matched, encoded and converted as in memory;
    a memmap stays a memmap. The network is built for the source's width when
    it is known. Weights of rows are checked in chunks and stay where they are.
    """
    if kind == "source":
        if y is not None or sample_weight is not None:
            given = [n for n, v in (("y", y), ("sample_weight", sample_weight)) if v is not None]
            raise ValueError(f"{given} must be left out when X is a batch source: the source gives them")
        source: streams.BatchSource = X
    elif kind == "batches":
        if sample_weight is not None:
            raise ValueError(
                "sample_weight must be left out when X is batches or a batch source: give each batch's "
                "weights as its third element, (X_b, y_b, w_b) (a file reader: its weight column)"
            )
        if y is not None:
            raise ValueError("y and sample_weight must be left out when X is an iterable of batches")
        source = streams.IterableSource(X)
    else:
        rows = X if kind == "memmap" else inputs.rows(net, X, "X")
        targets = None if y is None or (kind == "memmap" and isinstance(y, np.ndarray)) else y
        if targets is not None:
            targets = inputs.numeric(net, targets, "y")
        source = streams.ArraySource(rows, y if targets is None else targets)
    return _checked(net, source, sample_weight, need_y)


def _checked(net: Any, source: streams.BatchSource, sample_weight: Any, need_y: bool) -> streams.BatchSource:
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


def _class_table(net: Any, source: streams.BatchSource, class_weight: Any) -> dict[int, float] | None:
    """``class_weight`` as ``{label: weight}`` for streamed batches (None when not given).

    ``"balanced"`` counts the labels first, which arrays and memmaps allow
    (read in chunks); other sources are refused with what to pass instead.
    """
    if class_weight is None:
        return None
    counts = None
    if isinstance(class_weight, str) and isinstance(source, streams.ArraySource) and source.y is not None:
        y, step, binary = source.y, checks.CHUNK_ROWS, net._model().binary
        parts = (y[i : i + step] for i in range(0, len(y), step))
        chunks = (
            weighting.labels_of(
                inputs.host_targets(net, part, len(part), f"y (rows from {i * step})"), binary=binary
            )
            for i, part in enumerate(parts)
        )
        counts = weighting.label_counts(chunks)
    labels = weighting.label_count(net.out_features, binary=net._model().binary) if net.built else None
    return weighting.class_table(class_weight, counts, labels)


def _split_source(
    source: streams.BatchSource, split: Any, val: Data | None
) -> tuple[streams.BatchSource, Any]:
    """The training rows and the validation data after ``validation_split`` (the last rows, as in memory)."""
    if not weighting.split_fraction(split):
        return source, val
    if not isinstance(source, streams.ArraySource):
        raise ValueError(
            "validation_split needs arrays or a memmap, whose rows are known before training; with "
            "batches or a file reader give validation_data instead (arrays, or batches of its own)"
        )
    train = weighting.split_rows(source.n_rows, split)
    if val is not None:
        raise ValueError("give validation_data or validation_split, not both")
    X, y, w = source.X, source.y, source.sample_weight
    if w is not None and not checks.any_positive(w[:train]):
        raise ValueError("every training sample has weight 0 after validation_split")
    head = streams.ArraySource(
        X[:train],
        None if y is None else y[:train],
        None if w is None else w[:train],
        block_rows=source.block_rows,
    )
    return head, Streamed(streams.ArraySource(X[train:], None if y is None else y[train:]))


# -- in memory -----------------------------------------------------------------------------------------


def _split(
    net: Any, data: InMemory, val: Data | None, split: Any, sample_weight: Any, class_weight: Any
) -> tuple[InMemory, Data | None]:
    """Training rows and device weights after ``validation_split``; the validation data."""
    x, t, n = data.x, data.t, data.rows
    assert t is not None
    binary = net._model().binary
    weight = weighting.combined(sample_weight, class_weight, t, n, binary=binary, outputs=net.out_features)
    train = weighting.split_rows(n, split)
    if split:
        if val is not None:
            raise ValueError("give validation_data or validation_split, not both")
        val = InMemory(x[train:, ...], t[train:, ...])
        x, t = x[:train, ...], t[:train, ...]
        weight = None if weight is None else weight[:train]
        if weight is not None and not weight.any():
            raise ValueError("every training sample has weight 0 after validation_split")
    device_weight = None if weight is None else net.backend.asarray(weight, net.dtype)
    return InMemory(x, t, device_weight), val

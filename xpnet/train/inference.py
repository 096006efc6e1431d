"""Inference: ``predict``, ``predict_proba`` and ``evaluate`` on the pure forward pass.

:class:`Predictor` gives :class:`~xpnet.Network` these verbs; the functions
below are what they (and ``fit``, for its metrics and validation) run.

Every function here reads the network's parameters and layer state and keeps
nothing afterwards (no array is stored on a layer), so they are safe to call
from several threads, also while another thread runs ``fit``. In-memory data
goes to the device whole and runs in batches of ``batch_size`` rows (one pass
when None); streamed data (a memmap, an iterable of batches, an
:mod:`xpnet.data.streams` source) is read batch by batch in the background.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..backend import Backend
from ..data import streams
from ..engine import step
from ..nn.activations import get_activation
from ..nn.losses import CategoricalCrossentropy, Loss
from ..nn.metrics import Metric, correct_count, get_metric, prediction_count
from . import adapter, inputs
from .batches import InferencePreparer, Rows

Array = Any
STREAM_BATCH = 4096
"""Rows per batch when streamed data is predicted or evaluated without a ``batch_size``."""


def infer(net: Any, x: Array, keep_cache: bool = True) -> tuple[Array, Any]:
    """Output and last cache (None without ``keep_cache``) of the pure forward pass on device rows
    ``x``, as the network's engine runs it (compiled on JAX); nothing is kept anywhere."""
    params, _, states = net._arrays()
    return net._engine().inference(net.layers)(params, states, x, keep_cache=keep_cache)


def metric_list(net: Any, metrics: Sequence[Any] | None) -> list[Metric]:
    """Fresh accumulators for ``fit``'s or ``evaluate``'s ``metrics``, for the network's task."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, Metric)) or callable(metrics):
        metrics = [metrics]
    if isinstance(net.loss, CategoricalCrossentropy):
        task = "multiclass"
    else:
        task = "binary" if net._classification else "regression"
    return [get_metric(m, task) for m in metrics]


class Predictor:
    """The inference verbs of :class:`~xpnet.Network`: ``predict``, ``predict_proba`` and ``evaluate``."""

    backend: Backend
    loss: Loss
    _classification: bool
    _model: Callable[[], step.Model]

    def predict(self, X: Any, *, batch_size: int | None = None) -> Array:
        """Outputs after the final activation, on the network's backend.

        With a final sigmoid/softmax these are probabilities; with a linear
        output and a cross-entropy loss they are logits. A network with a
        ``target_scaling`` (see :mod:`xpnet.train.inputs`) answers in the
        target's units. Safe to call from several threads, also while another
        thread runs ``fit``.
        """
        with self.backend.scope():  # CuPy: every array on the network's device
            data = adapter.for_inference(self, X)
            if isinstance(data, adapter.Streamed):
                parts = list(stream_outputs(self, data.source, batch_size))
                return parts[0] if len(parts) == 1 else self.backend.xp.concat(parts, axis=0)
            out = inputs.outputs(self, _outputs(self, data.x, batch_size))
            return inputs.owned(out, data.x, self.backend.xp)

    def predict_proba(self, X: Any, *, batch_size: int | None = None) -> Array:
        """Class probabilities for classification losses (applies sigmoid/softmax to logits)."""
        if not self._classification:
            raise ValueError(f"predict_proba needs a classification loss, not {self.loss.name!r}")
        out = self.predict(X, batch_size=batch_size)
        if self._model().fused:
            return out
        return get_activation(self.loss.output_activation).forward(out, self.backend.xp)

    def evaluate(
        self, X: Any, y: Any = None, *, batch_size: int | None = None, metrics: Sequence[Any] | None = None
    ) -> dict[str, float]:
        """Loss (and accuracy for classification losses) on ``(X, y)``, without training.

        ``metrics`` as in :meth:`fit` adds their values under their names.
        ``X`` may be streamed as in :meth:`fit` (a memmap, a batch source, or
        batches ``(X_b, y_b[, w_b])`` with ``y`` left out); the loss and
        accuracy are then weighted by the batches' sample weights (rows of
        weight 0 are not judged), the metrics are not.
        """
        chosen = metric_list(self, metrics)
        with self.backend.scope():  # CuPy: every array on the network's device
            data = adapter.for_inference(self, X, y, need_y=True)
            if isinstance(data, adapter.InMemory) and data.t is None:
                raise ValueError("y is None; expected one target per sample")
            return score(self, data, batch_size, chosen)


def _outputs(net: Any, x: Array, batch_size: int | None) -> Array:
    if batch_size is None:
        return infer(net, x, keep_cache=False)[0]
    batch_size = inputs.positive_int("batch_size", batch_size)
    n = int(x.shape[0])
    parts = [infer(net, x[i : min(i + batch_size, n), ...], False)[0] for i in range(0, n, batch_size)]
    return net.backend.xp.concat(parts, axis=0)


def score(
    net: Any, data: Any, batch_size: int | None, metrics: Sequence[Metric] = (), comm: Any = None
) -> dict[str, float]:
    """Loss, accuracy (classification) and ``metrics`` of ``data``, with the network as it is now.

    Parameters
    ----------
    data : InMemory or Streamed
        Features and targets on the device, or streamed data (read in the
        background), as :mod:`xpnet.train.adapter` makes them.
    batch_size : int, optional
        Rows per forward pass (None: device data in one pass, streamed data
        in batches of ``STREAM_BATCH``).
    comm : Communicator, optional
        With several ranks each scores its rows of every batch
        (:meth:`~xpnet.distributed.Communicator.rows`); the sums are added
        over ranks in one allreduce, and for ``metrics`` each batch's outputs
        are gathered to every rank, so every rank returns what one process would.
    """
    comm = comm if comm is not None and comm.size > 1 else None
    gather = bool(metrics) and comm is not None
    if isinstance(data, adapter.InMemory):
        x, t = data.x, data.t
        size = int(x.shape[0]) if batch_size is None else inputs.positive_int("batch_size", batch_size)
        return _scores(net, _array_rows(net, x, t, size, comm, gather), metrics, comm)
    preparer = InferencePreparer(net, comm, gather=gather, need_y=True)
    with streams.Prefetcher(data.source.batches(batch_size or STREAM_BATCH), preparer) as ready:
        return _scores(net, ready, metrics, comm)


def _array_rows(net: Any, x: Array, t: Array, size: int, comm: Any, gather: bool) -> Iterator[Rows]:
    """Batches of ``size`` rows of device arrays; with ranks, this rank's rows of each."""
    n, binary = int(x.shape[0]), net._model().binary
    for i in range(0, n, size):
        rows = min(i + size, n) - i
        part = slice(0, rows) if comm is None else comm.rows(rows)
        a, b = i + part.start, i + part.stop
        mine = (x[a:b, ...], t[a:b, ...]) if b > a else (None, None)
        judged = 0 if mine[1] is None else prediction_count(mine[1], binary=binary)
        whole = t[i : i + rows, ...] if gather else None
        yield Rows(mine[0], mine[1], None, float(b - a), judged, rows, part, whole)


def _scores(net: Any, batches: Iterable[Rows], metrics: Sequence[Metric], comm: Any) -> dict[str, float]:
    xp, model = net.backend.xp, net._model()
    dtype, device = net.backend.dtype(net.dtype), net.backend.device
    total = xp.zeros((), dtype=dtype, device=device)
    correct = xp.zeros((), dtype=dtype, device=device)
    mass, judged = 0.0, 0
    for metric in metrics:
        metric.reset()
    for b in batches:
        prob = None
        if b.x is not None:
            # Rows that all weigh 0 add nothing to the loss (their weighted mean would be 0 / 0).
            w = b.w if b.mass > 0 else None
            value, _, prob, _ = step.loss_terms(model, *infer(net, b.x), b.y, w, xp)
            total = total + value * b.mass
            if net._classification:
                correct = correct + correct_count(prob, b.y, xp, binary=model.binary, sample_weight=b.w)
        mass += b.mass
        judged += b.judged
        if metrics:
            whole = prob if comm is None else _gathered(net, comm, prob, b)
            for metric in metrics:
                metric.update(whole, b.y if comm is None else b.y_all)
    sums = [float(total), mass, float(correct), float(judged)]
    if comm is not None:
        sums = comm.allreduce_sum(np.array(sums, dtype=np.float64)).tolist()
    result = {"loss": sums[0] / max(sums[1], 1e-300)}
    if net._classification:
        result["accuracy"] = sums[2] / max(sums[3], 1.0)
    for metric in metrics:
        result.setdefault(metric.name, metric.result())
    return result


def _gathered(net: Any, comm: Any, prob: Array | None, b: Rows) -> Array:
    """The whole batch's outputs on every rank: each rank's rows in place, zeros elsewhere, summed."""
    xp, k = net.backend.xp, net.out_features
    dtype, device = net.backend.dtype(net.dtype), net.backend.device

    def zeros(rows: int) -> Array:
        return xp.zeros((rows, k), dtype=dtype, device=device)

    mine = zeros(0) if prob is None else xp.reshape(prob, (-1, k))
    return comm.allreduce_sum(xp.concat([zeros(b.part.start), mine, zeros(b.rows - b.part.stop)], axis=0))


# -- streamed data ---------------------------------------------------------------------------------------


def stream_outputs(net: Any, source: streams.BatchSource, batch_size: int | None) -> Iterator[Array]:
    """The outputs of each batch of a source (no training, no masks)."""
    with streams.Prefetcher(source.batches(batch_size or STREAM_BATCH), InferencePreparer(net)) as ready:
        for b in ready:
            yield infer(net, b.x, keep_cache=False)[0]

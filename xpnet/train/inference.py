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

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..backend import Backend
from ..data import streams
from ..nn.activations import get_activation
from ..nn.losses import CategoricalCrossentropy, Loss
from ..nn.metrics import Metric, correct_count, get_metric, prediction_count
from . import inputs, step
from .batches import InferencePreparer, Ready, refuse_in_memory_options, source_of, streamed

Array = Any
STREAM_BATCH = 4096
"""Rows per batch when streamed data is predicted or evaluated without a ``batch_size``."""


def infer(net: Any, x: Array) -> tuple[Array, Any]:
    """Output and last cache of the pure forward pass on device rows ``x``; nothing is kept anywhere."""
    params, _, states = net._arrays()
    out, caches, _ = step.forward(
        net.layers, params, states, x, training=False, xp=net.backend.xp, keep_caches=False
    )
    return out, caches[-1]


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
            if streamed(X, True):
                parts = [out for _, out, _ in stream_outputs(self, X, batch_size)]
                return parts[0] if len(parts) == 1 else self.backend.xp.concat(parts, axis=0)
            x = inputs.features(self, X)
            return inputs.owned(inputs.outputs(self, _outputs(self, x, batch_size)), x, self.backend.xp)

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
        batches ``(X_b, y_b[, w_b])`` with ``y`` left out); the loss is then
        weighted by the batches' sample weights (metrics need in-memory data).
        """
        if streamed(X, True):
            refuse_in_memory_options({"metrics": metrics})
            with self.backend.scope():
                return evaluate_stream(self, X, y, batch_size)
        chosen = metric_list(self, metrics)
        with self.backend.scope():
            x = inputs.features(self, X)
            return evaluate_arrays(self, x, inputs.targets(self, y, int(x.shape[0])), batch_size, chosen)


def _outputs(net: Any, x: Array, batch_size: int | None) -> Array:
    if batch_size is None:
        return infer(net, x)[0]
    batch_size = inputs.positive_int("batch_size", batch_size)
    n = int(x.shape[0])
    parts = [infer(net, x[i : min(i + batch_size, n), ...])[0] for i in range(0, n, batch_size)]
    return net.backend.xp.concat(parts, axis=0)


def evaluate_arrays(
    net: Any, x: Array, t: Array, batch_size: int | None, metrics: Sequence[Metric] = ()
) -> dict[str, float]:
    """Loss, accuracy (classification) and ``metrics`` of device rows ``x`` against targets ``t``."""
    xp = net.backend.xp
    model = net._model()
    n = int(x.shape[0])
    size = n if batch_size is None else inputs.positive_int("batch_size", batch_size)
    total = xp.zeros((), dtype=x.dtype, device=net.backend.device)
    correct = xp.zeros((), dtype=x.dtype, device=net.backend.device)
    for metric in metrics:
        metric.reset()
    for i in range(0, n, size):
        xb, tb = x[i : min(i + size, n), ...], t[i : min(i + size, n), ...]
        value, _, prob, _ = step.loss_terms(model, *infer(net, xb), tb, None, xp)
        total = total + value * xb.shape[0]
        if net._classification:
            correct = correct + correct_count(prob, tb, xp, binary=model.binary)
        for metric in metrics:
            metric.update(prob, tb)
    result = {"loss": float(total) / n}
    if net._classification:
        result["accuracy"] = float(correct) / prediction_count(t, binary=model.binary)
    for metric in metrics:
        result.setdefault(metric.name, metric.result())
    return result


# -- streamed data ---------------------------------------------------------------------------------------


def stream_outputs(net: Any, X: Any, batch_size: int | None) -> Iterator[tuple[Ready, Array, Any]]:
    """``(batch, outputs, last cache)`` for each batch of streamed ``X`` (no training, no masks)."""
    source = source_of(net, X, None) if not isinstance(X, streams.BatchSource) else X
    with streams.Prefetcher(source.batches(batch_size or STREAM_BATCH), InferencePreparer(net)) as ready:
        for b in ready:
            out, cache = infer(net, b.x)
            yield b, out, cache


def evaluate_stream(net: Any, X: Any, y: Any, batch_size: int | None) -> dict[str, float]:
    """Loss (weighted by the batches' weights) and accuracy over streamed data."""
    if y is not None:
        X = source_of(net, X, y)
    model = net._model()
    xp = net.backend.xp
    total: Any = 0.0
    correct: Any = 0
    weight = 0.0
    judged = 0
    for b, out, cache in stream_outputs(net, X, batch_size):
        if b.y is None:
            raise ValueError("evaluate needs targets: pass y, or batches (X_b, y_b[, w_b])")
        value, _, prob, _ = step.loss_terms(model, out, cache, b.y, b.w, xp)
        mass = float(b.rows) if b.w is None else float(xp.sum(b.w))
        total = total + value * mass
        weight += mass
        if net._classification:
            correct = correct + correct_count(prob, b.y, xp, binary=model.binary, sample_weight=b.w)
            judged += prediction_count(b.y, binary=model.binary)
    result = {"loss": float(total) / max(weight, 1e-300)}
    if net._classification:
        result["accuracy"] = float(correct) / max(judged, 1)
    return result

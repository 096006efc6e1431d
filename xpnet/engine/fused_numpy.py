"""The fused runner's kernels in NumPy: the reference its GPU kernels follow, run by the CPU tests.

Each method does what :class:`~xpnet.engine.fused.Kernels` says with the
generic math of :mod:`xpnet.nn` (the same formulas, in NumPy with ``out=``),
so a :class:`~xpnet.engine.fused.FusedRunner` on these kernels equals the
generic step to rounding; ``tests/test_fused.py`` proves the runner's loop
(flat buffers, padded batches, masks, the update from device scalars) on
every CPU run, and the GPU tests compare CuPy's kernels with these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend.numpy_kernels import activate_into, derivative_into
from . import fused_updates
from .flat import Packing
from .plan import NormSpec


class NumpyKernels:
    """:class:`~xpnet.engine.fused.Kernels` on NumPy arrays (see the module docstring)."""

    xp: Any = np

    def __init__(self, dtype: Any = None) -> None:
        self.dtype = dtype

    def matmul(self, a: Any, b: Any, out: Any, *, ta: bool = False, tb: bool = False) -> None:
        np.matmul(a.T if ta else a, b.T if tb else b, out=out)

    def gather(self, source: Any, index: Any, out: Any) -> None:
        np.take(source, index, axis=0, out=out)

    def bias_act(self, z: Any, bias: Any, activation: str) -> None:
        if bias is not None:
            np.add(z, bias, out=z)
        if activation != "linear":
            activate_into(activation, z, np.empty_like(z))

    def act_grad(self, grad: Any, y: Any, activation: str, bias_grad: Any) -> None:
        if activation != "linear":
            scratch = np.empty(y.shape, bool if activation == "relu" else y.dtype)
            derivative_into(activation, y, grad, scratch)
        if bias_grad is not None:
            np.add.reduce(grad, axis=0, out=bias_grad)

    def activate(self, x: Any, out: Any, activation: str) -> None:
        np.copyto(out, x)
        self.bias_act(out, None, activation)

    def normalize(
        self, spec: NormSpec, x: Any, rows: int, weight: Any, bias: Any, stats: Any, state: Any, out: Any
    ) -> None:
        xs, (mean, inv) = x[:rows], stats
        count = x.dtype.type(rows)
        if spec.kind == "batch":  # BatchNormalization's math over the real rows
            np.divide(xs.sum(axis=0), count, out=mean)
            centered = xs - mean
            var = (centered * centered).sum(axis=0) / count
            np.divide(1.0, np.sqrt(var + spec.eps), out=inv)
            m = spec.momentum
            unbiased = var * (count / max(count - 1.0, x.dtype.type(1.0)))
            state["running_mean"][...] = state["running_mean"] * (1.0 - m) + mean * m
            state["running_var"][...] = state["running_var"] * (1.0 - m) + unbiased * m
            np.multiply(centered, inv, out=out[:rows])
        else:  # LayerNormalization's, row by row (the padding's statistics are 0)
            mean[...], inv[...] = 0.0, 0.0
            centered = xs - np.mean(xs, axis=1, keepdims=True)
            mean[:rows] = xs.mean(axis=1)
            inv[:rows] = (1.0 / np.sqrt(np.mean(centered * centered, axis=1, keepdims=True) + spec.eps))[:, 0]
            np.multiply(centered, inv[:rows, None], out=out[:rows])
        np.multiply(out[:rows], weight, out=out[:rows])
        np.add(out[:rows], bias, out=out[:rows])
        out[rows:] = 0.0

    def normalize_grad(
        self,
        spec: NormSpec,
        x: Any,
        dy: Any,
        rows: int,
        weight: Any,
        stats: Any,
        dweight: Any,
        dbias: Any,
        dx: Any,
    ) -> None:
        batch = spec.kind == "batch"
        mean, inv = stats if batch else (stats[0][:rows, None], stats[1][:rows, None])
        xhat, dys = (x[:rows] - mean) * inv, dy[:rows]
        np.add.reduce(dys * xhat, axis=0, out=dweight)
        np.add.reduce(dys, axis=0, out=dbias)
        if dx is None:
            return
        dxhat = dys * weight
        if batch:  # BatchNormalization.vjp's
            total, along = dbias * weight, dweight * weight
            np.multiply(dxhat - (total + xhat * along) / x.dtype.type(rows), inv, out=dx[:rows])
        else:  # LayerNormalization.vjp's
            mean_d = np.mean(dxhat, axis=1, keepdims=True)
            mean_dx = np.mean(dxhat * xhat, axis=1, keepdims=True)
            np.multiply(dxhat - mean_d - xhat * mean_dx, inv, out=dx[:rows])
        dx[rows:] = 0.0

    def multiply(self, a: Any, b: Any, out: Any) -> None:
        np.multiply(a, b, out=out)

    def row_scale(self, w: Any, per_sample: int, out: Any) -> None:
        total = w.sum(axis=1, keepdims=True)
        total = np.where(total > 0, total, 1)  # steps whose rows all weigh 0 change nothing
        np.divide(w[..., None], (total * per_sample)[..., None], out=out)

    def loss(
        self, kind: str, z: Any, t: Any, scale: Any, smoothing: float, grad: Any, rows: int, sums: Any
    ) -> None:
        counted = scale[:, 0] != 0
        if kind == "categorical_crossentropy":
            k = z.shape[1]
            y = np.eye(k, dtype=z.dtype)[t] if t.ndim == 1 else t
            if smoothing:
                y = (1.0 - smoothing) * y + smoothing / k
            shifted = z - z.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            total = e.sum(axis=1, keepdims=True)
            p, log_p = e / total, shifted - np.log(total)  # softmax and log_softmax as the generic code
            terms = -(y * log_p).sum(axis=1) * scale[:, 0]
            labels = t if t.ndim == 1 else t.argmax(axis=1)
            hits = (p.argmax(axis=1) == labels) & counted
        elif kind == "binary_crossentropy":
            y = t
            per = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))
            p = _sigmoid(z)
            terms = (per * scale).sum(axis=1)
            hits = ((p > 0.5) == (y > 0.5)).sum(axis=1) * counted
        else:
            diff = z - t
            terms, hits = (diff * diff * scale).sum(axis=1), np.zeros(1)
            np.multiply(diff, scale * 2.0, out=grad)
        if kind != "mse":
            np.multiply(p - y, scale, out=grad)
        sums[0] += float(terms.sum()) * rows
        sums[1] += float(hits.sum())

    def update(self, packing: Packing, optimizer: Any, lr: Any, step: Any, offset: int) -> None:
        number = step[0] + offset
        fused_updates.reference(optimizer, packing.param, packing.grad, packing.state, np, lr[0], number)

    def check(self, buffer: Any, sums: Any) -> None:
        sums[2] = float(bool(np.isfinite(np.add.reduce(buffer)) or np.isfinite(buffer).all()))

    def capture(self, run: Callable[[], None]) -> Callable[[], None]:
        run()  # nothing to record on the CPU: the replay is the call
        return run

    def scope(self) -> Any:
        return contextlib.nullcontext()


def _sigmoid(z: Any) -> Any:
    """The generic stable sigmoid (:func:`xpnet.nn.activations.sigmoid`'s form)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

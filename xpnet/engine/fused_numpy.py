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

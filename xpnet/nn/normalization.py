"""Normalization layers in the pure protocol: ``BatchNormalization`` and ``LayerNormalization``.

Both follow torch (``BatchNorm1d`` and ``LayerNorm`` over the features) and
hold ``params = {"weight", "bias"}`` starting at 1 and 0.

Batch statistics and padding
----------------------------
A compiled epoch pads its last batch with weight-0 rows
(:mod:`xpnet.engine.jax_epochs`). Such rows must not enter the batch mean and
variance, so :meth:`BatchNormalization.draw` gives a column of ones per row
in training; padded rows get zeros in its place, and the statistics are
taken over the rows whose mark is 1; rows marked 0 output 0. No random
numbers are consumed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend
from .layers import LAYERS, Layer, Params, State

Array = Any


def _positive(name: str, value: Any, *, below_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if below_one and not value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


class _Affine(Layer):
    """A per-feature ``weight`` (ones) and ``bias`` (zeros) on top of a normalization."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = _positive("eps", eps)

    def parameter_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """``{"weight": (in_features,), "bias": (in_features,)}``."""
        return {"weight": (in_features,), "bias": (in_features,)}

    def build(self, in_features: int, backend: Backend, dtype: str, rng: np.random.Generator) -> None:
        super().build(in_features, backend, dtype, rng)
        self.params = {
            "weight": backend.asarray(np.ones(in_features), dtype, copy=True),
            "bias": backend.asarray(np.zeros(in_features), dtype, copy=True),
        }


class BatchNormalization(_Affine):
    """Normalizes each feature over the batch, as ``torch.nn.BatchNorm1d``.

    In training the output is ``(x - mean) / sqrt(var + eps) * weight + bias``
    with the batch mean and biased variance, and the running statistics move
    towards the batch's: ``running = (1 - momentum) * running + momentum * batch``
    (the unbiased variance, ``var * n / (n - 1)``; a batch of one row leaves the
    variance term as ``var``). In prediction and evaluation the running
    statistics replace the batch's.

    Parameters
    ----------
    momentum : float
        Weight of the new batch in the running statistics, in (0, 1].
    eps : float
        Added to the variance before the square root.

    Attributes
    ----------
    state : dict
        ``{"running_mean": zeros, "running_var": ones}``, shape ``(features,)``.
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(eps)
        self.momentum = _positive("momentum", momentum, below_one=True)

    def get_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "eps": self.eps}

    def state_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """Shapes of :attr:`state` for ``in_features`` inputs."""
        return {"running_mean": (in_features,), "running_var": (in_features,)}

    def init_state(self) -> State:
        backend, n = self._backend(), int(self.in_features or 0)
        return {
            "running_mean": backend.asarray(np.zeros(n), self.dtype, copy=True),
            "running_var": backend.asarray(np.ones(n), self.dtype, copy=True),
        }

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """A ``(rows, 1)`` column of ones marking real rows (padding gets zeros); no randomness."""
        return np.ones((shape[0], 1), dtype=np.dtype(str(dtype)))

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        if not training:
            inv = 1.0 / xp.sqrt(state["running_var"] + self.eps)
            xhat = (x - state["running_mean"]) * inv
            return xhat * params["weight"] + params["bias"], (xhat, inv, None, None), state
        if noise is None:
            rows: Any = float(x.shape[0])
            mean = xp.mean(x, axis=0)
            centered = x - mean
            var = xp.mean(centered * centered, axis=0)
            mask = None
        else:
            mask = xp.astype(noise, x.dtype)
            rows = xp.sum(mask)
            mean = xp.sum(x * mask, axis=0) / rows
            centered = x - mean
            var = xp.sum(centered * centered * mask, axis=0) / rows
        inv = 1.0 / xp.sqrt(var + self.eps)
        xhat = centered * inv
        m = self.momentum
        if mask is None:
            unbiased = var * (rows / max(rows - 1.0, 1.0))
        else:
            unbiased = var * (rows / xp.clip(rows - 1.0, min=1.0))
        new_state = {
            "running_mean": state["running_mean"] * (1.0 - m) + mean * m,
            "running_var": state["running_var"] * (1.0 - m) + unbiased * m,
        }
        y = xhat * params["weight"] + params["bias"]
        return (y if mask is None else y * mask), (xhat, inv, mask, rows), new_state

    def vjp(
        self,
        params: Params,
        cache: Any,
        dy: Array,
        *,
        xp: Any,
        need_input_grad: bool = True,
        from_logits: bool = False,
        overwrite_dy: bool = False,
    ) -> tuple[dict[str, Array], Array | None]:
        xhat, inv, mask, rows = cache
        if mask is not None:
            dy = dy * mask
        grads = {"weight": xp.sum(dy * xhat, axis=0), "bias": xp.sum(dy, axis=0)}
        if not need_input_grad:
            return grads, None
        dxhat = dy * params["weight"]
        if rows is None:  # evaluation: the statistics are constants
            return grads, dxhat * inv
        total, along = grads["bias"] * params["weight"], grads["weight"] * params["weight"]
        dx = (dxhat - (total + xhat * along) / rows) * inv
        return grads, (dx if mask is None else dx * mask)


class LayerNormalization(_Affine):
    """Normalizes each row over its features, as ``torch.nn.LayerNorm(features)``.

    ``(x - mean) / sqrt(var + eps) * weight + bias`` with the row's mean and
    biased variance; the same in training and prediction.

    Parameters
    ----------
    eps : float
        Added to the variance before the square root.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__(eps)

    def get_config(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        centered = x - xp.mean(x, axis=1, keepdims=True)
        inv = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=1, keepdims=True) + self.eps)
        xhat = centered * inv
        return xhat * params["weight"] + params["bias"], (xhat, inv), state

    def vjp(
        self,
        params: Params,
        cache: Any,
        dy: Array,
        *,
        xp: Any,
        need_input_grad: bool = True,
        from_logits: bool = False,
        overwrite_dy: bool = False,
    ) -> tuple[dict[str, Array], Array | None]:
        xhat, inv = cache
        grads = {"weight": xp.sum(dy * xhat, axis=0), "bias": xp.sum(dy, axis=0)}
        if not need_input_grad:
            return grads, None
        dxhat = dy * params["weight"]
        mean_d = xp.mean(dxhat, axis=1, keepdims=True)
        mean_dx = xp.mean(dxhat * xhat, axis=1, keepdims=True)
        return grads, (dxhat - mean_d - xhat * mean_dx) * inv


LAYERS.update({"BatchNormalization": BatchNormalization, "LayerNormalization": LayerNormalization})

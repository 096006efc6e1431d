"""Backend-specific fast paths: in-place NumPy kernels for the hot activations.

The Array API has no ``out=``, so the generic code allocates a new array for
every activation and its derivative. On NumPy these functions overwrite an
array the library itself just made instead. Each returns ``None`` where it has
no fast path (another backend, another activation), and the caller then runs
the generic code; ``tests/test_kernels.py`` checks that both agree.

Every activation here has a derivative that needs only its output ``y``, so
overwriting the pre-activation loses nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.activations import LEAKY_RELU_SLOPE

Array = Any
FUSED_IN_PLACE = frozenset({"relu", "leaky_relu", "tanh"})
"""Activations with in-place NumPy kernels."""


def _numpy(array: Array) -> bool:
    return type(array) is np.ndarray and array.flags.writeable


def activation_forward(name: str, z: Array) -> Array | None:
    """Apply activation ``name`` to ``z`` in place and return it, or None (no fast path)."""
    if name not in FUSED_IN_PLACE or not _numpy(z):
        return None
    if name == "relu":
        return np.maximum(z, 0, out=z)
    if name == "tanh":
        return np.tanh(z, out=z)
    return np.multiply(z, np.where(z > 0, 1.0, LEAKY_RELU_SLOPE).astype(z.dtype), out=z)


def activation_backward(name: str, y: Array, dy: Array) -> Array | None:
    """``dL/dz`` from the output ``y`` and ``dy = dL/dy``, written into ``dy``; or None."""
    if name not in FUSED_IN_PLACE or not (_numpy(dy) and type(y) is np.ndarray):
        return None
    if name == "relu":
        return np.multiply(dy, y > 0, out=dy)
    if name == "tanh":
        slope = np.multiply(y, y)
        np.subtract(1.0, slope, out=slope)
        return np.multiply(dy, slope, out=dy)
    return np.multiply(dy, np.where(y > 0, 1.0, LEAKY_RELU_SLOPE).astype(dy.dtype), out=dy)


_BLOCK_ELEMENTS = 16384  # 64 KiB of float32: the temporary of one block stays in cache


def subtract_scaled(param: Array, scale: float, delta: Array) -> bool:
    """``param -= scale * delta`` in row blocks, so the temporary is small; False if not NumPy."""
    if not (_numpy(param) and type(delta) is np.ndarray) or param.ndim == 0:
        return False
    if param.size <= _BLOCK_ELEMENTS:
        param -= scale * delta
        return True
    rows = max(1, _BLOCK_ELEMENTS // max(1, param.size // param.shape[0]))
    for start in range(0, param.shape[0], rows):
        block = slice(start, start + rows)
        param[block] -= scale * delta[block]
    return True


def divide_into(numerator: Array, denominator: Array) -> Array | None:
    """``numerator / denominator`` written into ``denominator`` (NumPy), else None."""
    if not (_numpy(denominator) and type(numerator) is np.ndarray):
        return None
    return np.divide(numerator, denominator, out=denominator)

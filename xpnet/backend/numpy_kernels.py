"""Backend-specific fast paths (NumPy, and torch's in-place methods), each with the generic code inside.

The Array API has no ``out=``, so the generic code allocates a new array for
every activation, derivative and optimizer term. On NumPy these functions
overwrite an array the library itself just made instead. Callers always get
the result: where there is no fast path (another backend, another activation,
a read-only array, a JAX tracer) the function runs the generic code it is
given or knows. ``tests/test_kernels.py`` checks that both paths agree.

Every activation with a kernel here has a derivative that needs only its
output ``y``, so overwriting the pre-activation loses nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any
FUSED_IN_PLACE = frozenset({"relu", "leaky_relu", "tanh"})
"""Activations with in-place NumPy kernels."""
TORCH_IN_PLACE = frozenset({"relu", "tanh"})
"""Activations done with torch's own in-place methods."""
LEAKY_RELU_SLOPE = 0.01
"""torch.nn.LeakyReLU's default slope; :mod:`xpnet.nn.activations` uses this constant."""


def writeable_numpy(array: Array) -> bool:
    """Whether ``array`` is a NumPy array that may be written in place."""
    return type(array) is np.ndarray and array.flags.writeable


def _torch(array: Array) -> bool:
    """Whether ``array`` is a torch tensor outside autograd (torch's own in-place methods apply)."""
    return type(array).__module__.startswith("torch") and not array.requires_grad


def activation_forward(activation: Any, z: Array, xp: Any) -> Array:
    """``activation`` applied to ``z``, written into ``z`` when a NumPy kernel exists.

    ``activation`` has ``name`` and ``forward(x, xp)`` (an
    :class:`xpnet.nn.activations.ActivationFunction`); ``z`` must be an array
    the caller owns, since it may be overwritten.
    """
    name = activation.name
    if name == "linear":
        return z
    if name in TORCH_IN_PLACE and _torch(z):
        return z.relu_() if name == "relu" else z.tanh_()
    if name not in FUSED_IN_PLACE or not writeable_numpy(z):
        return activation.forward(z, xp)
    if name == "relu":
        return np.maximum(z, 0, out=z)
    if name == "tanh":
        return np.tanh(z, out=z)
    return np.multiply(z, np.where(z > 0, 1.0, LEAKY_RELU_SLOPE).astype(z.dtype), out=z)


def activation_backward(
    activation: Any, z: Array, y: Array, dy: Array, xp: Any, *, overwrite: bool = False
) -> Array:
    """``dL/dz`` from ``z``, ``y = activation(z)`` and ``dy = dL/dy``.

    With ``overwrite=True`` the result may be written into ``dy`` (NumPy).
    """
    name = activation.name
    if name == "linear":
        return dy
    if overwrite and name in TORCH_IN_PLACE and _torch(dy):
        return dy.mul_(y > 0) if name == "relu" else dy.mul_(1.0 - y * y)
    if not (overwrite and name in FUSED_IN_PLACE and writeable_numpy(dy) and type(y) is np.ndarray):
        return activation.backward(z, y, dy, xp)
    if name == "relu":
        return np.multiply(dy, y > 0, out=dy)
    if name == "tanh":
        slope = np.multiply(y, y)
        np.subtract(1.0, slope, out=slope)
        return np.multiply(dy, slope, out=dy)
    return np.multiply(dy, np.where(y > 0, 1.0, LEAKY_RELU_SLOPE).astype(dy.dtype), out=dy)


def add_into(z: Array, b: Array) -> Array:
    """``z + b``, written into ``z`` when it is a writeable NumPy array."""
    if writeable_numpy(z):
        z += b
        return z
    if _torch(z):
        return z.add_(b)
    return z + b


_BLOCK_ELEMENTS = 16384  # 64 KiB of float32: the temporary of one block stays in cache


def subtract_scaled(
    param: Array, scale: Any, delta: Array, *, inplace: bool, overwrite_delta: bool = False
) -> Array:
    """``param - scale * delta``; written into ``param`` when ``inplace``.

    On NumPy the in-place form runs in row blocks, so the temporary is small;
    with ``overwrite_delta`` (``delta`` is the caller's to spoil) and a Python
    float ``scale`` it makes no temporary at all: ``delta *= scale; param -= delta``,
    the same two roundings. ``inplace`` is for arrays that support ``-=``
    (NumPy, torch, CuPy).
    """
    if not inplace:
        return param - scale * delta
    if overwrite_delta and type(scale) is float and writeable_numpy(param) and writeable_numpy(delta):
        if param.ndim and delta.shape == param.shape and delta.dtype == param.dtype:
            np.multiply(delta, scale, out=delta)
            return np.subtract(param, delta, out=param)
    if not (writeable_numpy(param) and type(delta) is np.ndarray) or param.ndim == 0:
        param -= scale * delta
        return param
    if param.size <= _BLOCK_ELEMENTS:
        param -= scale * delta
        return param
    rows = max(1, _BLOCK_ELEMENTS // max(1, param.size // param.shape[0]))
    for start in range(0, param.shape[0], rows):
        block = slice(start, start + rows)
        param[block] -= scale * delta[block]
    return param


def divide(numerator: Array, denominator: Array, *, inplace: bool) -> Array:
    """``numerator / denominator``, written into ``denominator`` when ``inplace`` on NumPy."""
    if inplace and writeable_numpy(denominator) and type(numerator) is np.ndarray:
        return np.divide(numerator, denominator, out=denominator)
    return numerator / denominator


def sum_rows(a: Array, xp: Any) -> Array:
    """``xp.sum(a, axis=0)``; on NumPy the array's own method (no wrapper layers per call)."""
    if type(a) is np.ndarray:
        return a.sum(axis=0)
    return xp.sum(a, axis=0)


def all_finite(arrays: list[Array], xp: Any) -> bool:
    """Whether every element of every array is finite, with one device read.

    On NumPy (host arrays, nothing to read back) each array is checked by its
    own methods, stopping at the first non-finite one.
    """
    if not arrays:
        return True
    if all(type(a) is np.ndarray for a in arrays):
        return all(bool(np.isfinite(a).all()) for a in arrays)
    return bool(xp.all(xp.stack([xp.all(xp.isfinite(a)) for a in arrays])))


def count_correct(y_prob: Array, y_true: Array, *, binary: bool) -> Array | None:
    """:func:`xpnet.nn.metrics.correct_count` without sample weights, on NumPy arrays;
    None for anything else (the caller runs the generic code).

    Counts with ``count_nonzero`` instead of casting every hit to a float and
    summing; the count comes back as a 0-d array of ``y_prob``'s dtype, as the
    generic code's (exact: batches hold far fewer than 2**24 rows).
    """
    if type(y_prob) is not np.ndarray or type(y_true) is not np.ndarray:
        return None
    if binary:
        hit = np.greater(y_prob, 0.5) == np.greater(y_true.reshape(y_prob.shape), 0.5)
    else:
        labels = y_true if y_true.ndim == 1 else y_true.argmax(axis=1)
        hit = y_prob.argmax(axis=1) == labels
    return np.asarray(np.count_nonzero(hit), dtype=y_prob.dtype)


def activate_into(name: str, a: Array, scratch: Array) -> None:
    """``a = activation(a)`` in place (the generic functions' math), for the fused loop's
    ``relu``, ``tanh``, ``leaky_relu`` and ``sigmoid``; ``scratch`` is a work array of ``a``'s shape."""
    if name == "relu":
        np.maximum(a, 0.0, out=a)
    elif name == "tanh":
        np.tanh(a, out=a)
    elif name == "leaky_relu":  # max(a, slope * a): a for a > 0, slope * a below
        np.multiply(a, LEAKY_RELU_SLOPE, out=scratch)
        np.maximum(a, scratch, out=a)
    elif name == "sigmoid":  # the stable form: 1 / (1 + e) for a >= 0, e / (1 + e) below, e = exp(-|a|)
        e = scratch
        np.abs(a, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        positive = a >= 0
        np.add(e, 1.0, out=a)
        np.copyto(e, 1.0, where=positive)
        np.divide(e, a, out=a)


def derivative_into(name: str, y: Array, grad: Array, scratch: Array) -> None:
    """``grad *= activation'`` in place, from the activation's output ``y``."""
    if name == "relu":
        np.greater(y, 0.0, out=scratch)
        np.multiply(grad, scratch, out=grad)
    elif name == "tanh":
        np.multiply(y, y, out=scratch)
        np.subtract(1.0, scratch, out=scratch)
        np.multiply(grad, scratch, out=grad)
    elif name == "leaky_relu":
        np.multiply(grad, np.where(y > 0, 1.0, LEAKY_RELU_SLOPE).astype(grad.dtype), out=grad)
    elif name == "sigmoid":
        np.subtract(1.0, y, out=scratch)
        np.multiply(scratch, y, out=scratch)
        np.multiply(grad, scratch, out=grad)

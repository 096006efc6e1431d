"""Weight initializers, drawn on the host so that one seed gives one network on every backend.

Each initializer takes a :class:`numpy.random.Generator` and a shape
``(fan_in, fan_out)`` and returns a float64 NumPy array; layers move it to
their backend and dtype. Formulas are torch.nn.init's with ``gain=1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .._names import lookup

Initializer = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    fan_in = shape[0] if len(shape) > 0 else 1
    fan_out = shape[1] if len(shape) > 1 else fan_in
    return fan_in, fan_out


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform on ``[-a, a]`` with ``a = sqrt(6 / (fan_in + fan_out))`` (Xavier uniform)."""
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def glorot_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal with standard deviation ``sqrt(2 / (fan_in + fan_out))`` (Xavier normal)."""
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def he_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform on ``[-a, a]`` with ``a = sqrt(6 / fan_in)`` (Kaiming uniform for ReLU)."""
    fan_in, _ = _fans(shape)
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


def he_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal with standard deviation ``sqrt(2 / fan_in)`` (Kaiming normal for ReLU)."""
    fan_in, _ = _fans(shape)
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def zeros(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """All zeros (the default for biases); ``rng`` is not used."""
    return np.zeros(shape)


INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "kaiming_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_normal": he_normal,
    "zeros": zeros,
}


def get_initializer(name: str | Initializer) -> Initializer:
    """Look up an initializer by name, or return a callable unchanged."""
    if callable(name):
        return name
    return lookup("initializer", INITIALIZERS, name)

"""Parameter shapes of layers before they are built: sizes known without allocating.

A checkpoint's architecture is checked against the tensors it declares, and a
network's size against the memory there is, before any parameter exists.
A layer class may define ``parameter_shapes(in_features)`` returning
``{name: shape}`` (and ``state_shapes`` for its state); the built-in layers are known here.
"""

from __future__ import annotations

import math
from typing import Any

from .layers import Activation, Dense, Dropout


def parameter_shapes(layer: Any, in_features: int) -> dict[str, tuple[int, ...]] | None:
    """``{name: shape}`` of ``layer``'s parameters for ``in_features`` inputs; None if unknown."""
    own = getattr(layer, "parameter_shapes", None)
    if callable(own):
        return {k: tuple(int(d) for d in v) for k, v in own(in_features).items()}
    if isinstance(layer, Dense):
        shapes: dict[str, tuple[int, ...]] = {"weight": (in_features, layer.units)}
        if layer.use_bias:
            shapes["bias"] = (layer.units,)
        return shapes
    if type(layer) in (Activation, Dropout):
        return {}
    return None


def state_shapes(layer: Any, in_features: int) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of ``layer``'s state (running statistics) for ``in_features`` inputs."""
    own = getattr(layer, "state_shapes", None)
    if callable(own):
        return {k: tuple(int(d) for d in v) for k, v in own(in_features).items()}
    return {}


def parameter_count(layers: Any, in_features: int) -> int:
    """Scalars in the parameters of ``layers`` for ``in_features`` inputs (layers of unknown kind count 0)."""
    total, n = 0, in_features
    for layer in layers:
        shapes = parameter_shapes(layer, n) or {}
        total += sum(math.prod(shape) for shape in shapes.values())
        n = layer.output_features(n)
    return total

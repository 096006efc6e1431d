"""What a mixed dtype policy changes inside the pure step, and nothing else.

The step (:mod:`xpnet.engine.step`) casts the batch to the compute dtype,
and each layer's parameters where the layer takes them so
(:attr:`~xpnet.nn.layers.Layer.autocast`; normalization layers take their
float32 parameters and compute their statistics in float32 themselves).
Between layers every array is in the compute dtype. The network's output
comes back in the variables' dtype, a final softmax or sigmoid recomputed
there from the logits (:func:`output`), so the loss and its gradient are
float32; the gradient goes back in the compute dtype, and each parameter
gradient is cast to its float32 master before the update (:func:`like`).
"""

from __future__ import annotations

from typing import Any

from ..nn.activations import get_activation

Array = Any
FLOAT32_OUTPUTS = frozenset({"softmax", "sigmoid"})
"""Final activations computed in the variables' dtype (they feed the loss; the others only cast)."""


def cast(a: Array, dtype: Any, xp: Any) -> Array:
    """``a`` in ``dtype`` (``a`` itself when it is already)."""
    return a if a.dtype == dtype else xp.astype(a, dtype)


def cast_params(params: dict[str, Array], dtype: Any, xp: Any) -> dict[str, Array]:
    """Each parameter in ``dtype``: the copies a layer computes with."""
    return {name: cast(value, dtype, xp) for name, value in params.items()}


def like(grads: dict[str, Array], params: dict[str, Array], xp: Any) -> dict[str, Array]:
    """Each gradient in its parameter's (the master's) dtype."""
    return {name: cast(g, params[name].dtype, xp) for name, g in grads.items()}


def output(layer: Any, out: Array, cache: Any, dtype: Any, xp: Any) -> tuple[Array, Array | None]:
    """The network's output in ``dtype`` and, for a final softmax or sigmoid, its logits there.

    A final softmax or sigmoid is recomputed in ``dtype`` from the logits
    (``layer.logits(cache)``), so probabilities, the loss and its gradient
    carry float32's precision; any other output is only cast.
    """
    name = layer.output_activation
    if name not in FLOAT32_OUTPUTS:
        return cast(out, dtype, xp), None
    logits = cast(layer.logits(cache), dtype, xp)
    return get_activation(name).forward(logits, xp), logits


def through_output(layer: Any, logits: Array, out: Array, grad: Array, xp: Any) -> Array:
    """``dL/dlogits`` from ``dL/dout`` through :func:`output`'s float32 softmax or sigmoid."""
    return get_activation(layer.output_activation).backward(logits, out, grad, xp)

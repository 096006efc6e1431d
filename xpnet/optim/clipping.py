"""Gradient clipping: pure functions of a list of gradients, as torch.nn.utils's.

An optimizer's ``clip_value`` and ``clip_norm`` name these steps;
:func:`clip_gradients` applies both in that order, so the norm bound holds
for what the optimizer finally sees. None of them reads the device: the
decision to scale is an array operation, not a Python ``if``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backend import namespace_of

Array = Any

NORM_EPS = 1e-6
"""Added to the norm before dividing, as ``torch.nn.utils.clip_grad_norm_``."""


def global_norm(grads: Sequence[Array], *, xp: Any = None) -> Array:
    """The 2-norm of all ``grads`` taken together, a 0-d array on their device."""
    xp = xp or namespace_of(*grads)
    return xp.sqrt(sum((xp.sum(g * g) for g in grads[1:]), xp.sum(grads[0] * grads[0])))


def clip_by_global_norm(
    grads: Sequence[Array], clip_norm: float, *, xp: Any = None
) -> tuple[list[Array], Array]:
    """Scale ``grads`` together so that their global norm is at most about ``clip_norm``.

    Every gradient is multiplied by ``min(1, clip_norm / (total_norm + 1e-6))``,
    torch's ``clip_grad_norm_`` formula.

    Parameters
    ----------
    grads : sequence of arrays
        The gradients of every parameter of the network (any shapes).
    clip_norm : float
        The largest global norm let through.

    Returns
    -------
    clipped : list of arrays
        New arrays; ``grads`` are not written.
    total_norm : array
        The global norm before clipping (0-d, on the device), as torch returns it.
    """
    if not grads:
        raise ValueError("clip_by_global_norm needs at least one gradient")
    xp = xp or namespace_of(*grads)
    total = global_norm(grads, xp=xp)
    factor = xp.minimum(clip_norm / (total + NORM_EPS), 1.0)
    return [g * factor for g in grads], total


def clip_by_value(grads: Sequence[Array], clip_value: float, *, xp: Any = None) -> list[Array]:
    """Every element of ``grads`` clipped into ``[-clip_value, clip_value]`` (new arrays)."""
    if not grads:
        return []
    xp = xp or namespace_of(*grads)
    return [xp.clip(g, min=-clip_value, max=clip_value) for g in grads]


def clip_gradients(
    grads: Sequence[Array],
    clip_norm: float | None = None,
    clip_value: float | None = None,
    *,
    xp: Any = None,
) -> list[Array]:
    """Apply an optimizer's clipping: by value first (if set), then by global norm (if set)."""
    clipped = list(grads)
    if clip_value is not None:
        clipped = clip_by_value(clipped, clip_value, xp=xp)
    if clip_norm is not None:
        clipped, _ = clip_by_global_norm(clipped, clip_norm, xp=xp)
    return clipped


def gradient_transform(clip_norm: float | None = None, clip_value: float | None = None) -> Any:
    """A training step's gradient transform clipping every layer's gradients together, or None.

    The transform maps a list of per-layer ``{name: gradient}`` dicts (and
    ``xp``) to the clipped list, as :func:`clip_gradients` does for a flat list.
    """
    if clip_norm is None and clip_value is None:
        return None

    def transform(grads: Sequence[dict[str, Array]], xp: Any) -> list[dict[str, Array]]:
        keys = [(i, name) for i, layer in enumerate(grads) for name in layer]
        flat = clip_gradients([grads[i][name] for i, name in keys], clip_norm, clip_value, xp=xp)
        out: list[dict[str, Array]] = [{} for _ in grads]
        for (i, name), value in zip(keys, flat):
            out[i][name] = value
        return out

    return transform

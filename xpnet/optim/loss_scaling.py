"""Dynamic loss scaling for float16 training, with the rules of PyTorch's ``GradScaler``.

float16 gradients below 6e-8 vanish, so the loss gradient is multiplied by
a scale before the backward pass and the parameter gradients are divided
by it after (in float32). A step whose gradients are not all finite is
skipped (no parameter or optimizer state changes) and the scale is
multiplied by ``backoff_factor``; after ``growth_interval`` finite steps in
a row it is multiplied by ``growth_factor`` (unless that overflows float32).

The scaler's state is three 0-d arrays kept with the optimizer state under
:data:`STATE_KEY`, so it lives on the device inside every engine's carry
(compiled JAX epochs included) and travels with checkpoints and ``to()``:
``scale``, ``growth_tracker`` (finite steps since the scale last changed)
and ``skipped`` (steps skipped so far, subtracted from the step number the
optimizer sees: a skipped step is not a step for Adam's bias correction,
as ``GradScaler`` never calls ``optimizer.step()`` for it). Every rule is an
array operation: deciding to skip never reads the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Array = Any
STATE_KEY = "loss_scale"
"""The optimizer-state entry that holds the scaler's arrays."""
STATE_NAMES = ("scale", "growth_tracker", "skipped")
"""The scaler's arrays (0-d, the variables' dtype)."""


@dataclass(frozen=True)
class LossScaler:
    """``torch.amp.GradScaler``'s dynamic loss scaling as pure functions of its state.

    Parameters
    ----------
    init_scale : float
        The first scale (GradScaler's default 2**16).
    growth_factor : float
        Multiplies the scale after ``growth_interval`` finite steps in a row (> 1).
    backoff_factor : float
        Multiplies the scale after a step with non-finite gradients (in (0, 1)).
    growth_interval : int
        Finite steps in a row before the scale grows.
    """

    init_scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000

    def __post_init__(self) -> None:
        for name, low in (("init_scale", 0.0), ("growth_factor", 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < math.inf:
                raise ValueError(f"LossScaler {name} must be a finite number above {low:g}, got {value!r}")
        backoff = self.backoff_factor
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 < backoff < 1:
            raise ValueError(f"LossScaler backoff_factor must be in (0, 1), got {backoff!r}")
        interval = self.growth_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"LossScaler growth_interval must be a positive integer, got {interval!r}")

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this scaler (saved with checkpoints)."""
        return asdict(self)

    def init_state(self, like: Array, xp: Any) -> dict[str, Array]:
        """The first state: 0-d arrays of ``like``'s dtype on its device."""
        one = xp.reshape(like, (-1,))[0]
        # three arrays, not one shared: JAX donates each buffer of the carry once
        return {
            name: xp.zeros_like(one) + value for name, value in zip(STATE_NAMES, (self.init_scale, 0.0, 0.0))
        }

    def update(self, state: dict[str, Array], finite: Array, xp: Any) -> dict[str, Array]:
        """The state after a step whose gradients were all finite (``finite``, a 0-d bool) or not.

        GradScaler's ``_amp_update_scale_``: a non-finite step multiplies the
        scale by ``backoff_factor`` and restarts the count; the
        ``growth_interval``-th finite step in a row multiplies it by
        ``growth_factor`` (kept when that is not finite) and restarts the count.
        """
        scale, tracker = state["scale"], state["growth_tracker"]
        zero = tracker * 0.0
        counted = tracker + 1.0
        grow = counted >= self.growth_interval
        grown = scale * self.growth_factor
        grown = xp.where(xp.isfinite(grown), grown, scale)
        return {
            "scale": xp.where(finite, xp.where(grow, grown, scale), scale * self.backoff_factor),
            "growth_tracker": xp.where(finite, xp.where(grow, zero, counted), zero),
            "skipped": state["skipped"] + xp.where(finite, zero, zero + 1.0),
        }


def all_finite(grads: Sequence[dict[str, Array]], xp: Any) -> Array:
    """Whether every gradient of every layer is finite: a 0-d bool array (no device read)."""
    checks = [xp.all(xp.isfinite(g)) for layer in grads for g in layer.values()]
    if not checks:
        return xp.asarray(True)
    return xp.all(xp.stack(checks)) if len(checks) > 1 else checks[0]


def select(finite: Array, new: dict[str, Array], old: dict[str, Array], xp: Any) -> dict[str, Array]:
    """``new`` where ``finite``, else ``old``, entry by entry (a skipped step changes nothing)."""
    return {name: xp.where(finite, value, old[name]) for name, value in new.items()}

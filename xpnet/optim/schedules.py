"""Learning-rate schedules: functions of the 0-based epoch that return a rate.

Give one to :class:`xpnet.LearningRateScheduler`.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def step_decay(initial: float, drop: float = 0.5, every: int = 10) -> Callable[[int], float]:
    """Schedule ``initial * drop ** (epoch // every)``."""
    return lambda epoch: initial * drop ** (epoch // every)


def exponential_decay(initial: float, rate: float = 0.96) -> Callable[[int], float]:
    """Schedule ``initial * rate ** epoch``."""
    return lambda epoch: initial * rate**epoch


def cosine_decay(initial: float, epochs: int, minimum: float = 0.0) -> Callable[[int], float]:
    """Half a cosine from ``initial`` at epoch 0 to ``minimum`` at ``epochs`` (then flat)."""

    def schedule(epoch: int) -> float:
        progress = min(epoch, epochs) / epochs
        return minimum + 0.5 * (initial - minimum) * (1.0 + math.cos(math.pi * progress))

    return schedule

"""Learning-rate schedules: functions of the 0-based epoch that return a rate.

Give one to :class:`xpnet.LearningRateScheduler`; :func:`warmup` puts a
linear warmup in front of any of them. Reached as ``xpnet.schedules``.
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


def warmup(schedule: Callable[[int], float] | float, epochs: int = 5) -> Callable[[int], float]:
    """Linear warmup in front of ``schedule``: epoch ``e < epochs`` uses ``base * (e + 1) / epochs``.

    Parameters
    ----------
    schedule : callable or float
        A schedule of the 0-based epoch (as :func:`step_decay` and the
        others return), or a constant rate. ``base`` is its rate at epoch 0.
    epochs : int
        Warmup epochs (positive); from epoch ``epochs`` on, the rate is
        ``schedule(epoch)``: the schedule keeps its own epoch count, so a
        decay over ``n`` epochs still ends at epoch ``n``.

    Examples
    --------
    >>> rates = warmup(step_decay(0.1, drop=0.5, every=10), epochs=4)
    >>> [round(rates(e), 3) for e in (0, 1, 3, 4, 10)]
    [0.025, 0.05, 0.1, 0.1, 0.05]
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"warmup epochs must be a positive integer, got {epochs!r}")
    after: Callable[[int], float]
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        rate = float(schedule)
        after = lambda epoch: rate  # noqa: E731
    elif callable(schedule):
        after = schedule
    else:
        raise ValueError(f"warmup needs a schedule (a function of the epoch) or a rate, got {schedule!r}")
    base = float(after(0))

    def rate_at(epoch: int) -> float:
        return base * (epoch + 1) / epochs if epoch < epochs else float(after(epoch))

    return rate_at

"""What an epoch is to a runner: its inputs (:class:`Epoch`), many epochs on the same data
(:class:`EpochPlan`), and the shapes of what runners take and return.

A runner never keeps arrays between calls: ``run(carry, epoch, report)``
takes the carry ``(params, opt_state, layer_state)`` and returns the new one
with the epoch's summed loss x rows and correct count; ``run_epochs(carry,
make, count)`` trains up to ``count`` epochs back to back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any
Carry = tuple[Any, Any, Any]
StepFunction = Callable[..., Any]
"""``step(params, opt_state, layer_state, x, y, weight, noise, step, lr, *, xp, inplace)``
returning ``(params, opt_state, layer_state, loss, correct_or_None)``."""
Report = Callable[[int, Any, int], None]
"""``report(steps_done, total_loss_so_far, rows_done)``: progress, read rarely."""


@dataclass(frozen=True)
class Epoch:
    """The inputs of one epoch.

    Attributes
    ----------
    x, t : Array
        Features and targets, whole, on the device.
    order : numpy array or None
        The shuffled row order (host), or None for the stored order.
    batch_size : int
    draw : callable or None
        ``draw(rows) -> list`` of each layer's host noise for a batch of
        ``rows`` rows, consuming the network's generator; None when no layer
        draws.
    first_step : int
        The 1-based optimizer step number of the first batch.
    learning_rate : float
    weight : Array or None
        Per-row sample weights, whole, on the device (None: every row weighs 1).
    """

    x: Array
    t: Array
    order: np.ndarray | None
    batch_size: int
    draw: Callable[[int], Sequence[np.ndarray | None]] | None
    first_step: int
    learning_rate: float
    weight: Array | None = None

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def steps(self) -> int:
        return -(-self.rows // self.batch_size)


@dataclass(frozen=True)
class EpochPlan:
    """Epochs trained back to back on the same data (see :meth:`JaxEpochRunner.run_epochs`).

    Calling the plan with ``i`` gives epoch ``i``, drawing its shuffle from
    ``rng`` (call it in order), as a runner going epoch by epoch wants it.
    :meth:`orders` draws the shuffles of many epochs in one call, the same
    numbers, for when no layer draws noise between them.

    Attributes
    ----------
    x, t, weight, batch_size, draw, first_step, learning_rate
        As in :class:`Epoch` (``first_step`` is the first epoch's).
    shuffle : bool
        Whether each epoch shuffles the rows.
    rng : numpy.random.Generator
        The network's host generator.
    """

    x: Array
    t: Array
    weight: Array | None
    batch_size: int
    shuffle: bool
    rng: np.random.Generator
    draw: Callable[[int], Sequence[np.ndarray | None]] | None
    first_step: int
    learning_rate: float

    @property
    def steps(self) -> int:
        return -(-int(self.x.shape[0]) // self.batch_size)

    def __call__(self, i: int) -> Epoch:
        order = self.rng.permutation(int(self.x.shape[0])) if self.shuffle else None
        return self.epoch(i, order)

    def epoch(self, i: int, order: np.ndarray | None) -> Epoch:
        """Epoch ``i`` with the row order ``order`` (nothing drawn)."""
        step = self.first_step + i * self.steps
        return Epoch(self.x, self.t, order, self.batch_size, self.draw, step, self.learning_rate, self.weight)

    def orders(self, count: int) -> np.ndarray | None:
        """The row orders of ``count`` epochs, ``(count, rows)``, or None unshuffled.

        One :meth:`~numpy.random.Generator.permuted` call over ``count`` rows
        of ``0..rows-1`` shuffles each in turn, drawing exactly what
        ``count`` calls of ``rng.permutation(rows)`` draw (a test pins it).
        """
        if not self.shuffle:
            return None
        return self.rng.permuted(np.tile(np.arange(int(self.x.shape[0])), (count, 1)), axis=1)

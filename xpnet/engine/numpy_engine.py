"""The NumPy engine: the fused loop for the networks its plan covers, the eager engine for the rest.

What the fused loop runs is a :class:`~xpnet.engine.plan.Plan`
(:func:`~xpnet.engine.plan.plan_of` the step's model); its math lives in
:mod:`xpnet.engine.numpy_loop`. Every runner call checks that its arrays suit
the loop (writeable NumPy arrays of one floating dtype, targets as the loss
takes them); otherwise, or with no plan, the generic step runs, so callers
never choose. The loop runs plans of Dense and Dropout layers only
(:attr:`~xpnet.engine.plan.Plan.dense_only`): networks with normalization or
``Activation`` layers run the generic step here (the fused GPU runner covers
them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backend import Array, Backend
from ..backend.numpy_kernels import all_finite
from . import step as pure
from .eager import EagerEngine, EagerRunner
from .epochs import Carry, Epoch, Report, StepFunction
from .numpy_loop import Work
from .plan import DenseSpec, Plan, plan_of


class NumpyEngine(EagerEngine):
    """:class:`~xpnet.engine.eager.EagerEngine` whose runner is :class:`NumpyFusedRunner`."""

    def _runner(self, model: pure.Model) -> Any:
        plan = plan_of(model)
        own = plan if plan is not None and plan.dense_only else None
        return NumpyFusedRunner(self.backend, self._step_function(model), own)


class NumpyFusedRunner(EagerRunner):
    """:class:`EagerRunner` with the fused loop for what ``plan`` covers (see the module docstring).

    Each call checks that its arrays suit the loop (writeable NumPy arrays of
    one floating dtype, targets as the loss takes them); otherwise, or with
    no plan, it runs the generic step.
    """

    def __init__(self, backend: Backend, step: StepFunction, plan: Plan | None) -> None:
        super().__init__(backend, step, inplace=True)
        self.plan = plan

    def run(self, carry: Carry, epoch: Epoch, report: Report | None = None) -> tuple[Carry, Array, Array]:
        work = self._work(carry, epoch)
        if work is None:
            return super().run(carry, epoch, report)
        total = work.epoch(epoch, report)
        return work.carry(carry), total, work.corrects()[0]

    def run_epochs(
        self, carry: Carry, make: Callable[[int], Epoch], count: int
    ) -> tuple[Carry, list[Array], list[Array], int]:
        first = make(0)
        work = self._work(carry, first)
        if work is None:
            return super().run_epochs(carry, lambda i: first if i == 0 else make(i), count)
        totals: list[Array] = []
        params = [p for layer in carry[0] for p in layer.values()]  # updated in place
        for i in range(count):
            totals.append(work.epoch(first if i == 0 else make(i), None))
            if not (math.isfinite(totals[-1]) and _finite(params, self.backend.xp)):
                break
        return work.carry(carry), totals, list(work.corrects()), len(totals)

    def _work(self, carry: Carry, epoch: Epoch) -> Work | None:
        """A fresh workspace when the fused loop covers this call, else None."""
        if self.plan is None or not _covered(self.plan, carry[0], epoch):
            return None
        return Work(self.plan, self.backend.xp, carry, epoch)


def _finite(params: Sequence[Array], xp: Any) -> bool:
    """:func:`all_finite` for the parameters after each fused epoch, at one reduction per array:
    sums are finite unless an element is not (or they overflow: then every element is checked)."""
    total, add = 0.0, np.add.reduce  # the ufunc itself: ndarray.sum's Python wrapper costs as much
    for p in params:
        total += add(p, None)
    return math.isfinite(total) or all_finite(list(params), xp)


def _numpy_float(a: Any, dtype: Any = None) -> bool:
    return type(a) is np.ndarray and a.dtype.kind == "f" and (dtype is None or a.dtype == dtype)


def _covered(plan: Plan, params: Sequence[dict[str, Array]], epoch: Epoch) -> bool:
    """Whether ``epoch``'s arrays and ``params`` suit the fused loop."""
    x, t, w = epoch.x, epoch.t, epoch.weight
    if not _numpy_float(x) or x.ndim != 2 or type(t) is not np.ndarray:
        return False
    if len(params) != len(plan.layers) or (w is not None and not (_numpy_float(w, x.dtype) and w.ndim == 1)):
        return False
    for spec, p in zip(plan.layers, params):
        names: tuple[str, ...] = ()
        if isinstance(spec, DenseSpec):
            names = ("weight", "bias") if spec.bias else ("weight",)
        if tuple(p) != names:
            return False
        for a in p.values():
            if not (_numpy_float(a, x.dtype) and a.flags.writeable):
                return False
    first = params[plan.first]["weight"]
    if first.shape[0] != x.shape[1]:
        return False
    k = params[-1]["weight"].shape[1]
    if plan.loss == "categorical_crossentropy" and t.ndim == 1:
        # labels index the outputs directly here: any outside [0, k) go to the generic one-hot
        return t.dtype.kind in "iu" and t.shape[0] == x.shape[0] and 0 <= t.min() and t.max() < k
    return _numpy_float(t, x.dtype) and t.shape == (x.shape[0], k)

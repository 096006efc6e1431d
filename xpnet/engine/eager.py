"""The eager engine: the pure step run batch by batch in Python, on any Array API backend.

:class:`EagerEngine` is every engine's base and the whole engine of torch,
array-api-strict and any backend with ``compile=False``. Whether the step
updates arrays in place or returns new ones is decided here, once, when the
engine is made: in place where the backend's arrays are writeable, unless
``compile=False`` asked for plain pure code (for debugging).

What an engine makes, from a backend-free :class:`~xpnet.engine.step.Model`
(or, for inference, the layers), all cached by :class:`~xpnet.engine.cache.Cache`:

- :meth:`EagerEngine.runner`: the epoch runner ``fit`` trains in-memory data
  with (:class:`EagerRunner`: a Python loop over batches, each gathered on the
  device; no host synchronization per step);
- :meth:`EagerEngine.step`: one optimizer step for streamed batches,
  optionally around an allreduce of the gradients (data parallelism);
- :meth:`EagerEngine.inference`: the forward pass of ``predict`` and ``evaluate``;
- :meth:`EagerEngine.converter`: host batches to device batches.

Another engine overrides what it does better and inherits the rest.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backend import Array, Backend
from ..backend import numpy_kernels as kernels
from . import step as pure
from .cache import Cache
from .epochs import Carry, Epoch, Report, StepFunction
from .flat import flatten, unflatten

Forward = Callable[..., tuple[Any, Any]]
"""``forward(params, layer_state, x, *, keep_cache) -> (output, last cache or None)``."""
Allreduce = Callable[[Array], Array]
"""``allreduce(flat) -> flat``: one flat buffer summed over every rank."""


class EagerEngine:
    """How a backend runs the pure functions when nothing compiles them (see the module docstring).

    Parameters
    ----------
    backend : Backend
    inplace : bool
        Update parameters and optimizer state in place (where the backend's
        arrays are writeable); False runs the pure functions as they are.
    """

    compiles = False
    """Whether this engine compiles what it makes (then the first call of each shape is slow)."""
    separate_memory = False
    """Whether its arrays live apart from host memory, so that a device copy of host data costs a
    copy (NumPy and torch on the CPU share host memory)."""

    def __init__(self, backend: Backend, *, inplace: bool = True) -> None:
        self.backend = backend
        self.inplace = inplace and backend.mutable
        self.cache = Cache()

    def runner(self, model: pure.Model) -> Any:
        """The epoch runner for ``model``: ``run(carry, epoch, report)`` trains one epoch,
        ``run_epochs(carry, make, count)`` up to ``count`` back to back."""
        return self.cache.model("runner", self, model, self._runner)

    def _runner(self, model: pure.Model) -> Any:
        return EagerRunner(self.backend, self._step_function(model), inplace=self.inplace)

    def step(self, model: pure.Model, allreduce: Allreduce | None = None) -> StepFunction:
        """One step on a batch: ``step(params, opt, states, x, y, w, noise, number, lr, share=1.0)``
        returning ``(params, opt, states, loss, correct)``.

        With ``allreduce``, this rank's gradients are scaled by its ``share``
        of the global batch, packed into one buffer, summed over the ranks,
        then clipped (the model's transform) and applied, so every rank makes
        the single-process update.
        """
        run = self._step_function(model)
        if allreduce is None:
            xp, inplace = self.backend.xp, self.inplace
            return lambda params, opt, states, *batch, share=1.0: run(
                params, opt, states, *batch, xp=xp, inplace=inplace
            )
        return self._distributed(model, allreduce)

    def _step_function(self, model: pure.Model) -> StepFunction:
        scope, precision = self.backend.matmul_scope, model.matmul_precision
        # float16 overflows by design under a loss scaler, which skips those steps
        quiet = self.backend.overflow_scope if model.loss_scaler is not None else contextlib.nullcontext

        def run(params: Any, opt: Any, states: Any, *batch: Any, xp: Any, inplace: bool) -> Any:
            with scope(precision), quiet():  # traced code (JAX) reads the precision while tracing
                return pure.train_step(model, params, opt, states, *batch, xp=xp, inplace=inplace)

        return run

    def _distributed(self, model: pure.Model, allreduce: Allreduce) -> StepFunction:
        xp, inplace = self.backend.xp, self.inplace
        scope, precision = self.backend.matmul_scope, model.matmul_precision
        quiet = self.backend.overflow_scope if model.loss_scaler is not None else contextlib.nullcontext

        def run(
            params: Any,
            opt: Any,
            states: Any,
            x: Any,
            y: Any,
            w: Any,
            noise: Any,
            number: Any,
            lr: Any,
            share: float = 1.0,
        ) -> Any:
            with scope(precision), quiet():
                if model.loss_scaler is not None:
                    opt = pure.initial_opt_state(model, params, opt, xp)
                scale = pure.loss_scale(model, opt)
                grads, states, value, correct = pure.gradients(
                    model, params, states, x, y, w, noise, xp=xp, loss_scale=scale
                )
                flat, layout = flatten(grads)
                grads = unflatten(allreduce(flat * share), layout)
                params, opt = pure.update(model, params, opt, grads, number, lr, xp=xp, inplace=inplace)
            return params, opt, states, value, correct

        return run

    def inference(
        self, layers: Sequence[Any], compute_dtype: str | None = None, matmul_precision: str = "highest"
    ) -> Forward:
        """The pure forward pass of ``predict`` and ``evaluate``:
        ``run(params, layer_state, x, keep_cache=...) -> (output, last cache or None)``, computing in
        a mixed policy's ``compute_dtype`` (the output in the parameters' dtype), matrix
        multiplies at ``matmul_precision``."""
        kind = ("inference", compute_dtype, matmul_precision)
        return self.cache.layers(
            kind, self, layers, lambda own: self._inference(own, compute_dtype, matmul_precision)
        )

    def _inference(
        self, layers: tuple[Any, ...], compute_dtype: str | None, matmul_precision: str
    ) -> Forward:
        xp, scope = self.backend.xp, self.backend.matmul_scope

        def run(params: Any, states: Any, x: Array, *, keep_cache: bool) -> Any:
            with scope(matmul_precision):
                return _forward(layers, params, states, x, xp, keep_cache, compute_dtype)

        return run

    def finite(self, arrays: Sequence[Array]) -> bool:
        """Whether every element of every array is finite, with one device read."""
        return kernels.all_finite(list(arrays), self.backend.xp)

    def converter(self, dtype: str) -> Callable[[Any], Any]:
        """``convert(batch) -> batch``: a host :class:`~xpnet.data.streams.Batch` on the device,
        features and weights in ``dtype``, integer targets kept integer (class labels)."""
        self.backend.dtype(dtype)
        to = self.backend.asarray

        def convert(batch: Any) -> Any:
            return type(batch)(*(_on_device(to, a, dtype, i) for i, a in enumerate(batch)))

        return convert


def _forward(
    layers: Sequence[Any],
    params: Any,
    states: Any,
    x: Array,
    xp: Any,
    keep_cache: bool,
    compute_dtype: str | None = None,
) -> Any:
    out, caches, _ = pure.forward(
        layers, params, states, x, training=False, xp=xp, keep_caches=False, compute_dtype=compute_dtype
    )
    return out, caches[-1] if keep_cache else None


def _on_device(to_device: Callable[..., Any], a: Any, dtype: str, position: int) -> Any:
    if a is None:
        return None
    keep = position == 1 and np.asarray(a).dtype.kind in "biu"
    return to_device(np.asarray(a) if keep else np.asarray(a, dtype=dtype))


class EagerRunner:
    """Runs the step batch by batch in Python (see the module docstring)."""

    def __init__(self, backend: Backend, step: StepFunction, *, inplace: bool) -> None:
        self.backend = backend
        self.step = step
        self.inplace = inplace and backend.mutable

    def run(self, carry: Carry, epoch: Epoch, report: Report | None = None) -> tuple[Carry, Array, Array]:
        """Train one epoch; returns the new carry, the summed batch losses x rows, and the correct count."""
        with self.backend.scope():
            return self._run(carry, epoch, report)

    def run_epochs(
        self, carry: Carry, make: Callable[[int], Epoch], count: int
    ) -> tuple[Carry, list[Array], list[Array], int]:
        """Train up to ``count`` epochs back to back; ``make(i)`` gives epoch ``i`` (called in order).

        As :meth:`JaxEpochRunner.run_epochs`: stops after the first epoch whose
        loss or parameters are not finite (the reads ``fit`` would make per
        epoch anyway) and returns the carry, each epoch's summed loss x rows
        and correct count, and how many epochs ran. ``fit`` pays its per-epoch
        set-up once.
        """
        totals: list[Array] = []
        corrects: list[Array] = []
        with self.backend.scope():
            for i in range(count):
                carry, total, correct = self._run(carry, make(i), None)
                totals.append(total)
                corrects.append(correct)
                if not (math.isfinite(float(total)) and self._finite(carry)):
                    break
        return carry, totals, corrects, len(totals)

    def _finite(self, carry: Carry) -> bool:
        """Whether every parameter of ``carry`` is finite (one device read)."""
        return kernels.all_finite([p for layer in carry[0] for p in layer.values()], self.backend.xp)

    def _noise(self, epoch: Epoch, rows: int) -> list[Any] | None:
        if epoch.draw is None:
            return None
        xp, device = self.backend.xp, self.backend.device
        return [None if m is None else xp.asarray(m, device=device) for m in epoch.draw(rows)]

    def _run(
        self, carry: Carry, epoch: Epoch, report: Report | None, step: StepFunction | None = None
    ) -> tuple[Carry, Array, Array]:
        """One epoch, batch by batch, through ``step`` (default :attr:`step`, the generic one)."""
        xp, step = self.backend.xp, step or self.step
        x, t, size, n = epoch.x, epoch.t, epoch.batch_size, epoch.rows
        w = epoch.weight
        order = None if epoch.order is None else xp.asarray(epoch.order, device=self.backend.device)
        params, opt, states = carry
        total: Any = 0.0
        correct: Any = 0
        lr, number = epoch.learning_rate, epoch.first_step
        for k, start in enumerate(range(0, n, size)):
            stop = min(start + size, n)
            if order is None:
                xb, tb = x[start:stop, ...], t[start:stop, ...]
                wb = None if w is None else w[start:stop]
            else:  # gathering per batch keeps no shuffled copy of the whole data
                index = order[start:stop, ...]
                xb, tb = xp.take(x, index, axis=0), xp.take(t, index, axis=0)
                wb = None if w is None else xp.take(w, index, axis=0)
            noise = self._noise(epoch, stop - start)
            params, opt, states, value, hit = step(
                params, opt, states, xb, tb, wb, noise, number + k, lr, xp=xp, inplace=self.inplace
            )
            total = total + value * (stop - start)
            if hit is not None:
                correct = correct + hit
            if report is not None:
                report(k + 1, total, stop)
        return (params, opt, states), total, correct

"""How each backend runs an epoch of the pure training step.

The step itself (:func:`xpnet.train.step.train_step`) is one pure function of
explicit arrays; this module only decides how it is executed:

- :class:`EagerRunner` (NumPy, torch, CuPy, array-api-strict, and any
  backend with ``compile=False``): a Python loop over batches, gathering each
  batch on the device, with in-place parameter updates where the arrays are
  writeable. No host synchronization per step. CuPy runs inside its device
  (:meth:`Backend.scope`); fused elementwise kernels and CUDA-graph replay
  slot in as another runner here.
- :class:`JaxEpochRunner` (JAX): the whole epoch is one ``jax.jit`` call, a
  ``lax.scan`` over batches with the gather inside. Batches have one static
  shape: when the last one is partial, every batch gets sample weights and
  the last one is padded with weight-0 rows, which change nothing (the loss
  is ``sum(w_i l_i) / sum(w_i)``). Dropout masks are drawn on the host for
  the whole epoch in the eager order (after the shuffle), so the numbers are
  the same as eager. The optimizer state is donated to the call; parameters
  are not, since other threads may be predicting with them.

A runner never keeps arrays between calls: :meth:`run` takes the carry
``(params, opt_state, layer_state)`` and returns the new one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .registry import Array, Backend

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
        loss is not finite (one read per epoch, which ``fit`` makes anyway) and
        returns the carry, each epoch's summed loss x rows and correct count,
        and how many epochs ran. ``fit`` pays its per-epoch set-up once.
        """
        totals: list[Array] = []
        corrects: list[Array] = []
        with self.backend.scope():
            for i in range(count):
                carry, total, correct = self._run(carry, make(i), None)
                totals.append(total)
                corrects.append(correct)
                if not math.isfinite(float(total)):
                    break
        return carry, totals, corrects, len(totals)

    def _noise(self, epoch: Epoch, rows: int) -> list[Any] | None:
        if epoch.draw is None:
            return None
        xp, device = self.backend.xp, self.backend.device
        return [None if m is None else xp.asarray(m, device=device) for m in epoch.draw(rows)]

    def _run(self, carry: Carry, epoch: Epoch, report: Report | None) -> tuple[Carry, Array, Array]:
        xp = self.backend.xp
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
            params, opt, states, value, hit = self.step(
                params, opt, states, xb, tb, wb, noise, number + k, lr, xp=xp, inplace=self.inplace
            )
            total = total + value * (stop - start)
            if hit is not None:
                correct = correct + hit
            if report is not None:
                report(k + 1, total, stop)
        return (params, opt, states), total, correct


class JaxEpochRunner:
    """Runs epochs as one ``jax.jit``-compiled ``lax.scan`` each (see the module docstring).

    :meth:`run_epochs` runs several epochs in one call (a scan over epochs,
    each a scan over batches), stopping after the first one whose loss is not
    finite; the number of epochs is rounded up to a power of two, the extra
    ones skipped, so a few shapes are compiled.
    """

    def __init__(self, backend: Backend, step: StepFunction, prepare: Callable[[Carry], Carry]) -> None:
        import jax

        self.backend = backend
        self.step = step
        self.prepare = prepare
        self._epochs = jax.jit(self._epochs_body, donate_argnums=(1,))

    def _epochs_body(
        self,
        params: Any,
        opt: Any,
        states: Any,
        x: Array,
        t: Array,
        index: Array,
        weight: Array | None,
        counts: Array,
        noise: Any,
        first: Array,
        lr: Array,
        count: Array,
        sample_weight: Array | None,
    ) -> tuple[Any, Any, Any, Array, Array, Array]:
        import jax
        import jax.numpy as jnp

        def batch(carry: Any, inputs: Any) -> tuple[Any, Any]:
            p, o, s, number = carry
            rows, w, nz = inputs
            xb, tb = jnp.take(x, rows, axis=0), jnp.take(t, rows, axis=0)
            if sample_weight is not None:
                w = jnp.take(sample_weight, rows, axis=0) * w
            p, o, s, value, hit = self.step(p, o, s, xb, tb, w, nz, number, lr, xp=jnp, inplace=False)
            return (p, o, s, number + 1), (value, jnp.zeros((), x.dtype) if hit is None else hit)

        def train(args: Any) -> Any:
            state, rows, nz = args
            state, (values, hits) = jax.lax.scan(batch, state, (rows, weight, nz))
            return state, jnp.sum(values * counts), jnp.sum(hits)

        def skip(args: Any) -> Any:
            return args[0], jnp.zeros((), x.dtype), jnp.zeros((), x.dtype)

        def epoch(carry: Any, inputs: Any) -> tuple[Any, Any]:
            state, stopped, e = carry
            rows, nz = inputs
            active = jnp.logical_and(jnp.logical_not(stopped), e < count)
            state, total, correct = jax.lax.cond(active, train, skip, (state, rows, nz))
            stopped = jnp.logical_or(stopped, jnp.logical_and(active, jnp.logical_not(jnp.isfinite(total))))
            return (state, stopped, e + 1), (total, correct, active)

        if index.shape[0] == 1:  # one epoch: no stopping logic around it
            state, total, correct = train(((params, opt, states, first), index[0], _first_of(noise)))
            (params, opt, states, _) = state
            return params, opt, states, total[None], correct[None], jnp.ones((), count.dtype)
        start = ((params, opt, states, first), jnp.asarray(False), jnp.asarray(0, count.dtype))
        ((params, opt, states, _), _, _), (totals, corrects, ran) = jax.lax.scan(epoch, start, (index, noise))
        return params, opt, states, totals, corrects, jnp.sum(ran)

    def run(self, carry: Carry, epoch: Epoch, report: Report | None = None) -> tuple[Carry, Array, Array]:
        """Train one epoch in one compiled call; ``report`` is called once, at its end."""
        carry, totals, corrects, _ = self.run_epochs(carry, lambda i: epoch, 1)
        if report is not None:
            report(epoch.steps, totals[0], epoch.rows)
        return carry, totals[0], corrects[0]

    def run_epochs(
        self, carry: Carry, make: Callable[[int], Epoch], count: int
    ) -> tuple[Carry, np.ndarray, np.ndarray, int]:
        """Train up to ``count`` epochs in one call; ``make(i)`` gives epoch ``i`` (called in order).

        Returns the carry, each epoch's summed loss x rows and correct count
        (host arrays), and how many epochs ran (fewer when a loss was not finite).
        """
        epochs, batches = [], []
        for i in range(count):  # each epoch's draws right after its shuffle, as eager
            epochs.append(make(i))
            batches.append(_static_batches(epochs[-1]))
        first_epoch = epochs[0]
        span = 1 << (count - 1).bit_length()
        dtype = np.dtype(str(first_epoch.x.dtype))
        index = np.zeros((span, *batches[0][0].shape), np.int32)
        index[:count] = [b[0] for b in batches]
        weight, counts = batches[0][1], batches[0][2]
        if first_epoch.weight is not None and weight is None:
            weight = np.ones(index.shape[1:])
        drawn = [b[3] for b in batches]
        noise = None
        if drawn[0] is not None:
            noise = [_over_epochs([d[i] for d in drawn if d is not None], span) for i in range(len(drawn[0]))]
        params, opt, states = self.prepare(carry)
        # Host arrays go in as they are: jit places them beside the committed
        # device arrays, far cheaper than a device_put per array.
        params, opt, states, totals, corrects, ran = self._epochs(
            params,
            opt,
            states,
            first_epoch.x,
            first_epoch.t,
            index,
            None if weight is None else weight.astype(dtype),
            counts.astype(dtype),
            noise,
            np.asarray(first_epoch.first_step, dtype),
            np.asarray(first_epoch.learning_rate, dtype),
            np.asarray(count, np.int32),
            first_epoch.weight,
        )
        return (params, opt, states), np.asarray(totals), np.asarray(corrects), int(ran)


def _static_batches(
    epoch: Epoch,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[np.ndarray | None] | None]:
    """Row indices ``(steps, size)``, weights (None without padding), rows per step, stacked noise."""
    n, steps = epoch.rows, epoch.steps
    size = min(epoch.batch_size, n)
    rows = np.arange(n) if epoch.order is None else np.asarray(epoch.order)
    pad = steps * size - n
    index = np.concatenate([rows, np.zeros(pad, rows.dtype)]).reshape(steps, size).astype(np.int32)
    weight = None
    if pad:
        weight = (np.arange(steps * size) < n).astype(np.float64).reshape(steps, size)
    counts = np.full(steps, float(size))
    counts[-1] = n - (steps - 1) * size
    noise = None
    if epoch.draw is not None:
        per_step = [epoch.draw(int(c)) for c in counts]
        noise = [_stack([masks[i] for masks in per_step], size) for i in range(len(per_step[0]))]
    return index, weight, counts, noise


def _first_of(noise: Any) -> Any:
    """Epoch 0's slice of stacked per-epoch noise."""
    return None if noise is None else [None if m is None else m[0] for m in noise]


def _over_epochs(masks: list[Any], span: int) -> np.ndarray | None:
    """Per-epoch ``(steps, size, ...)`` masks stacked into ``(span, steps, size, ...)`` (zeros beyond)."""
    if masks[0] is None:
        return None
    out = np.zeros((span, *masks[0].shape), dtype=masks[0].dtype)
    out[: len(masks)] = masks
    return out


def _stack(masks: list[Any], size: int) -> np.ndarray | None:
    if masks[0] is None:
        return None
    out = np.zeros((len(masks), size, *masks[0].shape[1:]), dtype=masks[0].dtype)
    for k, mask in enumerate(masks):
        out[k, : mask.shape[0]] = mask
    return out


def make_runner(
    backend: Backend,
    step: StepFunction,
    *,
    compile: bool | None,
    prepare: Callable[[Carry], Carry],
    numpy_plan: Any = None,
) -> EagerRunner | JaxEpochRunner:
    """The runner for ``backend``: ``compile=None`` its best, ``False`` plain eager, pure updates.

    ``prepare(carry)`` completes a carry for fixed-shape loops (the optimizer
    state made explicit with zeros). ``numpy_plan`` (a
    :class:`~xpnet.backend.numpy_fused.Plan`, or None) is what NumPy's fused
    loop runs; the generic step runs the rest.
    """
    if compile is False:
        return EagerRunner(backend, step, inplace=False)
    if backend.name == "jax":
        return JaxEpochRunner(backend, step, prepare)
    if backend.name == "numpy":
        from .numpy_fused import NumpyFusedRunner  # built on EagerRunner, so imported here

        return NumpyFusedRunner(backend, step, numpy_plan)
    return EagerRunner(backend, step, inplace=True)

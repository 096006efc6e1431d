"""How each backend runs the pure functions: epochs of the training step, and the forward pass.

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
  are not, since other threads may be predicting with them. Many epochs run
  as one call (:class:`EpochPlan`) with one transfer of host draws in and
  one read of per-epoch results out.
- :class:`JaxInference`: the forward pass of ``predict`` and ``evaluate``
  under ``jax.jit`` (other backends run it as it is, see :func:`make_inference`).

A runner never keeps arrays between calls: :meth:`run` takes the carry
``(params, opt_state, layer_state)`` and returns the new one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import numpy_kernels as kernels
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
                params = [p for layer in carry[0] for p in layer.values()]
                if not (math.isfinite(float(total)) and kernels.all_finite(params, self.backend.xp)):
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


class JaxEpochRunner:
    """Runs epochs as one ``jax.jit``-compiled ``lax.scan`` each (see the module docstring).

    :meth:`run_epochs` runs several epochs in one call (a scan over epochs,
    each a scan over batches), stopping after the first one whose loss or
    parameters are not finite; the number of epochs is rounded up to a power
    of two, the extra ones skipped, so a few shapes are compiled. The host
    sends each call's row orders and noise in one transfer and reads its
    per-epoch results in one.
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
    ) -> tuple[Any, Any, Any, Array]:
        """The new carry and ``(epochs, 3)`` results: summed loss x rows, correct count, 1 if it ran."""
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
            total = jnp.sum(values * counts)
            # The barrier keeps the check from changing how XLA compiles the
            # updates before it (and so their rounding).
            state = jax.lax.optimization_barrier(state)
            finite = jnp.isfinite(total)
            for p in jax.tree_util.tree_leaves(state[0]):
                finite = jnp.logical_and(finite, jnp.all(jnp.isfinite(p)))
            return state, jnp.stack([total, jnp.sum(hits), jnp.ones((), x.dtype)]), finite

        def skip(args: Any) -> Any:
            return args[0], jnp.zeros(3, x.dtype), jnp.asarray(True)

        def epoch(carry: Any, inputs: Any) -> tuple[Any, Any]:
            state, stopped, e = carry
            rows, nz = inputs
            active = jnp.logical_and(jnp.logical_not(stopped), e < count)
            state, result, finite = jax.lax.cond(active, train, skip, (state, rows, nz))
            return (state, jnp.logical_or(stopped, jnp.logical_not(finite)), e + 1), result

        if index.shape[0] == 1:  # one epoch: no stopping logic around it
            state, result, _ = train(((params, opt, states, first), index[0], _first_of(noise)))
            (params, opt, states, _) = state
            return params, opt, states, result[None]
        start = ((params, opt, states, first), jnp.asarray(False), jnp.asarray(0, count.dtype))
        ((params, opt, states, _), _, _), results = jax.lax.scan(epoch, start, (index, noise))
        return params, opt, states, results

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

        An :class:`EpochPlan` whose layers draw no noise has its shuffles
        drawn in one go. Returns the carry, each epoch's summed loss x rows
        and correct count (host arrays), and how many epochs ran: fewer when
        one ended with a loss or parameters not finite (the last that ran).
        """
        span = 1 << (count - 1).bit_length()
        first, index, noise = _host_inputs(make, count, span)
        n, steps, size = first.rows, first.steps, min(first.batch_size, first.rows)
        dtype = np.dtype(str(first.x.dtype))
        counts = np.full(steps, size, dtype)
        counts[-1] = n - (steps - 1) * size
        weight = None
        if steps * size > n or first.weight is not None:  # padded rows weigh 0
            weight = (np.arange(steps * size) < n).astype(dtype).reshape(steps, size)
        params, opt, states = self.prepare(carry)
        # Host arrays go in as they are: jit places them beside the committed
        # device arrays, far cheaper than a device_put per array.
        params, opt, states, results = self._epochs(
            params,
            opt,
            states,
            first.x,
            first.t,
            index,
            weight,
            counts,
            noise,
            np.asarray(first.first_step, dtype),
            np.asarray(first.learning_rate, dtype),
            np.asarray(count, np.int32),
            first.weight,
        )
        results = np.asarray(results)  # the call's one read back
        ran = int(np.count_nonzero(results[:, 2]))
        return (params, opt, states), results[:, 0], results[:, 1], ran


def _host_inputs(make: Callable[[int], Epoch], count: int, span: int) -> tuple[Epoch, np.ndarray, Any]:
    """Epoch 0, the row indices ``(span, steps, size)`` of ``count`` epochs, and their stacked noise.

    Rows of a partial last batch and epochs beyond ``count`` are padded with
    row 0. Each epoch's noise is drawn right after its shuffle, as eager.
    """
    if isinstance(make, EpochPlan) and make.draw is None:
        first, orders, noise = make.epoch(0, None), make.orders(count), None
    else:
        epochs, drawn = [], []
        for i in range(count):
            epochs.append(make(i))
            drawn.append(_epoch_noise(epochs[-1]))
        first = epochs[0]
        orders = None
        if first.order is not None:
            orders = np.stack([np.asarray(e.order) for e in epochs])
        noise = None
        if drawn[0] is not None:
            noise = [_over_epochs([d[k] for d in drawn if d is not None], span) for k in range(len(drawn[0]))]
    n, steps = first.rows, first.steps
    index = np.zeros((span, steps * min(first.batch_size, n)), np.int32)
    index[:count, :n] = np.arange(n) if orders is None else orders
    return first, index.reshape(span, steps, -1), noise


def _epoch_noise(epoch: Epoch) -> list[np.ndarray | None] | None:
    """Each layer's noise for every batch of ``epoch``, stacked ``(steps, size, ...)`` (zero-padded)."""
    if epoch.draw is None:
        return None
    size = min(epoch.batch_size, epoch.rows)
    per_step = [epoch.draw(min(size, epoch.rows - start)) for start in range(0, epoch.rows, size)]
    return [_stack([masks[i] for masks in per_step], size) for i in range(len(per_step[0]))]


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


Forward = Callable[..., tuple[Any, Any]]
"""``forward(params, layer_state, x, *, xp, keep_cache) -> (output, last cache or None)``."""


class JaxInference:
    """The pure forward pass under ``jax.jit``, for ``predict`` and ``evaluate``.

    Compiled once per network structure (the owner caches this object) and
    input shape. Without the cache (``predict``) the rows are padded up to
    one of a few sizes per power of two (:func:`padded_rows`), so calls with
    changing row counts reuse a few compilations; the outputs of the padding
    rows are dropped. With the cache (``evaluate``) the shape is the
    caller's, as a cache's arrays need not be per row. Safe to call from
    several threads at once; nothing is kept between calls.
    """

    def __init__(self, forward: Forward) -> None:
        import jax
        import jax.numpy as jnp

        self._compiled = {
            keep: jax.jit(lambda p, s, x, keep=keep: forward(p, s, x, xp=jnp, keep_cache=keep))
            for keep in (False, True)
        }

    def __call__(self, params: Any, states: Any, x: Array, *, keep_cache: bool) -> tuple[Array, Any]:
        if keep_cache:
            return self._compiled[True](params, states, x)
        import jax.numpy as jnp

        n = int(x.shape[0])
        rows = padded_rows(n)
        if rows == n:
            return self._compiled[False](params, states, x)
        padding = [(0, rows - n)] + [(0, 0)] * (x.ndim - 1)
        out, _ = self._compiled[False](params, states, jnp.pad(x, padding))
        return out[:n, ...], None


def padded_rows(n: int) -> int:
    """``n`` rounded up to a multiple of an eighth of the power of two at or above it (< 1.25 ``n``)."""
    step = 1 << max((n - 1).bit_length() - 3, 0)
    return -(-n // step) * step


def make_inference(backend: Backend, forward: Forward, *, compile: bool | None) -> Forward:
    """``forward`` run the backend's best way: compiled on JAX (unless ``compile=False``), else as is.

    The result is called ``run(params, layer_state, x, keep_cache=...)``.
    """
    if compile is not False and backend.name == "jax":
        return JaxInference(forward)
    xp = backend.xp
    return lambda params, states, x, *, keep_cache: forward(params, states, x, xp=xp, keep_cache=keep_cache)


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

"""JAX's epoch runner: whole epochs as one ``jax.jit``-compiled call.

An epoch is a ``lax.scan`` over batches with the gather inside. Batches have
one static shape: when the last one is partial, every batch gets sample
weights and the last one is padded with weight-0 rows, which change nothing
(the loss is ``sum(w_i l_i) / sum(w_i)``). Dropout masks are drawn on the
host for the whole epoch in the eager order (after the shuffle), so the
numbers are the same as eager. The optimizer state is donated to the call;
parameters are not, since other threads may be predicting with them.

Many epochs run as one call (an :class:`~xpnet.engine.epochs.EpochPlan`), a
loop over epochs with one transfer of host draws in and one read of
per-epoch results out. The number of epochs is not a static shape: it is
the loop's trip count, an argument, and a call's inputs hold one of a few
fixed spans of epochs (:data:`SPANS`), so ``fit(epochs=500)`` after
``fit(epochs=200)`` compiles nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import Backend
from .epochs import Array, Carry, Epoch, EpochPlan, Report, StepFunction

SPANS = (1, 32, 1024)
"""The numbers of epochs a compiled call holds: at most these shapes are compiled per structure
and data set, whatever epoch counts ``fit`` is given."""
INPUT_LIMIT = 1 << 22
"""At most this many row indices and noise elements (16 MiB) go into one call of fused epochs."""
CALLS = 4
"""Calls of an already compiled span that are preferred to compiling a larger one."""


class JaxEpochRunner:
    """Runs epochs as one ``jax.jit``-compiled ``lax.scan`` each (see the module docstring).

    :meth:`run_epochs` runs several epochs in one call (a scan over epochs,
    each a scan over batches), stopping after the first one whose loss or
    parameters are not finite. A call holds one of :data:`SPANS` epochs: its
    row indices (and masks) are that long, and a loop whose trip count is an
    argument trains the asked ones, so a few shapes are compiled: the
    smallest span already compiled for these inputs that holds the asked
    count (its inputs under an eighth of :data:`INPUT_LIMIT`), else
    :func:`span_for`. The host sends each call's
    row orders and noise in one transfer and reads its per-epoch results in one.
    """

    def __init__(self, backend: Backend, step: StepFunction, prepare: Callable[[Carry], Carry]) -> None:
        import jax

        self.backend = backend
        self.step = step
        self.prepare = prepare
        self._epochs = jax.jit(self._epochs_body, donate_argnums=(1,))
        self._spans: dict[Any, set[int]] = {}  # the spans compiled, per shape of the other inputs

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

        if index.shape[0] == 1:  # one epoch: no stopping logic around it
            state, result, _ = train(((params, opt, states, first), index[0], _first_of(noise)))
            (params, opt, states, _) = state
            return params, opt, states, result[None]

        def going(carry: Any) -> Any:
            _, e, stopped, _ = carry
            return jnp.logical_and(e < count, jnp.logical_not(stopped))

        def epoch(carry: Any) -> Any:
            state, e, _, results = carry
            nz = None if noise is None else [None if m is None else m[e] for m in noise]
            state, result, finite = train((state, index[e], nz))
            return state, e + 1, jnp.logical_not(finite), results.at[e].set(result)

        # A loop whose trip count is an argument: the epochs beyond ``count`` cost nothing.
        results = jnp.zeros((index.shape[0], 3), x.dtype)
        start = ((params, opt, states, first), jnp.asarray(0, count.dtype), jnp.asarray(False), results)
        (params, opt, states, _), _, _, results = jax.lax.while_loop(going, epoch, start)
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

        The call trains at most the largest of :data:`SPANS` its inputs fit
        in; the caller asks again for the rest. An :class:`EpochPlan` whose
        layers draw no noise has its shuffles drawn in one go. Returns the
        carry, each epoch's summed loss x rows and correct count (host
        arrays), and how many epochs ran: fewer than asked when one ended with
        a loss or parameters not finite (the last that ran), or when the call
        could hold no more.
        """
        first, index, noise, count = _host_inputs(make, count, self._span)
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
        return (params, opt, states), results[:count, 0], results[:count, 1], ran

    def _span(self, count: int, per_epoch: int, shapes: Any) -> int:
        """The span of the call for ``count`` epochs (see the class docstring), recorded as compiled."""
        compiled = self._spans.setdefault(shapes, set())
        cheap = sorted(s for s in compiled if s == 1 or s * per_epoch <= INPUT_LIMIT // 8)
        holding = [s for s in cheap if s >= count]
        if holding:
            span = holding[0]
        elif cheap and cheap[-1] * CALLS >= count:  # a few calls of a compiled span beat a compilation
            span = cheap[-1]
        else:
            span = span_for(count, per_epoch)
        compiled.add(span)
        return span


def span_for(count: int, per_epoch: int) -> int:
    """The epochs one call holds for ``count`` asked: the smallest of :data:`SPANS` at or above
    ``count`` whose ``per_epoch`` input elements fit :data:`INPUT_LIMIT`, else the largest that fits."""
    fits = [s for s in SPANS if s == 1 or s * per_epoch <= INPUT_LIMIT]
    return next((s for s in fits if s >= count), fits[-1])


def _host_inputs(
    make: Callable[[int], Epoch], count: int, choose: Callable[[int, int, Any], int]
) -> tuple[Epoch, np.ndarray, Any, int]:
    """Epoch 0, the row indices ``(span, steps, size)`` of the epochs this call trains, their
    stacked noise, and how many they are (at most ``count``): ``choose(count, per_epoch,
    shapes)`` sets the span from the input elements per epoch and the other inputs' shapes.

    Rows of a partial last batch and epochs beyond those trained are padded
    with row 0. Each epoch's noise is drawn right after its shuffle, as eager.
    """
    if isinstance(make, EpochPlan) and make.draw is None:
        first = make.epoch(0, None)
        span = choose(count, first.steps * min(first.batch_size, first.rows), _shapes(first, None))
        count = min(count, span)
        orders, noise = make.orders(count), None
    else:
        epochs = [make(0)]
        drawn = [_epoch_noise(epochs[0])]
        first = epochs[0]
        per_epoch = first.steps * min(first.batch_size, first.rows)
        per_epoch += sum(0 if m is None else m.size for m in drawn[0] or ())
        span = choose(count, per_epoch, _shapes(first, drawn[0]))
        count = min(count, span)
        for i in range(1, count):
            epochs.append(make(i))
            drawn.append(_epoch_noise(epochs[-1]))
        orders = None
        if first.order is not None:
            orders = np.stack([np.asarray(e.order) for e in epochs])
        noise = None
        if drawn[0] is not None:
            noise = [_over_epochs([d[k] for d in drawn if d is not None], span) for k in range(len(drawn[0]))]
    n, steps = first.rows, first.steps
    index = np.zeros((span, steps * min(first.batch_size, n)), np.int32)
    index[:count, :n] = np.arange(n) if orders is None else orders
    return first, index.reshape(span, steps, -1), noise, count


def _shapes(epoch: Epoch, noise: Any) -> tuple[Any, ...]:
    """What besides the span sets the shapes of a call (each distinct value compiles)."""
    masks = () if noise is None else tuple(None if m is None else (m.shape, m.dtype.str) for m in noise)
    data = [(tuple(a.shape), str(a.dtype)) for a in (epoch.x, epoch.t)]
    return (*data, epoch.weight is None, epoch.batch_size, masks)


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

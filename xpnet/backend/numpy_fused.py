"""A fused NumPy training loop for stacks of Dense and Dropout layers, the generic step inside it.

The generic step (:func:`xpnet.train.step.train_step`) makes a new array for
every intermediate and crosses some fifty Python-level calls per batch. Most
networks are a few ``Dense`` layers with elementwise activations, perhaps
``Dropout``, ending in sigmoid + binary cross-entropy, softmax + categorical
cross-entropy (or a linear output read as logits), or mean squared error.
For those, :class:`NumpyFusedRunner` runs the same math with NumPy's ``out=``
arguments into work buffers made once per call (one call trains one epoch, or
many fused epochs), so a step allocates almost nothing and makes far fewer
calls. What it does not cover it hands to the generic step
(:class:`~xpnet.backend.compile.EagerRunner`), so callers never choose.

What is fused, and how it stays the generic math:

- Forward: ``matmul`` into the layer's buffer, the bias added and the
  activation applied in place (the derivatives need only the output).
- The loss: sigmoid + binary cross-entropy from ``s = log(1 + exp(-z))``
  (``logaddexp``), ``p = exp(-s)`` and the loss ``s + z (1 - y)``, which is
  the generic ``max(z, 0) - z y + log1p(exp(-|z|))``; softmax +
  cross-entropy from the shifted logits, their log-sum-exp and, for integer
  labels, the label's entry (no one-hot); mean squared error from
  ``out - y``. Sample weights, label smoothing and accuracy as the generic
  loss and :func:`~xpnet.nn.metrics.correct_count` define them.
- Backward and update: each layer's gradients into buffers made once, the
  layer updated as soon as its input gradient exists (as the generic step).
  With plain SGD (no momentum, no weight decay) the learning rate is folded
  into the loss gradient's scale, so the whole backward pass carries
  ``lr * grad`` and each update is one subtraction; any other optimizer runs
  its own ``update`` rule in place on the gradient buffers.

The numbers equal the generic step's to rounding (the learning rate's fold
and the loss sums round differently; ``tests/test_numpy_fused.py`` checks
weights, losses and accuracies against ``compile=False``). Buffers live in
one call's :class:`_Work`, never on the runner, so one runner serves
concurrent ``fit`` calls of different networks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compile import Carry, EagerRunner, Epoch, Report, StepFunction
from .numpy_kernels import LEAKY_RELU_SLOPE, all_finite
from .registry import Array, Backend

ELEMENTWISE = frozenset({"linear", "relu", "leaky_relu", "tanh", "sigmoid"})
"""Activations the fused loop computes in place (hidden layers, and a mean-squared-error output)."""
LOSSES = {"binary_crossentropy": "sigmoid", "categorical_crossentropy": "softmax", "mse": None}
"""Losses the fused loop computes, with the output activation each fuses with."""


@dataclass(frozen=True)
class DenseSpec:
    """A ``Dense`` layer: its activation's name and whether it adds a bias."""

    activation: str
    bias: bool = True


@dataclass(frozen=True)
class DropoutSpec:
    """A ``Dropout`` layer: its rate (its masks come from ``Epoch.draw``)."""

    rate: float


@dataclass(frozen=True)
class Plan:
    """What the fused loop runs: the layers, the loss and the update rule.

    Parameters
    ----------
    layers : sequence of DenseSpec or DropoutSpec
        In order; the last one is a Dense layer.
    loss : {"binary_crossentropy", "categorical_crossentropy", "mse"}
    label_smoothing : float
        Categorical cross-entropy's.
    update : callable or None
        The optimizer's ``update(param, grad, state, xp, *, inplace, step,
        learning_rate, **update_options)``; None for plain SGD (no momentum,
        no weight decay), whose learning rate the loop folds into the
        backward pass.
    update_options : mapping
        Extra keyword arguments of ``update`` (``overwrite_grad``: the
        gradients are the loop's own buffers).
    """

    layers: tuple[DenseSpec | DropoutSpec, ...]
    loss: str
    label_smoothing: float = 0.0
    update: Callable[..., tuple[Array, dict[str, Array]]] | None = None
    update_options: Mapping[str, Any] = field(default_factory=dict)
    first: int = field(init=False)
    """Index of the first Dense layer: backward stops there."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        dense = [i for i, spec in enumerate(self.layers) if isinstance(spec, DenseSpec)]
        if not dense or dense[-1] != len(self.layers) - 1:
            raise ValueError("a fused plan ends with a Dense layer")
        if self.loss not in LOSSES:
            raise ValueError(f"the fused loop computes {sorted(LOSSES)}, not {self.loss!r}")
        last = self.layers[-1]
        assert isinstance(last, DenseSpec)
        wanted = LOSSES[self.loss]
        allowed = ELEMENTWISE if wanted is None else {wanted, "linear"}
        hidden = [spec.activation for spec in self.layers[:-1] if isinstance(spec, DenseSpec)]
        if last.activation not in allowed or not set(hidden) <= ELEMENTWISE:
            raise ValueError(f"the fused loop does not compute this network's activations: {self.layers}")
        object.__setattr__(self, "first", dense[0])

    @property
    def from_logits(self) -> bool:
        """Whether the loss gradient is taken with respect to the last layer's logits."""
        return LOSSES[self.loss] is not None


def fused_plan(
    layers: Sequence[DenseSpec | DropoutSpec | None],
    loss: str | None,
    *,
    label_smoothing: float = 0.0,
    update: Callable[..., Any] | None = None,
    update_options: Mapping[str, Any] | None = None,
) -> Plan | None:
    """The :class:`Plan` for these layers and loss, or None when the fused loop does not cover them.

    A None among ``layers`` (a layer of another kind) or an unknown ``loss``
    gives None, as does any combination :class:`Plan` refuses.
    """
    if loss is None or any(spec is None for spec in layers):
        return None
    try:
        return Plan(
            tuple(spec for spec in layers if spec is not None),
            loss,
            label_smoothing,
            update,
            dict(update_options or {}),
        )
    except ValueError:
        return None


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

    def _work(self, carry: Carry, epoch: Epoch) -> _Work | None:
        """A fresh workspace when the fused loop covers this call, else None."""
        if self.plan is None or not _covered(self.plan, carry[0], epoch):
            return None
        return _Work(self.plan, self.backend.xp, carry, epoch)


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


class _Layer:
    """One layer of a call: its parameter arrays (updated in place) and gradient buffers."""

    def __init__(self, index: int, spec: DenseSpec | DropoutSpec, params: dict[str, Array]) -> None:
        self.index = index
        self.dense = isinstance(spec, DenseSpec)
        self.activation = spec.activation if isinstance(spec, DenseSpec) else "linear"
        self.scale = 1.0 / (1.0 - spec.rate) if isinstance(spec, DropoutSpec) else 1.0
        self.activate = False  # whether the forward pass applies the activation (set by _Work)
        self.weight: Array = params.get("weight")
        self.bias: Array = params.get("bias")
        self.grad_weight: Array = None if self.weight is None else np.empty_like(self.weight)
        self.grad_bias: Array = None if self.bias is None else np.empty_like(self.bias)


class _Buffers:
    """The work arrays of one batch size: each layer's output, input gradient and scratch."""

    def __init__(
        self, rows: int, layers: Sequence[_Layer], widths: Sequence[int], dtype: Any, first: int
    ) -> None:
        self.out: list[Array] = []
        self.dx: list[Array] = []
        self.scratch: list[Array] = []
        k = widths[-1]
        # The last layer's output z beside log(1 + exp(-z)) (BCE; MSE: out - y), and their factors
        # ones beside 1 - y: the binary cross-entropy's sum is one dot product of the two.
        self.pair = np.empty((2, rows, k), dtype)
        self.factors = np.ones((2, rows, k), dtype)
        last = len(layers) - 1
        for layer, (fan_in, fan_out) in zip(layers, itertools.pairwise(widths)):
            self.out.append(self.pair[1] if layer.index == last else np.empty((rows, fan_out), dtype))
            needs_dx = layer.dense and layer.index > first  # backward stops at the first Dense
            self.dx.append(np.empty((rows, fan_in), dtype) if needs_dx else None)
            kind = bool if layer.activation == "relu" else dtype
            needed = not layer.dense or layer.activation != "linear"  # a mask, or an activation's scratch
            self.scratch.append(np.empty((rows, fan_out), kind) if needed else None)
        self.prob = np.empty((rows, k), dtype)
        self.soft = self.pair[0]
        self.targets = np.empty((rows, k), dtype)
        self.hits = np.empty((rows, k), bool)
        self.truth = np.empty((rows, k), bool)
        self.column = np.empty((rows, 1), dtype)
        self.top = np.empty((rows, 1), dtype)
        self.rowbase = np.arange(rows, dtype=np.intp) * k
        self.flat = np.empty(rows, np.intp)
        self.argmax = np.empty(rows, np.intp)


class _Work:
    """One runner call's workspace and loop: made per call, so nothing is shared between calls."""

    def __init__(self, plan: Plan, xp: Any, carry: Carry, epoch: Epoch) -> None:
        params, opt_state, states = carry
        self.plan = plan
        self.xp = xp
        self.dtype = epoch.x.dtype
        self.layers = [_Layer(i, spec, p) for i, (spec, p) in enumerate(zip(plan.layers, params))]
        widths = [int(epoch.x.shape[1])]
        for layer in self.layers:
            widths.append(int(layer.weight.shape[1]) if layer.dense else widths[-1])
        self.widths = widths
        last = len(self.layers) - 1
        for layer in self.layers:
            fused_output = layer.index == last and plan.from_logits
            layer.activate = layer.dense and layer.activation != "linear" and not fused_output
        self.backward_order = self.layers[plan.first :][::-1]
        self.outputs = widths[-1]
        self.opt_state = dict(opt_state)
        self.states = states
        self.step_number = epoch.first_step
        self._buffers: dict[int, _Buffers] = {}
        self._batch: dict[int, tuple[Array, Array, Array]] = {}
        self.kind = _tally_kind(plan, epoch.t)
        self._counted: list[int] = []  # correct counts of the epochs done, in order
        self.tally = None if self.kind is None else _Tally(self.kind, epoch.t, epoch.weight, self._counted)

    def corrects(self) -> list[int]:
        """Every epoch's correct count so far (0 for a regression loss)."""
        if self.tally is not None:
            self.tally.flush()
        return self._counted

    def carry(self, carry: Carry) -> Carry:
        """The carry after the steps taken: the same parameter arrays, updated in place."""
        params: list[dict[str, Array]] = []
        for layer in self.layers:
            if not layer.dense:
                params.append({})
            elif layer.bias is None:
                params.append({"weight": layer.weight})
            else:
                params.append({"weight": layer.weight, "bias": layer.bias})
        return params, self.opt_state, self.states

    def buffers(self, rows: int) -> _Buffers:
        found = self._buffers.get(rows)
        if found is None:
            made = _Buffers(rows, self.layers, self.widths, self.dtype, self.plan.first)
            found = self._buffers[rows] = made
        return found

    def gathered(self, rows: int, x: Array, t: Array, w: Array | None) -> tuple[Array, Array, Array | None]:
        """Buffers for one shuffled batch's rows (made on first use of each batch size)."""
        found = self._batch.get(rows)
        if found is None:
            found = (
                np.empty((rows, *x.shape[1:]), x.dtype),
                np.empty((rows, *t.shape[1:]), t.dtype),
                None if w is None else np.empty(rows, w.dtype),
            )
            self._batch[rows] = found
        return found

    def epoch(self, epoch: Epoch, report: Report | None) -> float:
        """Train one epoch; returns the summed batch losses x rows (its correct count: :meth:`corrects`)."""
        x, t, w, order = epoch.x, epoch.t, epoch.weight, epoch.order
        n, size = epoch.rows, epoch.batch_size
        lr, draw = epoch.learning_rate, epoch.draw
        self.step_number = epoch.first_step
        tally = self.tally
        if tally is not None and (tally.t is not t or tally.w is not w):  # other data: count it apart
            tally.flush()
            tally = self.tally = _Tally(tally.kind, t, w, self._counted)
        if tally is not None:
            tally.start(order)
        else:
            self._counted.append(0)
        total = 0.0
        for k, start in enumerate(range(0, n, size)):
            stop = min(start + size, n)
            rows = stop - start
            if order is None:
                xb, tb = x[start:stop], t[start:stop]
                wb = None if w is None else w[start:stop]
            else:  # gathered into buffers: no copy of the whole data, no allocation per batch
                index = order[start:stop]
                xb, tb, wb = self.gathered(rows, x, t, w)
                x.take(index, axis=0, out=xb, mode="clip")
                t.take(index, axis=0, out=tb, mode="clip")
                if w is not None:
                    w.take(index, axis=0, out=wb, mode="clip")
            noise = None if draw is None else draw(rows)
            total += self.step(xb, tb, wb, noise, lr) * rows
            if report is not None:
                report(k + 1, total, stop)
        if tally is not None:
            tally.end()
        return total

    # -- one step -----------------------------------------------------------------------------------

    def step(self, x: Array, t: Array, w: Array | None, noise: Sequence[Any] | None, lr: float) -> float:
        """One optimizer step; returns the batch loss."""
        rows = x.shape[0]
        buf = self._buffers.get(rows) or self.buffers(rows)
        inputs = self.forward(buf, x, noise)
        value = self.loss(buf, t, w, lr if self.plan.update is None else 1.0)
        self.backward(buf, inputs, lr)
        self.step_number += 1
        return value

    def forward(self, buf: _Buffers, x: Array, noise: Sequence[Any] | None) -> list[Array]:
        """Every layer's input, the output last (logits when the loss fuses with the activation)."""
        inputs = [x]
        h = x
        for layer in self.layers:
            i = layer.index
            if layer.dense:
                h = np.matmul(h, layer.weight, out=buf.out[i])
                if layer.bias is not None:
                    np.add(h, layer.bias, out=h)
                if layer.activate:
                    _activate(layer.activation, h, buf.scratch[i])
            elif noise is not None and noise[i] is not None:
                # the generic Dropout: x * (mask as dtype) * (1 / (1 - rate))
                scaled = np.multiply(noise[i], layer.scale, out=buf.scratch[i])
                h = np.multiply(h, scaled, out=buf.out[i])
            inputs.append(h)
        return inputs

    def loss(self, buf: _Buffers, t: Array, w: Array | None, lr: float) -> float:
        """The batch loss (its predictions go to the tally); leaves ``lr`` x the loss gradient in
        ``buf.prob`` (with respect to the logits for the cross-entropies, to the output for MSE)."""
        kind = self.plan.loss
        per_sample = 1 if kind == "categorical_crossentropy" else self.outputs
        if w is None:
            scale: Any = 1.0 / (t.shape[0] * per_sample)
        else:  # as the generic element_scale: w_i / (per_sample * sum(w)), one factor per row
            # Summed and divided in float64: float32 weights of 3e38 overflow a float32 sum (and a
            # float32 divisor). All 0: a 0 loss and 0 gradients.
            total = float(w.sum(dtype=np.float64)) or 1.0
            scale = np.divide(w.reshape(-1, 1), np.float64(total * per_sample), out=buf.column)
        if kind == "binary_crossentropy":
            return self._binary(buf, t, w, scale, lr)
        if kind == "categorical_crossentropy":
            return self._categorical(buf, t, w, scale, lr)
        diff = np.subtract(buf.out[-1], t, out=buf.soft)
        if w is None:
            value = float(np.vdot(diff, diff)) * scale
        else:
            np.multiply(diff, diff, out=buf.prob)
            value = float(np.vdot(scale, buf.prob.sum(axis=1)))
        np.multiply(diff, scale * (2.0 * lr), out=buf.prob)
        return value

    def _binary(self, buf: _Buffers, t: Array, w: Array | None, scale: Any, lr: float) -> float:
        z, soft, p, factors = buf.pair[1], buf.pair[0], buf.prob, buf.factors
        np.negative(z, out=soft)
        np.logaddexp(0.0, soft, out=soft)  # log(1 + exp(-z)) = -log(sigmoid(z)), never overflowing
        np.negative(soft, out=p)
        np.exp(p, out=p)  # sigmoid(z)
        # the loss terms max(z, 0) - z y + log1p(exp(-|z|)) are soft + z (1 - y)
        np.subtract(1.0, t, out=factors[1])
        if w is None:
            value = float(np.vdot(buf.pair, factors)) * scale
        else:
            np.multiply(factors[1], scale, out=factors[1])
            np.copyto(factors[0], scale)
            value = float(np.vdot(buf.pair, factors))
            factors[0] = 1.0
        assert self.tally is not None
        self.tally.record(p, t, w, buf)
        np.subtract(p, t, out=p)
        np.multiply(p, scale * lr, out=p)
        return value

    def _categorical(self, buf: _Buffers, t: Array, w: Array | None, scale: Any, lr: float) -> float:
        z, p, top, k = buf.out[-1], buf.prob, buf.top, self.outputs
        np.maximum.reduce(z, axis=1, keepdims=True, out=top)
        np.subtract(z, top, out=z)  # shifted logits
        np.exp(z, out=p)
        np.add.reduce(p, axis=1, keepdims=True, out=top)
        np.divide(p, top, out=p)  # softmax
        np.log(top, out=top)
        np.subtract(z, top, out=z)  # log-softmax
        smooth = self.plan.label_smoothing
        keep = 1.0 - smooth
        assert self.tally is not None
        self.tally.record(p, t, w, buf)
        if t.ndim == 1:
            flat = np.add(buf.rowbase, t, out=buf.flat)
            picked = z.reshape(-1).take(flat)
            if w is None:
                value = float(picked.sum()) * keep
                if smooth:
                    value += float(z.sum()) * (smooth / k)
                value *= -scale
            else:
                terms = picked * keep
                if smooth:
                    terms += z.sum(axis=1) * (smooth / k)
                value = -float(np.vdot(scale, terms))
            if smooth:
                np.subtract(p, smooth / k, out=p)
            p.reshape(-1)[flat] -= keep
        else:
            y = t
            if smooth:
                y = np.multiply(t, keep, out=buf.targets)
                y += smooth / k
            if w is None:
                value = -float(np.vdot(y, z)) * scale
            else:
                value = -float(np.vdot(scale, (y * z).sum(axis=1)))
            np.subtract(p, y, out=p)
        np.multiply(p, scale * lr, out=p)
        return value

    def backward(self, buf: _Buffers, inputs: list[Array], lr: float) -> None:
        """Backpropagate ``buf.prob`` and update each layer as soon as its gradients exist."""
        first, plain = self.plan.first, self.plan.update is None
        grad = buf.prob
        for layer in self.backward_order:
            i = layer.index
            if not layer.dense:
                if inputs[i + 1] is not inputs[i]:  # a dropout mask was applied
                    np.multiply(grad, buf.scratch[i], out=grad)
                continue
            if layer.activate:
                _derivative(layer.activation, inputs[i + 1], grad, buf.scratch[i])
            weight, bias = layer.weight, layer.bias
            np.matmul(inputs[i].T, grad, out=layer.grad_weight)
            if bias is not None:
                np.add.reduce(grad, axis=0, out=layer.grad_bias)
            dx = np.matmul(grad, weight.T, out=buf.dx[i]) if i > first else None
            if plain:  # the gradients already carry the learning rate
                np.subtract(weight, layer.grad_weight, out=weight)
                if bias is not None:
                    np.subtract(bias, layer.grad_bias, out=bias)
            else:
                self.update(layer, lr)
            if dx is not None:
                grad = dx

    def update(self, layer: _Layer, lr: float) -> None:
        """The optimizer's own rule, in place, on this layer's gradient buffers."""
        rule = self.plan.update
        assert rule is not None
        pairs = [("weight", layer.grad_weight), ("bias", layer.grad_bias)]
        for name, grad in pairs[: 1 if layer.bias is None else 2]:
            key = f"{layer.index}.{name}"
            new, self.opt_state[key] = rule(
                getattr(layer, name),
                grad,
                self.opt_state.get(key, {}),
                self.xp,
                inplace=True,
                step=self.step_number,
                learning_rate=lr,
                **self.plan.update_options,
            )
            setattr(layer, name, new)


_TALLY_ROWS = 4096
"""Data sets up to this many rows have their correct counts taken in bulk (see :class:`_Tally`)."""


def _tally_kind(plan: Plan, t: Array) -> str | None:
    """How predictions are judged: thresholds, argmax against labels or against one-hot rows."""
    if plan.loss == "binary_crossentropy":
        return "binary"
    if plan.loss == "categorical_crossentropy":
        return "labels" if t.ndim == 1 else "onehot"
    return None


class _Tally:
    """Correct predictions per epoch, counted as :func:`~xpnet.nn.metrics.correct_count` counts them.

    A small data set's steps only record their predictions (``p > 0.5``, or
    each row's argmax): one call per step instead of four. The predictions of
    many epochs are then compared with the targets at once, gathered in each
    epoch's row order; rows of weight 0 are not counted. Larger data sets
    (where per-step calls do not matter) count at every step.
    """

    def __init__(self, kind: str, t: Array, w: Array | None, counted: list[int]) -> None:
        self.kind, self.t, self.w = kind, t, w
        self.counted = counted
        self.n = int(t.shape[0])
        self.deferred = self.n <= _TALLY_ROWS
        self.orders: list[Array | None] = []
        self.offset = 0
        self.current = 0
        if self.deferred:
            rows = max(1, _TALLY_ROWS // self.n) * self.n
            shape = (rows, *t.shape[1:]) if kind == "binary" else (rows,)
            self.pred = np.empty(shape, bool if kind == "binary" else np.intp)

    def start(self, order: Array | None) -> None:
        """Begin an epoch that visits the rows in ``order`` (None: in their stored order)."""
        if not self.deferred:
            self.current = 0
            return
        if self.offset + self.n > self.pred.shape[0]:
            self.flush()
        self.orders.append(order)

    def record(self, p: Array, t: Array, w: Array | None, buf: _Buffers) -> None:
        """One batch's probabilities ``p`` for targets ``t`` (weights ``w``)."""
        if not self.deferred:
            self.current += _count(self.kind, p, t, w, buf)
            return
        rows = p.shape[0]
        slot = self.pred[self.offset : self.offset + rows]
        if self.kind == "binary":
            np.greater(p, 0.5, out=slot)
        else:
            p.argmax(axis=1, out=slot)
        self.offset += rows

    def end(self) -> None:
        if not self.deferred:
            self.counted.append(self.current)

    def flush(self) -> None:
        """Count the recorded epochs' hits."""
        if not self.orders:
            return
        epochs, n = len(self.orders), self.n
        truth, keep = self._truth()
        if any(order is not None for order in self.orders):
            rows = np.concatenate([np.arange(n) if order is None else order for order in self.orders])
            truth = truth.take(rows, axis=0)
            keep = None if keep is None else keep.take(rows, axis=0)
        else:  # every epoch in the stored order: broadcast
            truth = np.broadcast_to(truth, (epochs, *truth.shape)).reshape(epochs * n, *truth.shape[1:])
            keep = None if keep is None else np.tile(keep, epochs)
        hit = self.pred[: epochs * n] == truth
        if keep is not None:
            hit &= keep.reshape(-1, *([1] * (hit.ndim - 1)))
        self.counted.extend(int(c) for c in np.count_nonzero(hit.reshape(epochs, -1), axis=1))
        self.orders.clear()
        self.offset = 0

    def _truth(self) -> tuple[Array, Array | None]:
        t = self.t
        truth = t > 0.5 if self.kind == "binary" else t if self.kind == "labels" else t.argmax(axis=1)
        return truth, None if self.w is None else self.w != 0


def _count(kind: str, p: Array, t: Array, w: Array | None, buf: _Buffers) -> int:
    """One batch's correct count."""
    if kind == "binary":
        hit = np.greater(p, 0.5, out=buf.hits)
        np.equal(hit, np.greater(t, 0.5, out=buf.truth), out=hit)
        if w is not None:
            hit &= (w != 0).reshape(-1, 1)
    else:
        labels = t if kind == "labels" else t.argmax(axis=1)
        hit = np.equal(p.argmax(axis=1, out=buf.argmax), labels)
        if w is not None:
            hit &= w != 0
    return int(np.count_nonzero(hit))


def _activate(name: str, a: Array, scratch: Array) -> None:
    """``a = activation(a)`` in place (the generic functions' math)."""
    if name == "relu":
        np.maximum(a, 0.0, out=a)
    elif name == "tanh":
        np.tanh(a, out=a)
    elif name == "leaky_relu":  # max(a, slope * a): a for a > 0, slope * a below
        np.multiply(a, LEAKY_RELU_SLOPE, out=scratch)
        np.maximum(a, scratch, out=a)
    elif name == "sigmoid":  # the stable form: 1 / (1 + e) for a >= 0, e / (1 + e) below, e = exp(-|a|)
        e = scratch
        np.abs(a, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)
        positive = a >= 0
        np.add(e, 1.0, out=a)
        np.copyto(e, 1.0, where=positive)
        np.divide(e, a, out=a)


def _derivative(name: str, y: Array, grad: Array, scratch: Array) -> None:
    """``grad *= activation'`` in place, from the activation's output ``y``."""
    if name == "relu":
        np.greater(y, 0.0, out=scratch)
        np.multiply(grad, scratch, out=grad)
    elif name == "tanh":
        np.multiply(y, y, out=scratch)
        np.subtract(1.0, scratch, out=scratch)
        np.multiply(grad, scratch, out=grad)
    elif name == "leaky_relu":
        np.multiply(grad, np.where(y > 0, 1.0, LEAKY_RELU_SLOPE).astype(grad.dtype), out=grad)
    elif name == "sigmoid":
        np.subtract(1.0, y, out=scratch)
        np.multiply(scratch, y, out=scratch)
        np.multiply(grad, scratch, out=grad)

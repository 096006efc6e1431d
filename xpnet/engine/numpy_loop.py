"""The fused NumPy training loop: one runner call's workspace (:class:`Work`) and its steps.

The generic step (:func:`xpnet.engine.step.train_step`) makes a new array for
every intermediate and crosses some fifty Python-level calls per batch. Most
networks are a few ``Dense`` layers with elementwise activations, perhaps
``Dropout``, ending in sigmoid + binary cross-entropy, softmax + categorical
cross-entropy (or a linear output read as logits), or mean squared error.
For those, the NumPy engine's fused runner runs the same math with NumPy's ``out=``
arguments into work buffers made once per call (one call trains one epoch, or
many fused epochs), so a step allocates almost nothing and makes far fewer
calls. What it does not cover it hands to the generic step
(:class:`~xpnet.engine.eager.EagerRunner`), so callers never choose.

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
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend.numpy_kernels import activate_into, derivative_into
from .epochs import Carry, Epoch, Report
from .numpy_tally import Tally, tally_kind
from .plan import DenseSpec, DropoutSpec, LayerSpec, Plan

Array = Any


class _Layer:
    """One layer of a call: its parameter arrays (updated in place) and gradient buffers."""

    def __init__(self, index: int, spec: LayerSpec, params: dict[str, Array]) -> None:
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


class Work:
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
        self.kind = tally_kind(plan, epoch.t)
        self._counted: list[int] = []  # correct counts of the epochs done, in order
        self.tally = None if self.kind is None else Tally(self.kind, epoch.t, epoch.weight, self._counted)

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
            tally = self.tally = Tally(tally.kind, t, w, self._counted)
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
                    activate_into(layer.activation, h, buf.scratch[i])
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
                derivative_into(layer.activation, inputs[i + 1], grad, buf.scratch[i])
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

"""A fused session's device arrays for one data set and batch size, and its steps as kernel calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backend import Array, device_of
from .epochs import Epoch
from .plan import ActivationSpec, DenseSpec, DropoutSpec, NormSpec, Plan

PER_SAMPLE = {"categorical_crossentropy": False, "binary_crossentropy": True, "mse": True}
"""Whether a loss averages over the outputs too (its per-sample term is their mean)."""


def _widths(plan: Plan, params: Sequence[dict[str, Array]], inputs: int) -> list[int]:
    widths = [inputs]
    for spec, p in zip(plan.layers, params):
        widths.append(int(p["weight"].shape[1]) if isinstance(spec, DenseSpec) else widths[-1])
    return widths


class Steps:
    """The device arrays of one data set and batch size, and its steps as kernel calls into them.

    The targets and weights are copied into arrays of its own at every epoch
    (they are small), so a later ``fit`` with new target arrays replays the
    same recording; the features are read where they are (the data set is
    kept, and a new one gets its own work arrays).
    """

    def __init__(self, session: Any, epoch: Epoch) -> None:
        s, xp = session, session.xp
        self.s = s
        self.x = epoch.x
        self.n, self.size = epoch.rows, min(epoch.batch_size, epoch.rows)
        self.steps_per_epoch = -(-self.n // self.size)
        dtype, device, size, steps = epoch.x.dtype, device_of(epoch.x), self.size, self.steps_per_epoch
        self.dtype, self.device = dtype, device
        self.widths = _widths(s.plan, s.packing.params, int(epoch.x.shape[1]))
        self.replay: Callable[[], None] | None = None
        self.epochs = 0

        def zeros(*shape: int, kind: Any = dtype) -> Array:
            return xp.zeros(shape, dtype=kind, device=device)

        self.t = xp.zeros(tuple(epoch.t.shape), dtype=epoch.t.dtype, device=device)
        self.w = None if epoch.weight is None else zeros(self.n)
        self.index = zeros(steps * size, kind=xp.int32)
        valid = (np.arange(steps * size) < self.n).astype(np.dtype(str(dtype)))
        self.valid = xp.asarray(valid, device=device)
        self.row_weight = zeros(steps * size)
        self.xb, self.row_scales = zeros(size, self.widths[0]), zeros(steps, size, 1)
        self.tb = xp.zeros((size, *epoch.t.shape[1:]), dtype=epoch.t.dtype, device=device)
        self.out = [zeros(size, w) for w in self.widths[1:]]
        self.dx = [zeros(size, w) for w in self.widths[:-1]]
        self.grad = zeros(size, self.widths[-1])
        dropping = [i for i, spec in enumerate(s.plan.layers) if isinstance(spec, DropoutSpec) and spec.rate]
        self.masks = {i: zeros(steps, size, self.widths[i]) for i in dropping}
        self.scales = {i: 1.0 / (1.0 - s.plan.layers[i].rate) for i in dropping}
        self.stats: dict[int, tuple[Array, Array]] = {}  # a normalization's mean, 1 / sqrt(var + eps)
        for i, spec in enumerate(s.plan.layers):
            if isinstance(spec, NormSpec):  # per feature (batch) or per row (layer)
                count = self.widths[i] if spec.kind == "batch" else size
                self.stats[i] = (zeros(count), zeros(count))
        self.sums = zeros(3, kind=xp.float64)
        self.lr, self.step = zeros(1), zeros(1)
        self.per_sample = self.widths[-1] if PER_SAMPLE[s.plan.loss] else 1

    def fits(self, epoch: Epoch) -> bool:
        """Whether ``epoch``'s targets and weights have the shapes these arrays hold."""
        weights = (epoch.weight is None) == (self.w is None)
        return weights and tuple(epoch.t.shape) == tuple(self.t.shape) and epoch.t.dtype == self.t.dtype

    def load(self, epoch: Epoch) -> None:
        """Copy the epoch's host inputs in: row order, row weights and each step's loss scales, masks,
        rate, first step; zero the sums."""
        s, xp = self.s, self.s.xp
        order = np.arange(self.n) if epoch.order is None else np.asarray(epoch.order)
        index = np.zeros(self.steps_per_epoch * self.size, np.int32)
        index[: self.n] = order
        self.index[...] = xp.asarray(index, device=self.device)
        self.t[...] = epoch.t
        if self.w is None:
            self.row_weight[...] = self.valid
        else:
            self.w[...] = epoch.weight
            s.kernels.gather(self.w, self.index, self.row_weight)
            s.kernels.multiply(self.row_weight, self.valid, self.row_weight)
        weights = xp.reshape(self.row_weight, (self.steps_per_epoch, self.size))
        s.kernels.row_scale(weights, self.per_sample, self.row_scales)
        if epoch.draw is not None and self.masks:  # no mask to draw: nothing else draws from the generator
            self._masks(epoch)
        host = np.dtype(str(self.dtype))
        self.lr[...] = xp.asarray(np.array([epoch.learning_rate], host), device=self.device)
        self.step[...] = xp.asarray(np.array([epoch.first_step], host), device=self.device)
        self.sums[...] = 0

    def _masks(self, epoch: Epoch) -> None:
        assert epoch.draw is not None
        stacked = {i: np.zeros(m.shape, np.dtype(str(self.dtype))) for i, m in self.masks.items()}
        for k, start in enumerate(range(0, self.n, self.size)):
            drawn = epoch.draw(min(self.size, self.n - start))
            for i in self.masks:
                mask = drawn[i]
                if mask is not None:
                    stacked[i][k, : mask.shape[0]] = mask * self.scales[i]
        for i, host in stacked.items():
            self.masks[i][...] = self.s.xp.asarray(host, device=self.device)

    def steps(self) -> None:
        """Every step of the epoch, then the finiteness check."""
        for k in range(self.steps_per_epoch):
            self.one(k)
        self.s.kernels.check(self.s.packing.param, self.sums)

    def one(self, k: int) -> None:
        """Step ``k``: gather, forward, loss and its sums, backward into the flat gradients, one update."""
        s, kern, size = self.s, self.s.kernels, self.size
        rows = slice(k * size, (k + 1) * size)
        kern.gather(self.x, self.index[rows], self.xb)
        kern.gather(self.t, self.index[rows], self.tb)
        real = min(size, self.n - k * size)  # the last batch's others are padding
        inputs = self.forward(k, real)
        kern.loss(
            s.plan.loss,
            self.out[-1],
            self.tb,
            self.row_scales[k],
            s.plan.label_smoothing,
            self.grad,
            real,
            self.sums,
        )
        self.backward(inputs, k, real)
        kern.update(s.packing, s.plan.optimizer, self.lr, self.step, k)

    def forward(self, k: int, rows: int) -> list[Array]:
        """Every layer's input, the output last (logits when the loss fuses with the activation);
        ``rows`` of the batch's rows are real (the rest pad the last batch)."""
        s, kern = self.s, self.s.kernels
        inputs = [self.xb]
        h = self.xb
        last = len(s.plan.layers) - 1
        for i, spec in enumerate(s.plan.layers):
            p = s.packing.params[i]
            if isinstance(spec, DenseSpec):
                kern.matmul(h, p["weight"], self.out[i])
                fused = i == last and s.plan.from_logits
                kern.bias_act(self.out[i], p.get("bias"), "linear" if fused else spec.activation)
            elif isinstance(spec, NormSpec):
                state = s.states[i]
                kern.normalize(spec, h, rows, p["weight"], p["bias"], self.stats[i], state, self.out[i])
            elif isinstance(spec, ActivationSpec):
                kern.activate(h, self.out[i], spec.activation)
            elif i in self.masks:
                kern.multiply(h, self.masks[i][k], self.out[i])
            else:  # Dropout(0): the identity
                inputs.append(h)
                continue
            h = self.out[i]
            inputs.append(h)
        return inputs

    def backward(self, inputs: list[Array], k: int, rows: int) -> None:
        """Backpropagate the loss gradient into the flat gradient buffer."""
        s, kern = self.s, self.s.kernels
        plan, grads = s.plan, s.packing.grads
        grad = self.grad
        last = len(plan.layers) - 1
        for i in range(last, plan.first - 1, -1):
            spec = plan.layers[i]
            if isinstance(spec, DropoutSpec):
                if i in self.masks:
                    kern.multiply(grad, self.masks[i][k], grad)
                continue
            if isinstance(spec, ActivationSpec):
                kern.act_grad(grad, inputs[i + 1], spec.activation, None)
                continue
            dx = self.dx[i] if i > plan.first else None
            if isinstance(spec, NormSpec):
                weight, g = s.packing.params[i]["weight"], grads[i]
                kern.normalize_grad(
                    spec, inputs[i], grad, rows, weight, self.stats[i], g["weight"], g["bias"], dx
                )
            else:
                activation = "linear" if i == last and plan.from_logits else spec.activation
                kern.act_grad(grad, inputs[i + 1], activation, grads[i]["bias"] if spec.bias else None)
                kern.matmul(inputs[i], grad, grads[i]["weight"], ta=True)
                if dx is not None:
                    kern.matmul(grad, s.packing.params[i]["weight"], dx, tb=True)
            if dx is not None:
                grad = dx

"""The torch engine: the eager step's forward and backward, then one update for every parameter.

:class:`TorchEngine` is the eager engine with another runner for the models
whose optimizer is exactly SGD, Adam, AdamW or RMSprop, with no gradient
transform (clipping) and no mixed dtype policy (:func:`covers`). Its
:class:`FlatRunner` keeps the network's parameters and optimizer state each
in one contiguous torch buffer (:class:`~xpnet.engine.flat.Packing`) and
hands back views into them, so ``layer.params``, ``layer.weight`` and the
optimizer's state are those views, and a later call that finds its own views
again copies nothing. Each step runs the generic forward and backward pass
(:func:`~xpnet.engine.step.gradients`, any layers) and then one update of
all parameters (:mod:`xpnet.engine.torch_updates`) instead of one per
parameter.

Everything else runs the generic step, silently and with the same numbers to
rounding: other optimizers, clipping, mixed policies, frozen layers (a layer
with parameters that does not train), parameters that share memory or
require autograd, optimizer state with some entries missing, the
distributed step (around an allreduce) and ``compile=False``. Streamed
batches (one process) take the same one update.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from ..backend import Array, Backend
from ..backend import numpy_kernels as kernels
from ..optim.optimizers import SGD
from . import step as pure
from .eager import Allreduce, EagerEngine, EagerRunner
from .epochs import Carry, Epoch, Report, StepFunction
from .flat import Packing
from .torch_updates import COVERED, Update, flat_update


def covers(model: pure.Model) -> bool:
    """Whether :class:`FlatRunner` may run ``model`` (its arrays are checked per call)."""
    plain = model.transform is None and model.compute_dtype is None and model.loss_scaler is None
    return plain and type(model.optimizer) in COVERED and any(model.trainable)


class TorchEngine(EagerEngine):
    """:class:`~xpnet.engine.eager.EagerEngine` with :class:`FlatRunner` (see the module docstring)."""

    def runner(self, model: pure.Model) -> Any:
        if not self.inplace or not covers(model):
            return super().runner(model)
        # Not shared with other networks: the runner keeps this network's flat buffers.
        return self.cache.model("flat runner", self, model, self._flat_runner, share=False)

    def _flat_runner(self, model: pure.Model) -> FlatRunner:
        return FlatRunner(self.backend, self._step_function(model), model)

    def step(self, model: pure.Model, allreduce: Allreduce | None = None) -> StepFunction:
        if allreduce is not None or not self.inplace or not covers(model):
            return super().step(model, allreduce)
        return self.runner(model).stream_step  # type: ignore[no-any-return]


class FlatRunner(EagerRunner):
    """:class:`~xpnet.engine.eager.EagerRunner` whose steps update every parameter at once.

    Parameters
    ----------
    backend : Backend
    step : callable
        The generic step, for the calls whose arrays the one update does not cover.
    model : Model
        The network's model (:func:`covers` it).
    """

    def __init__(self, backend: Backend, step: StepFunction, model: pure.Model) -> None:
        super().__init__(backend, step, inplace=True)
        self.model = model
        self._session: Session | None = None
        self._lock = threading.Lock()

    def _run(
        self, carry: Carry, epoch: Epoch, report: Report | None, step: StepFunction | None = None
    ) -> tuple[Carry, Array, Array]:
        session = self.session(carry, epoch.first_step)
        if session is None:
            return super()._run(carry, epoch, report)
        return super()._run(session.carry(carry), epoch, report, session.step)

    def _finite(self, carry: Carry) -> bool:
        session = self._session
        if session is not None and session.packing.holds(carry[0], carry[1]):
            return session.finite()
        return super()._finite(carry)

    def stream_step(self, params: Any, opt: Any, states: Any, *batch: Any, share: float = 1.0) -> Any:
        """:meth:`~xpnet.engine.eager.EagerEngine.step` (one process): ``batch`` is ``(x, y, w,
        noise, number, lr)``, and ``share`` (1 without an allreduce) changes nothing."""
        xp = self.backend.xp
        session = self.session((params, opt, states), batch[4])
        if session is None:
            return self.step(params, opt, states, *batch, xp=xp, inplace=True)
        params, opt, states = session.carry((params, opt, states))
        return session.step(params, opt, states, *batch, xp=xp, inplace=True)

    def session(self, carry: Carry, first_step: int) -> Session | None:
        """The session holding ``carry``'s arrays (a new one packs them), or None when the one
        update does not cover them."""
        params, opt_state, _ = carry
        with self._lock:
            session = self._session
            if session is not None and session.packing.holds(params, opt_state):
                return session
            if not suits(self.model, params, opt_state, first_step):
                return None
            # One network, one set of weights: an older session's buffers go with the weights it held.
            self._session = session = Session(self.backend, self.model, params, opt_state)
            return session


def suits(model: pure.Model, params: Sequence[dict[str, Array]], opt_state: Any, first_step: int) -> bool:
    """Whether these arrays suit the one update: one floating dtype and device of torch tensors
    outside autograd, none sharing memory, every layer with parameters training, the optimizer
    state whole or empty (and then, for a dampened momentum, at the first step)."""
    import torch

    arrays = [a for layer in params for a in layer.values()]
    if not arrays or len(params) != len(model.layers):
        return False
    if tuple(bool(p) for p in params) != model.trainable:  # frozen layers
        return False
    first = arrays[0]
    if not (isinstance(first, torch.Tensor) and first.is_floating_point()):
        return False
    for a in arrays:
        if not isinstance(a, torch.Tensor) or a.dtype != first.dtype or a.device != first.device:
            return False
        if a.requires_grad:
            return False
    if len({a.data_ptr() for a in arrays}) != len(arrays):  # tied parameters
        return False
    return _state_suits(model.optimizer, params, opt_state, first_step)


def _state_suits(optimizer: Any, params: Sequence[dict[str, Array]], opt_state: Any, first_step: int) -> bool:
    keys = optimizer.state_keys()
    if not keys:
        return True
    whole = empty = True
    for i, layer in enumerate(params):
        for name, value in layer.items():
            entry = opt_state.get(f"{i}.{name}") or {}
            for key in keys:
                state = entry.get(key)
                if state is None:
                    whole = False
                    continue
                empty = False
                if tuple(state.shape) != tuple(value.shape) or state.dtype != value.dtype:
                    return False
    if empty and isinstance(optimizer, SGD) and optimizer.dampening and first_step != 1:
        return False  # a missing buffer starts at the gradient, undamped; a packed one is 0
    return whole or empty


class Session:
    """One network's flat buffers and the step that updates them all at once."""

    def __init__(
        self, backend: Backend, model: pure.Model, params: Sequence[dict[str, Array]], opt_state: Any
    ) -> None:
        first = next(a for layer in params for a in layer.values())
        update = flat_update(model.optimizer, first.dtype, first.device)
        assert update is not None  # covers(model)
        self.update: Update = update
        self.model = model
        self.packing = Packing(params, opt_state, update.state_keys)
        self.extra = {k: v for k, v in opt_state.items() if k not in self.packing.opt_state}
        self.slots = [(s.layer, s.name, s.shape) for s in self.packing.slots]
        self.dtype, self.device = first.dtype, first.device
        self.matmul_scope = backend.matmul_scope

    def carry(self, carry: Carry) -> Carry:
        """The carry with this session's views (and any optimizer state it does not own)."""
        opt = {**self.extra, **self.packing.opt_state} if self.extra else self.packing.opt_state
        return self.packing.params, opt, carry[2]

    def step(
        self,
        params: Any,
        opt: Any,
        states: Any,
        x: Any,
        y: Any,
        w: Any,
        noise: Any,
        number: int,
        lr: Any,
        *,
        xp: Any,
        inplace: bool = True,
    ) -> Any:
        """The generic forward and backward pass on this session's views, then one update."""
        model = self.model
        with self.matmul_scope(model.matmul_precision):
            grads, states, value, correct = pure.gradients(model, params, states, x, y, w, noise, xp=xp)
            flat = self._gradients(grads)
            if flat is None:  # gradients the one update cannot take: the rule per parameter, in place
                pure.apply_gradients(model, params, opt, grads, number, lr, xp=xp, inplace=True)
            else:
                self.update(self.packing, flat, number, lr)
        return params, opt, states, value, correct

    def _gradients(self, grads: Sequence[dict[str, Array]]) -> list[Array] | None:
        """The gradients in slot order, or None unless each is contiguous, of the parameters' dtype,
        device and shape (what the fused kernels read)."""
        out = []
        dtype, device = self.dtype, self.device
        for layer, name, shape in self.slots:
            g = grads[layer].get(name)
            if g is None or g.dtype != dtype or g.shape != shape or g.device != device:
                return None
            if not g.is_contiguous():
                return None
            out.append(g)
        return out

    def finite(self) -> bool:
        """Whether every parameter is finite: one sum of the flat buffer (its gaps are 0), every
        element checked only when the sum is not finite (it may overflow)."""
        flat = self.packing.param
        xp = self.packing.xp
        return math.isfinite(float(xp.sum(flat))) or kernels.all_finite([flat], xp)

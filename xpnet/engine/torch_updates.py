"""One update for every parameter on torch: its fused optimizer kernels, or the rule on flat buffers.

The torch engine (:mod:`xpnet.engine.torch_engine`) keeps a network's
parameters and optimizer state each in one flat buffer
(:class:`~xpnet.engine.flat.Packing`) and, after the backward pass, updates
them all in one call of :func:`flat_update`'s update:

- :class:`FusedKernel`: SGD (momentum, Nesterov, dampening, weight decay),
  Adam and AdamW through torch's own fused kernels (``torch._fused_sgd_``,
  ``torch._fused_adam_``, ``torch._fused_adamw_``, what ``torch.optim`` runs
  with ``fused=True``): one call over the parameters' views, the backward
  pass's gradients as they are and the state's views, one pass over memory.
  Packing the gradients into the flat gradient buffer first would cost a copy
  of every gradient per step and save nothing (the kernel loops over the
  tensors in C++).
- :class:`FlatRule`: RMSprop (torch has no fused kernel for it), and any of
  the others where those kernels are missing, refuse the dtype or device, or
  disagree with the rule: the gradients copied into the flat gradient buffer
  in one ``torch._foreach_copy_``, then the optimizer's own
  :meth:`~xpnet.optim.optimizers.Optimizer.update` once, on the flat buffers.

Both give the optimizer's rule (torch.optim's) to rounding. A fused kernel is
used only after :func:`kernel_agrees` ran it beside the rule on a few
elements of the network's dtype and device (once per configuration), so a
torch whose private kernels changed falls back to the rule instead of
training differently.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from .flat import Packing

Array = Any
COVERED = (SGD, Adam, AdamW, RMSprop)
"""The optimizer classes (exactly these, not subclasses) the one update computes."""


class FlatRule:
    """The optimizer's own rule once on the flat buffers, the gradients copied in first."""

    fused = False

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.state_keys = optimizer.state_keys()
        self.options = {"overwrite_grad": True} if isinstance(optimizer, SGD) else {}
        self._targets: list[Array] = []
        self._packing: Packing | None = None

    def __call__(self, packing: Packing, grads: Sequence[Array], step: int, lr: float) -> None:
        """Update every parameter of ``packing`` from ``grads`` (in the packing's slot order)."""
        import torch

        if self._packing is not packing:
            self._targets = [packing.grads[s.layer][s.name] for s in packing.slots]
            self._packing = packing
        torch._foreach_copy_(self._targets, list(grads))
        self.optimizer.update(
            packing.param,
            packing.grad,  # the packing's own: the rule may spoil it
            packing.state,
            packing.xp,
            inplace=True,
            step=step,
            learning_rate=lr,
            **self.options,
        )


class FusedKernel:
    """torch's fused kernel of SGD, Adam or AdamW over the lists of views (see the module docstring)."""

    fused = True

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.state_keys = optimizer.state_keys()
        self._lists: tuple[Any, ...] | None = None
        self._packing: Packing | None = None

    def _views(self, packing: Packing) -> tuple[Any, ...]:
        """The parameter views and each state buffer's views, in slot order (made once per packing)."""
        if self._packing is not packing:
            import torch

            slots = packing.slots
            params = [packing.params[s.layer][s.name] for s in slots]
            states = [[packing.opt_state[f"{s.layer}.{s.name}"][k] for s in slots] for k in self.state_keys]
            step = torch.zeros((), dtype=torch.float32, device=params[0].device)
            self._lists, self._packing = (params, states, step, [step] * len(params)), packing
        assert self._lists is not None
        return self._lists

    def __call__(self, packing: Packing, grads: Sequence[Array], step: int, lr: float) -> None:
        """Update every parameter of ``packing`` from ``grads`` (in the packing's slot order)."""
        import torch

        params, states, number, steps = self._views(packing)
        opt = self.optimizer
        grads = list(grads)
        if isinstance(opt, SGD):
            # xpnet's (and torch's) first step blends a zero buffer undamped: the kernel's
            # ``is_first_step`` would instead overwrite whatever buffer is there
            damp = opt.dampening if step != 1 else 0.0
            torch._fused_sgd_(
                params,
                grads,
                states[0] if states else [],
                weight_decay=opt.weight_decay,
                momentum=opt.momentum,
                lr=float(lr),
                dampening=damp,
                nesterov=opt.nesterov,
                maximize=False,
                is_first_step=False,
            )
            return
        assert isinstance(opt, Adam)
        number.fill_(step)
        kernel = torch._fused_adamw_ if opt.decoupled else torch._fused_adam_
        kernel(
            params,
            grads,
            states[0],
            states[1],
            [],
            steps,
            lr=float(lr),
            beta1=opt.beta1,
            beta2=opt.beta2,
            weight_decay=opt.weight_decay,
            eps=opt.eps,
            amsgrad=False,
            maximize=False,
        )


Update = FlatRule | FusedKernel


def flat_update(optimizer: Optimizer, dtype: Any, device: Any) -> Update | None:
    """The one update for ``optimizer`` on ``dtype`` and ``device`` arrays, or None when the
    optimizer is not exactly SGD, Adam, AdamW or RMSprop (the generic step updates it)."""
    if type(optimizer) not in COVERED:
        return None
    if type(optimizer) is not RMSprop and kernel_agrees(optimizer, dtype, device):
        return FusedKernel(optimizer)
    return FlatRule(optimizer)


_agreed: dict[tuple[Any, ...], bool] = {}
_lock = threading.Lock()


def kernel_agrees(optimizer: Optimizer, dtype: Any, device: Any) -> bool:
    """Whether torch's fused kernel runs on ``dtype`` and ``device`` and gives the rule's numbers
    (four steps on 70 elements in two tensors, from both empty and given state; checked once per
    configuration)."""
    config = {k: v for k, v in optimizer.get_config().items() if k != "learning_rate"}
    key = (type(optimizer), repr(sorted(config.items())), str(dtype), str(device))
    with _lock:
        if key not in _agreed:
            _agreed[key] = _compare(optimizer, dtype, device)
        return _agreed[key]


def _compare(optimizer: Optimizer, dtype: Any, device: Any) -> bool:
    import torch

    rng = np.random.default_rng(0)
    shapes = [(5, 7), (35,)]
    params = [{"w": torch.asarray(rng.normal(size=s), dtype=dtype, device=device)} for s in shapes]
    packings = [Packing(params, {}, optimizer.state_keys()) for _ in range(2)]
    rules: tuple[Update, Update] = (FusedKernel(optimizer), FlatRule(optimizer))
    try:
        for step in (1, 2, 3, 4):
            grads = [torch.asarray(rng.normal(size=s), dtype=dtype, device=device) for s in shapes]
            for packing, rule in zip(packings, rules):
                rule(packing, [g.clone() for g in grads], step, 0.01 * step)
    except Exception:  # a torch without these kernels, or one refusing this dtype or device
        return False
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    buffers = [[p.param, *p.state.values()] for p in packings]
    return all(bool(torch.allclose(a, b, rtol=tolerance, atol=tolerance)) for a, b in zip(*buffers))

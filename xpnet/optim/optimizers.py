"""Optimizers with torch.optim's update rules, written as pure per-parameter steps.

Each optimizer's :meth:`Optimizer.update` takes a parameter, its gradient,
its state (a dict of arrays: empty at first, or :meth:`Optimizer.init_state`'s
zeros), the step number and the learning rate, and returns the new parameter
and state. By default it never mutates its inputs and takes the step number
and learning rate as plain numbers or 0-d arrays, so it runs inside
``jax.jit`` with both traced (nothing is baked in per step). With
``inplace=True`` it writes the new values into the parameter and state arrays
it was given (never into the gradient), which saves allocations and memory
passes on NumPy, torch and CuPy.

The optimizer object keeps the hyper-parameters, the step counter
``iterations`` and the state between steps; :meth:`Optimizer.step` is the
by-hand path over layers' ``grads``.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from .._names import lookup
from ..backend import Backend
from ..backend import numpy_kernels as kernels

Array = Any
State = dict[str, Array]


def _check(name: str, value: float, *, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def _check_clip(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0 < value < math.inf:
        raise ValueError(f"{name} must be None or a positive finite number, got {value!r}")
    return float(value)


def _blend(a: Array, alpha: Any, b: Array, beta: Any, inplace: bool) -> Array:
    """``alpha * a + beta * b``, written into ``a`` when ``inplace``."""
    if not inplace:
        return alpha * a + beta * b
    a *= alpha
    a += beta * b
    return a


def _sqrt(value: Any) -> Any:
    """Square root of a Python number or a 0-d array (a traced step count)."""
    return math.sqrt(value) if isinstance(value, (int, float)) else value**0.5


def _where_first(step: Any, first: float, later: float, xp: Any) -> Any:
    """``first`` at step 1, else ``later``, for a Python or array step number."""
    if isinstance(step, (int, float)):
        return first if step == 1 else later
    return xp.where(step == 1, first, later)


class Optimizer(ABC):
    """Base class: hyper-parameters, per-parameter state and the step counter.

    Attributes
    ----------
    learning_rate : float
        May be changed between steps (learning-rate schedules do).
    clip_norm : float or None
        Scale every gradient by ``clip_norm / (total_norm + 1e-6)`` when the
        global norm of all gradients together exceeds it (torch's formula).
    clip_value : float or None
        Clip every gradient element into ``[-clip_value, clip_value]``.
    iterations : int
        Number of steps taken.
    state : dict[str, dict[str, Array]]
        Per-parameter state, keyed ``"<layer index>.<param name>"``.
    """

    name = ""
    hyper_parameters: tuple[str, ...] = ("learning_rate", "weight_decay")
    """Constructor arguments, saved with checkpoints by :meth:`get_config` (with the clipping ones)."""

    def __init__(
        self,
        learning_rate: float,
        weight_decay: float = 0.0,
        *,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ) -> None:
        self.learning_rate = _check("learning_rate", learning_rate)
        self.weight_decay = _check("weight_decay", weight_decay)
        self.clip_norm = _check_clip("clip_norm", clip_norm)
        self.clip_value = _check_clip("clip_value", clip_value)
        self.iterations = 0
        self.state: dict[str, State] = {}

    def get_config(self) -> dict[str, Any]:
        """Hyper-parameters that rebuild this optimizer."""
        config = {key: getattr(self, key) for key in self.hyper_parameters}
        return {**config, "clip_norm": self.clip_norm, "clip_value": self.clip_value}

    def __repr__(self) -> str:
        config = {k: v for k, v in self.get_config().items() if v is not None or not k.startswith("clip_")}
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({args})"

    def detached(self) -> Optimizer:
        """A copy with the same hyper-parameters and no state, for a shared compiled step."""
        twin = copy.copy(self)
        twin.state = {}
        return twin

    def step(self, layers: Sequence[Any]) -> None:
        """Update every parameter of ``layers`` from its gradient in ``layer.grads``."""
        self.start_step()
        for index, layer in enumerate(layers):
            self.update_layer(index, layer)

    def start_step(self) -> None:
        """Count a new step; :meth:`update_layer` then updates each layer of it."""
        self.iterations += 1

    def update_layer(self, index: int, layer: Any) -> None:
        """Update the parameters of ``layer``, the ``index``-th of the network, from ``layer.grads``.

        The by-hand path; ``Network`` runs :func:`xpnet.engine.step.train_step`.
        """
        if not layer.params:
            return
        xp = layer.backend.xp
        for name, param in layer.params.items():
            key = f"{index}.{name}"
            new, self.state[key] = self.update(
                param,
                layer.grads[name],
                self.state.get(key, {}),
                xp,
                inplace=layer.backend.mutable,
            )
            layer.params[name] = new

    @abstractmethod
    def update(
        self,
        param: Array,
        grad: Array,
        state: State,
        xp: Any,
        *,
        inplace: bool = False,
        step: Any = None,
        learning_rate: Any = None,
    ) -> tuple[Array, State]:
        """Return the new ``param`` and ``state`` after one step.

        Parameters
        ----------
        param, grad : Array
        state : dict[str, Array]
            Empty before the first step, or :meth:`init_state`'s zeros (both
            give torch's numbers).
        xp : namespace
        inplace : bool
            Update and return the parameter and state arrays (the gradient is
            never written); for backends whose arrays support ``-=``.
        step : int or 0-d array, optional
            The 1-based number of this step (bias corrections); default
            :attr:`iterations`. An array must have the parameters' dtype.
        learning_rate : float or 0-d array, optional
            Default :attr:`learning_rate`.
        """

    def init_state(self, param: Array, xp: Any) -> State:
        """Zero state for ``param`` with the keys :meth:`update` returns (fixed-shape state for jit)."""
        return {key: xp.zeros_like(param) for key in self.state_keys()}

    def state_keys(self) -> tuple[str, ...]:
        """Names of the per-parameter state arrays."""
        return ()

    def to(self, backend: Backend) -> None:
        """Move the state arrays to ``backend``."""
        self.state = {
            key: {k: backend.asarray(v, copy=True) for k, v in entry.items()}
            for key, entry in self.state.items()
        }

    def _step_and_rate(self, step: Any, learning_rate: Any) -> tuple[Any, Any]:
        return (
            self.iterations if step is None else step,
            self.learning_rate if learning_rate is None else learning_rate,
        )

    def _decayed(self, param: Array, grad: Array) -> Array:
        # L2 penalty added to the gradient, as torch.optim's weight_decay (AdamW differs).
        return grad + self.weight_decay * param if self.weight_decay else grad


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Parameters
    ----------
    learning_rate, momentum, nesterov, weight_decay, dampening
        As ``torch.optim.SGD``'s ``lr``, ``momentum``, ``nesterov``,
        ``weight_decay`` and ``dampening``.
    clip_norm, clip_value : float, optional
        Gradient clipping before each step, see :mod:`xpnet.optim.clipping`.
    """

    name = "sgd"
    hyper_parameters = ("learning_rate", "momentum", "nesterov", "weight_decay", "dampening")

    def __init__(
        self,
        learning_rate: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        *,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, clip_norm=clip_norm, clip_value=clip_value)
        self.momentum = _check("momentum", momentum)
        self.dampening = _check("dampening", dampening)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")

    def state_keys(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum else ()

    def update(
        self,
        param: Array,
        grad: Array,
        state: State,
        xp: Any,
        *,
        inplace: bool = False,
        step: Any = None,
        learning_rate: Any = None,
        overwrite_grad: bool = False,
    ) -> tuple[Array, State]:
        """As :meth:`Optimizer.update`; ``overwrite_grad=True`` lets it spoil ``grad`` (the step's own)."""
        step, lr = self._step_and_rate(step, learning_rate)
        g = self._decayed(param, grad)
        owned = overwrite_grad and not (self.momentum and not self.nesterov)  # else g is the buffer
        if self.momentum:
            buf = state.get("momentum")
            if buf is None:  # torch starts the buffer at the first gradient
                buf = xp.asarray(g, copy=True) if inplace else g
            else:  # a zero buffer at step 1 gives the same, without dampening
                damp = _where_first(step, 1.0, 1.0 - self.dampening, xp) if self.dampening else 1.0
                buf = _blend(buf, self.momentum, g, damp, inplace)
            state = {"momentum": buf}
            g = g + self.momentum * buf if self.nesterov else buf
        return kernels.subtract_scaled(param, lr, g, inplace=inplace, overwrite_delta=owned), state


class Adam(Optimizer):
    """Adam with bias correction, as ``torch.optim.Adam`` (``weight_decay`` is L2).

    Parameters
    ----------
    learning_rate, beta1, beta2, eps, weight_decay
        ``torch.optim.Adam``'s ``lr``, ``betas``, ``eps`` and ``weight_decay``.
    clip_norm, clip_value : float, optional
        Gradient clipping before each step, see :mod:`xpnet.optim.clipping`.
    """

    name = "adam"
    hyper_parameters = ("learning_rate", "beta1", "beta2", "eps", "weight_decay")
    decoupled = False

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, clip_norm=clip_norm, clip_value=clip_value)
        self.beta1 = _check("beta1", beta1, high=1.0)
        self.beta2 = _check("beta2", beta2, high=1.0)
        self.eps = _check("eps", eps)

    def state_keys(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def update(
        self,
        param: Array,
        grad: Array,
        state: State,
        xp: Any,
        *,
        inplace: bool = False,
        step: Any = None,
        learning_rate: Any = None,
    ) -> tuple[Array, State]:
        step, lr = self._step_and_rate(step, learning_rate)
        if self.decoupled:
            decay = 1.0 - lr * self.weight_decay
            if inplace:
                param *= decay
            else:
                param = param * decay
            g = grad
        else:
            g = self._decayed(param, grad)
        b1, b2 = self.beta1, self.beta2
        m = state.get("exp_avg")
        v = state.get("exp_avg_sq")
        m = (1.0 - b1) * g if m is None else _blend(m, b1, g, 1.0 - b1, inplace)
        v = (1.0 - b2) * (g * g) if v is None else _blend(v, b2, g * g, 1.0 - b2, inplace)
        step_size = lr / (1.0 - b1**step)
        denom = _blend(xp.sqrt(v), 1.0 / _sqrt(1.0 - b2**step), 1.0, self.eps, inplace)
        ratio = kernels.divide(m, denom, inplace=inplace)
        new = kernels.subtract_scaled(param, step_size, ratio, inplace=inplace)
        return new, {"exp_avg": m, "exp_avg_sq": v}


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW`` (default 0.01).

    Parameters as :class:`Adam`, ``clip_norm`` and ``clip_value`` included.
    """

    name = "adamw"
    decoupled = True

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ) -> None:
        super().__init__(
            learning_rate, beta1, beta2, eps, weight_decay, clip_norm=clip_norm, clip_value=clip_value
        )


class RMSprop(Optimizer):
    """RMSprop as ``torch.optim.RMSprop`` (``alpha`` smoothing, optional momentum, centered).

    Parameters
    ----------
    learning_rate, alpha, eps, momentum, weight_decay, centered
        ``torch.optim.RMSprop``'s ``lr``, ``alpha``, ``eps``, ``momentum``,
        ``weight_decay`` and ``centered``.
    clip_norm, clip_value : float, optional
        Gradient clipping before each step, see :mod:`xpnet.optim.clipping`.
    """

    name = "rmsprop"
    hyper_parameters = ("learning_rate", "alpha", "eps", "momentum", "weight_decay", "centered")

    def __init__(
        self,
        learning_rate: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        centered: bool = False,
        *,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, clip_norm=clip_norm, clip_value=clip_value)
        self.alpha = _check("alpha", alpha, high=1.0)
        self.eps = _check("eps", eps)
        self.momentum = _check("momentum", momentum)
        self.centered = bool(centered)

    def state_keys(self) -> tuple[str, ...]:
        keys = ("square_avg",) + (("grad_avg",) if self.centered else ())
        return keys + (("momentum_buffer",) if self.momentum else ())

    def update(
        self,
        param: Array,
        grad: Array,
        state: State,
        xp: Any,
        *,
        inplace: bool = False,
        step: Any = None,
        learning_rate: Any = None,
    ) -> tuple[Array, State]:
        step, lr = self._step_and_rate(step, learning_rate)
        g = self._decayed(param, grad)
        keep = 1.0 - self.alpha
        sq = state.get("square_avg")
        sq = keep * (g * g) if sq is None else _blend(sq, self.alpha, g * g, keep, inplace)
        new_state: State = {"square_avg": sq}
        if self.centered:
            mean = state.get("grad_avg")
            mean = keep * g if mean is None else _blend(mean, self.alpha, g, keep, inplace)
            new_state["grad_avg"] = mean
            avg = xp.sqrt(sq - mean * mean) + self.eps
        else:
            avg = xp.sqrt(sq) + self.eps
        if self.momentum:
            buf = state.get("momentum_buffer")
            buf = g / avg if buf is None else _blend(buf, self.momentum, g / avg, 1.0, inplace)
            new_state["momentum_buffer"] = buf
            return kernels.subtract_scaled(param, lr, buf, inplace=inplace), new_state
        return kernels.subtract_scaled(param, lr, g / avg, inplace=inplace), new_state


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
}


def get_optimizer(name: str | Optimizer, **kwargs: Any) -> Optimizer:
    """Look up an optimizer by name (keyword arguments go to its constructor).

    An :class:`Optimizer` instance is returned unchanged.

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    if isinstance(name, Optimizer):
        return name
    return lookup("optimizer", OPTIMIZERS, name)(**kwargs)

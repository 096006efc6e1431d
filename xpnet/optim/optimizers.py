"""Optimizers with torch.optim's update rules, written as pure per-parameter steps.

Each optimizer's :meth:`Optimizer.update` takes a parameter, its gradient and
its state (a dict of arrays, empty at first) and returns the new parameter and
state. By default it never mutates its inputs, so it works on JAX's immutable
arrays; with ``inplace=True`` it writes the new values into the parameter and
state arrays it was given (never into the gradient), which saves allocations
and memory passes. :meth:`Optimizer.step` applies it to every parameter of a
list of layers, in place wherever the backend's arrays are writeable.
"""

from __future__ import annotations

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


def _blend(a: Array, alpha: float, b: Array, beta: float, inplace: bool) -> Array:
    """``alpha * a + beta * b``, written into ``a`` when ``inplace``."""
    if not inplace:
        return alpha * a + beta * b
    a *= alpha
    a += beta * b
    return a


def _step(param: Array, scale: float, direction: Array, inplace: bool) -> Array:
    """``param - scale * direction``, written into ``param`` when ``inplace``."""
    if not inplace:
        return param - scale * direction
    if not kernels.subtract_scaled(param, scale, direction):
        param -= scale * direction
    return param


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

    def step(self, layers: Sequence[Any]) -> None:
        """Update every parameter of ``layers`` from its gradient in ``layer.grads``."""
        self.start_step()
        for index, layer in enumerate(layers):
            self.update_layer(index, layer)

    def start_step(self) -> None:
        """Count a new step; :meth:`update_layer` then updates each layer of it."""
        self.iterations += 1

    def update_layer(self, index: int, layer: Any) -> None:
        """Update the parameters of ``layer``, the ``index``-th of the network, in this step.

        ``Network`` calls it right after the layer's backward pass, while its
        weights and gradients are still in cache.
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
        self, param: Array, grad: Array, state: State, xp: Any, *, inplace: bool = False
    ) -> tuple[Array, State]:
        """Return the new ``param`` and ``state`` after one step.

        Pure by default; with ``inplace`` the parameter and state arrays are
        updated and returned (the gradient is never written).
        """

    def to(self, backend: Backend) -> None:
        """Move the state arrays to ``backend``."""
        self.state = {
            key: {k: backend.asarray(v, copy=True) for k, v in entry.items()}
            for key, entry in self.state.items()
        }

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

    def update(
        self, param: Array, grad: Array, state: State, xp: Any, *, inplace: bool = False
    ) -> tuple[Array, State]:
        g = self._decayed(param, grad)
        if self.momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = xp.asarray(g, copy=True) if inplace else g
            else:
                buf = _blend(buf, self.momentum, g, 1.0 - self.dampening, inplace)
            state = {"momentum": buf}
            g = g + self.momentum * buf if self.nesterov else buf
        return _step(param, self.learning_rate, g, inplace), state


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

    def update(
        self, param: Array, grad: Array, state: State, xp: Any, *, inplace: bool = False
    ) -> tuple[Array, State]:
        if self.decoupled:
            decay = 1.0 - self.learning_rate * self.weight_decay
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
        t = self.iterations
        step_size = self.learning_rate / (1.0 - b1**t)
        denom = _blend(xp.sqrt(v), 1.0 / math.sqrt(1.0 - b2**t), 1.0, self.eps, inplace)
        ratio = kernels.divide_into(m, denom) if inplace else None
        if ratio is None:
            ratio = m / denom
        return _step(param, step_size, ratio, inplace), {"exp_avg": m, "exp_avg_sq": v}


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

    def update(
        self, param: Array, grad: Array, state: State, xp: Any, *, inplace: bool = False
    ) -> tuple[Array, State]:
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
            return _step(param, self.learning_rate, buf, inplace), new_state
        return _step(param, self.learning_rate, g / avg, inplace), new_state


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

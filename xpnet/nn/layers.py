"""Layers: the ``Layer`` protocol, ``Dense``, ``Activation`` and ``Dropout``.

A layer object holds its configuration and, between steps, its arrays
(``params``, ``state``). Its math is pure: every array comes in explicitly
and every result goes out, so one layer object can serve a training step
and any number of concurrent predictions. All arrays are ``(batch, features)``.

The pure protocol (what ``Network`` and :mod:`xpnet.engine.step` use)
--------------------------------------------------------------------
``apply(params, state, x, *, training, noise, xp) -> (y, cache, new_state)``
    The output for input ``x``; ``cache`` is what :meth:`~Layer.vjp` needs
    (opaque, only for ``vjp``); ``new_state`` is the layer's state after
    the call (the same dict for layers without state; running statistics
    change only in training). ``noise`` is the device copy of what
    :meth:`~Layer.draw` returned, or None.
``vjp(params, cache, dy, *, xp, need_input_grad=True, from_logits=False, overwrite_dy=False)``
    Returns ``(grads, dx)``: gradients for ``params`` (same keys) and
    ``dL/dx`` (None when ``need_input_grad`` is false). ``from_logits=True``
    takes ``dy`` as the gradient with respect to :meth:`~Layer.logits`, for
    a loss fused with the layer's final activation. ``overwrite_dy=True``
    lets the layer reuse ``dy``'s memory (NumPy kernels).
``draw(rng, shape, dtype) -> numpy array or None``
    Host-side randomness for one training call on an input of ``shape``,
    drawn from the network's generator (in layer order, once per step), so
    one seed gives the same numbers on every backend and in compiled code.
``output_activation`` and ``logits(cache)``
    The name of the activation the output ends with (or None) and its input:
    ``Network`` fuses a final sigmoid/softmax with the loss through them.
``state`` / ``init_state()``
    Non-trained arrays (running statistics); empty here.

The by-hand path
----------------
``forward(x, training)`` / ``backward(dy)`` / ``params`` / ``grads`` run the
same pure functions and keep the last call's cache on the layer, for the
tutorial loop (``examples/by_hand.py``). ``Network`` never uses them.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..backend import Backend, to_numpy
from ..backend import numpy_kernels as kernels
from .activations import RELU_FAMILY, get_activation
from .initializers import Initializer, get_initializer

Array = Any
Params = dict[str, Array]
State = dict[str, Array]


class Layer:
    """Base class of every layer: the pure protocol plus the by-hand methods.

    Attributes
    ----------
    params : dict[str, Array]
        Trainable arrays by name; empty for layers without parameters.
    state : dict[str, Array]
        Non-trained arrays carried between steps (empty for these layers).
    grads : dict[str, Array]
        Gradients of the loss for ``params``, filled by :meth:`backward`
        (by-hand path only).
    backend : Backend or None
        Set by :meth:`build`.
    """

    def __init__(self) -> None:
        self.params: Params = {}
        self.state: State = {}
        self.grads: dict[str, Array] = {}
        self.backend: Backend | None = None
        self.dtype: Any = None
        self.in_features: int | None = None

    @property
    def built(self) -> bool:
        """Whether :meth:`build` has run."""
        return self.backend is not None

    def _backend(self) -> Backend:
        if self.backend is None:
            raise RuntimeError(
                f"{type(self).__name__} is not built: call build(in_features, backend, dtype, rng) "
                "or use it in a Network"
            )
        return self.backend

    def output_features(self, in_features: int) -> int:
        """Number of output features for ``in_features`` inputs."""
        return in_features

    def build(self, in_features: int, backend: Backend, dtype: str, rng: np.random.Generator) -> None:
        """Create the layer's arrays for ``in_features`` inputs on ``backend``."""
        self.in_features = in_features
        self.backend = backend
        self.dtype = dtype
        self.state = self.init_state()

    def init_state(self) -> State:
        """Fresh non-trained state on the layer's backend (none for this layer)."""
        return {}

    def detached(self) -> Layer:
        """A copy with the same configuration and build but no arrays, for compiled math.

        A compiled step shared by networks of one structure keeps the layers
        it was traced with; detached copies keep no network's arrays alive.
        """
        twin = copy.copy(self)
        twin.params, twin.state, twin.grads = {}, {}, {}
        twin.__dict__.pop("_cache", None)
        twin.__dict__.pop("rng", None)
        return twin

    def sublayers(self) -> list[Layer]:
        """The layers inside this one (blocks), in order; none for a plain layer."""
        return []

    def to(self, backend: Backend) -> None:
        """Move parameters and state to ``backend``; the by-hand cache is dropped."""
        self.backend = backend
        # Copies: torch's .numpy() and friends share memory, and updates are in place.
        self.params = {k: backend.asarray(v, self.dtype, copy=True) for k, v in self.params.items()}
        self.state = {k: backend.asarray(v, copy=True) for k, v in self.state.items()}
        self.grads = {}
        self.__dict__.pop("_cache", None)

    # -- the pure protocol ---------------------------------------------------------------

    @property
    def output_activation(self) -> str | None:
        """Name of the activation the output ends with, or None."""
        return None

    def logits(self, cache: Any) -> Array:
        """The input of the final activation, from ``apply``'s cache."""
        raise TypeError(f"{type(self).__name__} does not end with an activation")

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """Host randomness for one training call on an input of ``shape`` (None: no randomness)."""
        return None

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        """``(y, cache, new_state)`` for input ``x`` (identity here)."""
        return x, None, state

    def vjp(
        self,
        params: Params,
        cache: Any,
        dy: Array,
        *,
        xp: Any,
        need_input_grad: bool = True,
        from_logits: bool = False,
        overwrite_dy: bool = False,
    ) -> tuple[dict[str, Array], Array | None]:
        """``(grads, dx)`` from ``dy = dL/dy`` and ``apply``'s cache."""
        return {}, dy if need_input_grad else None

    # -- the by-hand path --------------------------------------------------------------

    def forward(self, x: Array, training: bool = False) -> Array:
        """Output for input ``x``; remembers what :meth:`backward` needs (by-hand path)."""
        backend = self._backend()
        noise = None
        if training:
            host = self.draw(getattr(self, "rng", None) or np.random.default_rng(), tuple(x.shape), x.dtype)
            if host is not None:
                noise = backend.xp.asarray(host, device=backend.device)
        y, self._cache, state = self.apply(
            self.params, self.state, x, training=training, noise=noise, xp=backend.xp
        )
        self.state = state
        return y

    def backward(self, dy: Array, *, need_input_grad: bool = True) -> Array | None:
        """Fill :attr:`grads` from ``dy = dL/dy`` and return ``dL/dx`` (None if not needed)."""
        return self._backward(dy, need_input_grad=need_input_grad)

    def _backward(self, dy: Array, **options: Any) -> Array | None:
        cache = getattr(self, "_cache", None)
        if cache is None and self.params:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward(x, training=True) first")
        self.grads = {}  # let the previous step's gradients go before new ones are made
        self.grads, dx = self.vjp(self.params, cache, dy, xp=self._backend().xp, **options)
        return dx

    @property
    def pre_activation(self) -> Array:
        """The logits of the last :meth:`forward` (by-hand path)."""
        return self.logits(getattr(self, "_cache", None))

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (for checkpoints)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer ``y = activation(x @ weight + bias)``.

    Parameters
    ----------
    units : int
        Number of outputs.
    activation : str, optional
        Name of an activation applied to the output (see ``xpnet.activations``).
    in_features : int, optional
        Number of inputs; inferred from the data on first use when left out.
    use_bias : bool
        Whether to add a bias (``params`` then holds only ``"weight"``).
    weight_init : str or callable, optional
        Initializer name; by default He uniform for the ReLU family and Glorot
        uniform otherwise. Biases start at zero.

    Attributes
    ----------
    weight : Array, shape (in_features, units)
    bias : Array, shape (units,), or None
    """

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        *,
        in_features: int | None = None,
        use_bias: bool = True,
        weight_init: str | Initializer | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units < 1:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        if in_features is not None and (not isinstance(in_features, (int, np.integer)) or in_features < 1):
            raise ValueError(f"Dense in_features must be a positive integer, got {in_features!r}")
        self.units = int(units)
        self.activation = get_activation(activation)
        self.in_features = None if in_features is None else int(in_features)
        self.use_bias = use_bias
        self._custom_init = weight_init is not None
        if weight_init is None:
            weight_init = "he_uniform" if self.activation.name in RELU_FAMILY else "glorot_uniform"
        self.weight_init = weight_init
        self._init = get_initializer(weight_init)
        self._pending: dict[str, np.ndarray] = {}

    def output_features(self, in_features: int) -> int:
        return self.units

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"units": self.units}
        if self.activation.name != "linear":
            config["activation"] = self.activation.name
        if self.in_features is not None:
            config["in_features"] = self.in_features
        if not self.use_bias:
            config["use_bias"] = False
        if self._custom_init and isinstance(self.weight_init, str):
            config["weight_init"] = self.weight_init
        return config

    def build(self, in_features: int, backend: Backend, dtype: str, rng: np.random.Generator) -> None:
        if self.in_features is not None and self.in_features != in_features:
            raise ValueError(
                f"Dense({self.units}) was given in_features={self.in_features}, "
                f"but its input has {in_features} features"
            )
        super().build(in_features, backend, dtype, rng)
        weight = self._pending.pop("weight", None)
        if weight is None:
            weight = self._init(rng, (in_features, self.units))
        self.params = {"weight": backend.asarray(weight, dtype, copy=True)}
        if self.use_bias:
            bias = self._pending.pop("bias", None)
            if bias is None:
                bias = np.zeros(self.units)
            self.params["bias"] = backend.asarray(bias, dtype, copy=True)

    def _assign(self, name: str, value: Any, shape: tuple[int | None, ...]) -> None:
        host_shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
        if len(host_shape) != len(shape) or any(
            want is not None and got != want for got, want in zip(host_shape, shape)
        ):
            expected = tuple("in_features" if s is None else s for s in shape)
            raise ValueError(f"Dense.{name} must have shape {expected}, got {host_shape}")
        if self.backend is None:
            self._pending[name] = np.array(to_numpy(value), copy=True)
            if name == "weight":
                self.in_features = host_shape[0]
        else:
            self.params[name] = self.backend.asarray(value, self.dtype, copy=True)

    @property
    def weight(self) -> Array:
        if self.backend is None:
            return self._pending.get("weight")
        return self.params["weight"]

    @weight.setter
    def weight(self, value: Any) -> None:
        self._assign("weight", value, (self.in_features, self.units))

    @property
    def bias(self) -> Array | None:
        if not self.use_bias:
            return None
        if self.backend is None:
            return self._pending.get("bias")
        return self.params["bias"]

    @bias.setter
    def bias(self, value: Any) -> None:
        if not self.use_bias:
            raise ValueError("this Dense layer was made with use_bias=False and has no bias")
        self._assign("bias", value, (self.units,))

    @property
    def output_activation(self) -> str | None:
        return self.activation.name

    def logits(self, cache: Any) -> Array:
        """``x @ weight + bias`` (for activations in ``kernels.FUSED_IN_PLACE`` on NumPy
        the memory holds the output instead; no loss fuses with those)."""
        return cache[1]

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        z = x @ params["weight"]
        if self.use_bias:
            z = kernels.add_into(z, params["bias"])  # z is ours: NumPy adds in place
        y = kernels.activation_forward(self.activation, z, xp)
        return y, (x, z, y), state

    def vjp(
        self,
        params: Params,
        cache: Any,
        dy: Array,
        *,
        xp: Any,
        need_input_grad: bool = True,
        from_logits: bool = False,
        overwrite_dy: bool = False,
    ) -> tuple[dict[str, Array], Array | None]:
        x, z, y = cache
        dz = dy
        if not from_logits:
            dz = kernels.activation_backward(self.activation, z, y, dy, xp, overwrite=overwrite_dy)
        grads = {"weight": x.mT @ dz}
        if self.use_bias:
            grads["bias"] = kernels.sum_rows(dz, xp)
        return grads, (dz @ params["weight"].mT if need_input_grad else None)

    def backward(
        self,
        dy: Array,
        *,
        need_input_grad: bool = True,
        through_activation: bool = True,
        overwrite_dy: bool = False,
    ) -> Array | None:
        """Gradients from ``dy`` (by-hand path).

        ``through_activation=False`` takes ``dy`` as ``dL/dz`` (a fused output);
        ``overwrite_dy=True`` lets the layer reuse ``dy``'s memory.
        """
        return self._backward(
            dy, need_input_grad=need_input_grad, from_logits=not through_activation, overwrite_dy=overwrite_dy
        )


class Activation(Layer):
    """Applies an activation function by name, e.g. ``Activation("tanh")``."""

    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.activation = get_activation(name)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.activation.name}

    @property
    def output_activation(self) -> str | None:
        return self.activation.name

    def logits(self, cache: Any) -> Array:
        """The layer's input."""
        return cache[0]

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        y = self.activation.forward(x, xp)  # x belongs to the layer before: never overwritten
        return y, (x, y), state

    def vjp(
        self,
        params: Params,
        cache: Any,
        dy: Array,
        *,
        xp: Any,
        need_input_grad: bool = True,
        from_logits: bool = False,
        overwrite_dy: bool = False,
    ) -> tuple[dict[str, Array], Array | None]:
        if not need_input_grad:
            return {}, None
        if from_logits:
            return {}, dy
        x, y = cache
        return {}, kernels.activation_backward(self.activation, x, y, dy, xp, overwrite=overwrite_dy)


class Dropout(Layer):
    """Inverted dropout: in training, zeroes each unit with probability ``rate``.

    Kept units are scaled by ``1 / (1 - rate)``, so nothing changes at
    prediction time. Masks are drawn on the host from the network's
    generator (:meth:`draw`), so one seed gives the same masks on every
    backend, compiled or not.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.rng: np.random.Generator | None = None

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def build(self, in_features: int, backend: Backend, dtype: str, rng: np.random.Generator) -> None:
        super().build(in_features, backend, dtype, rng)
        self.rng = rng

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """The boolean keep-mask of one training call (None when ``rate`` is 0)."""
        if self.rate == 0.0:
            return None
        return rng.random(shape, dtype=np.float32) >= self.rate

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        if not training or self.rate == 0.0:
            return x, None, state
        if noise is None:
            raise ValueError("Dropout in training needs its mask: pass noise=draw(rng, x.shape, dtype)")
        mask = xp.astype(noise, x.dtype) * (1.0 / (1.0 - self.rate))
        return x * mask, mask, state

    def vjp(
        self,
        params: Params,
        cache: Any,
        dy: Array,
        *,
        xp: Any,
        need_input_grad: bool = True,
        from_logits: bool = False,
        overwrite_dy: bool = False,
    ) -> tuple[dict[str, Array], Array | None]:
        if not need_input_grad:
            return {}, None
        return {}, (dy if cache is None else dy * cache)


LAYERS: dict[str, type[Layer]] = {"Dense": Dense, "Activation": Activation, "Dropout": Dropout}
"""Layer classes by name, for rebuilding a network from its configuration."""

"""Layers: the ``Layer`` protocol, ``Dense``, ``Activation`` and ``Dropout``.

A layer is built for a number of input features on a backend; then
``forward(x, training)`` returns its output and remembers what ``backward``
needs, and ``backward(dy)`` fills ``grads`` (same keys as ``params``) and
returns the gradient with respect to ``x``. All arrays are ``(batch, features)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend, to_numpy
from ..backend import numpy_kernels as kernels
from .activations import RELU_FAMILY, get_activation
from .initializers import Initializer, get_initializer

Array = Any


class Layer:
    """Base class of every layer.

    Attributes
    ----------
    params : dict[str, Array]
        Trainable arrays by name; empty for layers without parameters.
    grads : dict[str, Array]
        Gradients of the loss for ``params``, filled by :meth:`backward`.
    backend : Backend or None
        Set by :meth:`build`.
    """

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
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

    def to(self, backend: Backend) -> None:
        """Move parameters to ``backend``; cached activations are dropped."""
        self.backend = backend
        # Copies: torch's .numpy() and friends share memory, and updates are in place.
        self.params = {k: backend.asarray(v, self.dtype, copy=True) for k, v in self.params.items()}
        self.grads = {}

    def forward(self, x: Array, training: bool = False) -> Array:
        """Output of the layer for input ``x`` of shape ``(batch, in_features)``."""
        return x

    def backward(self, dy: Array, *, need_input_grad: bool = True) -> Array | None:
        """Fill :attr:`grads` from ``dy = dL/dy`` and return ``dL/dx`` (None if not needed)."""
        return dy

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
    def pre_activation(self) -> Array:
        """``x @ weight + bias`` from the last :meth:`forward` (the logits).

        For activations with an in-place kernel (``kernels.FUSED_IN_PLACE``) on
        NumPy this is overwritten by the output; no loss fuses with those.
        """
        return self._z

    def forward(self, x: Array, training: bool = False) -> Array:
        backend = self._backend()
        self._x = x
        z = x @ self.params["weight"]
        if self.use_bias:
            bias = self.params["bias"]
            if backend.mutable:  # z is ours: add in place
                z += bias
            else:
                z = z + bias
        name = self.activation.name
        y = z if name == "linear" else kernels.activation_forward(name, z)
        if y is None:
            y = self.activation.forward(z, backend.xp)
        self._z, self._y = z, y
        return y

    def backward(
        self,
        dy: Array,
        *,
        need_input_grad: bool = True,
        through_activation: bool = True,
        overwrite_dy: bool = False,
    ) -> Array | None:
        """Gradients from ``dy``.

        ``through_activation=False`` takes ``dy`` as ``dL/dz`` (a fused output);
        ``overwrite_dy=True`` lets the layer reuse ``dy``'s memory (the network
        passes it for arrays it made itself).
        """
        xp = self._backend().xp
        self.grads = {}  # let the previous step's gradients go before new ones are made
        dz = dy
        name = self.activation.name
        if through_activation and name != "linear":
            dz = kernels.activation_backward(name, self._y, dy) if overwrite_dy else None
            if dz is None:
                dz = self.activation.backward(self._z, self._y, dy, xp)
        self.grads["weight"] = self._x.mT @ dz
        if self.use_bias:
            self.grads["bias"] = xp.sum(dz, axis=0)
        if not need_input_grad:
            return None
        return dz @ self.params["weight"].mT


class Activation(Layer):
    """Applies an activation function by name, e.g. ``Activation("tanh")``."""

    def __init__(self, name: str | None) -> None:
        super().__init__()
        self.activation = get_activation(name)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.activation.name}

    @property
    def pre_activation(self) -> Array:
        """The input of the last :meth:`forward` (the logits)."""
        return self._x

    def forward(self, x: Array, training: bool = False) -> Array:
        self._x = x
        self._y = self.activation.forward(x, self._backend().xp)
        return self._y

    def backward(self, dy: Array, *, need_input_grad: bool = True) -> Array | None:
        return self.activation.backward(self._x, self._y, dy, self._backend().xp)


class Dropout(Layer):
    """Inverted dropout: in training, zeroes each unit with probability ``rate``.

    Kept units are scaled by ``1 / (1 - rate)``, so nothing changes at
    prediction time. Masks are drawn from the network's host generator, so one
    seed gives the same masks on every backend.
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

    def forward(self, x: Array, training: bool = False) -> Array:
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        backend = self._backend()
        rng = self.rng if self.rng is not None else np.random.default_rng()
        keep = rng.random(tuple(x.shape), dtype=np.float32) >= self.rate
        mask = backend.xp.asarray(keep, device=backend.device)
        self._mask = backend.xp.astype(mask, x.dtype) * (1.0 / (1.0 - self.rate))
        return x * self._mask

    def backward(self, dy: Array, *, need_input_grad: bool = True) -> Array | None:
        return dy if self._mask is None else dy * self._mask


LAYERS: dict[str, type[Layer]] = {"Dense": Dense, "Activation": Activation, "Dropout": Dropout}
"""Layer classes by name, for rebuilding a network from its configuration."""

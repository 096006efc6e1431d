"""``Residual``: a skip connection around a stack of layers, ``y = x + f(x)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import Backend
from .layers import LAYERS, Layer, Params, State
from .shapes import parameter_shapes, state_shapes

Array = Any


def _inner(spec: Any, index: int) -> Layer:
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("class"), str) and spec["class"] in LAYERS:
        config = spec.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"Residual layer {index} config must be a mapping, got {config!r}")
        return LAYERS[spec["class"]](**config)
    raise ValueError(f"Residual layers must be xpnet Layer objects, got {spec!r} at position {index}")


def _split(flat: dict[str, Array], count: int) -> list[dict[str, Array]]:
    """``{"<i>.<name>": a}`` into one dict per inner layer."""
    parts: list[dict[str, Array]] = [{} for _ in range(count)]
    for key, value in flat.items():
        index, _, name = key.partition(".")
        parts[int(index)][name] = value
    return parts


def _join(parts: Sequence[dict[str, Array]]) -> dict[str, Array]:
    return {f"{i}.{name}": value for i, part in enumerate(parts) for name, value in part.items()}


class Residual(Layer):
    """Adds the input to the output of ``layers``: ``y = x + f(x)``.

    The inner layers must end with as many features as they start with.
    Their parameters and state live here, namespaced ``"<position>.<name>"``
    (``"0.weight"``, ``"1.running_mean"``); the inner layer objects are used
    only for their math.

    Parameters
    ----------
    layers : sequence of Layer
        The branch ``f``, applied in order (layer specs ``{"class", "config"}``
        are accepted, as checkpoints store them).

    Examples
    --------
    >>> import xpnet as xn
    >>> block = xn.Residual([xn.Dense(16, "relu"), xn.Dense(16)])
    """

    def __init__(self, layers: Sequence[Any]) -> None:
        super().__init__()
        if isinstance(layers, (Layer, str, dict)) or not isinstance(layers, Sequence) or not layers:
            raise ValueError(f"Residual needs a non-empty list of layers, got {layers!r}")
        self.layers = [_inner(spec, i) for i, spec in enumerate(layers)]
        self._widths: list[int] | None = None

    def get_config(self) -> dict[str, Any]:
        return {
            "layers": [{"class": type(layer).__name__, "config": layer.get_config()} for layer in self.layers]
        }

    def _check_width(self, in_features: int) -> None:
        n = in_features
        for layer in self.layers:
            n = layer.output_features(n)
        if n != in_features:
            raise ValueError(
                f"Residual needs its layers to keep the number of features: the input has {in_features}, "
                f"the layers end with {n}"
            )

    def output_features(self, in_features: int) -> int:
        self._check_width(in_features)
        return in_features

    def _each(self, in_features: int, shapes: Any) -> dict[str, tuple[int, ...]]:
        parts, n = [], in_features
        for layer in self.layers:
            parts.append(shapes(layer, n) or {})
            n = layer.output_features(n)
        return _join(parts)

    def parameter_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """The inner layers' parameter shapes, namespaced."""
        self._check_width(in_features)
        return self._each(in_features, parameter_shapes)

    def state_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """The inner layers' state shapes, namespaced."""
        self._check_width(in_features)
        return self._each(in_features, state_shapes)

    def build(self, in_features: int, backend: Backend, dtype: str, rng: np.random.Generator) -> None:
        self._check_width(in_features)
        self.in_features, self.backend, self.dtype = in_features, backend, dtype
        n = in_features
        for layer in self.layers:
            if not layer.built:
                layer.build(n, backend, dtype, rng)
            n = layer.output_features(n)
        self.params = _join([layer.params for layer in self.layers])
        self.state = _join([layer.state for layer in self.layers])
        for layer in self.layers:  # the arrays live here from now on
            layer.params, layer.state = {}, {}

    def init_state(self) -> State:
        return _join([layer.init_state() for layer in self.layers])

    def to(self, backend: Backend) -> None:
        super().to(backend)
        for layer in self.layers:
            layer.backend = backend

    def _noise_widths(self) -> list[int]:
        """Columns of each inner layer's noise (0: none), found with a throw-away generator."""
        if self._widths is None:
            probe = np.random.default_rng(0)
            widths = []
            for layer in self.layers:
                part = layer.draw(probe, (1, int(layer.in_features or 0)), self.dtype)
                widths.append(0 if part is None else int(np.reshape(part, (1, -1)).shape[1]))
            self._widths = widths
        return self._widths

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """The inner layers' noise side by side as one float ``(rows, columns)`` array (or None)."""
        rows = shape[0]
        parts = [layer.draw(rng, (rows, int(layer.in_features or 0)), dtype) for layer in self.layers]
        present = [np.reshape(p, (rows, -1)).astype(str(dtype)) for p in parts if p is not None]
        return np.concatenate(present, axis=1) if present else None

    def _inner_noise(self, noise: Any) -> list[Any]:
        if noise is None:
            return [None] * len(self.layers)
        out: list[Any] = []
        start = 0
        for width in self._noise_widths():
            if width == 0:
                out.append(None)
                continue
            part = noise[:, start : start + width]
            start += width
            out.append(part)
        return out

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        count = len(self.layers)
        p, s = _split(params, count), _split(state, count)
        h, caches, states = x, [], []
        for layer, pi, si, ni in zip(self.layers, p, s, self._inner_noise(noise)):
            h, cache, new = layer.apply(pi, si, h, training=training, noise=ni, xp=xp)
            caches.append(cache)
            states.append(new)
        return x + h, (caches, p), _join(states)

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
        caches, p = cache
        grads: list[dict[str, Array]] = [{} for _ in self.layers]
        grad = dy
        for i in range(len(self.layers) - 1, -1, -1):
            grads[i], grad = self.layers[i].vjp(
                p[i],
                caches[i],
                grad,
                xp=xp,
                need_input_grad=need_input_grad or i > 0,
                overwrite_dy=grad is not dy,  # dy is needed again for the skip path
            )
        return _join(grads), (dy + grad if need_input_grad else None)


LAYERS["Residual"] = Residual

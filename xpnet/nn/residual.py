"""Blocks of layers: ``Residual`` (``y = x + f(x)``, or ``x @ W + f(x)``) and ``Parallel`` branches.

A block keeps its inner layers' parameters and state itself, namespaced by
position, and uses the inner layer objects only for their math.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import Backend
from ..backend import numpy_kernels as kernels
from .initializers import Initializer, get_initializer
from .layers import LAYERS, Layer, Params, State
from .shapes import parameter_shapes, state_shapes

Array = Any

SHORTCUTS = ("identity", "linear")
SHORTCUT = "shortcut"
"""Key of the linear shortcut's weight among a Residual's parameters."""
MERGES = ("mean", "sum")


def _inner(spec: Any, index: int, block: str) -> Layer:
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("class"), str) and spec["class"] in LAYERS:
        config = spec.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"{block} layer {index} config must be a mapping, got {config!r}")
        return LAYERS[spec["class"]](**config)
    raise ValueError(f"{block} layers must be xpnet Layer objects, got {spec!r} at position {index}")


def _layers(specs: Any, block: str) -> list[Layer]:
    if isinstance(specs, (Layer, str, dict)) or not isinstance(specs, Sequence) or not specs:
        raise ValueError(f"{block} needs a non-empty list of layers, got {specs!r}")
    return [_inner(spec, i, block) for i, spec in enumerate(specs)]


def _config(layers: Sequence[Layer]) -> list[dict[str, Any]]:
    return [{"class": type(layer).__name__, "config": layer.get_config()} for layer in layers]


def _describe(layers: Sequence[Layer]) -> str:
    """``[Dense(units=8, ...), ...]``: the layers' reprs, for a block's own repr."""
    return "[" + ", ".join(repr(layer) for layer in layers) + "]"


def _split(flat: dict[str, Array], count: int) -> list[dict[str, Array]]:
    """``{"<i>.<name>": a}`` into one dict per position (keys without a position left out)."""
    parts: list[dict[str, Array]] = [{} for _ in range(count)]
    for key, value in flat.items():
        index, dot, name = key.partition(".")
        if dot:
            parts[int(index)][name] = value
    return parts


def _join(parts: Sequence[dict[str, Array]]) -> dict[str, Array]:
    return {f"{i}.{name}": value for i, part in enumerate(parts) for name, value in part.items()}


class _Chain:
    """Layers applied in order, their arrays namespaced ``"<position>.<name>"``: the math of a branch."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers
        self._widths: list[int] | None = None

    def features(self, in_features: int) -> int:
        n = in_features
        for layer in self.layers:
            n = layer.output_features(n)
        return n

    def shapes(self, in_features: int, shapes: Any) -> dict[str, tuple[int, ...]]:
        parts, n = [], in_features
        for layer in self.layers:
            parts.append(shapes(layer, n) or {})
            n = layer.output_features(n)
        return _join(parts)

    def build(
        self, in_features: int, backend: Backend, dtype: str, rng: np.random.Generator
    ) -> tuple[Params, State]:
        """Build the layers (those not built yet) and take their arrays."""
        n = in_features
        for layer in self.layers:
            if not layer.built:
                layer.build(n, backend, dtype, rng)
            n = layer.output_features(n)
        params = _join([layer.params for layer in self.layers])
        state = _join([layer.state for layer in self.layers])
        for layer in self.layers:  # the arrays live in the block from now on
            layer.params, layer.state = {}, {}
        return params, state

    def init_state(self) -> State:
        return _join([layer.init_state() for layer in self.layers])

    def draw(self, rng: np.random.Generator, rows: int, dtype: Any) -> np.ndarray | None:
        """The layers' noise side by side as one float ``(rows, columns)`` array (or None)."""
        parts = [layer.draw(rng, (rows, int(layer.in_features or 0)), dtype) for layer in self.layers]
        present = [np.reshape(p, (rows, -1)).astype(str(dtype)) for p in parts if p is not None]
        return np.concatenate(present, axis=1) if present else None

    def width(self, dtype: Any) -> int:
        """Columns of :meth:`draw`'s array (0: no noise)."""
        return sum(self._noise_widths(dtype))

    def _noise_widths(self, dtype: Any) -> list[int]:
        """Columns of each layer's noise (0: none), found with a throw-away generator."""
        if self._widths is None:
            probe = np.random.default_rng(0)
            widths = []
            for layer in self.layers:
                part = layer.draw(probe, (1, int(layer.in_features or 0)), dtype)
                widths.append(0 if part is None else int(np.reshape(part, (1, -1)).shape[1]))
            self._widths = widths
        return self._widths

    def _noise(self, noise: Any, dtype: Any) -> list[Any]:
        if noise is None:
            return [None] * len(self.layers)
        out: list[Any] = []
        start = 0
        for width in self._noise_widths(dtype):
            out.append(None if width == 0 else noise[:, start : start + width])
            start += width
        return out

    def apply(
        self, params: Params, state: State, x: Array, training: bool, noise: Any, dtype: Any, xp: Any
    ) -> tuple[Array, Any, State]:
        count = len(self.layers)
        p, s = _split(params, count), _split(state, count)
        h, caches, states = x, [], []
        for layer, pi, si, ni in zip(self.layers, p, s, self._noise(noise, dtype)):
            h, cache, new = layer.apply(pi, si, h, training=training, noise=ni, xp=xp)
            caches.append(cache)
            states.append(new)
        return h, (caches, p), _join(states)

    def vjp(
        self, cache: Any, dy: Array, xp: Any, need_input_grad: bool, keep_dy: bool
    ) -> tuple[dict[str, Array], Array | None]:
        """Gradients from ``dy``; with ``keep_dy`` the layers never write into ``dy``'s memory."""
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
                overwrite_dy=grad is not dy or not keep_dy,
            )
        return _join(grads), grad

    def to(self, backend: Backend) -> None:
        for layer in self.layers:
            layer.backend = backend

    def detached(self) -> _Chain:
        """The same chain of :meth:`Layer.detached` layers."""
        twin = _Chain([layer.detached() for layer in self.layers])
        twin._widths = self._widths
        return twin


class Residual(Layer):
    """Adds the input, or a linear map of it, to the output of ``layers``.

    ``y = x + f(x)`` (the default), or with ``shortcut="linear"``
    ``y = x @ W + f(x)``: a learned projection without bias (ResNet's
    projection shortcut), so ``f`` may change the number of features. Around
    a multilayer perceptron that ends in a linear layer, the linear shortcut
    makes the block contain the linear model of its input ("wide and deep").

    With the identity shortcut the inner layers must end with as many features
    as they start with. Their parameters and state live here, namespaced
    ``"<position>.<name>"`` (``"0.weight"``, ``"1.running_mean"``), beside
    ``"shortcut"``, the weight ``W`` of shape ``(in_features, out_features)``.

    Parameters
    ----------
    layers : sequence of Layer
        The branch ``f``, applied in order (layer specs ``{"class", "config"}``
        are accepted, as checkpoints store them).
    shortcut : {"identity", "linear"}
        What is added to ``f(x)``: ``x`` itself, or ``x @ W``.
    shortcut_init : str or callable
        Initializer of ``W`` (default ``"zeros"``: the block starts as ``f``
        alone). It is drawn after the inner layers' weights, so those equal the
        weights the same layers get without the block.

    Examples
    --------
    >>> import xpnet as xn
    >>> block = xn.Residual([xn.Dense(16, "relu"), xn.Dense(16)])
    >>> wide_and_deep = xn.Residual([xn.Dense(64, "relu"), xn.Dense(1)], shortcut="linear")
    """

    def __init__(
        self, layers: Sequence[Any], shortcut: str = "identity", shortcut_init: str | Initializer = "zeros"
    ) -> None:
        super().__init__()
        self.chain = _Chain(_layers(layers, "Residual"))
        if shortcut not in SHORTCUTS:
            raise ValueError(f"Residual shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.shortcut = shortcut
        self.shortcut_init = shortcut_init
        self._init = get_initializer(shortcut_init)

    @property
    def layers(self) -> list[Layer]:
        """The inner layers (used for their math only)."""
        return self.chain.layers

    def sublayers(self) -> list[Layer]:
        return list(self.layers)

    def detached(self) -> Residual:
        twin = super().detached()
        assert isinstance(twin, Residual)
        twin.chain = self.chain.detached()
        return twin

    @property
    def linear(self) -> bool:
        """Whether the shortcut is the learned projection ``x @ W``."""
        return self.shortcut == "linear"

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"layers": _config(self.layers)}
        if self.linear:
            config["shortcut"] = self.shortcut
            if isinstance(self.shortcut_init, str) and self.shortcut_init != "zeros":
                config["shortcut_init"] = self.shortcut_init
        return config

    def __repr__(self) -> str:
        extra = "" if not self.linear else ", shortcut='linear'"
        return f"Residual({_describe(self.layers)}{extra})"

    def output_features(self, in_features: int) -> int:
        n = self.chain.features(in_features)
        if n != in_features and not self.linear:
            raise ValueError(
                f"Residual needs its layers to keep the number of features: the input has {in_features}, "
                f"the layers end with {n} (shortcut='linear' projects the input instead)"
            )
        return n

    def parameter_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """The inner layers' parameter shapes, namespaced, and the linear shortcut's."""
        out = self.output_features(in_features)
        shapes = self.chain.shapes(in_features, parameter_shapes)
        if self.linear:
            shapes[SHORTCUT] = (in_features, out)
        return shapes

    def state_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """The inner layers' state shapes, namespaced."""
        self.output_features(in_features)
        return self.chain.shapes(in_features, state_shapes)

    def build(self, in_features: int, backend: Backend, dtype: str, rng: np.random.Generator) -> None:
        out = self.output_features(in_features)
        self.in_features, self.backend, self.dtype = in_features, backend, dtype
        self.params, self.state = self.chain.build(in_features, backend, dtype, rng)
        if self.linear:
            weight = self._init(rng, (in_features, out))
            self.params[SHORTCUT] = backend.asarray(weight, dtype, copy=True)

    def init_state(self) -> State:
        return self.chain.init_state()

    def to(self, backend: Backend) -> None:
        super().to(backend)
        self.chain.to(backend)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """The inner layers' noise side by side as one float ``(rows, columns)`` array (or None)."""
        return self.chain.draw(rng, shape[0], dtype)

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        h, cache, new = self.chain.apply(params, state, x, training, noise, self.dtype, xp)
        if self.linear:
            return h + kernels.matmul(x, params[SHORTCUT]), (cache, x), new
        return x + h, (cache, None), new

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
        inner, x = cache
        # dy is needed again for the shortcut, so the branch never writes into it
        grads, grad = self.chain.vjp(inner, dy, xp, need_input_grad, keep_dy=True)
        if not need_input_grad:
            grad = None
        if not self.linear:
            return grads, (dy + grad if grad is not None else None)
        grads[SHORTCUT] = kernels.matmul(x.mT, dy)
        return grads, (kernels.matmul(dy, params[SHORTCUT].mT) + grad if grad is not None else None)


class Parallel(Layer):
    """Branches of layers applied to the same input, their outputs averaged (or summed).

    ``y = mean_b f_b(x)`` (``merge="sum"``: the sum). Every branch must end
    with the same number of features. Averaging the outputs of networks
    trained apart makes one network of an ensemble: put each member's layers
    in a branch (built members keep their weights), and a final
    :class:`~xpnet.Activation` after the block averages their logits.
    Parameters and state are namespaced ``"<branch>.<position>.<name>"``.

    Parameters
    ----------
    branches : sequence of sequences of Layer
        The layers of each branch, applied in order (layer specs
        ``{"class", "config"}`` are accepted, as checkpoints store them).
    merge : {"mean", "sum"}
        How the branches' outputs are combined.

    Examples
    --------
    >>> import xpnet as xn
    >>> block = xn.Parallel([[xn.Dense(16, "relu"), xn.Dense(3)], [xn.Dense(3)]], merge="sum")
    """

    def __init__(self, branches: Sequence[Sequence[Any]], merge: str = "mean") -> None:
        super().__init__()
        if isinstance(branches, (Layer, str, dict)) or not isinstance(branches, Sequence) or not branches:
            raise ValueError(f"Parallel needs a non-empty list of branches got {branches!r}")
        if merge not in MERGES:
            raise ValueError(f"Parallel merge must be one of {MERGES}, got {merge!r}")
        self.branches = [_Chain(_layers(branch, "Parallel branch")) for branch in branches]
        self.merge = merge

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"branches": [_config(branch.layers) for branch in self.branches]}
        if self.merge != "mean":
            config["merge"] = self.merge
        return config

    def __repr__(self) -> str:
        described = [_describe(branch.layers) for branch in self.branches]
        if len(described) > 1 and len(set(described)) == 1:
            inner = f"{len(described)} x {described[0]}"
        else:
            inner = ", ".join(described)
        extra = "" if self.merge == "mean" else f", merge={self.merge!r}"
        return f"Parallel([{inner}]{extra})"

    def sublayers(self) -> list[Layer]:
        return [layer for branch in self.branches for layer in branch.layers]

    def detached(self) -> Parallel:
        twin = super().detached()
        assert isinstance(twin, Parallel)
        twin.branches = [branch.detached() for branch in self.branches]
        return twin

    def output_features(self, in_features: int) -> int:
        widths = [branch.features(in_features) for branch in self.branches]
        if len(set(widths)) > 1:
            raise ValueError(f"Parallel branches must end with the same number of features, got {widths}")
        return widths[0]

    def _each(self, in_features: int, shapes: Any) -> dict[str, tuple[int, ...]]:
        self.output_features(in_features)
        return _join([branch.shapes(in_features, shapes) for branch in self.branches])

    def parameter_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """The branches' parameter shapes, namespaced ``"<branch>.<position>.<name>"``."""
        return self._each(in_features, parameter_shapes)

    def state_shapes(self, in_features: int) -> dict[str, tuple[int, ...]]:
        """The branches' state shapes, namespaced ``"<branch>.<position>.<name>"``."""
        return self._each(in_features, state_shapes)

    def build(self, in_features: int, backend: Backend, dtype: str, rng: np.random.Generator) -> None:
        self.output_features(in_features)
        self.in_features, self.backend, self.dtype = in_features, backend, dtype
        built = [branch.build(in_features, backend, dtype, rng) for branch in self.branches]
        self.params = _join([params for params, _ in built])
        self.state = _join([state for _, state in built])

    def init_state(self) -> State:
        return _join([branch.init_state() for branch in self.branches])

    def to(self, backend: Backend) -> None:
        super().to(backend)
        for branch in self.branches:
            branch.to(backend)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        """The branches' noise side by side as one float ``(rows, columns)`` array (or None)."""
        parts = [branch.draw(rng, shape[0], dtype) for branch in self.branches]
        present = [p for p in parts if p is not None]
        return np.concatenate(present, axis=1) if present else None

    def _noise(self, noise: Any) -> list[Any]:
        if noise is None:
            return [None] * len(self.branches)
        out, start = [], 0
        for branch in self.branches:
            width = branch.width(self.dtype)
            out.append(None if width == 0 else noise[:, start : start + width])
            start += width
        return out

    def apply(
        self, params: Params, state: State, x: Array, *, training: bool = False, noise: Any = None, xp: Any
    ) -> tuple[Array, Any, State]:
        count = len(self.branches)
        p, s = _split(params, count), _split(state, count)
        y: Any = None
        caches, states = [], []
        for branch, pb, sb, nb in zip(self.branches, p, s, self._noise(noise)):
            h, cache, new = branch.apply(pb, sb, x, training, nb, self.dtype, xp)
            y = h if y is None else y + h
            caches.append(cache)
            states.append(new)
        if self.merge == "mean" and count > 1:
            y = y * (1.0 / count)
        return y, caches, _join(states)

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
        count = len(self.branches)
        if self.merge == "mean" and count > 1:
            dy = dy * (1.0 / count)
        grads, dx = [], None
        for branch, inner in zip(self.branches, cache):
            g, d = branch.vjp(inner, dy, xp, need_input_grad, keep_dy=True)
            grads.append(g)
            if need_input_grad:
                dx = d if dx is None else dx + d
        return _join(grads), dx


LAYERS["Residual"] = Residual
LAYERS["Parallel"] = Parallel

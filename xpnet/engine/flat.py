"""One flat buffer for many arrays: a structure of arrays packed and unpacked again.

Distributed training sums every gradient in one allreduce of one buffer
(:func:`flatten`, :func:`unflatten`; :mod:`xpnet.distributed`). A fused runner
keeps a network's parameters, their gradients and the optimizer state each in
one buffer that lives on (:class:`Packing`): the layers hold views into it,
and one update reaches every parameter.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import Array, device_of, namespace_of


@dataclass(frozen=True)
class Layout:
    """Where each array of a flattened structure lives in the flat buffer.

    Attributes
    ----------
    template : object
        The structure (dicts, lists, tuples) with each array replaced by its
        position in ``shapes``.
    shapes : tuple of tuple of int
        The arrays' shapes, in flattening order.
    """

    template: Any
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Elements of each array."""
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def size(self) -> int:
        """Elements of the flat buffer."""
        return sum(self.sizes)


class _Slot(int):
    """An array's position in a :class:`Layout` template (an int that is not user data)."""


def flatten(tree: Any) -> tuple[Array, Layout]:
    """Pack every array of ``tree`` into one flat buffer of their backend and dtype.

    Parameters
    ----------
    tree : array, or dict / list / tuple of them, nested
        For instance ``[layer.grads for layer in net.layers]``. Every array
        must have the same backend, device and dtype.

    Returns
    -------
    flat : array, shape (layout.size,)
        The arrays' elements, one after the other (row-major), on their backend.
    layout : Layout
        What :func:`unflatten` needs to rebuild the structure.

    Examples
    --------
    >>> import numpy as np
    >>> flat, layout = flatten({"weight": np.ones((2, 2)), "bias": np.zeros(2)})
    >>> flat.tolist()
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    >>> unflatten(flat, layout)["bias"].shape
    (2,)
    """
    arrays: list[Any] = []
    template = _template(tree, arrays)
    if not arrays:
        raise ValueError("flatten found no arrays in the structure; expected arrays in dicts/lists")
    dtypes = {str(a.dtype) for a in arrays}
    if len(dtypes) > 1:
        raise ValueError(f"flatten needs one dtype for all arrays, got {sorted(dtypes)}")
    xp = namespace_of(*arrays)
    flat = xp.concat([xp.reshape(a, (-1,)) for a in arrays], axis=0)
    return flat, Layout(template, tuple(tuple(int(d) for d in a.shape) for a in arrays))


def _template(tree: Any, arrays: list[Any]) -> Any:
    if isinstance(tree, Mapping):
        return {key: _template(value, arrays) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        parts = [_template(value, arrays) for value in tree]
        return tuple(parts) if isinstance(tree, tuple) else parts
    if not hasattr(tree, "shape"):
        raise TypeError(f"flatten takes arrays in dicts, lists and tuples, got {type(tree).__name__}")
    arrays.append(tree)
    return _Slot(len(arrays) - 1)


def unflatten(flat: Array, layout: Layout) -> Any:
    """The structure :func:`flatten` packed, with its arrays read from ``flat`` (views where possible)."""
    if tuple(flat.shape) != (layout.size,):
        raise ValueError(f"flat buffer must have shape ({layout.size},), got {tuple(flat.shape)}")
    xp = namespace_of(flat)
    offsets = np.concatenate([[0], np.cumsum(layout.sizes)]).tolist()
    arrays = [xp.reshape(flat[offsets[i] : offsets[i + 1]], shape) for i, shape in enumerate(layout.shapes)]
    return _fill(layout.template, arrays)


def _fill(template: Any, arrays: Sequence[Any]) -> Any:
    if isinstance(template, _Slot):
        return arrays[template]
    if isinstance(template, dict):
        return {key: _fill(value, arrays) for key, value in template.items()}
    parts = [_fill(value, arrays) for value in template]
    return tuple(parts) if isinstance(template, tuple) else parts


ALIGN = 64
"""Elements each packed array starts on a multiple of (256 bytes of float32: whole cache lines,
and the alignment vectorized GPU kernels and cuBLAS want)."""


@dataclass(frozen=True)
class Slot:
    """Where layer ``layer``'s parameter ``name`` lives in a :class:`Packing`'s buffers."""

    layer: int
    name: str
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class Packing:
    """Parameters, gradients and optimizer state in one flat buffer each; layers hold views.

    Parameters
    ----------
    params : list of dict
        Each layer's parameters (copied in, in order).
    opt_state : dict
        Optimizer state keyed ``"<layer>.<param>"`` (copied in; missing entries start at 0).
    state_keys : sequence of str
        The optimizer's state names (``"exp_avg"``, ...): one buffer each.

    Attributes
    ----------
    param, grad : Array
        The flat buffers, in the parameters' dtype and device; the gaps
        between aligned slots are 0 and stay 0 under every update. ``grad``
        (and its views ``grads``) is made on first use: an update that takes
        the backward pass's gradients as they are never needs it.
    state : dict of str to Array
        One flat buffer per optimizer state name.
    """

    def __init__(
        self, params: Sequence[dict[str, Array]], opt_state: dict[str, Any], state_keys: Sequence[str]
    ):
        first = next(a for layer in params for a in layer.values())
        xp, dtype, device = namespace_of(first), first.dtype, device_of(first)
        self.xp = xp
        self.slots: list[Slot] = []
        offset = 0
        for i, layer in enumerate(params):
            for name, value in layer.items():
                self.slots.append(Slot(i, name, offset, tuple(int(d) for d in value.shape)))
                offset += -(-self.slots[-1].size // ALIGN) * ALIGN
        self.layers = len(params)

        self._size, self._dtype, self._device = max(offset, 1), dtype, device
        self.param = self._zeros()
        self.state = {key: self._zeros() for key in state_keys}
        self.params = self._views(self.param)
        self.opt_state = {
            f"{slot.layer}.{slot.name}": {key: self._view(buffer, slot) for key, buffer in self.state.items()}
            for slot in self.slots
        }
        for slot in self.slots:
            key = f"{slot.layer}.{slot.name}"
            self._copy(self.params[slot.layer][slot.name], params[slot.layer][slot.name])
            for name, value in opt_state.get(key, {}).items():
                if name in self.opt_state[key]:
                    self._copy(self.opt_state[key][name], value)

    def _zeros(self) -> Array:
        return self.xp.zeros((self._size,), dtype=self._dtype, device=self._device)

    @functools.cached_property
    def grad(self) -> Array:
        """The flat gradient buffer (made on first use)."""
        return self._zeros()

    @functools.cached_property
    def grads(self) -> list[dict[str, Array]]:
        """Each layer's gradients: views into :attr:`grad`."""
        return self._views(self.grad)

    def _view(self, buffer: Array, slot: Slot) -> Array:
        return self.xp.reshape(buffer[slot.offset : slot.offset + slot.size], slot.shape)

    def _views(self, buffer: Array) -> list[dict[str, Array]]:
        views: list[dict[str, Array]] = [{} for _ in range(self.layers)]
        for slot in self.slots:
            views[slot.layer][slot.name] = self._view(buffer, slot)
        return views

    def _copy(self, view: Array, value: Array) -> None:
        view[...] = self.xp.asarray(value, dtype=view.dtype)

    def holds(self, params: Sequence[dict[str, Array]], opt_state: dict[str, Any]) -> bool:
        """Whether ``params`` and ``opt_state`` are still this packing's own views (nothing assigned)."""
        if len(params) != self.layers:
            return False
        for slot in self.slots:
            if params[slot.layer].get(slot.name) is not self.params[slot.layer][slot.name]:
                return False
            entry = opt_state.get(f"{slot.layer}.{slot.name}")
            mine = self.opt_state[f"{slot.layer}.{slot.name}"]
            if mine and (entry is None or any(entry.get(k) is not v for k, v in mine.items())):
                return False
        return all(len(p) == len(v) for p, v in zip(params, self.params))

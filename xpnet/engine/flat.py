"""One flat buffer for many arrays: a structure of arrays packed and unpacked again.

Distributed training sums every gradient in one allreduce of one buffer
(:mod:`xpnet.distributed`); engines use the same packing wherever one call
should see every parameter at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import Array, namespace_of


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

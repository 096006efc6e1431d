"""The one owner of what engines build: runners, steps and forward passes, cached by structure.

Building a runner costs little on NumPy, but JAX traces and compiles per
Python function: two networks with equal layers, loss and optimizer would
each compile their own step, and a k-fold ensemble or a cross-validation
would pay for the same compilation once per network. So every engine asks
:meth:`Cache.get` for what it builds, under a key made here and nowhere else
(:func:`key`): what it is (``kind``), the engine that builds it, and the
model's :func:`structure` (classes, configuration, dtypes, which layers
train). Never an epoch count, a learning rate or the data: those are
arguments.

What a model of xpnet's own classes needs (:func:`ours`) is kept for the
whole process (the :data:`LIMIT` most recently used structures), built from
:func:`~xpnet.engine.step.detached` copies so it keeps no network's arrays
alive; the first network of a structure builds, the rest reuse. A subclass
written by a user may read more than its configuration, so what its networks
need is kept by their own :class:`Cache`, one per network and engine.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .step import Model, detached

T = TypeVar("T")

LIMIT = 32
"""How many structures' functions the process keeps (least recently used go first)."""

_entries: OrderedDict[Any, Any] = OrderedDict()
_lock = threading.Lock()


def shared(key: Any, make: Callable[[], T]) -> T:
    """The function stored under ``key``, made by ``make()`` the first time (thread-safe)."""
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key]  # type: ignore[no-any-return]
        made = make()
        _entries[key] = made
        while len(_entries) > LIMIT:
            _entries.popitem(last=False)
        return made


def clear() -> None:
    """Forget every shared function (the next network of each structure builds again)."""
    with _lock:
        _entries.clear()


def size() -> int:
    """How many structures' functions are kept now."""
    with _lock:
        return len(_entries)


def ours(layers: Iterable[Any], *others: Any) -> bool:
    """Whether ``layers`` (blocks' inner layers included) and ``others`` are all xpnet's own classes."""
    pending = list(layers)
    while pending:
        layer = pending.pop()
        if not _is_ours(layer):
            return False
        pending.extend(layer.sublayers())
    return all(_is_ours(obj) for obj in others)


def _is_ours(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "xpnet"


def signature(model: Model) -> tuple[Any, ...]:
    """What a step depends on besides array shapes (the learning rate is an argument)."""
    config = {k: v for k, v in model.optimizer.get_config().items() if k != "learning_rate"}
    return (type(model.optimizer), repr(config), repr(model.loss), tuple(map(repr, model.layers)))


def structure(model: Model) -> tuple[Any, ...]:
    """:func:`signature` plus layer dtypes and which layers train: all a shared step depends on."""
    return (*signature(model), model.trainable, layer_structure(model.layers))


def layer_structure(layers: Sequence[Any]) -> tuple[Any, ...]:
    """Each layer's class, configuration and dtype (a block's inner layers are in its ``repr``)."""
    return tuple((type(layer), repr(layer), str(layer.dtype)) for layer in layers)


def key(kind: Any, engine: Any, model: Model | None = None, layers: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The key of what ``engine`` builds for ``model`` (or, for a forward pass, ``layers``)."""
    shape = structure(model) if model is not None else layer_structure(layers)
    return (kind, type(engine), engine.backend, engine.inplace, shape)


class Cache:
    """What one engine built for one network's models whose classes are not all xpnet's own."""

    def __init__(self) -> None:
        self._own: dict[Any, Any] = {}

    def model(
        self, kind: Any, engine: Any, model: Model, make: Callable[[Model], T], *, share: bool = True
    ) -> T:
        """``make(model)``, built once per structure: process-wide from a detached copy when
        :func:`ours` and ``share`` (False: what it builds holds one network's state), else kept here."""
        k = key(kind, engine, model)
        if share and ours(model.layers, model.loss, model.optimizer):
            return shared(k, lambda: make(detached(model)))
        if k not in self._own:
            self._own[k] = make(model)
        return self._own[k]  # type: ignore[no-any-return]

    def layers(
        self, kind: Any, engine: Any, layers: Sequence[Any], make: Callable[[tuple[Any, ...]], T]
    ) -> T:
        """``make(layers)`` for a forward pass, kept as :meth:`model` keeps steps."""
        k = key(kind, engine, layers=layers)
        if ours(layers):
            twins = tuple(layer.detached() for layer in layers)
            return shared(k, lambda: make(twins))
        if k not in self._own:
            self._own[k] = make(tuple(layers))
        return self._own[k]  # type: ignore[no-any-return]

"""Compiled functions shared by every network of one structure.

JAX compiles per Python function: two networks with equal layers, loss and
optimizer would each trace and compile their own step, and a k-fold ensemble
or a cross-validation would pay for the same compilation once per network.
:func:`shared` keeps one compiled function per structure for the whole
process (the :data:`LIMIT` most recently used), so only the first network of
a structure compiles.

What is shared is built from :meth:`~xpnet.nn.layers.Layer.detached` copies,
so it keeps no network's arrays alive. Only structures made of xpnet's own
classes are shared (:func:`ours`): their configuration, which their ``repr``
shows and a checkpoint stores, is all their math reads. A subclass written
by a user may read anything else, so its networks keep their own functions.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

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
    """Forget every shared function (the next network of each structure compiles again)."""
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

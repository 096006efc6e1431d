"""Floor 3.5: engines, the one place where each backend decides how the pure functions run.

An engine turns a backend-free :class:`~xpnet.engine.step.Model` (the layers'
pure math, the loss, the optimizer's rule, which layers train) into an epoch
runner, a single step (optionally around an allreduce) and a forward pass for
inference; see :class:`~xpnet.engine.eager.EagerEngine` for the interface.
:func:`engine_for` maps a backend to its engine, and is the only place where
execution reads a backend's name:

====================  ================================================================
``numpy``             :class:`~xpnet.engine.numpy_engine.NumpyEngine`: the fused loop
                      where its plan covers the model, else the eager engine
``jax``               :class:`~xpnet.engine.jax_engine.JaxEngine`: compiled epochs, the
                      compiled distributed halves, jitted inference
``cupy``              :class:`~xpnet.engine.cupy_engine.CupyEngine`: eager on the GPU,
                      batches copied through pinned memory
``torch``             :class:`~xpnet.engine.torch_engine.TorchEngine`: the eager step's
                      forward and backward, then one update of every parameter from
                      flat buffers where it covers the model, else the eager engine
``array_api_strict``  :class:`~xpnet.engine.eager.EagerEngine`, in place
``compile=False``     :class:`~xpnet.engine.eager.EagerEngine` with pure updates, on any
                      backend
====================  ================================================================

What an engine builds is cached by :mod:`xpnet.engine.cache`, keyed by structure.
"""

from __future__ import annotations

from ..backend import Backend
from .eager import EagerEngine

__all__ = ["EagerEngine", "engine_for"]


def engine_for(backend: Backend, compile: bool | None = None) -> EagerEngine:
    """A new engine for ``backend``: its best (``compile=None`` or True) or plain eager code
    with pure updates (``compile=False``), giving the same numbers to rounding."""
    if compile is False:
        return EagerEngine(backend, inplace=False)
    if backend.name == "numpy":
        from .numpy_engine import NumpyEngine

        return NumpyEngine(backend)
    if backend.name == "jax":
        from .jax_engine import JaxEngine

        return JaxEngine(backend)
    if backend.name == "cupy":
        from .cupy_engine import CupyEngine

        return CupyEngine(backend)
    if backend.name == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(backend)
    return EagerEngine(backend)

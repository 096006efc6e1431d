"""The CuPy engine: the eager engine on the GPU, with batches copied through pinned memory.

Every call runs inside the network's device (:meth:`~xpnet.backend.Backend.scope`,
which the runners enter). Streamed batches reach the GPU through reused
pinned host buffers and an asynchronous copy on a stream of their own, so a
copy made in the prefetch thread overlaps the step running on the default
stream.

Networks a fused plan covers train on :class:`~xpnet.engine.fused.FusedRunner`
with CuPy's kernels (:mod:`xpnet.engine.fused_cupy`): flat parameter buffers,
fused kernels, cuBLAS through a handle of xpnet's own, and each epoch after
the first replayed from one CUDA graph. Everything else runs the generic
step, in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import Backend
from . import step as pure
from .eager import EagerEngine
from .fused import FusedRunner
from .plan import plan_of


class CupyEngine(EagerEngine):
    """:class:`~xpnet.engine.eager.EagerEngine` for CuPy (see the module docstring)."""

    separate_memory = True

    def runner(self, model: pure.Model) -> Any:
        # Not shared with other networks: the fused runner keeps this network's buffers and recordings.
        return self.cache.model("runner", self, model, self._runner, share=False)

    def _runner(self, model: pure.Model) -> Any:
        plan = plan_of(model)
        xp = self.backend.xp

        def kernels(dtype: Any) -> Any:
            from .fused_cupy import CupyKernels

            assert plan is not None
            return CupyKernels(xp, dtype, plan.optimizer)

        return FusedRunner(self.backend, self._step_function(model), plan, kernels)

    def converter(self, dtype: str) -> Callable[[Any], Any]:
        self.backend.dtype(dtype)
        return PinnedConverter(self.backend, dtype)


class PinnedConverter:
    """Host batch -> CuPy batch through reused pinned buffers and an asynchronous copy.

    Not exercised on the CPU-only CI; the GPU session (docs/gpu.md) runs the
    stream tests on CuPy.
    """

    def __init__(self, backend: Backend, dtype: str) -> None:
        self.backend = backend
        self.dtype = dtype
        self._pinned: dict[int, np.ndarray] = {}
        self._stream: Any = None

    def __call__(self, batch: Any) -> Any:
        import cupy

        # The device is thread-local in CUDA: enter it in whichever thread converts.
        with self.backend.device:
            if self._stream is None:
                self._stream = cupy.cuda.Stream(non_blocking=True)
            out = [self._copy(i, a) for i, a in enumerate(batch)]
            # The step runs on another stream: wait for this copy only, in this thread.
            self._stream.synchronize()
        return type(batch)(*out)

    def _copy(self, slot: int, a: Any) -> Any:
        import cupy
        import cupyx

        if a is None:
            return None
        host = np.asarray(a)
        if not (slot == 1 and host.dtype.kind in "biu"):
            host = host.astype(self.dtype, copy=False)
        pinned = self._pinned.get(slot)
        if pinned is None or pinned.nbytes < host.nbytes:
            pinned = cupyx.empty_pinned((max(host.nbytes, 1),), dtype=np.uint8)
            self._pinned[slot] = pinned
        staged = pinned[: host.nbytes].view(host.dtype).reshape(host.shape)
        np.copyto(staged, host)
        device = cupy.empty(host.shape, dtype=host.dtype)
        device.set(staged, stream=self._stream)
        return device

"""The fused runner's kernels on a CUDA GPU: one CuPy module of kernels, cuBLAS through our handle.

Every kernel of a fused step is in one source
(:func:`xpnet.engine.fused_cuda.source`: its docstring lists them), compiled
once per dtype and optimizer into one :class:`cupy.RawModule` (and kept in
CuPy's kernel cache on disk, so a new process compiles nothing); this module
launches them. The matrix products go through an xpnet cuBLAS handle bound to
the session's stream (:mod:`xpnet.engine.cublas`), which a CUDA graph can
record. :meth:`CupyKernels.capture` records a whole epoch's steps on that
stream and returns its replay.

The math is :mod:`xpnet.engine.fused_numpy`'s, which the CPU tests hold to
the generic step; the GPU tests (``tests/test_gpu_fused.py``) hold these
kernels to those.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import fused_updates
from .cublas import Handle
from .flat import Packing
from .fused_cuda import THREADS, TILE, source
from .plan import NormSpec

__all__ = ["BLOCKS", "CupyKernels", "source"]

BLOCKS = 4096
"""Most blocks of a kernel's grid (each loops over its share)."""


class CupyKernels:
    """:class:`~xpnet.engine.fused.Kernels` on a CUDA GPU (see the module docstring).

    Made by the CuPy engine for one dtype (``tf32``: float32 products on
    TF32 tensor cores, ``matmul_precision="tf32"``); binds the kernels and a cuBLAS
    handle to a stream of its own, on which the session runs, records and
    replays (non-blocking, so another thread's work on the default stream
    does not wait for it).
    """

    def __init__(self, xp: Any, dtype: Any, optimizer: Any, *, tf32: bool = False) -> None:
        import cupy

        self.xp = xp
        self._cupy = cupy
        self.dtype = np.dtype(dtype)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.blas = Handle(self.stream, tf32=tf32 and self.dtype == np.float32)
        self.module = cupy.RawModule(code=source(str(self.dtype), optimizer), options=("-std=c++14",))
        self._functions: dict[str, Any] = {}

    def _f(self, name: str) -> Any:
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = self.module.get_function(name)
        return found

    def _launch(self, name: str, n: int, *args: Any, single: bool = False) -> None:
        blocks = 1 if single else max(1, min(BLOCKS, -(-n // THREADS)))
        self._f(name)((blocks,), (THREADS,), args, stream=self.stream)

    def _t(self, value: float) -> Any:
        return self.dtype.type(value)

    def matmul(self, a: Any, b: Any, out: Any, *, ta: bool = False, tb: bool = False) -> None:
        self.blas.gemm(a, b, out, ta=ta, tb=tb)

    def gather(self, source: Any, index: Any, out: Any) -> None:
        rows = np.int64(index.shape[0])
        if source.dtype.kind in "iu":
            self._launch("gather_labels", int(rows), source, index, rows, out)
        else:
            cols = int(np.prod(source.shape[1:], dtype=np.int64)) if source.ndim > 1 else 1
            self._launch("gather_rows", int(rows) * cols, source, index, rows, np.int32(cols), out)

    def bias_act(self, z: Any, bias: Any, activation: str) -> None:
        cols, has = int(z.shape[1]), bias is not None
        args = (z, z, bias if has else z, np.int32(has), np.int64(z.size), np.int32(cols))
        self._launch(f"act_{activation}", int(z.size), *args)

    def activate(self, x: Any, out: Any, activation: str) -> None:
        args = (x, out, out, np.int32(0), np.int64(out.size), np.int32(out.shape[1]))
        self._launch(f"act_{activation}", int(out.size), *args)

    def _grid(self, name: str, blocks: int, *args: Any) -> None:
        self._f(name)((max(1, min(BLOCKS, blocks)),), (THREADS,), args, stream=self.stream)

    def normalize(
        self, spec: NormSpec, x: Any, rows: int, weight: Any, bias: Any, stats: Any, state: Any, out: Any
    ) -> None:
        size, cols = int(x.shape[0]), int(x.shape[1])
        dims, eps, (mean, inv) = (np.int32(size), np.int32(rows), np.int32(cols)), self._t(spec.eps), stats
        if spec.kind == "batch":
            m, running = spec.momentum, (state["running_mean"], state["running_var"])
            moves = (self._t(m), self._t(1.0 - m))  # as the generic (1.0 - m), rounded once
            self._grid(
                "batch_norm", -(-cols // TILE), x, *dims, weight, bias, eps, *moves, *running, mean, inv, out
            )
        else:
            self._grid("layer_norm", size, x, *dims, weight, bias, eps, mean, inv, out)

    def normalize_grad(
        self,
        spec: NormSpec,
        x: Any,
        dy: Any,
        rows: int,
        weight: Any,
        stats: Any,
        dweight: Any,
        dbias: Any,
        dx: Any,
    ) -> None:
        size, cols = int(x.shape[0]), int(x.shape[1])
        dims, (mean, inv), tiles = (np.int32(size), np.int32(rows), np.int32(cols)), stats, -(-cols // TILE)
        if spec.kind == "batch":  # the unused dx pointer gets a stand-in array: kernels take no None
            has = np.int32(dx is not None)
            self._grid(
                "batch_norm_grad",
                tiles,
                x,
                dy,
                *dims,
                weight,
                mean,
                inv,
                dweight,
                dbias,
                dy if dx is None else dx,
                has,
            )
            return
        self._grid("layer_norm_params", tiles, x, dy, dims[1], dims[2], mean, inv, dweight, dbias)
        if dx is not None:
            self._grid("layer_norm_grad", size, x, dy, *dims, weight, mean, inv, dx)

    def act_grad(self, grad: Any, y: Any, activation: str, bias_grad: Any) -> None:
        has = bias_grad is not None
        if activation == "linear" and not has:
            return
        rows, cols = np.int32(grad.shape[0]), int(grad.shape[1])
        args = (grad, y, rows, np.int32(cols), np.int32(has), bias_grad if has else grad)
        self._grid(f"grad_{activation}", -(-cols // TILE), *args)

    def multiply(self, a: Any, b: Any, out: Any) -> None:
        self._launch("multiply", int(out.size), a, b, np.int64(out.size), out)

    def row_scale(self, w: Any, per_sample: int, out: Any) -> None:
        steps, n = int(w.shape[0]), np.int32(w.shape[1])
        self._f("row_scale")((steps,), (THREADS,), (w, n, self._t(per_sample), out), stream=self.stream)

    def loss(
        self, kind: str, z: Any, t: Any, scale: Any, smoothing: float, grad: Any, rows: int, sums: Any
    ) -> None:
        n, k = np.int32(z.shape[0]), np.int32(z.shape[1])
        if kind == "categorical_crossentropy":
            labels = t.ndim == 1  # the unused pointer gets a stand-in array: kernels take no None
            onehot = z if labels else t
            args: tuple[Any, ...] = (z, t, np.int32(labels), onehot, scale, n, k, self._t(smoothing))
            name = "softmax_xent"
        else:
            args = (z, t, scale, n, k)
            name = "sigmoid_xent" if kind == "binary_crossentropy" else "squared_error"
        self._launch(name, 0, *args, grad, np.float64(rows), sums, single=True)

    def update(self, packing: Packing, optimizer: Any, lr: Any, step: Any, offset: int) -> None:
        keys = fused_updates.state_keys(optimizer)
        n = int(packing.param.size)
        state = (packing.state[k] for k in keys)
        self._launch("update", n, packing.param, packing.grad, *state, lr, step, self._t(offset), np.int64(n))

    def check(self, buffer: Any, sums: Any) -> None:
        flag = sums[2:3]
        self._launch("fill", 1, flag, np.float64(1.0), single=True)
        self._launch("check", int(buffer.size), buffer, np.int64(buffer.size), flag)

    def capture(self, run: Callable[[], None]) -> Callable[[], None]:
        stream = self.stream
        stream.begin_capture()
        try:
            run()
        finally:
            graph = stream.end_capture()
        graph.launch(stream)
        return lambda: graph.launch(stream)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Run on the session's stream, after what the caller's stream has queued (the data, say)."""
        caller = self._cupy.cuda.get_current_stream()
        self.stream.wait_event(caller.record())
        with self.stream:
            yield

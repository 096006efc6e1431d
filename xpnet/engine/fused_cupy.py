"""The fused runner's kernels on a CUDA GPU: one CuPy module of kernels, cuBLAS through our handle.

Every kernel of a fused step is in one source (:func:`source`), compiled once
per dtype and optimizer into one :class:`cupy.RawModule` (and kept in CuPy's
kernel cache on disk, so a new process compiles nothing): bias and activation
in one pass; the activation's derivative times the upstream gradient together
with the bias gradient (its column sums, read coalesced, in a fixed order: the
same sums every run) in one; softmax or sigmoid cross-entropy (or the squared
error) giving the gradient and adding the batch's loss and correct count to
the epoch's sums in one; each step's loss scales once per epoch; and one
update of every parameter, its step number the epoch's first plus the step's
place in it. A step of ``L`` Dense layers is so ``2L + 4`` kernels besides its
``3L - 1`` matrix products, which go through an xpnet cuBLAS handle bound to
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

THREADS = 256
BLOCKS = 4096
"""Grid of the elementwise kernels (each loops over its elements)."""
ROW_GROUPS = 16
"""Rows a column sum's block reads at once (its block: 32 columns x this many rows)."""
LOSS_THREADS = 512
"""The one block a loss kernel runs as (rows over threads, then the batch's sums)."""
ACTIVATIONS = {
    "linear": "v",
    "relu": "(v != v || v > (T)0) ? v : (T)0",
    "tanh": "tanh(v)",
    "leaky_relu": "v > (T)0 ? v : (T)0.01 * v",
    "sigmoid": "(v >= (T)0 ? (T)1 / ((T)1 + exp(-fabs(v))) : exp(-fabs(v)) / ((T)1 + exp(-fabs(v))))",
}
"""Each activation of ``v``, as the generic functions compute it."""
DERIVATIVES = {
    "relu": "y > (T)0 ? g : (T)0",
    "tanh": "g * ((T)1 - y * y)",
    "leaky_relu": "y > (T)0 ? g : (T)0.01 * g",
    "sigmoid": "g * (y * ((T)1 - y))",
}
"""Each activation's derivative times the upstream ``g``, from its output ``y``."""

_COMMON = r"""
#define LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
                        i += (long long)blockDim.x * gridDim.x)

__device__ T block_sum(T value, T* part) {
    part[threadIdx.x] = value;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
        __syncthreads();
    }
    T total = part[0];
    __syncthreads();
    return total;
}

extern "C" __global__ void gather_rows(const T* src, const int* index, long long rows, int cols, T* out) {
    LOOP(i, rows * cols) out[i] = src[(long long)index[i / cols] * cols + i % cols];
}

extern "C" __global__ void gather_labels(const int* src, const int* index, long long rows, int* out) {
    LOOP(i, rows) out[i] = src[index[i]];
}

extern "C" __global__ void multiply(const T* a, const T* b, long long n, T* out) {
    LOOP(i, n) out[i] = a[i] * b[i];
}

extern "C" __global__ void row_scale(const T* w_all, int n, T per_sample, T* out_all) {
    // one block per step: its n row weights over their sum
    __shared__ T part[256];
    const T* w = w_all + (long long)blockIdx.x * n;
    T* out = out_all + (long long)blockIdx.x * n;
    T s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += w[i];
    T total = block_sum(s, part);
    total = total > (T)0 ? total : (T)1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = w[i] / (total * per_sample);
}

// The losses run as one block (LOSS_THREADS threads): each row's term and hits, then their sums.
__device__ void add_sums(T term, T hit, double rows, double* sums, T* part) {
    T loss = block_sum(term, part);
    T hits = block_sum(hit, part);
    if (threadIdx.x == 0) { sums[0] += (double)loss * rows; sums[1] += (double)hits; }
}

extern "C" __global__ void softmax_xent(const T* z, const int* labels, int has_labels, const T* onehot,
                                        const T* scale, int n, int k, T smooth, T* grad, double rows,
                                        double* sums) {
    __shared__ T part[LOSS_THREADS];
    T term_sum = 0, hit_sum = 0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const T* zr = z + (long long)r * k;
        T top = zr[0];
        int arg = 0;
        for (int j = 1; j < k; ++j) if (zr[j] > top) { top = zr[j]; arg = j; }
        T total = 0;
        for (int j = 0; j < k; ++j) total += exp(zr[j] - top);
        T log_total = log(total), sc = scale[r], keep = (T)1 - smooth, term = 0;
        const T* tr = onehot + (long long)r * k;
        int truth = 0;
        if (has_labels) truth = labels[r];
        else for (int j = 1; j < k; ++j) if (tr[j] > tr[truth]) truth = j;
        for (int j = 0; j < k; ++j) {
            T y = has_labels ? (j == truth ? (T)1 : (T)0) : tr[j];
            if (smooth != (T)0) y = keep * y + smooth / (T)k;
            T shifted = zr[j] - top;
            term += y * (shifted - log_total);
            grad[(long long)r * k + j] = (exp(shifted) / total - y) * sc;
        }
        term_sum += -term * sc;
        hit_sum += (sc != (T)0 && arg == truth) ? (T)1 : (T)0;
    }
    add_sums(term_sum, hit_sum, rows, sums, part);
}

extern "C" __global__ void sigmoid_xent(const T* z, const T* t, const T* scale, int n, int k, T* grad,
                                        double rows, double* sums) {
    __shared__ T part[LOSS_THREADS];
    T term_sum = 0, hit_sum = 0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        T sc = scale[r], term = 0, hit = 0;
        for (int j = 0; j < k; ++j) {
            long long i = (long long)r * k + j;
            T v = z[i], y = t[i], e = exp(-fabs(v));
            T p = v >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
            term += ((v > (T)0 ? v : (T)0) - v * y + log1p(e)) * sc;
            grad[i] = (p - y) * sc;
            hit += ((p > (T)0.5) == (y > (T)0.5)) ? (T)1 : (T)0;
        }
        term_sum += term;
        hit_sum += sc != (T)0 ? hit : (T)0;
    }
    add_sums(term_sum, hit_sum, rows, sums, part);
}

extern "C" __global__ void squared_error(const T* z, const T* t, const T* scale, int n, int k, T* grad,
                                         double rows, double* sums) {
    __shared__ T part[LOSS_THREADS];
    T term_sum = 0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        T sc = scale[r];
        for (int j = 0; j < k; ++j) {
            long long i = (long long)r * k + j;
            T d = z[i] - t[i];
            term_sum += d * d * sc;
            grad[i] = d * (sc * (T)2);
        }
    }
    add_sums(term_sum, (T)0, rows, sums, part);
}

extern "C" __global__ void check(const T* x, long long n, double* flag) {
    LOOP(i, n) if (!isfinite(x[i])) flag[0] = 0.0;
}

extern "C" __global__ void fill(double* x, double value) { x[0] = value; }
"""


def source(dtype: str, optimizer: Any) -> str:
    """The whole module for ``dtype`` (``"float32"`` or ``"float64"``) and a plan's optimizer."""
    t = "float" if dtype == "float32" else "double"
    parts = [f"#define T {t}\n#define ROW_GROUPS {ROW_GROUPS}\n#define LOSS_THREADS {LOSS_THREADS}", _COMMON]
    for name, formula in ACTIVATIONS.items():
        parts.append(
            f'extern "C" __global__ void act_{name}(T* z, const T* bias, int has_bias, long long n,'
            " int cols) {\n"
            f"    LOOP(i, n) {{ T v = z[i]; if (has_bias) v += bias[i % cols]; z[i] = {formula}; }}\n}}"
        )
    for name, formula in {"linear": "g", **DERIVATIVES}.items():
        parts.append(_derivative(name, formula))
    parts.append(_update(optimizer))
    return "\n\n".join(parts)


def _derivative(name: str, formula: str) -> str:
    """``grad_<name>``: ``g *= activation'`` in place, and the bias gradient (the column sums of
    the new ``g``) when ``has_bias``: a block of 32 columns x ROW_GROUPS rows, each warp reading
    32 neighbouring columns of a row, then the row groups summed in a fixed order."""
    return (
        f'extern "C" __global__ void grad_{name}(T* g_out, const T* y_in, int rows, int cols, int has_bias,'
        " T* bias) {\n"
        "    __shared__ T part[ROW_GROUPS][33];\n"
        "    int c = blockIdx.x * 32 + threadIdx.x;\n"
        "    T s = 0;\n"
        "    if (c < cols) for (int r = threadIdx.y; r < rows; r += ROW_GROUPS) {\n"
        "        long long i = (long long)r * cols + c;\n"
        f"        T g = g_out[i], y = y_in[i]; g = {formula}; g_out[i] = g; s += g;\n"
        "    }\n"
        "    if (!has_bias) return;\n"
        "    part[threadIdx.y][threadIdx.x] = s;\n"
        "    __syncthreads();\n"
        "    if (threadIdx.y == 0 && c < cols) {\n"
        "        T total = 0;\n"
        "        for (int k = 0; k < ROW_GROUPS; ++k) total += part[k][threadIdx.x];\n"
        "        bias[c] = total;\n"
        "    }\n}"
    )


def _update(optimizer: Any) -> str:
    """The one update kernel: ``update(p, g, state..., lr, first, offset, n)`` over the flat buffers,
    at step number ``first[0] + offset``."""
    _, _, body = fused_updates.cuda_source(optimizer)
    keys = fused_updates.state_keys(optimizer)
    state = "".join(f", T* {key}_" for key in keys)
    load = "".join(f"T {key} = {key}_[i]; " for key in keys)
    store = "".join(f"{key}_[i] = {key}; " for key in keys)
    return (
        f'extern "C" __global__ void update(T* p_, const T* g_{state}, const T* lr, const T* first,'
        " T offset, long long n) {\n"
        "    const T step[1] = {first[0] + offset};\n"
        f"    LOOP(i, n) {{\n        T p = p_[i], g = g_[i]; {load}\n        {body}\n"
        f"        p_[i] = p; {store}\n    }}\n}}"
    )


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
        args = (z, bias if has else z, np.int32(has), np.int64(z.size), np.int32(cols))
        self._launch(f"act_{activation}", int(z.size), *args)

    def act_grad(self, grad: Any, y: Any, activation: str, bias_grad: Any) -> None:
        rows, cols, has = int(grad.shape[0]), int(grad.shape[1]), bias_grad is not None
        args = (grad, y, np.int32(rows), np.int32(cols), np.int32(has), bias_grad if has else grad)
        self._f(f"grad_{activation}")((-(-cols // 32),), (32, ROW_GROUPS), args, stream=self.stream)

    def multiply(self, a: Any, b: Any, out: Any) -> None:
        self._launch("multiply", int(out.size), a, b, np.int64(out.size), out)

    def row_scale(self, w: Any, per_sample: int, out: Any) -> None:
        steps, n = int(w.shape[0]), np.int32(w.shape[1])
        self._f("row_scale")((steps,), (THREADS,), (w, n, self._t(per_sample), out), stream=self.stream)

    def loss(
        self, kind: str, z: Any, t: Any, scale: Any, smoothing: float, grad: Any, rows: int, sums: Any
    ) -> None:
        n, k, counted = np.int32(z.shape[0]), np.int32(z.shape[1]), np.float64(rows)
        if kind == "categorical_crossentropy":
            labels = t.ndim == 1  # the unused pointer gets a stand-in array: kernels take no None
            args = (z, t, np.int32(labels), z if labels else t, scale, n, k, self._t(smoothing))
            name = "softmax_xent"
        else:
            args = (z, t, scale, n, k)
            name = "sigmoid_xent" if kind == "binary_crossentropy" else "squared_error"
        self._f(name)((1,), (LOSS_THREADS,), (*args, grad, counted, sums), stream=self.stream)

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

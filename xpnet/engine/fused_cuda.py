"""The CUDA source of the fused runner's kernels: one module text per dtype and optimizer.

:func:`source` writes every kernel a fused step launches
(:mod:`xpnet.engine.fused_cupy` compiles it once into one
:class:`cupy.RawModule`): gathers; bias plus activation (or an
``Activation`` layer's activation alone) in one pass; the activation's
derivative times the upstream gradient together with the bias gradient (its
column sums) in one; softmax or sigmoid cross-entropy or the squared error
giving the gradient and adding the batch's loss and correct count to the
epoch's sums in one block; each step's loss scales, once per epoch; batch and
layer normalization forward and backward; and the one update of every
parameter, at step number "the epoch's first + the step's place", so no kernel
counts steps. Every reduction runs in a fixed order (block and lane sums, no
atomics): the same sums every run. A step of ``L`` Dense layers is so
``2L + 4`` kernels besides its ``3L - 1`` matrix products. ``T`` is the dtype
(``#define``): one text per dtype, so each kernel exists once, by name. The
math is :mod:`xpnet.engine.fused_numpy`'s, written as the generic layers
compute it. The normalization kernels' text is
:mod:`xpnet.engine.fused_cuda_norm`'s.
"""

from __future__ import annotations

from typing import Any

from . import fused_updates
from .fused_cuda_norm import NORMALIZATION

THREADS = 256
"""Threads of every block (``TILE * LANES`` for the column kernels, the shared arrays' size)."""
TILE = 32
"""Features a column kernel's block reduces side by side."""

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

// Each thread's value summed over the block's row lanes (threadIdx.x / TILE) for its feature
// (threadIdx.x % TILE) of the tile, in a fixed order; every thread gets its feature's total.
__device__ T lane_sum(T value, T* part) {
    part[threadIdx.x] = value;
    __syncthreads();
    for (int k = LANES / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k * TILE) part[threadIdx.x] += part[threadIdx.x + k * TILE];
        __syncthreads();
    }
    T total = part[threadIdx.x % TILE];
    __syncthreads();
    return total;
}

// Each step's loss scales, one block per step: its n row weights over (per_sample x their sum).
extern "C" __global__ void row_scale(const T* w_all, int n, T per_sample, T* out_all) {
    __shared__ T part[THREADS];
    const T* w = w_all + (long long)blockIdx.x * n;
    T* out = out_all + (long long)blockIdx.x * n;
    T s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += w[i];
    T total = block_sum(s, part);
    total = total > (T)0 ? total : (T)1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = w[i] / (total * per_sample);
}

// The losses run as one block: each row's gradient, term and hits, then the batch's sums added to
// the epoch's (sums[0] += rows x loss, sums[1] += hits).
__device__ void add_sums(T term, T hit, double rows, double* sums, T* part) {
    T loss = block_sum(term, part);
    T hits = block_sum(hit, part);
    if (threadIdx.x == 0) { sums[0] += (double)loss * rows; sums[1] += (double)hits; }
}

extern "C" __global__ void softmax_xent(const T* z, const int* labels, int has_labels, const T* onehot,
                                        const T* scale, int n, int k, T smooth, T* grad, double rows,
                                        double* sums) {
    __shared__ T part[THREADS];
    T term_sum = 0, hit_sum = 0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const T* zr = z + (long long)r * k;
        const T* tr = onehot + (long long)r * k;
        T top = zr[0];
        int arg = 0;
        for (int j = 1; j < k; ++j) if (zr[j] > top) { top = zr[j]; arg = j; }
        T total = 0;
        for (int j = 0; j < k; ++j) total += exp(zr[j] - top);
        T log_total = log(total), sc = scale[r], keep = (T)1 - smooth, term = 0;
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
    __shared__ T part[THREADS];
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
    __shared__ T part[THREADS];
    T term_sum = 0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        T sc = scale[r], term = 0;
        for (int j = 0; j < k; ++j) {
            long long i = (long long)r * k + j;
            T d = z[i] - t[i];
            term += d * d * sc;
            grad[i] = d * (sc * (T)2);
        }
        term_sum += term;
    }
    add_sums(term_sum, (T)0, rows, sums, part);
}

extern "C" __global__ void check(const T* x, long long n, double* flag) {
    LOOP(i, n) if (!isfinite(x[i])) flag[0] = 0.0;
}

// One thread writes: the launch has a whole block, and a += by each of its threads would race.
extern "C" __global__ void fill(double* x, double value) { if (threadIdx.x == 0) x[0] = value; }
"""


def source(dtype: str, optimizer: Any) -> str:
    """The whole module for ``dtype`` (``"float32"`` or ``"float64"``) and a plan's optimizer."""
    defines = [f"#define T {'float' if dtype == 'float32' else 'double'}", f"#define TILE {TILE}"]
    defines += [f"#define LANES {THREADS // TILE}", f"#define THREADS {THREADS}"]
    parts = ["\n".join(defines), _COMMON, NORMALIZATION]
    for name, formula in ACTIVATIONS.items():
        parts.append(
            f'extern "C" __global__ void act_{name}(const T* x, T* z, const T* bias, int has_bias,'
            " long long n, int cols) {\n"
            f"    LOOP(i, n) {{ T v = x[i]; if (has_bias) v += bias[i % cols]; z[i] = {formula}; }}\n}}"
        )
    for name, formula in {"linear": "g", **DERIVATIVES}.items():
        parts.append(_derivative(name, formula))
    parts.append(_update(optimizer))
    return "\n\n".join(parts)


def _derivative(name: str, formula: str) -> str:
    """``grad_<name>``: ``g *= activation'`` in place over ``rows x cols``, a tile of ``TILE``
    features per block (its ``LANES`` row lanes reading a row's features side by side), and
    (``has_bias``) the bias gradient: the column sums of the new ``g``, in a fixed order."""
    return (
        f'extern "C" __global__ void grad_{name}(T* g_out, const T* y_in, int rows, int cols, int has_bias,'
        " T* bias) {\n"
        "    __shared__ T part[THREADS];\n"
        "    int lane = threadIdx.x / TILE;\n"
        "    for (int base = blockIdx.x * TILE; base < cols; base += gridDim.x * TILE) {\n"
        "        int c = base + threadIdx.x % TILE;\n"
        "        T s = 0;\n"
        "        if (c < cols) for (int r = lane; r < rows; r += LANES) {\n"
        "            long long i = (long long)r * cols + c;\n"
        f"            {_derivative_body(formula)} s += g;\n"
        "        }\n"
        "        if (!has_bias) continue;\n"
        "        T total = lane_sum(s, part);\n"
        "        if (c < cols && lane == 0) bias[c] = total;\n"
        "    }\n}"
    )


def _derivative_body(formula: str) -> str:
    """``g`` (element ``i`` of the gradient) times the derivative, written back; ``y`` read only
    where the formula uses it (the linear activation's is ``g`` itself)."""
    if formula == "g":
        return "T g = g_out[i];"
    return f"T g = g_out[i], y = y_in[i]; g = {formula}; g_out[i] = g;"


def _update(optimizer: Any) -> str:
    """The one update kernel: ``update(p, g, state..., lr, first, offset, n)`` over the flat
    buffers, at step number ``first[0] + offset`` (the epoch's first step, and this step's place)."""
    _, _, body = fused_updates.cuda_source(optimizer)
    keys = fused_updates.state_keys(optimizer)
    state = "".join(f", T* {key}_" for key in keys)
    load = "".join(f"T {key} = {key}_[i]; " for key in keys)
    store = "".join(f"{key}_[i] = {key}; " for key in keys)
    numbered = "    const T step[1] = {first[0] + offset};\n" if "step" in body else ""
    return (
        f'extern "C" __global__ void update(T* p_, const T* g_{state}, const T* lr, const T* first,'
        " T offset, long long n) {\n"
        f"{numbered}    LOOP(i, n) {{\n        T p = p_[i], g = g_[i]; {load}\n        {body}\n"
        f"        p_[i] = p; {store}\n    }}\n}}"
    )

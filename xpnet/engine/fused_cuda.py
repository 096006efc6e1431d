"""The CUDA source of the fused runner's kernels: one module text per dtype and optimizer.

:func:`source` writes every kernel a fused step launches
(:mod:`xpnet.engine.fused_cupy` compiles it once into one
:class:`cupy.RawModule`): gathers, bias plus activation (or an
``Activation`` layer's activation alone) in one pass, the activation's
derivative times the upstream gradient, softmax or sigmoid cross-entropy or
the squared error (row terms, gradient and correct count in one), the block
reductions (a fixed order: the same sums every run), batch and layer
normalization forward and backward, and the one update of every parameter.
``T`` is the dtype (``#define``): one text per dtype, so each kernel exists
once, by name. The math is :mod:`xpnet.engine.fused_numpy`'s, written as the
generic layers compute it.

The normalization kernels take how many of the batch's rows are real
(``rows``; the last batch is padded to the batch size): only those enter a
statistic or a parameter's gradient, and the padding's outputs and input
gradients are 0. A batch norm's block handles a tile of ``TILE`` features,
its ``LANES`` row lanes reading a row's features side by side (coalesced);
a layer norm's block handles one row at a time.
"""

from __future__ import annotations

from typing import Any

from . import fused_updates

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

extern "C" __global__ void col_sum(const T* a, int rows, int cols, T* out) {
    __shared__ T part[256];
    for (int c = blockIdx.x; c < cols; c += gridDim.x) {
        T s = 0;
        for (int r = threadIdx.x; r < rows; r += blockDim.x) s += a[(long long)r * cols + c];
        T total = block_sum(s, part);
        if (threadIdx.x == 0) out[c] = total;
    }
}

extern "C" __global__ void row_scale(const T* w, int n, T per_sample, T* out) {
    __shared__ T part[256];
    T s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += w[i];
    T total = block_sum(s, part);
    total = total > (T)0 ? total : (T)1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = w[i] / (total * per_sample);
}

extern "C" __global__ void softmax_xent(const T* z, const int* labels, int has_labels, const T* onehot,
                                        const T* scale, int n, int k, T smooth, T* grad, T* terms, T* hits) {
    LOOP(r, n) {
        const T* zr = z + r * k;
        T top = zr[0];
        int arg = 0;
        for (int j = 1; j < k; ++j) if (zr[j] > top) { top = zr[j]; arg = j; }
        T total = 0;
        for (int j = 0; j < k; ++j) total += exp(zr[j] - top);
        T log_total = log(total), sc = scale[r], keep = (T)1 - smooth, term = 0;
        int truth = 0;
        if (has_labels) truth = labels[r];
        else for (int j = 1; j < k; ++j) if (onehot[r * k + j] > onehot[r * k + truth]) truth = j;
        for (int j = 0; j < k; ++j) {
            T y = has_labels ? (j == truth ? (T)1 : (T)0) : onehot[r * k + j];
            if (smooth != (T)0) y = keep * y + smooth / (T)k;
            T shifted = zr[j] - top;
            term += y * (shifted - log_total);
            grad[r * k + j] = (exp(shifted) / total - y) * sc;
        }
        terms[r] = -term * sc;
        hits[r] = (sc != (T)0 && arg == truth) ? (T)1 : (T)0;
    }
}

extern "C" __global__ void sigmoid_xent(const T* z, const T* t, const T* scale, int n, int k, T* grad,
                                        T* terms, T* hits) {
    LOOP(r, n) {
        T sc = scale[r], term = 0, hit = 0;
        for (int j = 0; j < k; ++j) {
            T v = z[r * k + j], y = t[r * k + j], e = exp(-fabs(v));
            T p = v >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
            term += ((v > (T)0 ? v : (T)0) - v * y + log1p(e)) * sc;
            grad[r * k + j] = (p - y) * sc;
            hit += ((p > (T)0.5) == (y > (T)0.5)) ? (T)1 : (T)0;
        }
        terms[r] = term;
        hits[r] = sc != (T)0 ? hit : (T)0;
    }
}

extern "C" __global__ void squared_error(const T* z, const T* t, const T* scale, int n, int k, T* grad,
                                         T* terms, T* hits) {
    LOOP(r, n) {
        T sc = scale[r], term = 0;
        for (int j = 0; j < k; ++j) {
            T d = z[r * k + j] - t[r * k + j];
            term += d * d * sc;
            grad[r * k + j] = d * (sc * (T)2);
        }
        terms[r] = term;
        hits[r] = 0;
    }
}

extern "C" __global__ void accumulate(const T* terms, const T* hits, int n, double rows, double* sums) {
    __shared__ T part[256];
    T a = 0, b = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) { a += terms[i]; b += hits[i]; }
    T loss = block_sum(a, part);
    T hit = block_sum(b, part);
    if (threadIdx.x == 0) { sums[0] += (double)loss * rows; sums[1] += (double)hit; }
}

extern "C" __global__ void check(const T* x, long long n, double* flag) {
    LOOP(i, n) if (!isfinite(x[i])) flag[0] = 0.0;
}

// One thread writes: the launch has a whole block, and a += by each of its threads would race.
extern "C" __global__ void fill(double* x, double value) { if (threadIdx.x == 0) x[0] = value; }

extern "C" __global__ void increment(T* step) { if (threadIdx.x == 0) step[0] += (T)1; }
"""


_NORMALIZATION = r"""
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

// BatchNormalization in training over the first `rows` of `size` rows: the batch mean and
// biased variance per feature, the running statistics moved, y = xhat * gamma + beta.
extern "C" __global__ void batch_norm(const T* x, int size, int rows, int cols, const T* gamma,
                                      const T* beta, T eps, T momentum, T keep, T* running_mean,
                                      T* running_var, T* mean_out, T* inv_out, T* y) {
    __shared__ T part[256];
    int lane = threadIdx.x / TILE;
    T count = (T)rows;
    for (int base = blockIdx.x * TILE; base < cols; base += gridDim.x * TILE) {
        int c = base + threadIdx.x % TILE;
        bool on = c < cols;
        T s = 0, q = 0;
        if (on) for (int r = lane; r < rows; r += LANES) s += x[(long long)r * cols + c];
        T mean = lane_sum(s, part) / count;
        if (on) for (int r = lane; r < rows; r += LANES) {
            T d = x[(long long)r * cols + c] - mean;
            q += d * d;
        }
        T var = lane_sum(q, part) / count;
        T inv = (T)1 / sqrt(var + eps);
        if (!on) continue;
        if (lane == 0) {
            T unbiased = var * (count / (count - (T)1 > (T)1 ? count - (T)1 : (T)1));
            running_mean[c] = running_mean[c] * keep + mean * momentum;
            running_var[c] = running_var[c] * keep + unbiased * momentum;
            mean_out[c] = mean;
            inv_out[c] = inv;
        }
        T g = gamma[c], b = beta[c];
        for (int r = lane; r < size; r += LANES) {
            long long i = (long long)r * cols + c;
            y[i] = r < rows ? (x[i] - mean) * inv * g + b : (T)0;
        }
    }
}

// Its gradients: dgamma = sum(dy * xhat), dbeta = sum(dy) over the real rows, and (has_dx)
// dx = (dy * gamma - (dbeta * gamma + xhat * dgamma * gamma) / rows) * inv.
extern "C" __global__ void batch_norm_grad(const T* x, const T* dy, int size, int rows, int cols,
                                           const T* gamma, const T* mean_in, const T* inv_in,
                                           T* dgamma, T* dbeta, T* dx, int has_dx) {
    __shared__ T part[256];
    int lane = threadIdx.x / TILE;
    T count = (T)rows;
    for (int base = blockIdx.x * TILE; base < cols; base += gridDim.x * TILE) {
        int c = base + threadIdx.x % TILE;
        bool on = c < cols;
        T mean = on ? mean_in[c] : (T)0, inv = on ? inv_in[c] : (T)0, sb = 0, sg = 0;
        if (on) for (int r = lane; r < rows; r += LANES) {
            long long i = (long long)r * cols + c;
            sb += dy[i];
            sg += dy[i] * ((x[i] - mean) * inv);
        }
        T gb = lane_sum(sb, part);
        T gg = lane_sum(sg, part);
        if (!on) continue;
        if (lane == 0) {
            dgamma[c] = gg;
            dbeta[c] = gb;
        }
        if (!has_dx) continue;
        T g = gamma[c], total = gb * g, along = gg * g;
        for (int r = lane; r < size; r += LANES) {
            long long i = (long long)r * cols + c;
            dx[i] = r < rows ? (dy[i] * g - (total + ((x[i] - mean) * inv) * along) / count) * inv : (T)0;
        }
    }
}

// LayerNormalization, one row per block: the row's mean and biased variance over its features.
extern "C" __global__ void layer_norm(const T* x, int size, int rows, int cols, const T* gamma,
                                      const T* beta, T eps, T* mean_out, T* inv_out, T* y) {
    __shared__ T part[256];
    for (int r = blockIdx.x; r < size; r += gridDim.x) {
        const T* xr = x + (long long)r * cols;
        T* yr = y + (long long)r * cols;
        if (r >= rows) {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = (T)0;
            if (threadIdx.x == 0) { mean_out[r] = (T)0; inv_out[r] = (T)0; }
            continue;
        }
        T s = 0, q = 0;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
        T mean = block_sum(s, part) / (T)cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) { T d = xr[c] - mean; q += d * d; }
        T inv = (T)1 / sqrt(block_sum(q, part) / (T)cols + eps);
        if (threadIdx.x == 0) { mean_out[r] = mean; inv_out[r] = inv; }
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            yr[c] = (xr[c] - mean) * inv * gamma[c] + beta[c];
        }
    }
}

// Its input gradient, one row per block: dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv.
extern "C" __global__ void layer_norm_grad(const T* x, const T* dy, int size, int rows, int cols,
                                           const T* gamma, const T* mean_in, const T* inv_in, T* dx) {
    __shared__ T part[256];
    for (int r = blockIdx.x; r < size; r += gridDim.x) {
        const T* xr = x + (long long)r * cols;
        const T* dyr = dy + (long long)r * cols;
        T* dxr = dx + (long long)r * cols;
        if (r >= rows) {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) dxr[c] = (T)0;
            continue;
        }
        T mean = mean_in[r], inv = inv_in[r], a = 0, b = 0;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            T d = dyr[c] * gamma[c];
            a += d;
            b += d * ((xr[c] - mean) * inv);
        }
        T mean_d = block_sum(a, part) / (T)cols;
        T mean_dx = block_sum(b, part) / (T)cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            dxr[c] = (dyr[c] * gamma[c] - mean_d - ((xr[c] - mean) * inv) * mean_dx) * inv;
        }
    }
}

// Its parameters' gradients over the real rows, a tile of features per block.
extern "C" __global__ void layer_norm_params(const T* x, const T* dy, int rows, int cols, const T* mean_in,
                                             const T* inv_in, T* dgamma, T* dbeta) {
    __shared__ T part[256];
    int lane = threadIdx.x / TILE;
    for (int base = blockIdx.x * TILE; base < cols; base += gridDim.x * TILE) {
        int c = base + threadIdx.x % TILE;
        bool on = c < cols;
        T sb = 0, sg = 0;
        if (on) for (int r = lane; r < rows; r += LANES) {
            long long i = (long long)r * cols + c;
            sb += dy[i];
            sg += dy[i] * ((x[i] - mean_in[r]) * inv_in[r]);
        }
        T gb = lane_sum(sb, part);
        T gg = lane_sum(sg, part);
        if (on && lane == 0) {
            dgamma[c] = gg;
            dbeta[c] = gb;
        }
    }
}
"""


def source(dtype: str, optimizer: Any) -> str:
    """The whole module for ``dtype`` (``"float32"`` or ``"float64"``) and a plan's optimizer."""
    defines = [f"#define T {'float' if dtype == 'float32' else 'double'}", f"#define TILE {TILE}"]
    defines.append(f"#define LANES {THREADS // TILE}")
    parts = ["\n".join(defines), _COMMON, _NORMALIZATION]
    for name, formula in ACTIVATIONS.items():
        parts.append(
            f'extern "C" __global__ void act_{name}(const T* x, T* z, const T* bias, int has_bias,'
            " long long n, int cols) {\n"
            f"    LOOP(i, n) {{ T v = x[i]; if (has_bias) v += bias[i % cols]; z[i] = {formula}; }}\n}}"
        )
    for name, formula in DERIVATIVES.items():
        parts.append(
            f'extern "C" __global__ void grad_{name}(T* g_out, const T* y_in, long long n) {{\n'
            f"    LOOP(i, n) {{ T g = g_out[i], y = y_in[i]; g_out[i] = {formula}; }}\n}}"
        )
    parts.append(_update(optimizer))
    return "\n\n".join(parts)


def _update(optimizer: Any) -> str:
    """The one update kernel: ``update(p, g, state..., lr, step, n)`` over the flat buffers."""
    _, _, body = fused_updates.cuda_source(optimizer)
    keys = fused_updates.state_keys(optimizer)
    state = "".join(f", T* {key}_" for key in keys)
    load = "".join(f"T {key} = {key}_[i]; " for key in keys)
    store = "".join(f"{key}_[i] = {key}; " for key in keys)
    return (
        f'extern "C" __global__ void update(T* p_, const T* g_{state}, const T* lr, const T* step,'
        " long long n) {\n"
        f"    LOOP(i, n) {{\n        T p = p_[i], g = g_[i]; {load}\n        {body}\n"
        f"        p_[i] = p; {store}\n    }}\n}}"
    )

"""The CUDA source of the fused runner's normalization kernels (part of
:func:`xpnet.engine.fused_cuda.source`'s module, which defines ``T``, ``TILE``,
``LANES``, ``THREADS``, ``block_sum`` and ``lane_sum`` before it).

Each takes how many of the batch's rows are real (``rows``; the last batch is
padded to the batch size): only those enter a statistic or a parameter's
gradient, and the padding's outputs and input gradients are 0. A batch norm's
block handles a tile of ``TILE`` features, its ``LANES`` row lanes reading a
row's features side by side (coalesced); a layer norm's block handles one row
at a time.
"""

NORMALIZATION = r"""
// BatchNormalization in training over the first `rows` of `size` rows: the batch mean and
// biased variance per feature, the running statistics moved, y = xhat * gamma + beta.
extern "C" __global__ void batch_norm(const T* x, int size, int rows, int cols, const T* gamma,
                                      const T* beta, T eps, T momentum, T keep, T* running_mean,
                                      T* running_var, T* mean_out, T* inv_out, T* y) {
    __shared__ T part[THREADS];
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
    __shared__ T part[THREADS];
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
    __shared__ T part[THREADS];
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
    __shared__ T part[THREADS];
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
    __shared__ T part[THREADS];
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

"""Dtype policies and TF32 on a CUDA GPU (cupy, torch CUDA, jax GPU): skipped without one.

The CPU suite (tests/test_precision.py) proves the policies against torch.autocast and GradScaler;
here the same networks run on the GPU, where bfloat16 and float16 use tensor cores and
``matmul_precision="tf32"`` changes float32 results (it is a no-op on a CPU). Run on a GPU machine:

    python -m pytest tests/test_precision_gpu.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn

RNG = np.random.default_rng(0)
X = RNG.standard_normal((256, 512)).astype(np.float32)
Y = RNG.integers(0, 10, 256)
GPU_BACKENDS = [("cupy", 0), ("torch", "cuda:0"), ("jax", "gpu:0")]


def _gpu(name, device):
    try:
        return xn.get_backend(name, device)
    except (xn.BackendUnavailableError, ValueError) as exc:
        pytest.skip(f"{name} on {device} is not usable here: {exc}")


def _net(backend, dtype, **options):
    return xn.Network(
        [xn.Dense(1024, "relu", in_features=512), xn.Dense(1024, "relu"), xn.Dense(10, "softmax")],
        loss="cross_entropy",
        optimizer=xn.Adam(1e-3),
        backend=backend,
        dtype=dtype,
        seed=0,
        **options,
    )


def _policy_runs(backend, policy):
    try:
        backend.compute_dtype(xn.POLICIES[policy].compute_dtype)
    except (ValueError, xn.BackendUnavailableError) as exc:
        pytest.skip(f"{backend.name} cannot run {policy} here: {exc}")


@pytest.mark.parametrize(("name", "device"), GPU_BACKENDS)
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_network_on_the_gpu_equals_the_same_network_on_the_cpu(name, device, policy):
    gpu = _gpu(name, device)
    _policy_runs(gpu, policy)
    here, there = _net("numpy", policy), _net(gpu, policy)
    for net in (here, there):
        net.fit(X, Y, epochs=2, batch_size=64, shuffle=False, verbose=0)
    tolerance = 3e-2 if policy == "mixed_bfloat16" else 5e-3
    for got, want in zip(there.get_weights(), here.get_weights()):
        np.testing.assert_allclose(got, want, atol=tolerance)
    assert there.layers[0].weight.dtype == gpu.dtype("float32")
    np.testing.assert_allclose(xn.to_numpy(there.predict(X)), xn.to_numpy(here.predict(X)), atol=tolerance)


@pytest.mark.parametrize(("name", "device"), GPU_BACKENDS)
def test_tf32_changes_float32_results_on_the_gpu_and_only_inside_the_step(name, device):
    gpu = _gpu(name, device)
    exact, fast = (_net(gpu, "float32", matmul_precision=p) for p in ("highest", "tf32"))
    reference = _net("numpy", "float32")
    before = _flags(name)
    outputs = [xn.to_numpy(net.predict(X)) for net in (exact, fast, reference)]
    assert _flags(name) == before  # the process's setting is back
    np.testing.assert_allclose(outputs[0], outputs[2], atol=1e-5)  # highest: full float32
    difference = np.abs(outputs[1] - outputs[2]).max()
    assert 1e-6 < difference < 1e-2  # TF32 rounds the inputs to 10 bits of mantissa
    fast.fit(X, Y, epochs=1, batch_size=64, verbose=0)
    assert _flags(name) == before


def _flags(name):
    """The process-wide float32 matmul setting of the library ``name``."""
    if name == "torch":
        import torch

        return torch.backends.cuda.matmul.fp32_precision
    if name == "cupy":
        import numpy
        from cupy._core import _routines_linalg

        return _routines_linalg.get_compute_type(numpy.float32)
    return None  # jax: set while tracing, nothing process-wide


def test_bfloat16_on_cupy_needs_a_cupy_with_ml_dtypes():
    gpu = _gpu("cupy", 0)
    try:
        dtype = gpu.compute_dtype("bfloat16")
    except xn.BackendUnavailableError as exc:
        assert "mixed_float16" in str(exc)  # the error says what runs instead
        return
    import cupy

    a = cupy.ones((4, 4), dtype=dtype)
    assert str((a @ a).dtype) == "bfloat16"

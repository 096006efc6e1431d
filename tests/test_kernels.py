"""The backend-specific fast paths agree with the generic Array API code."""

from __future__ import annotations

import numpy as np
import pytest
from xpnet.activations import get_activation

import xpnet as xn
from xpnet import kernels


@pytest.mark.parametrize("name", sorted(kernels.FUSED_IN_PLACE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_activation_matches_generic(name, dtype):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 5)).astype(dtype)
    dy = rng.normal(size=(7, 5)).astype(dtype)
    act = get_activation(name)
    y_generic = act.forward(z, np)
    dz_generic = act.backward(z, y_generic, dy, np)

    z_fast, dy_fast = z.copy(), dy.copy()
    y_fast = kernels.activation_forward(name, z_fast)
    assert y_fast is z_fast  # written in place
    dz_fast = kernels.activation_backward(name, y_fast, dy_fast)
    assert dz_fast is dy_fast
    np.testing.assert_allclose(y_fast, y_generic, rtol=1e-6 if dtype == np.float32 else 1e-15)
    np.testing.assert_allclose(dz_fast, dz_generic, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_no_fast_path_elsewhere(backend, f64):
    z = f64(np.ones((2, 2)))
    if backend.name == "numpy":
        assert kernels.activation_forward("gelu", z) is None
        assert kernels.activation_forward("relu", np.ones((2, 2)).view()) is not None
    else:
        assert kernels.activation_forward("relu", z) is None
        assert kernels.activation_backward("relu", z, z) is None


def test_read_only_arrays_are_left_alone():
    z = np.ones((2, 2))
    z.flags.writeable = False
    assert kernels.activation_forward("relu", z) is None


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "gelu"])
def test_dense_backward_with_and_without_overwrite_agree(backend, f64, activation):
    rng = np.random.default_rng(3)
    x, dy_host = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    layer = xn.Dense(3, activation)
    layer.build(4, backend, "float64", np.random.default_rng(0))
    layer.forward(f64(x), training=True)
    dy = f64(dy_host)
    kept = xn.to_numpy(layer.backward(dy))
    grads = {k: xn.to_numpy(v).copy() for k, v in layer.grads.items()}
    np.testing.assert_array_equal(xn.to_numpy(dy), dy_host)  # not overwritten unless allowed
    fast = xn.to_numpy(layer.backward(f64(dy_host), overwrite_dy=True))
    np.testing.assert_allclose(fast, kept, rtol=1e-14)
    for key, value in grads.items():
        np.testing.assert_allclose(xn.to_numpy(layer.grads[key]), value, rtol=1e-14)


@pytest.mark.parametrize("shape", [(3,), (5, 4), (3000, 40)])
def test_blocked_subtract_matches_plain(shape):
    rng = np.random.default_rng(5)
    param, delta = rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)
    expected = param - np.float32(0.1) * delta
    assert kernels.subtract_scaled(param, 0.1, delta)
    np.testing.assert_allclose(param, expected, rtol=1e-6, atol=1e-7)


def test_divide_into_writes_the_denominator():
    numerator, denominator = np.array([1.0, 4.0]), np.array([2.0, 8.0])
    out = kernels.divide_into(numerator, denominator)
    assert out is denominator and list(out) == [0.5, 0.5] and list(numerator) == [1.0, 4.0]


def test_optimizer_kernels_only_for_numpy(backend, f64):
    a, b = f64(np.ones(3)), f64(np.ones(3))
    expected = backend.name == "numpy"
    assert kernels.subtract_scaled(a, 0.5, b) is expected
    assert (kernels.divide_into(a, b) is not None) is expected

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
    y_fast = kernels.activation_forward(act, z_fast, np)
    assert y_fast is z_fast  # written in place
    dz_fast = kernels.activation_backward(act, y_fast, y_fast, dy_fast, np, overwrite=True)
    assert dz_fast is dy_fast
    np.testing.assert_allclose(y_fast, y_generic, rtol=1e-6 if dtype == np.float32 else 1e-15)
    np.testing.assert_allclose(dz_fast, dz_generic, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_without_a_fast_path_the_generic_code_runs(backend, f64, name):
    act = get_activation(name)
    host = np.array([[-1.0, 0.5], [2.0, -0.25]])
    z, dy = f64(host), f64(np.ones((2, 2)))
    y = kernels.activation_forward(act, z, backend.xp)
    np.testing.assert_allclose(xn.to_numpy(y), xn.to_numpy(act.forward(f64(host), backend.xp)), rtol=1e-15)
    in_place = (backend.name == "numpy" and name in kernels.FUSED_IN_PLACE) or (
        backend.name == "torch" and name in kernels.TORCH_IN_PLACE
    )
    assert (y is z) == in_place
    if not in_place:
        np.testing.assert_array_equal(xn.to_numpy(z), host)  # left alone
    dz = kernels.activation_backward(act, f64(host), y, dy, backend.xp, overwrite=True)
    expected = act.backward(f64(host), y, f64(np.ones((2, 2))), backend.xp)
    np.testing.assert_allclose(xn.to_numpy(dz), xn.to_numpy(expected), rtol=1e-15)


def test_read_only_arrays_are_left_alone():
    z = np.ones((2, 2))
    z.flags.writeable = False
    y = kernels.activation_forward(get_activation("relu"), z, np)
    assert y is not z and not z.flags.writeable


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
    assert kernels.subtract_scaled(param, 0.1, delta, inplace=True) is param
    np.testing.assert_allclose(param, expected, rtol=1e-6, atol=1e-7)


def test_divide_writes_the_denominator_only_in_place():
    numerator, denominator = np.array([1.0, 4.0]), np.array([2.0, 8.0])
    pure = kernels.divide(numerator, denominator, inplace=False)
    assert pure is not denominator and list(denominator) == [2.0, 8.0]
    out = kernels.divide(numerator, denominator, inplace=True)
    assert out is denominator and list(out) == [0.5, 0.5] and list(numerator) == [1.0, 4.0]


def test_optimizer_kernels_on_every_backend(backend, f64):
    a, b = f64(np.full(3, 2.0)), f64(np.ones(3))
    result = kernels.subtract_scaled(a, 0.5, b, inplace=False)
    np.testing.assert_array_equal(xn.to_numpy(result), np.full(3, 1.5))
    np.testing.assert_array_equal(xn.to_numpy(a), np.full(3, 2.0))
    np.testing.assert_array_equal(xn.to_numpy(kernels.divide(a, b, inplace=False)), np.full(3, 2.0))
    if backend.mutable:
        assert kernels.subtract_scaled(a, 0.5, b, inplace=True) is a
        np.testing.assert_array_equal(xn.to_numpy(a), np.full(3, 1.5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_rows_matches_generic(xp, dtype):
    a = xp.asarray(np.random.default_rng(1).normal(size=(9, 4)).astype(dtype))
    fast, generic = kernels.sum_rows(a, xp), xp.sum(a, axis=0)
    assert np.array_equal(np.asarray(xn.to_numpy(fast)), np.asarray(xn.to_numpy(generic)))


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_all_finite_matches_generic(xp, bad):
    arrays = [np.ones((3, 2)), np.zeros(4)]
    if bad is not None:
        arrays[1][2] = bad
    expected = bool(all(np.isfinite(a).all() for a in arrays))
    assert kernels.all_finite([xp.asarray(a) for a in arrays], xp) is expected
    assert kernels.all_finite([], xp) is True


@pytest.mark.parametrize("shape", [(5,), (300, 70)])
def test_subtract_scaled_overwriting_delta_matches_generic(shape):
    rng = np.random.default_rng(2)
    param = rng.normal(size=shape).astype(np.float32)
    delta = rng.normal(size=shape).astype(np.float32)
    expected = param - 0.1 * delta
    fast = kernels.subtract_scaled(param, 0.1, delta, inplace=True, overwrite_delta=True)
    assert fast is param
    assert np.array_equal(fast, expected)  # the same two float32 roundings


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_spoiling_gradients_in_place_trains_as_pure_updates(momentum, nesterov):
    x = np.random.default_rng(3).normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    weights = []
    for compile in (None, False):  # in place (gradients spoiled) vs pure updates
        net = xn.Network(
            [xn.Dense(5, "relu"), xn.Dense(2, "softmax")],
            loss="cross_entropy",
            optimizer=xn.SGD(0.1, momentum=momentum, nesterov=nesterov, weight_decay=0.01),
            backend="numpy",
            seed=0,
            compile=compile,
        )
        net.fit(x, y, epochs=2, batch_size=16, verbose=0)
        weights.append([np.array(p) for layer in net.layers for p in layer.params.values()])
    for a, b in zip(*weights):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("binary, target", [(True, "column"), (False, "labels"), (False, "one_hot")])
def test_count_correct_matches_generic(xp, binary, target):
    from xpnet.nn.metrics import correct_count

    rng = np.random.default_rng(4)
    prob = rng.uniform(size=(50, 1 if binary else 4)).astype(np.float32)
    labels = rng.integers(0, 2 if binary else 4, size=50)
    y = {"column": labels.reshape(-1, 1).astype(np.float32), "labels": labels, "one_hot": np.eye(4)[labels]}
    p, t = xp.asarray(prob), xp.asarray(y[target])
    generic = correct_count(
        p, t, xp, binary=binary, sample_weight=xp.ones(50, dtype=p.dtype, device=p.device)
    )
    fast = correct_count(p, t, xp, binary=binary)
    assert xn.to_numpy(fast).dtype == np.float32
    assert float(xn.to_numpy(fast)) == float(xn.to_numpy(generic)) > 0

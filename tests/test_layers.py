"""Layers: shapes, assignment, and gradients against finite differences on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numerical_gradient

import xpnet as xn


def _built(layer, backend, in_features, dtype="float64", seed=0):
    layer.build(in_features, backend, dtype, np.random.default_rng(seed))
    return layer


def test_dense_computes_x_at_weight_plus_bias(backend, f64):
    layer = _built(xn.Dense(2, in_features=3), backend, 3)
    w = np.arange(6.0).reshape(3, 2)
    b = np.array([0.5, -1.0])
    layer.weight, layer.bias = w, b
    x = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(xn.to_numpy(layer.forward(f64(x))), x @ w + b)
    assert tuple(layer.weight.shape) == (3, 2) and tuple(layer.bias.shape) == (2,)
    assert set(layer.params) == {"weight", "bias"}


@pytest.mark.parametrize("activation", [None, "tanh", "relu", "softmax"])
def test_dense_gradients_match_finite_differences(backend, f64, activation):
    rng = np.random.default_rng(5)
    x, w, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    r = rng.normal(size=(4, 2))
    layer = _built(xn.Dense(2, activation, in_features=3), backend, 3)
    layer.weight, layer.bias = w, b

    def loss_for(name):
        def f(value):
            probe = _built(xn.Dense(2, activation, in_features=3), backend, 3)
            parts = {"x": x, "weight": w, "bias": b, name: value}
            probe.weight, probe.bias = parts["weight"], parts["bias"]
            return float(backend.xp.sum(probe.forward(f64(parts["x"])) * f64(r)))

        return f

    layer.forward(f64(x), training=True)
    dx = xn.to_numpy(layer.backward(f64(r)))
    np.testing.assert_allclose(dx, numerical_gradient(loss_for("x"), x), rtol=1e-6, atol=1e-9)
    for name, value in (("weight", w), ("bias", b)):
        got = xn.to_numpy(layer.grads[name])
        np.testing.assert_allclose(got, numerical_gradient(loss_for(name), value), rtol=1e-6, atol=1e-9)


def test_dense_without_bias(backend, f64):
    layer = _built(xn.Dense(2, use_bias=False), backend, 3)
    assert list(layer.params) == ["weight"] and layer.bias is None
    layer.forward(f64(np.ones((2, 3))), training=True)
    assert layer.backward(f64(np.ones((2, 2))), need_input_grad=False) is None
    assert list(layer.grads) == ["weight"]
    with pytest.raises(ValueError, match="use_bias=False"):
        layer.bias = np.zeros(2)


def test_dense_infers_in_features_from_the_data(backend):
    net = xn.Network([xn.Dense(4, "relu"), xn.Dense(1)], backend=backend, seed=0)
    assert not net.built
    net.predict(np.ones((2, 7)))
    assert net.layers[0].in_features == 7 and tuple(net.layers[0].weight.shape) == (7, 4)


def test_weight_assignment_from_another_backend_is_copied(backend, xp):
    layer = _built(xn.Dense(2, in_features=2), backend, 2)
    source = np.array([[1.0, 2.0], [3.0, 4.0]])
    layer.weight = source
    layer.params["weight"] = layer.params["weight"] * 2.0
    assert source[0, 0] == 1.0
    numpy_layer = _built(xn.Dense(2, in_features=2), xn.get_backend("numpy"), 2)
    numpy_layer.weight = layer.weight
    np.testing.assert_array_equal(numpy_layer.weight, source * 2.0)


def test_weight_of_the_wrong_shape_is_refused(backend):
    layer = _built(xn.Dense(2, in_features=3), backend, 3)
    with pytest.raises(ValueError, match=r"must have shape \(3, 2\), got \(2, 3\)"):
        layer.weight = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"must have shape \(2,\)"):
        layer.bias = np.zeros(3)


def test_weights_assigned_before_building_are_kept(backend):
    layer = xn.Dense(2)
    layer.weight = np.full((3, 2), 0.25)
    net = xn.Network([layer], backend=backend, seed=0)
    assert net.built
    np.testing.assert_array_equal(xn.to_numpy(net.layers[0].weight), np.full((3, 2), 0.25))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0,), "positive integer"),
        ((2.5,), "positive integer"),
        ((3, "swish"), "unknown activation"),
    ],
)
def test_dense_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        xn.Dense(*args)


def test_activation_layer_gradient(backend, f64):
    rng = np.random.default_rng(2)
    x, r = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    layer = _built(xn.Activation("elu"), backend, 4)
    layer.forward(f64(x), training=True)
    got = xn.to_numpy(layer.backward(f64(r)))
    numeric = numerical_gradient(lambda v: float(backend.xp.sum(layer.forward(f64(v)) * f64(r))), x)
    np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-9)


def test_dropout_is_inverted_and_off_at_inference(backend, f64):
    layer = _built(xn.Dropout(0.25), backend, 1000)
    x = f64(np.ones((40, 1000)))
    y = xn.to_numpy(layer.forward(x, training=True))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_array_equal(xn.to_numpy(layer.forward(x, training=False)), np.ones((40, 1000)))


def test_dropout_gradient_with_a_fixed_mask(backend, f64):
    rng = np.random.default_rng(4)
    x, r = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    layer = _built(xn.Dropout(0.5), backend, 6)

    def f(v):
        layer.rng = np.random.default_rng(99)  # the same mask for every evaluation
        return float(backend.xp.sum(layer.forward(f64(v), training=True) * f64(r)))

    f(x)
    got = xn.to_numpy(layer.backward(f64(r)))
    np.testing.assert_allclose(got, numerical_gradient(f, x), rtol=1e-6, atol=1e-9)
    assert 0 < np.count_nonzero(got) < got.size


def test_dropout_masks_are_the_same_on_every_backend(backend, f64):
    numpy_layer = _built(xn.Dropout(0.5), xn.get_backend("numpy"), 8, seed=3)
    layer = _built(xn.Dropout(0.5), backend, 8, seed=3)
    x = np.ones((4, 8))
    np.testing.assert_array_equal(
        xn.to_numpy(layer.forward(f64(x), training=True)),
        numpy_layer.forward(x, training=True),
    )


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.5", True])
def test_dropout_rate_outside_unit_interval_is_refused(rate):
    with pytest.raises(ValueError, match=r"Dropout rate must be a number in \[0, 1\)"):
        xn.Dropout(rate)

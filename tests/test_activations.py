"""Activations: values against independent references, gradients against finite differences."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import numerical_gradient
from xpnet.activations import ACTIVATIONS, erf, erfc, get_activation, sigmoid, softplus

import xpnet as xn

NAMES = sorted(ACTIVATIONS)


def _away_from_kinks(rng, shape):
    x = rng.normal(0.0, 1.5, size=shape)
    return np.where(np.abs(x) < 0.05, 0.3, x)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(backend, f64, name):
    rng = np.random.default_rng(7)
    x = _away_from_kinks(rng, (3, 5))
    r = rng.normal(size=(3, 5))
    act = get_activation(name)
    xp = backend.xp

    def loss(x_host):
        return float(xp.sum(act.forward(f64(x_host), xp) * f64(r)))

    xd = f64(x)
    y = act.forward(xd, xp)
    analytic = xn.to_numpy(act.backward(xd, y, f64(r), xp))
    np.testing.assert_allclose(analytic, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)


def _torch_reference(name, x):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = torch.as_tensor(x, dtype=torch.float64)
    table = {
        "linear": lambda v: v,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": F.relu,
        "leaky_relu": F.leaky_relu,
        "elu": F.elu,
        "gelu": F.gelu,
        "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
        "silu": F.silu,
        "softplus": lambda v: F.softplus(v, threshold=1e9),
        "softmax": lambda v: F.softmax(v, dim=-1),
    }
    return table[name](t).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_values_match_torch(backend, f64, name):
    x = np.random.default_rng(3).normal(0.0, 3.0, size=(4, 6))
    got = xn.to_numpy(get_activation(name).forward(f64(x), backend.xp))
    # torch computes gelu as 0.5 x (1 + erf) and loses relative accuracy far left
    np.testing.assert_allclose(got, _torch_reference(name, x), rtol=1e-12, atol=1e-12)


def test_sigmoid_never_overflows(backend, f64):
    x = f64([-1e4, -800.0, -40.0, 0.0, 40.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = xn.to_numpy(sigmoid(x, backend.xp))
    assert np.all(np.isfinite(y))
    assert y[0] == 0.0 and y[-1] == 1.0 and y[3] == 0.5
    assert y[2] == pytest.approx(math.exp(-40.0), rel=1e-12)


def test_softplus_is_exact_and_stable(backend, f64):
    x = np.array([-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0])
    got = xn.to_numpy(softplus(f64(x), backend.xp))
    expected = [math.log1p(math.exp(-abs(v))) + max(v, 0.0) for v in x]
    np.testing.assert_allclose(got, expected, rtol=1e-15)


def test_softmax_is_stable_for_huge_logits(backend, f64):
    x = f64([[1000.0, 1000.0, -1000.0], [0.0, 1e4, 0.0]])
    got = xn.to_numpy(get_activation("softmax").forward(x, backend.xp))
    np.testing.assert_allclose(got, [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]], atol=1e-300)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)


def test_erf_has_float64_accuracy(backend, f64):
    x = np.concatenate([np.linspace(-6.0, 6.0, 2001), [1e-8, -1e-8, 2.0, 26.0, -26.0]])
    got = xn.to_numpy(erf(f64(x), backend.xp))
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    tail = np.linspace(0.0, 26.0, 1001)
    got_c = xn.to_numpy(erfc(f64(tail), backend.xp))
    np.testing.assert_allclose(got_c, [math.erfc(v) for v in tail], rtol=1e-12, atol=0)


def test_gelu_keeps_relative_accuracy_far_left(backend, f64):
    x = np.array([-30.0, -12.0, -5.0])
    got = xn.to_numpy(get_activation("gelu").forward(f64(x), backend.xp))
    expected = [v * 0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_float32_stays_float32(backend, xp):
    x = backend.asarray(np.linspace(-3, 3, 12).reshape(3, 4), "float32")
    for name in NAMES:
        act = get_activation(name)
        y = act.forward(x, xp)
        assert y.dtype == xp.float32, name
        assert act.backward(x, y, y, xp).dtype == xp.float32, name


def test_unknown_activation_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*relu.*gelu"):
        get_activation("swish")
    assert get_activation(None).name == "linear"

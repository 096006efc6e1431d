"""Losses: values against torch.nn, gradients against finite differences, fused pairs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numerical_gradient
from xpnet.activations import sigmoid, softmax
from xpnet.losses import get_loss

import xpnet as xn

RNG = np.random.default_rng(11)
LOGITS = RNG.normal(0.0, 2.0, size=(5, 3))
LABELS = np.array([0, 2, 1, 2, 0])
ONE_HOT = np.eye(3)[LABELS]
BINARY = (RNG.random((5, 3)) > 0.5).astype(np.float64)
TARGETS = RNG.normal(size=(5, 3))


def _cases():
    # (loss name, from_logits, prediction in host form, target)
    probs = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
    return [
        ("mse", False, LOGITS, TARGETS),
        ("binary_crossentropy", False, 1 / (1 + np.exp(-LOGITS)), BINARY),
        ("binary_crossentropy", True, LOGITS, BINARY),
        ("categorical_crossentropy", False, probs, ONE_HOT),
        ("categorical_crossentropy", True, LOGITS, ONE_HOT),
        ("categorical_crossentropy", True, LOGITS, LABELS),
    ]


def _loss(name, from_logits):
    return type(get_loss(name))(from_logits=from_logits)


@pytest.mark.parametrize(("name", "from_logits", "pred", "target"), _cases())
def test_gradient_matches_finite_differences(backend, f64, name, from_logits, pred, target):
    loss = _loss(name, from_logits)
    t = backend.asarray(target) if target.dtype.kind == "i" else f64(target)
    grad = xn.to_numpy(loss.gradient(f64(pred), t))
    numeric = numerical_gradient(lambda p: float(loss(f64(p), t)), pred, eps=1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def _torch_value(name, from_logits, pred, target):
    torch = pytest.importorskip("torch")
    p = torch.as_tensor(pred, dtype=torch.float64)
    if name == "mse":
        return torch.nn.functional.mse_loss(p, torch.as_tensor(target)).item()
    if name == "binary_crossentropy":
        fn = (
            torch.nn.functional.binary_cross_entropy_with_logits
            if from_logits
            else torch.nn.functional.binary_cross_entropy
        )
        return fn(p, torch.as_tensor(target)).item()
    labels = torch.as_tensor(target if target.ndim == 1 else target.argmax(axis=1))
    logits = p if from_logits else torch.log(p)
    return torch.nn.functional.cross_entropy(logits, labels).item()


@pytest.mark.parametrize(("name", "from_logits", "pred", "target"), _cases())
def test_value_matches_torch(backend, f64, name, from_logits, pred, target):
    t = backend.asarray(target) if target.dtype.kind == "i" else f64(target)
    got = float(_loss(name, from_logits)(f64(pred), t))
    assert got == pytest.approx(_torch_value(name, from_logits, pred, target), rel=1e-12)


def test_fused_gradients_are_p_minus_y_over_n(backend, f64, xp):
    z = f64(LOGITS)
    bce = xn.BinaryCrossentropy(from_logits=True).gradient(z, f64(BINARY))
    expected = (xn.to_numpy(sigmoid(z, xp)) - BINARY) / BINARY.size
    np.testing.assert_allclose(xn.to_numpy(bce), expected, rtol=1e-14)
    ce = xn.CategoricalCrossentropy(from_logits=True).gradient(z, f64(ONE_HOT))
    expected = (xn.to_numpy(softmax(z, xp)) - ONE_HOT) / len(LABELS)
    np.testing.assert_allclose(xn.to_numpy(ce), expected, rtol=1e-14, atol=1e-17)


def test_logit_losses_stay_finite_for_extreme_logits(backend, f64):
    z = f64([[1e4, -1e4], [-1e4, 1e4]])
    y = f64([[0.0, 1.0], [1.0, 0.0]])
    for loss in (
        xn.BinaryCrossentropy(from_logits=True),
        xn.CategoricalCrossentropy(from_logits=True),
    ):
        value, grad = loss.value_and_gradient(z, y)
        assert np.isfinite(float(value)) and float(value) > 1e3
        assert np.all(np.isfinite(xn.to_numpy(grad)))


def test_single_output_accepts_flat_targets(backend, f64):
    pred = f64([[0.2], [0.9], [0.6]])
    flat, column = f64([0.0, 1.0, 1.0]), f64([[0.0], [1.0], [1.0]])
    for name in ("mse", "binary_crossentropy"):
        loss = get_loss(name)
        assert float(loss(pred, flat)) == pytest.approx(float(loss(pred, column)), rel=1e-15)


def test_loss_names_and_aliases():
    assert isinstance(get_loss("logloss"), xn.BinaryCrossentropy)
    assert isinstance(get_loss("cross_entropy"), xn.CategoricalCrossentropy)
    assert isinstance(get_loss("MSE"), xn.MeanSquaredError)
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*mse.*logloss"):
        get_loss("hinge")

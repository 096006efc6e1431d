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


# -- new losses, label smoothing and sample weights ------------------------------------

PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
WEIGHTS = np.array([0.5, 2.0, 1.0, 0.0, 3.0])

# (id, loss factory, prediction in host form, target, torch per-element or per-sample loss)
WEIGHTED_CASES = [
    ("mse", xn.MeanSquaredError, LOGITS, TARGETS),
    ("mae", xn.MeanAbsoluteError, LOGITS, TARGETS),
    ("huber", xn.Huber, LOGITS, TARGETS),
    ("huber-0.5", lambda: xn.Huber(delta=0.5), LOGITS, TARGETS),
    ("bce", xn.BinaryCrossentropy, 1 / (1 + np.exp(-LOGITS)), BINARY),
    ("bce-logits", lambda: xn.BinaryCrossentropy(from_logits=True), LOGITS, BINARY),
    ("ce", xn.CategoricalCrossentropy, PROBS, ONE_HOT),
    ("ce-logits-labels", lambda: xn.CategoricalCrossentropy(from_logits=True), LOGITS, LABELS),
    ("ce-smooth", lambda: xn.CategoricalCrossentropy(0.1), PROBS, ONE_HOT),
    ("ce-smooth-logits", lambda: xn.CategoricalCrossentropy(0.2, from_logits=True), LOGITS, LABELS),
]
CASE_IDS = [case[0] for case in WEIGHTED_CASES]


def _torch_per_sample(case_id, pred, target):
    """Per-sample losses from torch.nn (reduction='none'), elementwise ones averaged over outputs."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p, t = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target)
    if case_id.startswith("ce"):
        labels = t if t.ndim == 1 else t.argmax(dim=1)
        logits = p if "logits" in case_id else torch.log(p)
        smoothing = {"ce-smooth": 0.1, "ce-smooth-logits": 0.2}.get(case_id, 0.0)
        return F.cross_entropy(logits, labels, reduction="none", label_smoothing=smoothing).numpy()
    elementwise = {
        "mse": lambda: F.mse_loss(p, t, reduction="none"),
        "mae": lambda: F.l1_loss(p, t, reduction="none"),
        "huber": lambda: F.huber_loss(p, t, reduction="none", delta=1.0),
        "huber-0.5": lambda: F.huber_loss(p, t, reduction="none", delta=0.5),
        "bce": lambda: F.binary_cross_entropy(p, t, reduction="none"),
        "bce-logits": lambda: F.binary_cross_entropy_with_logits(p, t, reduction="none"),
    }[case_id]()
    return elementwise.numpy().mean(axis=1)


def _target(backend, f64, target):
    return backend.asarray(target) if target.dtype.kind == "i" else f64(target)


@pytest.mark.parametrize(("case_id", "make", "pred", "target"), WEIGHTED_CASES, ids=CASE_IDS)
def test_unweighted_value_matches_torch(backend, f64, case_id, make, pred, target):
    got = float(make()(f64(pred), _target(backend, f64, target)))
    assert got == pytest.approx(_torch_per_sample(case_id, pred, target).mean(), rel=1e-12)


@pytest.mark.parametrize(("case_id", "make", "pred", "target"), WEIGHTED_CASES, ids=CASE_IDS)
def test_weighted_value_is_weighted_mean_of_torch_per_sample_loss(backend, f64, case_id, make, pred, target):
    got = float(make()(f64(pred), _target(backend, f64, target), sample_weight=f64(WEIGHTS)))
    per_sample = _torch_per_sample(case_id, pred, target)
    assert got == pytest.approx((WEIGHTS * per_sample).sum() / WEIGHTS.sum(), rel=1e-12)


@pytest.mark.parametrize(("case_id", "make", "pred", "target"), WEIGHTED_CASES, ids=CASE_IDS)
def test_weighted_gradient_matches_finite_differences(backend, f64, case_id, make, pred, target):
    loss, t, w = make(), _target(backend, f64, target), f64(WEIGHTS)
    grad = xn.to_numpy(loss.gradient(f64(pred), t, sample_weight=w))
    numeric = numerical_gradient(lambda p: float(loss(f64(p), t, sample_weight=w)), pred, eps=1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("case_id", "make", "pred", "target"), WEIGHTED_CASES, ids=CASE_IDS)
def test_weights_of_ones_equal_no_weights(backend, f64, case_id, make, pred, target):
    loss, t = make(), _target(backend, f64, target)
    plain = loss.value_and_gradient(f64(pred), t)
    ones = loss.value_and_gradient(f64(pred), t, sample_weight=f64(np.ones(len(pred))))
    assert float(ones[0]) == pytest.approx(float(plain[0]), rel=1e-14)
    np.testing.assert_allclose(xn.to_numpy(ones[1]), xn.to_numpy(plain[1]), rtol=1e-13, atol=1e-17)


@pytest.mark.parametrize(("case_id", "make", "pred", "target"), WEIGHTED_CASES, ids=CASE_IDS)
def test_integer_weights_equal_repeated_rows(backend, f64, case_id, make, pred, target):
    counts = np.array([1, 3, 0, 2, 1])
    loss = make()
    value, grad = loss.value_and_gradient(f64(pred), _target(backend, f64, target), sample_weight=f64(counts))
    rows = np.repeat(np.arange(len(pred)), counts)
    rep_value, rep_grad = loss.value_and_gradient(f64(pred[rows]), _target(backend, f64, target[rows]))
    assert float(value) == pytest.approx(float(rep_value), rel=1e-13)
    # A row repeated c times gets the sum of its copies' gradients.
    summed = np.zeros_like(pred)
    np.add.at(summed, rows, xn.to_numpy(rep_grad))
    np.testing.assert_allclose(xn.to_numpy(grad), summed, rtol=1e-12, atol=1e-17)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("one_hot_targets", [False, True])
def test_class_weights_equal_torch_cross_entropy_weight(backend, f64, from_logits, one_hot_targets):
    torch = pytest.importorskip("torch")
    class_weight = np.array([0.2, 3.0, 1.5])
    expected = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(class_weight))(
        torch.as_tensor(LOGITS), torch.as_tensor(LABELS)
    ).item()
    loss = xn.CategoricalCrossentropy(from_logits=from_logits)
    pred = LOGITS if from_logits else PROBS
    target = f64(ONE_HOT) if one_hot_targets else backend.asarray(LABELS)
    got = float(loss(f64(pred), target, sample_weight=f64(class_weight[LABELS])))
    assert got == pytest.approx(expected, rel=1e-12)


def test_weighted_fused_gradient_is_p_minus_y_times_normalized_weight(backend, f64, xp):
    z = f64(LOGITS)
    grad = xn.CategoricalCrossentropy(from_logits=True).gradient(z, f64(ONE_HOT), sample_weight=f64(WEIGHTS))
    expected = (xn.to_numpy(softmax(z, xp)) - ONE_HOT) * (WEIGHTS / WEIGHTS.sum())[:, None]
    np.testing.assert_allclose(xn.to_numpy(grad), expected, rtol=1e-14, atol=1e-17)


def test_single_output_takes_weights_with_flat_targets(backend, f64):
    pred, flat, w = f64([[0.2], [0.9], [0.6]]), f64([0.0, 1.0, 1.0]), f64([1.0, 2.0, 3.0])
    for loss in (xn.MeanAbsoluteError(), xn.Huber(0.3), xn.BinaryCrossentropy()):
        per = xn.to_numpy(loss.gradient(pred, flat, sample_weight=w))
        assert per.shape == (3, 1)
        column = float(loss(pred, f64([[0.0], [1.0], [1.0]]), sample_weight=w))
        assert float(loss(pred, flat, sample_weight=w)) == pytest.approx(column, rel=1e-15)


def test_weights_of_the_wrong_shape_are_refused(backend, f64):
    with pytest.raises(ValueError, match=r"sample weights must have shape \(5,\).*\(4,\)"):
        xn.MeanSquaredError()(f64(LOGITS), f64(TARGETS), sample_weight=f64(np.ones(4)))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        xn.CategoricalCrossentropy()(f64(PROBS), f64(ONE_HOT), sample_weight=f64(np.ones((5, 1))))


def test_new_loss_names_configs_and_bad_arguments():
    assert isinstance(get_loss("mae"), xn.MeanAbsoluteError)
    assert isinstance(get_loss("mean_absolute_error"), xn.MeanAbsoluteError)
    huber = get_loss("huber", delta=2.5)
    assert isinstance(huber, xn.Huber) and huber.delta == 2.5
    assert repr(huber) == "Huber(delta=2.5, from_logits=False)"
    smooth = xn.CategoricalCrossentropy(label_smoothing=0.1)
    assert type(smooth)(**smooth.get_config()).label_smoothing == 0.1
    for bad in (0, -1.0, float("inf"), "1"):
        with pytest.raises(ValueError, match="Huber delta must be a positive finite number"):
            xn.Huber(bad)
    for bad in (-0.1, 1.0, True):
        with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\)"):
            xn.CategoricalCrossentropy(bad)


@pytest.mark.parametrize(
    ("make", "torch_loss", "activation"),
    [
        (lambda: xn.Huber(delta=0.5), lambda t: t.nn.HuberLoss(delta=0.5), None),
        (xn.MeanAbsoluteError, lambda t: t.nn.L1Loss(), None),
        (
            lambda: xn.CategoricalCrossentropy(label_smoothing=0.1),
            lambda t: t.nn.CrossEntropyLoss(label_smoothing=0.1),
            "softmax",
        ),
    ],
    ids=["huber", "mae", "ce-smooth"],
)
def test_training_steps_with_new_losses_match_torch(backend, make, torch_loss, activation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w0, b0 = rng.normal(size=(4, 3)), rng.normal(size=3)
    net = xn.Network(
        [xn.Dense(3, activation, in_features=4)],
        loss=make(),
        optimizer=xn.SGD(0.1, momentum=0.9),
        backend=backend,
        dtype="float64",
        seed=0,
    )
    net.layers[0].weight, net.layers[0].bias = w0, b0
    w, b = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=0.1, momentum=0.9)
    criterion = torch_loss(torch)
    for _ in range(4):
        x = rng.normal(size=(8, 4))
        y = rng.integers(0, 3, size=8) if activation else rng.normal(size=(8, 3))
        net.train_step(
            backend.asarray(x, "float64"), backend.asarray(y) if activation else backend.asarray(y, "float64")
        )
        opt.zero_grad()
        criterion(torch.as_tensor(x) @ w + b, torch.as_tensor(y)).backward()
        opt.step()
    np.testing.assert_allclose(xn.to_numpy(net.layers[0].weight), w.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xn.to_numpy(net.layers[0].bias), b.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:overflow encountered in reduce:RuntimeWarning")  # NumPy's sum, handled
@pytest.mark.parametrize("weight", [3e38, 1e-40], ids=["3e38", "1e-40"])
@pytest.mark.parametrize(("case_id", "make", "pred", "target"), WEIGHTED_CASES, ids=CASE_IDS)
def test_extreme_uniform_float32_weights_weigh_as_ones(backend, case_id, make, pred, target, weight):
    """float32 weights of 3e38 overflow a float32 sum (the loss read 0 and nothing trained); the
    loss divides them by the largest first, so any uniform weights weigh as weights of one."""

    if backend.name == "jax" and weight < np.finfo(np.float32).tiny:
        pytest.skip("XLA flushes float32 subnormals to 0 (fit divides weights by the largest first)")

    def f32(a):
        return backend.asarray(np.asarray(a, dtype=np.float32), "float32")

    loss = make()
    t = backend.asarray(target) if target.dtype.kind == "i" else f32(target)
    plain = loss.value_and_gradient(f32(pred), t)
    heavy = loss.value_and_gradient(f32(pred), t, sample_weight=f32(np.full(len(pred), weight)))
    assert float(heavy[0]) == pytest.approx(float(plain[0]), rel=1e-6)
    np.testing.assert_allclose(xn.to_numpy(heavy[1]), xn.to_numpy(plain[1]), rtol=1e-5, atol=1e-7)

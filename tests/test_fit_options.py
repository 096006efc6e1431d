"""fit's sample_weight, class_weight, validation_split, metrics, and optimizer clipping, every backend.

References: torch (CrossEntropyLoss(weight=), clip_grad_norm_/clip_grad_value_ before the step),
scikit-learn's metrics on the same predictions, and repeated rows for integer weights.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import xpnet as xn


def _data(n=24, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, classes, size=n)


def _net(backend, optimizer=None, out=3, loss="categorical_crossentropy", act="softmax", compile=None):
    layers = [xn.Dense(5, "tanh", in_features=4), xn.Dense(out, act)]
    return xn.Network(layers, loss=loss, optimizer=optimizer or xn.SGD(0.2), backend=backend,
                      dtype="float64", seed=0, compile=compile)  # fmt: skip


def _torch_mlp(net):
    first, last = net.layers
    a = torch.nn.Linear(4, 5, dtype=torch.float64)
    b = torch.nn.Linear(5, last.units, dtype=torch.float64)
    with torch.no_grad():
        for m, layer in ((a, first), (b, last)):
            m.weight.copy_(torch.tensor(xn.to_numpy(layer.weight)).T)
            m.bias.copy_(torch.tensor(xn.to_numpy(layer.bias)))
    return torch.nn.Sequential(a, torch.nn.Tanh(), b)


def _same_weights(net, ref):
    got = net.get_weights()
    want = [p.detach().numpy() for p in ref.parameters()]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.T if w.ndim == 2 else w, rtol=1e-10, atol=1e-13)


def _train_torch(ref, opt, x, y, batch, epochs, loss_fn, clip=None):
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            opt.zero_grad()
            loss_fn(ref(xt[start : start + batch]), yt[start : start + batch]).backward()
            if clip is not None:
                clip(ref.parameters())
            opt.step()


def test_class_weight_equals_torch_cross_entropy_weight(backend):
    x, y = _data()
    net = _net(backend)
    ref = _torch_mlp(net)
    net.fit(x, y, epochs=3, batch_size=10, shuffle=False, class_weight={0: 3.0, 2: 0.5}, verbose=0)
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
    _train_torch(ref, torch.optim.SGD(ref.parameters(), lr=0.2), x, y, 10, 3, loss)
    _same_weights(net, ref)


@pytest.mark.parametrize("kind", ["norm", "value"])
def test_clipping_equals_torch_before_the_step(backend, kind):
    x, y = _data()
    options = {"clip_norm": 0.3} if kind == "norm" else {"clip_value": 0.05}
    net = _net(backend, xn.Adam(0.05, **options))
    ref = _torch_mlp(net)
    net.fit(x, y, epochs=2, batch_size=10, shuffle=False, verbose=0)
    if kind == "norm":

        def clip(p):
            return torch.nn.utils.clip_grad_norm_(p, 0.3)
    else:

        def clip(p):
            return torch.nn.utils.clip_grad_value_(p, 0.05)

    opt = torch.optim.Adam(ref.parameters(), lr=0.05)
    _train_torch(ref, opt, x, y, 10, 2, torch.nn.CrossEntropyLoss(), clip)
    _same_weights(net, ref)


def test_sample_weights_of_ones_equal_none_and_integers_equal_repeated_rows(backend):
    x, y = _data(12)
    plain, ones = _net(backend), _net(backend)
    plain.fit(x, y, epochs=2, batch_size=5, verbose=0)
    ones.fit(x, y, epochs=2, batch_size=5, sample_weight=np.ones(12), verbose=0)
    for a, b in zip(plain.get_weights(), ones.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    counts = np.array([1, 2, 0, 3, 1, 1, 2, 1, 1, 0, 1, 2])
    weighted, repeated = _net(backend), _net(backend)
    weighted.fit(x, y, epochs=3, batch_size=12, shuffle=False, sample_weight=counts, verbose=0)
    repeated.fit(np.repeat(x, counts, axis=0), np.repeat(y, counts), epochs=3, batch_size=counts.sum(),
                 shuffle=False, verbose=0)  # fmt: skip
    for a, b in zip(weighted.get_weights(), repeated.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_compiled_equals_eager_with_weights_and_clipping(backend):
    x, y = _data(23)
    w = np.random.default_rng(3).uniform(0, 2, size=23)
    nets = [_net(backend, xn.RMSprop(0.01, clip_norm=0.2), compile=c) for c in (None, False)]
    for net in nets:
        net.fit(x, y, epochs=2, batch_size=8, sample_weight=w, class_weight="balanced", verbose=0)
    for a, b in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_validation_split_takes_the_last_rows_before_shuffling(backend):
    x, y = _data(23)
    split, given = _net(backend), _net(backend)
    h = split.fit(x, y, epochs=2, batch_size=8, validation_split=0.3, verbose=0)
    k = int(np.floor(23 * 0.7))  # 16 train, 7 validate
    g = given.fit(x[:k], y[:k], epochs=2, batch_size=8, validation_data=(x[k:], y[k:]), verbose=0)
    assert h.history.keys() == g.history.keys() and "val_loss" in h.history
    for key in h.history:
        np.testing.assert_allclose(h.history[key], g.history[key], rtol=1e-12)


def test_metrics_equal_scikit_learn_on_the_same_predictions(backend):
    x, y = _data(40)
    net = _net(backend)
    h = net.fit(x[:30], y[:30], epochs=1, batch_size=8, validation_data=(x[30:], y[30:]),
                metrics=["precision", "recall", "f1", "auc"], verbose=0)  # fmt: skip
    for rows, prefix in ((slice(0, 30), ""), (slice(30, 40), "val_")):
        prob = xn.to_numpy(net.predict(x[rows]))
        pred, true = prob.argmax(axis=1), y[rows]
        want = {
            "precision": skm.precision_score(true, pred, average="macro", labels=[0, 1, 2], zero_division=0),
            "recall": skm.recall_score(true, pred, average="macro", labels=[0, 1, 2], zero_division=0),
            "f1": skm.f1_score(true, pred, average="macro", labels=[0, 1, 2], zero_division=0),
            "auc": skm.roc_auc_score(true, prob, multi_class="ovr", average="macro", labels=[0, 1, 2]),
        }
        for name, value in want.items():
            assert h.history[prefix + name][0] == pytest.approx(value, rel=1e-10), prefix + name
    scores = net.evaluate(x[30:], y[30:], metrics=["f1", "auc"])
    assert set(scores) == {"loss", "accuracy", "f1", "auc"}
    assert scores["f1"] == pytest.approx(h.history["val_f1"][0], rel=1e-12)


def test_binary_and_regression_metrics_and_callables(backend):
    x, y = _data(30, classes=2)
    net = _net(backend, out=1, loss="binary_crossentropy", act="sigmoid")

    def brier(y_true, y_pred):
        return float(np.mean((y_pred - y_true) ** 2))

    h = net.fit(x, y, epochs=1, batch_size=8, metrics=["precision", "f1", "auc", brier], verbose=0)
    prob = xn.to_numpy(net.predict(x))[:, 0]
    assert h.history["precision"][0] == pytest.approx(skm.precision_score(y, prob > 0.5, zero_division=0))
    assert h.history["f1"][0] == pytest.approx(skm.f1_score(y, prob > 0.5), rel=1e-10)
    assert h.history["auc"][0] == pytest.approx(skm.roc_auc_score(y, prob), rel=1e-10)
    assert h.history["brier"][0] == pytest.approx(brier(y, prob), rel=1e-10)
    target = x @ np.array([1.0, -2.0, 0.5, 0.0])
    reg = _net(backend, out=1, loss="mse", act=None)
    scores = reg.evaluate(x, target, metrics=["mae", "mse"])
    out = xn.to_numpy(reg.predict(x))[:, 0]
    assert scores["mae"] == pytest.approx(skm.mean_absolute_error(target, out), rel=1e-10)
    assert scores["mse"] == pytest.approx(scores["loss"], rel=1e-10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sample_weight": np.ones(5)}, r"shape \(24,\)"),
        ({"sample_weight": -np.ones(24)}, "finite weights >= 0"),
        ({"sample_weight": np.zeros(24)}, "weight 0"),
        ({"class_weight": {"a": 1.0}}, "integer class labels"),
        ({"class_weight": "even"}, "'balanced'"),
        ({"validation_split": 1.0}, r"in \[0, 1\)"),
        ({"validation_split": 0.2, "validation_data": (np.ones((2, 4)), [0, 1])}, "not both"),
        ({"metrics": ["nope"]}, "metric"),
    ],
)
def test_bad_fit_options_are_refused(options, message):
    x, y = _data()
    with pytest.raises(ValueError, match=message):
        _net("numpy").fit(x, y, verbose=0, **options)


@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy", "categorical_crossentropy", "huber", "mae"])
def test_a_batch_of_zero_weights_has_zero_loss_and_zero_gradients(backend, loss):
    rng = np.random.default_rng(3)
    y = np.eye(3)[rng.integers(0, 3, 6)] if loss == "categorical_crossentropy" else rng.integers(0, 2, (6, 3))
    pred = backend.asarray(rng.uniform(0.1, 0.9, (6, 3)), "float64")
    target = backend.asarray(y.astype(np.float64), "float64")
    zeros = backend.asarray(np.zeros(6), "float64")
    value, grad = xn.get_loss(loss).value_and_gradient(pred, target, sample_weight=zeros)
    assert float(value) == 0.0
    np.testing.assert_array_equal(xn.to_numpy(grad), np.zeros((6, 3)))


def test_a_batch_whose_rows_all_weigh_zero_changes_nothing(backend):
    """Unshuffled, the first batch weighs 0: plain SGD then ends where training without it ends."""
    x, y = _data()
    weight = np.ones(len(y))
    weight[:8] = 0.0
    nets = [_net(backend, optimizer=xn.SGD(0.1)) for _ in range(2)]
    nets[0].fit(x, y, sample_weight=weight, batch_size=8, epochs=3, shuffle=False, verbose=0)
    nets[1].fit(x[8:], y[8:], batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert np.all(np.isfinite(nets[0].history.history["loss"]))
    for got, want in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("weight", [3e38, 1e-40, 1e-300], ids=["3e38", "1e-40", "1e-300"])
@pytest.mark.parametrize("path", ["in memory", "streamed", "loss only"])
def test_extreme_uniform_sample_weights_train_as_weight_one(backend, monkeypatch, path, weight):
    """``sample_weight=np.full(n, 3e38)`` trained nothing (its float32 sum overflowed): it now trains
    exactly as weight 1 does, in memory and streamed, and the loss alone (without the boundary's
    division by the largest weight) is safe too."""
    from xpnet.train import weighting

    if path == "loss only":
        if weight == 1e-300:
            pytest.skip("1e-300 is 0 in float32: only the boundary's division keeps it")
        if backend.name == "jax" and weight < np.finfo(np.float32).tiny:
            pytest.skip("XLA flushes float32 subnormals to 0: only the boundary's division keeps them")
        monkeypatch.setattr(weighting, "normalized", lambda w: w)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)), rng.integers(0, 3, 64)

    def fit(w):
        net = xn.Network(
            [xn.Dense(3, "softmax", in_features=3)],
            loss="cross_entropy",
            optimizer=xn.SGD(0.1),
            backend=backend,
            seed=0,
        )
        if path == "streamed":
            batches = [(X[i : i + 16], y[i : i + 16], np.full(16, w)) for i in range(0, 64, 16)]
            history = net.fit(batches, epochs=2, verbose=0)
        else:
            history = net.fit(X, y, epochs=2, batch_size=16, sample_weight=np.full(64, w), verbose=0)
        return history.history["loss"], net.get_weights()

    (loss_one, w_one), (loss_big, w_big) = fit(1.0), fit(weight)
    np.testing.assert_allclose(loss_big, loss_one, rtol=1e-6)
    assert loss_big[0] > 0.5
    for a, b in zip(w_big, w_one):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("streamed", [False, True])
def test_class_weight_naming_labels_the_network_has_not_is_refused(backend, streamed):
    """``class_weight={5: 2.0}`` on 0/1 labels was ignored silently."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3))
    cases = [
        (
            [xn.Dense(1, "sigmoid", in_features=3)],
            "logloss",
            (X[:, 0] > 0).astype(float),
            {5: 2.0, 1: 3.0},
            "[5]",
            "0..1",
        ),
        (
            [xn.Dense(3, "softmax", in_features=3)],
            "cross_entropy",
            rng.integers(0, 3, 32),
            {3: 1.0, -1: 2.0},
            "[-1, 3]",
            "0..2",
        ),
    ]
    for layers, loss, y, weights, named, labels in cases:
        net = xn.Network(layers, loss=loss, backend=backend, seed=0)
        data = ([(X[:16], y[:16]), (X[16:], y[16:])],) if streamed else (X, y)
        with pytest.raises(
            ValueError,
            match=rf"class_weight names label\(s\) {re.escape(named)}, but the network's labels are {labels}",
        ):
            net.fit(*data, class_weight=weights, epochs=1, verbose=0)
        assert net.epoch == 0
        present = {k: v for k, v in weights.items() if k in (0, 1)}
        net.fit(*data, class_weight=present, epochs=1, verbose=0)  # labels it has, present or not

"""kfold_ensemble: one network per fold and weight decay, the best weight decay's networks averaged."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn

pd = pytest.importorskip("pandas")


def _regression(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, 50 + 20 * X[:, 0] - 10 * X[:, 1] + np.abs(X[:, 2]) + rng.normal(size=n)


class Recorder:
    """``make`` for kfold_ensemble that keeps each member's predictions on ``X`` when it is reported."""

    def __init__(self, backend, X, head=None, units=1):
        self.backend, self.X, self.head, self.units = backend, X, head, units
        self.last = None
        self.predictions = {}

    def make(self, decay, seed):
        stack = [xn.Dense(8, "relu"), xn.Dense(self.units)]
        layers = [xn.Residual(stack, shortcut="linear")] + ([xn.Activation(self.head)] if self.head else [])
        loss = "mse" if self.head is None else "categorical_crossentropy"
        self.last = xn.Network(layers, loss=loss, optimizer=xn.Adam(0.01, weight_decay=decay),
                               backend=self.backend, dtype="float64", seed=seed)  # fmt: skip
        return self.last

    def report(self, member):
        self.predictions[member.weight_decay, member.fold] = xn.to_numpy(self.last.predict(self.X))


def test_regression_ensemble_averages_the_chosen_networks_in_target_units(backend):
    X, y = _regression()
    rec = Recorder(backend, X)
    result = xn.kfold_ensemble(rec.make, X, y, folds=2, weight_decays=(0.0, 0.1), seed=1, epochs=20,
                               patience=3, preprocess="auto", report=rec.report)  # fmt: skip
    assert [(m.weight_decay, m.fold) for m in result.members] == [
        (d, f) for d in (0.0, 0.1) for f in range(2)
    ]
    assert all(
        1 <= m.best_epoch <= m.epochs <= 20 and len(m.history.epoch) == m.epochs for m in result.members
    )
    scores = result.scores()
    assert result.weight_decay == min(scores, key=scores.get)
    assert [m.fold for m in result.chosen()] == [0, 1]
    net = result.network
    assert [type(layer).__name__ for layer in net.layers] == ["Parallel"] and len(net.layers[0].branches) == 2
    want = np.mean([rec.predictions[result.weight_decay, f] for f in range(2)], axis=0)
    np.testing.assert_allclose(xn.to_numpy(net.predict(X)), want, rtol=1e-10)
    assert abs(float(want.mean()) - y.mean()) < 10  # the target's units, not standardized ones
    assert net.optimizer.weight_decay == result.weight_decay


def test_classification_ensemble_averages_logits_before_the_softmax(backend):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    rec = Recorder(backend, X, head="softmax", units=3)
    result = xn.kfold_ensemble(rec.make, X, y, folds=2, stratify=True, epochs=10, patience=2,
                               report=rec.report)  # fmt: skip
    assert [type(layer).__name__ for layer in result.network.layers] == ["Parallel", "Activation"]
    logs = np.mean([np.log(rec.predictions[0.0, f]) for f in range(2)], axis=0)  # logits up to a row constant
    want = np.exp(logs - logs.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(xn.to_numpy(result.network.predict(X)), want, rtol=1e-8)


def test_a_dataframe_is_encoded_once_for_every_member_and_the_ensemble_saves(backend, tmp_path):
    X, y = _regression(seed=3)
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "town": np.where(X[:, 2] > 0, "x", "y")})
    frame.loc[4, "a"] = np.nan
    rec = Recorder(backend, frame)
    result = xn.kfold_ensemble(rec.make, frame, y, folds=2, epochs=5, patience=2, preprocess="auto")
    net = result.network
    assert net.metadata["encoder"]["columns"][0]["name"] == "a" and "target_scaling" in net.metadata
    want = xn.to_numpy(net.predict(frame[["town", "b", "a"]]))  # matched by column name
    net.save(tmp_path / "ensemble.safetensors")
    loaded = xn.load(tmp_path / "ensemble.safetensors", backend=backend)
    np.testing.assert_allclose(xn.to_numpy(loaded.predict(frame)), want, rtol=1e-12)


def _plain(decay, seed):
    return xn.Network([xn.Dense(2, "softmax")], loss="categorical_crossentropy", backend="numpy", seed=seed)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weight_decays": ()}, "weight_decays must be a non-empty list"),
        ({"weight_decays": (0.1, -1.0)}, "weight_decays must be a non-empty list"),
        ({"patience": 0}, "patience must be a positive integer"),
        ({"folds": 1}, "folds must be an integer from 2"),
        ({}, r"end them with a separate Activation\('softmax'\)"),
    ],
)
def test_bad_settings_are_refused(options, message):
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match=message):
        xn.kfold_ensemble(_plain, X, (X[:, 0] > 0).astype(int), **{"epochs": 1, "patience": 1, **options})

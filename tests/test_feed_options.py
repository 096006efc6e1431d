"""fit's options on streamed data (memmaps, device_data=False, batches) equal the in-memory fit.

sample_weight, class_weight, validation_split, validation_data and metrics: the same rows in the
same order give the same weights and the same history as in memory, on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.data.streams import ArraySource

ROWS = 37


def make_net(backend, loss="categorical_crossentropy", out=3, dropout=0.25):
    act = "softmax" if loss == "categorical_crossentropy" else "sigmoid"
    layers = [xn.Dense(6, "tanh", in_features=4), xn.Dropout(dropout), xn.Dense(out, act)]
    return xn.Network(layers, loss=loss, optimizer="adam", backend=backend, dtype="float64", seed=1)


def data(rows=ROWS, classes=3):
    rng = np.random.default_rng(5)
    return rng.normal(size=(rows, 4)), rng.integers(0, classes, rows), rng.uniform(0.2, 2.0, rows)


def batches(*arrays, size=8):
    return [tuple(a[i : i + size] for a in arrays) for i in range(0, len(arrays[0]), size)]


def on_disk(tmp_path, **arrays):
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    return [np.load(tmp_path / f"{name}.npy", mmap_mode="r") for name in arrays]


def assert_same(a, b, backend, ha=None, hb=None):
    # In memory, JAX runs the epoch through lax.scan and NumPy through its fused loop, while a
    # streamed batch takes the generic step: the same math, ordered apart, may round differently
    # in the last bit (the fused loop is pinned to the generic step in tests/test_numpy_fused.py).
    tolerance = 1e-12 if backend.name in ("jax", "numpy") else 0.0
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=0, atol=tolerance)
    if ha is not None:
        assert ha.keys() == hb.keys()
        for key in ha:
            np.testing.assert_allclose(hb[key], ha[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("shuffle", [False, True])
def test_sample_weight_aligned_with_a_memmap_trains_as_in_memory(backend, tmp_path, shuffle):
    X, y, w = data()
    mx, my, mw = on_disk(tmp_path, x=X, y=y, w=w)
    a, b = make_net(backend), make_net(backend)
    ha = a.fit(X, y, sample_weight=w, epochs=2, batch_size=8, shuffle=shuffle, verbose=0).history
    hb = b.fit(mx, my, sample_weight=mw, epochs=2, batch_size=8, shuffle=shuffle, verbose=0).history
    assert_same(a, b, backend, ha, hb)


@pytest.mark.parametrize("class_weight", [{0: 2.0, 2: 0.5}, "balanced"])
def test_class_weight_on_streamed_rows_trains_as_in_memory(backend, tmp_path, class_weight):
    X, y, w = data()
    mx, my = on_disk(tmp_path, x=X, y=y)
    options = {"class_weight": class_weight, "sample_weight": w, "epochs": 2, "batch_size": 8, "verbose": 0}
    a, b, c = make_net(backend), make_net(backend), make_net(backend)
    ha = a.fit(X, y, **options).history
    hb = b.fit(X, y, device_data=False, **options).history
    hc = c.fit(mx, my, **options).history
    assert_same(a, b, backend, ha, hb)
    assert_same(a, c, backend, ha, hc)


def test_balanced_class_weight_of_binary_targets_on_a_memmap(backend, tmp_path):
    X, y, _ = data(classes=2)
    y = np.where(np.arange(ROWS) < 30, 0, y).astype(np.float64)  # unbalanced, 0/1 floats
    mx, my = on_disk(tmp_path, x=X, y=y)
    a, b = make_net(backend, "binary_crossentropy", 1), make_net(backend, "binary_crossentropy", 1)
    ha = a.fit(X, y, class_weight="balanced", epochs=2, batch_size=8, shuffle=False, verbose=0).history
    hb = b.fit(mx, my, class_weight="balanced", epochs=2, batch_size=8, shuffle=False, verbose=0).history
    assert_same(a, b, backend, ha, hb)


def test_class_weight_multiplies_the_weights_of_batches(backend):
    X, y, w = data()
    a, b = make_net(backend), make_net(backend)
    weights = {1: 3.0, 2: 0.0}
    ha = a.fit(X, y, sample_weight=w, class_weight=weights, epochs=2, batch_size=8, shuffle=False, verbose=0)
    hb = b.fit(batches(X, y, w), class_weight=weights, epochs=2, verbose=0)
    assert_same(a, b, backend, ha.history, hb.history)


def true_class_probability(y_true, y_pred):
    return float(np.mean(y_pred[np.arange(len(y_true)), y_true]))


@pytest.mark.parametrize("kind", ["memmap", "device_data", "batches"])
def test_metrics_on_streamed_training_data_equal_in_memory(backend, tmp_path, kind):
    X, y, _ = data()
    metrics = ["accuracy", "f1", "auc", true_class_probability]
    a, b = make_net(backend), make_net(backend)
    ha = a.fit(X, y, metrics=metrics, epochs=2, batch_size=8, shuffle=False, verbose=0).history
    given = {"batches": (batches(X, y), None), "memmap": on_disk(tmp_path, x=X, y=y), "device_data": (X, y)}
    hb = b.fit(*given[kind], device_data=kind != "device_data", metrics=metrics, epochs=2, batch_size=8,
               shuffle=False, verbose=0).history  # fmt: skip
    assert {"f1", "auc", "true_class_probability"} <= ha.keys()
    assert_same(a, b, backend, ha, hb)


def test_validation_data_may_be_streamed(backend, tmp_path):
    X, y, _ = data()
    Xv, yv, _ = data(rows=19, classes=3)
    mx, my = on_disk(tmp_path, x=Xv, y=yv)
    options = {"metrics": ["f1"], "epochs": 2, "batch_size": 8, "verbose": 0}
    reference = make_net(backend)
    want = reference.fit(X, y, validation_data=(Xv, yv), **options).history
    # a memmap pair, batches and a batch source, with in-memory and with streamed training data
    for given, device_data in (
        ((mx, my), True),
        (batches(Xv, yv, size=5), False),
        (ArraySource(Xv, yv), False),
    ):
        net = make_net(backend)
        got = net.fit(X, y, validation_data=given, device_data=device_data, **options).history
        assert {"val_loss", "val_accuracy", "val_f1"} <= got.keys()
        assert_same(reference, net, backend, want, got)


@pytest.mark.parametrize("shuffle", [False, True])
def test_validation_split_of_a_memmap_takes_the_last_rows_as_in_memory(backend, tmp_path, shuffle):
    X, y, w = data()
    mx, my, mw = on_disk(tmp_path, x=X, y=y, w=w)
    options = {"validation_split": 0.3, "metrics": ["auc"], "epochs": 2, "batch_size": 8, "verbose": 0}
    a, b = make_net(backend), make_net(backend)
    ha = a.fit(X, y, sample_weight=w, class_weight="balanced", shuffle=shuffle, **options).history
    hb = b.fit(mx, my, sample_weight=mw, class_weight="balanced", shuffle=shuffle, **options).history
    assert "val_auc" in ha
    assert_same(a, b, backend, ha, hb)


def test_evaluate_a_stream_with_metrics_equals_in_memory(backend, tmp_path):
    X, y, _ = data()
    net = make_net(backend)
    net.fit(X, y, epochs=1, batch_size=8, verbose=0)
    metrics = ["precision", "recall", "auc", "mse"]
    want = net.evaluate(X, y, metrics=metrics)
    mx, my = on_disk(tmp_path, x=X, y=y)
    for got in (
        net.evaluate(mx, my, batch_size=5, metrics=metrics),
        net.evaluate(batches(X, y), metrics=metrics),
    ):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)


def test_a_streamed_target_is_scaled_as_in_memory(backend, tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), 50.0 + 10.0 * rng.normal(size=30)
    nets = [make_net(backend, "mse", 1, dropout=0.0) for _ in range(2)]
    for net in nets:  # the target's scaling is learned in memory, then streamed fits and evaluations use it
        net.fit(X, y, epochs=1, batch_size=8, preprocess="auto", verbose=0)
    a, b = nets
    mx, my = on_disk(tmp_path, x=X, y=y)
    ha = a.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0).history
    hb = b.fit(mx, my, epochs=2, batch_size=8, shuffle=False, verbose=0).history
    assert_same(a, b, backend, ha, hb)
    np.testing.assert_allclose(b.evaluate(mx, my)["loss"], a.evaluate(X, y)["loss"], rtol=1e-12)


def test_options_without_a_sound_meaning_on_a_stream_are_refused(backend):
    X, y, w = data()
    net = make_net(backend)
    with pytest.raises(ValueError, match="validation_split needs arrays or a memmap"):
        net.fit(batches(X, y), validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="class_weight='balanced' needs every label's count before training"):
        net.fit(batches(X, y), class_weight="balanced", verbose=0)
    with pytest.raises(ValueError, match="metrics are measured on a second pass"):
        net.fit(iter(batches(X, y)), metrics=["f1"], verbose=0)
    with pytest.raises(ValueError, match="sample_weight must be left out when X is batches"):
        net.fit(batches(X, y), sample_weight=w, verbose=0)
    with pytest.raises(ValueError, match="give validation_data or validation_split, not both"):
        net.fit(X, y, device_data=False, validation_split=0.2, validation_data=(X, y), verbose=0)
    with pytest.raises(ValueError, match="sample_weight must hold finite weights >= 0"):
        net.fit(X, y, device_data=False, sample_weight=-w, verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(37,\)"):
        net.fit(X, y, device_data=False, sample_weight=w[:5], verbose=0)


def test_bad_batch_weights_are_named(backend):
    X, y, w = data()
    net = make_net(backend)
    bad = batches(X, y, w)
    bad[1] = (bad[1][0], bad[1][1], -bad[1][2])
    with pytest.raises(ValueError, match="batch 1: w_b must hold finite weights >= 0"):
        net.fit(bad, verbose=0)
    with pytest.raises(ValueError, match=r"batch 0: X_b has 8 rows but w_b has shape \(3,\)"):
        net.fit([(X[:8], y[:8], w[:3])], verbose=0)

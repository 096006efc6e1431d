"""fit, predict and evaluate decide once what their data is (xpnet.train.adapter), and every kind of
input gives the same numbers in memory and streamed (device_data=True/False), DataFrames included."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import xpnet as xn
from xpnet.data import streams
from xpnet.train import copies

pd = pytest.importorskip("pandas")
RNG = np.random.default_rng(11)
ROWS = 41


def _frame():
    frame = pd.DataFrame(
        {
            "size": RNG.normal(10, 3, ROWS),
            "colour": RNG.choice(["red", "green", "blue"], ROWS),
            "weight": RNG.normal(0, 1, ROWS),
        }
    )
    frame.loc[[3, 17], "size"] = np.nan  # gaps, imputed by the encoder
    target = (frame["weight"] > 0).astype(int) + (frame["colour"] == "red")
    return frame, target.to_numpy()


def _net(backend, loss="cross_entropy", out=3):
    act = "softmax" if loss == "cross_entropy" else None
    layers = [xn.Dense(5, "tanh"), xn.Dropout(0.2), xn.Dense(out, act)]
    return xn.Network(layers, loss=loss, optimizer="adam", backend=backend, dtype="float64", seed=3)


def _close(a, b, backend):
    # JAX runs in-memory epochs compiled, streamed batches one step at a time: last bits may differ
    tolerance = 1e-12 if backend.name in ("jax", "numpy") else 0.0
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=0, atol=tolerance)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_dataframe_with_text_and_gaps_trains_alike_in_memory_and_streamed(backend, shuffle):
    frame, y = _frame()
    a, b = _net(backend), _net(backend)
    ha = a.fit(frame, y, epochs=3, batch_size=8, shuffle=shuffle, preprocess="auto", verbose=0).history
    hb = b.fit(
        frame, y, epochs=3, batch_size=8, shuffle=shuffle, preprocess="auto", device_data=False, verbose=0
    ).history
    _close(a, b, backend)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=1e-10)
    assert a.metadata["encoder"] == b.metadata["encoder"]
    np.testing.assert_allclose(xn.to_numpy(a.predict(frame)), xn.to_numpy(b.predict(frame)), atol=1e-12)


def test_a_regression_target_is_scaled_alike_in_memory_and_streamed(backend):
    frame, _ = _frame()
    y = 3.0 * frame["weight"].to_numpy() + 100.0
    a, b = _net(backend, "mse", 1), _net(backend, "mse", 1)
    a.fit(frame, y, epochs=2, batch_size=8, preprocess="auto", verbose=0)
    b.fit(frame, y, epochs=2, batch_size=8, preprocess="auto", device_data=False, verbose=0)
    assert a.metadata["target_scaling"] == b.metadata["target_scaling"]
    _close(a, b, backend)


def test_streamed_text_is_refused_as_in_memory(backend):
    X = RNG.normal(size=(8, 2))
    net = _net(backend)
    with pytest.raises(ValueError, match="X holds text"):
        net.fit(X.astype(str), np.zeros(8, int), device_data=False, verbose=0)
    with pytest.raises(ValueError, match="batch 0: X_b holds text"):
        net.fit([(X.astype(str), np.zeros(8, int))], verbose=0)


def test_in_memory_and_batch_checks_say_the_same(backend):
    """One set of checks: the same fault gives the same message, named by where it is."""
    X, y = RNG.normal(size=(6, 2)), np.array([0, 1, 2, 0, 1, 5])
    for fit, where in (
        (lambda net: net.fit(X, y, verbose=0), "y"),
        (lambda net: net.fit([(X, y)], verbose=0), "batch 0: y_b"),
    ):
        with pytest.raises(ValueError, match=rf"^{where} has label 5, but the network has 3 outputs"):
            fit(_net(backend))
    bad = X.copy()
    bad[4, 1] = np.nan
    for fit, where in (
        (lambda net: net.fit(bad, y % 3, verbose=0), "X"),
        (lambda net: net.fit([(bad, y % 3)], verbose=0), "batch 0: X_b"),
    ):
        with pytest.raises(ValueError, match=rf"^{where} contains NaN or infinity \(first at row 4\)"):
            fit(_net(backend))


@pytest.mark.parametrize("value", [np.zeros((3, 2)), [[1.0, 2.0]], (np.zeros((2, 2)), np.zeros(2))])
def test_arrays_lists_and_pairs_are_rows_not_batches(value):
    assert streams.kind_of(value) == "rows"


def test_every_kind_is_told_apart(tmp_path):
    X = np.zeros((4, 2))
    np.save(tmp_path / "x.npy", X)
    assert streams.kind_of(np.load(tmp_path / "x.npy", mmap_mode="r")) == "memmap"
    assert streams.kind_of(pd.DataFrame(X)) == "frame"
    assert streams.kind_of([(X, X[:, 0])]) == "batches"
    assert streams.kind_of(lambda: iter([(X, X[:, 0])])) == "batches"
    assert streams.kind_of(streams.ArraySource(X)) == "source"


@pytest.fixture(autouse=True)
def _keep_small_arrays(monkeypatch):
    monkeypatch.setattr(copies, "SMALLEST", 0)


def test_an_unchanged_host_array_is_not_copied_again_and_a_changed_one_is(backend):
    X = RNG.normal(size=(ROWS, 3))
    y = RNG.integers(0, 3, ROWS)
    net = _net(backend)
    net.fit(X, y, epochs=1, verbose=0)
    first = copies.features(net, X)
    if net._engine().separate_memory:  # where a device copy costs a copy (JAX, a GPU): kept
        assert copies.features(net, X) is first
    X[5, 1] += 1e-3  # changed in place: a kept copy is stale
    np.testing.assert_array_equal(xn.to_numpy(copies.features(net, X)), X)
    X[[0, 1]] = X[[1, 0]]  # rows swapped: the same values, in another order
    np.testing.assert_array_equal(xn.to_numpy(copies.features(net, X)), X)


def test_training_after_an_in_place_change_uses_the_new_values(backend):
    X = RNG.normal(size=(ROWS, 3))
    y = RNG.integers(0, 3, ROWS)
    a = _net(backend)
    a.fit(X, y, epochs=1, verbose=0)
    X *= 2.0
    a.fit(X, y, epochs=1, verbose=0)
    b = _net(backend)
    b.fit(X / 2.0, y, epochs=1, verbose=0)
    b.fit(X.copy(), y, epochs=1, verbose=0)
    _close(a, b, backend)


def test_a_kept_copy_goes_with_its_host_array(backend):
    X = RNG.normal(size=(ROWS, 3))
    net = _net(backend)
    net.fit(X, RNG.integers(0, 3, ROWS), epochs=1, verbose=0)
    assert len(net._copies._entries) == (1 if net._engine().separate_memory else 0)
    del X
    gc.collect()
    assert len(net._copies._entries) == 0

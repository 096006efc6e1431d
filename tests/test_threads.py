"""Thread safety: fit and predict share layer objects but no per-call arrays."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np

import xpnet as xn

RNG = np.random.default_rng(11)
X = RNG.normal(size=(240, 6))
LABELS = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)


def _net(backend, seed=0):
    return xn.Network(
        [xn.Dense(16, "relu", in_features=6), xn.Dropout(0.2), xn.Dense(3, "softmax")],
        loss="cross_entropy",
        optimizer=xn.Adam(0.01),
        backend=backend,
        dtype="float64",
        seed=seed,
    )


def _fit(net, epochs=6):
    net.fit(X, LABELS, epochs=epochs, batch_size=16, verbose=0)


def test_predicting_while_another_thread_fits_changes_nothing(backend):
    quiet = _net(backend)
    _fit(quiet)
    busy = _net(backend)
    outputs, errors = [], []
    done = threading.Event()

    def predict_until_done():
        try:
            while not done.is_set():
                outputs.append(xn.to_numpy(busy.predict(X[:50])))
        except Exception as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=predict_until_done)
    reader.start()
    try:
        _fit(busy)
    finally:
        done.set()
        reader.join()
    assert not errors
    assert outputs  # the reader ran alongside
    for got, want in zip(busy.get_weights(), quiet.get_weights()):
        np.testing.assert_array_equal(got, want)
    for out in outputs:  # every prediction is a probability table of the right shape
        assert out.shape == (50, 3) and np.all(np.isfinite(out))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(xn.to_numpy(busy.predict(X)), xn.to_numpy(quiet.predict(X)))


def test_two_networks_fitting_at_once_are_independent(backend):
    alone = [_net(backend, seed) for seed in (1, 2)]
    for net in alone:
        _fit(net, epochs=3)
    together = [_net(backend, seed) for seed in (1, 2)]
    threads = [threading.Thread(target=_fit, args=(net, 3)) for net in together]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a, b in zip(alone, together):
        for got, want in zip(b.get_weights(), a.get_weights()):
            np.testing.assert_array_equal(got, want)


def test_nothing_from_a_prediction_stays_referenced(backend):
    net = _net(backend)
    _fit(net, epochs=1)
    x = backend.asarray(X.copy(), "float64")  # the only reference is ours
    out = net.predict(x)
    refs = [weakref.ref(x), weakref.ref(out)]
    net.evaluate(x, LABELS)
    del x, out
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_layers_keep_only_their_parameters_after_fit_predict_and_evaluate(backend):
    net = _net(backend)
    before = [set(vars(layer)) for layer in net.layers]
    _fit(net, epochs=1)
    net.predict(X)
    net.evaluate(X, LABELS)
    assert [set(vars(layer)) for layer in net.layers] == before
    for layer in net.layers:
        arrays = {id(v) for v in list(layer.params.values()) + list(layer.state.values())}
        for name, value in vars(layer).items():
            if backend.owns(value):
                assert id(value) in arrays, f"{layer!r}.{name} holds an array"

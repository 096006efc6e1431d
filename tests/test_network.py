"""Network: the seeds' problems, real data, reproducibility across backends, inputs and errors."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn

PERCEPTRON_X = [[0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1], [0, 1, 0]]
PERCEPTRON_Y = [1, 0, 0, 1, 1, 0, 1]
XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([0, 1, 1, 0])


def _xor_net(backend, seed, dtype="float64"):
    return xn.Network(
        [xn.Dense(3, "tanh", in_features=2), xn.Dense(1, "sigmoid")],
        loss="logloss",
        optimizer=xn.SGD(0.5),
        backend=backend,
        dtype=dtype,
        seed=seed,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_sigmoid_neuron_learns_the_seven_rows(backend, seed):
    net = xn.Network(
        [xn.Dense(1, "sigmoid", in_features=3)],
        loss="logloss",
        optimizer=xn.SGD(1.0),
        backend=backend,
        seed=seed,
    )
    history = net.fit(PERCEPTRON_X, PERCEPTRON_Y, epochs=1000, batch_size=7, verbose=0)
    assert history.history["accuracy"][-1] == 1.0
    assert history.history["loss"][-1] < 0.1 < history.history["loss"][0]
    new = xn.to_numpy(net.predict([[1, 0, 0], [0, 1, 0]])).ravel()
    assert new[0] < 0.2 and new[1] > 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_2_3_1_converges(backend, seed):
    net = _xor_net(backend, seed)
    history = net.fit(XOR_X, XOR_Y, epochs=1500, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < 0.05
    np.testing.assert_array_equal(xn.to_numpy(net.predict(XOR_X)).ravel() > 0.5, XOR_Y == 1)


def test_digits_reach_95_percent_held_out(backend):
    datasets = pytest.importorskip("sklearn.datasets")
    selection = pytest.importorskip("sklearn.model_selection")
    X, y = datasets.load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = selection.train_test_split(
        X / 16.0, y, test_size=0.25, stratify=y, random_state=0
    )
    net = xn.Network(
        [xn.Dense(64, "relu"), xn.Dense(10, "softmax")],
        loss="cross_entropy",
        optimizer=xn.Adam(0.003),
        backend=backend,
        seed=0,
    )
    net.fit(X_train, y_train, epochs=15, batch_size=32, verbose=0)
    assert net.evaluate(X_test, y_test)["accuracy"] >= 0.95


def _reference_run(backend):
    rng = np.random.default_rng(123)
    X = rng.normal(size=(60, 5))
    y = rng.integers(0, 3, size=60)
    net = xn.Network(
        [
            xn.Dense(16, "relu", in_features=5),
            xn.Dropout(0.3),
            xn.Dense(8, "gelu"),
            xn.Dense(3, "softmax"),
        ],
        loss="cross_entropy",
        optimizer=xn.Adam(0.01),
        backend=backend,
        dtype="float64",
        seed=42,
    )
    initial = net.get_weights()
    net.fit(X, y, epochs=4, batch_size=16, shuffle=True, verbose=0)
    return initial, xn.to_numpy(net.predict(X)), net.get_weights()


def test_same_seed_same_run_on_every_backend(backend):
    initial, predictions, weights = _reference_run(backend)
    ref_initial, ref_predictions, ref_weights = _reference_run(xn.get_backend("numpy"))
    for got, want in zip(initial, ref_initial):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(predictions, ref_predictions, rtol=0, atol=1e-9)
    for got, want in zip(weights, ref_weights):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_initial_weights_follow_the_documented_schemes():
    net = xn.Network([xn.Dense(400, "relu", in_features=300), xn.Dense(200, "tanh")], seed=0, backend="numpy")
    w_relu, b_relu, w_tanh, _ = net.get_weights()
    assert np.abs(w_relu).max() <= np.sqrt(6 / 300) and np.abs(w_relu).max() > 0.95 * np.sqrt(6 / 300)
    assert np.abs(w_tanh).max() <= np.sqrt(6 / 600) and np.abs(w_tanh).max() > 0.95 * np.sqrt(6 / 600)
    assert not b_relu.any()


def test_seed_none_gives_fresh_weights():
    a = xn.Network([xn.Dense(3, in_features=2)], backend="numpy").get_weights()[0]
    b = xn.Network([xn.Dense(3, in_features=2)], backend="numpy").get_weights()[0]
    assert not np.array_equal(a, b)


def test_accepts_lists_pandas_and_other_backends_without_touching_them(backend):
    pd = pytest.importorskip("pandas")
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    y = np.array([1.0, 1.0, 0.0, 0.0])
    X_before, y_before = X.copy(), y.copy()
    results = []
    for X_in, y_in in [
        (X, y),
        (X.tolist(), y.tolist()),
        (pd.DataFrame(X, columns=["a", "b"]), pd.Series(y)),
        (backend.asarray(X, "float64"), backend.asarray(y, "float64")),
    ]:
        net = _xor_net(backend, seed=5)
        net.fit(X_in, y_in, epochs=3, batch_size=2, verbose=0)
        results.append(xn.to_numpy(net.predict(X)))
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], rtol=1e-12)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


def test_float32_by_default(backend, xp):
    net = xn.Network([xn.Dense(2, in_features=3)], backend=backend, seed=0)
    out = net.predict(np.ones((4, 3)))
    assert out.dtype == xp.float32 and tuple(out.shape) == (4, 2)


def test_predict_in_batches_equals_predict_at_once(backend):
    net = xn.Network(
        [xn.Dense(4, "tanh", in_features=3), xn.Dense(2)], backend=backend, dtype="float64", seed=0
    )
    X = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(
        xn.to_numpy(net.predict(X, batch_size=3)), xn.to_numpy(net.predict(X)), rtol=1e-13
    )


def test_validation_data_and_history(backend):
    net = _xor_net(backend, seed=0)
    history = net.fit(XOR_X, XOR_Y, epochs=3, batch_size=2, validation_data=(XOR_X, XOR_Y), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2] and all(len(v) == 3 for v in history.history.values())
    assert net.evaluate(XOR_X, XOR_Y)["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-12)


def test_evaluate_in_batches_matches(backend):
    net = _xor_net(backend, seed=0)
    assert net.evaluate(XOR_X, XOR_Y, batch_size=3)["loss"] == pytest.approx(
        net.evaluate(XOR_X, XOR_Y)["loss"], rel=1e-12
    )


def test_linear_output_with_cross_entropy_takes_logits(backend):
    net = xn.Network(
        [xn.Dense(3, in_features=2)], loss="cross_entropy", backend=backend, dtype="float64", seed=0
    )
    X = np.array([[1.0, 2.0], [-1.0, 0.5]])
    logits = xn.to_numpy(net.predict(X))
    probs = xn.to_numpy(net.predict_proba(X))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    loss = net.evaluate(X, [0, 2])["loss"]
    assert loss == pytest.approx(-np.mean(np.log(expected[[0, 1], [0, 2]])), rel=1e-12)


def test_one_hot_targets_equal_integer_labels(backend):
    X = np.random.default_rng(1).normal(size=(6, 2))
    labels = np.array([0, 1, 2, 2, 1, 0])

    def make():
        return xn.Network(
            [xn.Dense(3, "softmax", in_features=2)],
            loss="cross_entropy",
            backend=backend,
            dtype="float64",
            seed=0,
        )

    a, b = make(), make()
    a.fit(X, labels, epochs=2, batch_size=3, verbose=0)
    b.fit(X, np.eye(3)[labels], epochs=2, batch_size=3, verbose=0)
    np.testing.assert_allclose(xn.to_numpy(a.predict(X)), xn.to_numpy(b.predict(X)), rtol=1e-12)


def test_move_to_another_backend_mid_training(backend):
    X = np.random.default_rng(2).normal(size=(20, 3))
    y = X @ np.array([1.0, -2.0, 0.5])

    def make():
        return xn.Network(
            [xn.Dense(4, "tanh", in_features=3), xn.Dense(1)],
            optimizer=xn.Adam(0.05),
            backend="numpy",
            dtype="float64",
            seed=9,
        )

    straight = make()
    straight.fit(X, y, epochs=4, batch_size=5, verbose=0)
    moved = make()
    moved.fit(X, y, epochs=2, batch_size=5, verbose=0)
    assert moved.to(backend) is moved and moved.backend == backend
    moved.fit(X, y, epochs=2, batch_size=5, verbose=0)
    np.testing.assert_allclose(xn.to_numpy(moved.predict(X)), xn.to_numpy(straight.predict(X)), atol=1e-10)


def test_a_callback_can_stop_training(backend):
    class StopAfterTwo:
        def on_epoch_end(self, net, epoch, logs):
            if epoch == 1:
                net.stop_training = True

    history = _xor_net(backend, 0).fit(
        XOR_X, XOR_Y, epochs=10, batch_size=4, callbacks=[StopAfterTwo()], verbose=0
    )
    assert len(history.epoch) == 2


def test_summary_names_layers_counts_and_backend(backend):
    net = xn.Network(
        [xn.Dense(3, "tanh", in_features=2), xn.Dropout(0.1), xn.Dense(1, "sigmoid")],
        backend=backend,
        seed=0,
    )
    text = net.summary(print_fn=None)
    for part in (
        "Dense",
        "Dropout",
        "(None, 3)",
        "(None, 1)",
        "Total params: 13",
        backend.name,
        "float32",
    ):
        assert part in text


def test_non_finite_loss_stops_with_the_epoch_and_keeps_history(backend):
    X = np.linspace(-50, 50, 40).reshape(-1, 1)
    net = xn.Network([xn.Dense(1, in_features=1)], optimizer=xn.SGD(10.0), backend=backend, seed=0)
    with (
        pytest.raises(FloatingPointError, match=r"became (nan|inf) in epoch \d+") as info,
        np.errstate(all="ignore"),
    ):
        net.fit(X, X * 3, epochs=50, batch_size=8, verbose=0)
    epochs = len(net.history.epoch)
    assert 1 <= epochs < 50 and f"epoch {epochs}" in str(info.value)
    assert not np.isfinite(net.history.history["loss"][-1])


# -- errors at the boundary -------------------------------------------------------------


@pytest.fixture
def clf(backend):
    return xn.Network([xn.Dense(3, "softmax", in_features=2)], loss="cross_entropy", backend=backend, seed=0)


def test_nan_in_features_is_refused(clf):
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at row 1\)"):
        clf.fit([[0.0, 1.0], [np.nan, 1.0]], [0, 1], verbose=0)


def test_inf_in_targets_is_refused(backend):
    net = xn.Network([xn.Dense(1, in_features=2)], backend=backend)
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        net.fit([[0.0, 1.0], [1.0, 1.0]], [0.0, np.inf], verbose=0)


def test_mismatched_lengths_are_refused(clf):
    with pytest.raises(ValueError, match="X has 3 samples but y has 2 samples"):
        clf.fit(np.zeros((3, 2)), [0, 1], verbose=0)


def test_wrong_feature_count_names_both_numbers(clf):
    with pytest.raises(ValueError, match="X has 5 features, but the network expects 2"):
        clf.predict(np.zeros((3, 5)))


def test_labels_out_of_range_are_refused(clf):
    with pytest.raises(
        ValueError, match=r"label 3, but the network has 3 outputs: labels must be in \[0, 3\)"
    ):
        clf.fit(np.zeros((2, 2)), [0, 3], verbose=0)
    with pytest.raises(ValueError, match="label -1"):
        clf.fit(np.zeros((2, 2)), [0, -1], verbose=0)
    with pytest.raises(ValueError, match="integer class labels"):
        clf.fit(np.zeros((2, 2)), [0.5, 1.0], verbose=0)


def test_binary_targets_outside_unit_interval_are_refused(backend):
    with pytest.raises(ValueError, match=r"targets in \[0, 1\]"):
        _xor_net(backend, 0).fit(XOR_X, [0, 2, 1, 0], verbose=0)


def test_empty_and_one_dimensional_inputs_are_refused(clf):
    with pytest.raises(ValueError, match="X is empty"):
        clf.fit(np.zeros((0, 2)), [], verbose=0)
    with pytest.raises(ValueError, match=r"2-D \(samples, features\).*reshape\(-1, 1\)"):
        clf.predict(np.zeros(4))


def test_non_numeric_columns_are_named():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"age": [1.0, 2.0], "city": ["a", "b"]})
    net = xn.Network([xn.Dense(1)], backend="numpy")
    with pytest.raises(ValueError, match=r"non-numeric columns \['city'\]"):
        net.fit(frame, [0.0, 1.0], verbose=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"epochs": -1}, "epochs must be a non-negative integer"),
        ({"verbose": 3}, "verbose must be 0, 1 or 2"),
        ({"validation_data": np.zeros((2, 2))}, "validation_data must be a pair"),
    ],
)
def test_invalid_fit_arguments_are_refused(clf, kwargs, message):
    with pytest.raises(ValueError, match=message):
        clf.fit(np.zeros((2, 2)), [0, 1], **{"verbose": 0, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "hinge"}, "unknown loss"),
        ({"optimizer": "adagrad"}, "unknown optimizer"),
        ({"backend": "tensorflow"}, "unknown backend"),
        ({"dtype": "float16"}, r"dtype must be one of .*'mixed_float16'\]"),
        ({"dtype": "int8"}, "dtype must be one of"),
    ],
)
def test_unknown_names_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        xn.Network([xn.Dense(1)], **kwargs)


def test_layers_must_be_layers():
    with pytest.raises(ValueError, match="at least one layer"):
        xn.Network([])
    with pytest.raises(TypeError, match="xpnet Layer objects"):
        xn.Network(["dense"])


def test_network_pickles_with_its_backend(backend):
    import pickle

    net = _xor_net(backend, 0)
    net.fit(XOR_X, XOR_Y, epochs=2, batch_size=2, verbose=0)
    again = pickle.loads(pickle.dumps(net))
    assert again.backend == backend
    np.testing.assert_array_equal(xn.to_numpy(again.predict(XOR_X)), xn.to_numpy(net.predict(XOR_X)))


def test_moving_never_shares_memory_with_the_old_backend(backend):
    net = _xor_net(backend, 0)
    net.fit(XOR_X, XOR_Y, epochs=1, batch_size=4, verbose=0)
    old = [xn.to_numpy(p).copy() for p in net.layers[0].params.values()]
    old_arrays = list(net.layers[0].params.values())
    net.to("numpy")
    net.fit(XOR_X, XOR_Y, epochs=3, batch_size=4, verbose=0)
    for before, array in zip(old, old_arrays):
        np.testing.assert_array_equal(xn.to_numpy(array), before)

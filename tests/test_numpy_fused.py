"""The fused NumPy loop (xpnet.engine.numpy_engine) equals the generic step, and runs where it should."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.engine import numpy_tally
from xpnet.engine.numpy_engine import NumpyFusedRunner
from xpnet.engine.plan import plan_of
from xpnet.train import callbacks

RNG = np.random.default_rng(21)
X = RNG.normal(size=(45, 5))
LABELS = RNG.integers(0, 3, size=45)
BINARY = (RNG.random((45, 2)) > 0.5).astype(float)
REAL = RNG.normal(size=(45, 2))
WEIGHTS = RNG.random(45) * (RNG.random(45) > 0.2)  # some rows weigh 0

CASES = {
    "softmax-labels-dropout": (
        lambda: [
            xn.Dense(12, "relu", in_features=5),
            xn.Dropout(0.25),
            xn.Dense(6, "tanh"),
            xn.Dense(3, "softmax"),
        ],
        lambda: "cross_entropy",
        LABELS,
    ),
    "logits-onehot-smoothing": (
        lambda: [xn.Dense(7, "leaky_relu", in_features=5), xn.Dense(3)],
        lambda: xn.CategoricalCrossentropy(label_smoothing=0.1),
        np.eye(3)[LABELS],
    ),
    "softmax-labels-smoothing": (
        lambda: [xn.Dense(6, "sigmoid", in_features=5), xn.Dense(3, "softmax")],
        lambda: xn.CategoricalCrossentropy(label_smoothing=0.2),
        LABELS,
    ),
    "sigmoid-binary-input-dropout": (
        lambda: [xn.Dropout(0.1), xn.Dense(4, "sigmoid", in_features=5), xn.Dense(2, "sigmoid")],
        lambda: "logloss",
        BINARY,
    ),
    "logits-binary-no-bias": (
        lambda: [xn.Dense(4, "relu", in_features=5, use_bias=False), xn.Dense(2)],
        lambda: "logloss",
        BINARY,
    ),
    "mse-sigmoid": (
        lambda: [xn.Dense(8, "tanh", in_features=5), xn.Dense(2, "sigmoid")],
        lambda: "mse",
        0.8 * BINARY + 0.1,
    ),
    "mse-linear-dropout": (
        lambda: [xn.Dense(8, "relu", in_features=5), xn.Dropout(0.3), xn.Dense(2)],
        lambda: "mse",
        REAL,
    ),
}
OPTIMIZERS = {
    "sgd": lambda: xn.SGD(0.1),
    "momentum": lambda: xn.SGD(0.05, momentum=0.9, weight_decay=0.01),
    "adam": lambda: xn.Adam(0.01),
}


def _net(case, optimizer, compile, dtype="float64"):
    layers, loss, _ = CASES[case]
    return xn.Network(
        layers(),
        loss=loss(),
        optimizer=OPTIMIZERS[optimizer](),
        backend="numpy",
        dtype=dtype,
        seed=3,
        compile=compile,
    )


@pytest.fixture
def fused_only(monkeypatch):
    """Fails a test whose fused runner hands a call to the generic step."""

    def generic(self, *args):
        raise AssertionError("the fused runner fell back to the generic step")

    monkeypatch.setattr(NumpyFusedRunner, "_run", generic)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("case", list(CASES))
def test_fused_equals_the_generic_step(case, optimizer, fused_only):
    # 45 rows in batches of 8: a partial last batch; sample weights with zeros; shuffled or not
    for weighted in (False, True):
        for shuffle in (True, False):
            fast, plain = _net(case, optimizer, None), _net(case, optimizer, False)
            options = {"epochs": 3, "batch_size": 8, "verbose": 0, "shuffle": shuffle}
            options["sample_weight"] = WEIGHTS if weighted else None
            h_fast = fast.fit(X, CASES[case][2], **options)
            h_plain = plain.fit(X, CASES[case][2], **options)
            assert isinstance(fast._runner(), NumpyFusedRunner) and fast._runner().plan is not None
            for got, want in zip(fast.get_weights(), plain.get_weights()):
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)
            np.testing.assert_allclose(h_fast.history["loss"], h_plain.history["loss"], rtol=1e-12)
            assert h_fast.history.get("accuracy") == h_plain.history.get("accuracy")
            assert fast.optimizer.iterations == plain.optimizer.iterations == 18
            assert fast.rng.random() == plain.rng.random()  # the same shuffles and masks were drawn
            for key, state in plain.optimizer.state.items():
                for name, value in state.items():
                    np.testing.assert_allclose(fast.optimizer.state[key][name], value, rtol=0, atol=1e-13)


def test_float32_fused_equals_the_generic_step_to_float32_rounding(fused_only):
    fast, plain = (_net("softmax-labels-dropout", "sgd", c, "float32") for c in (None, False))
    h_fast = fast.fit(X, LABELS, epochs=3, batch_size=8, verbose=0)
    h_plain = plain.fit(X, LABELS, epochs=3, batch_size=8, verbose=0)
    for got, want in zip(fast.get_weights(), plain.get_weights()):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_fast.history["loss"], h_plain.history["loss"], rtol=1e-5)


@pytest.mark.parametrize("tally_rows", [1, 100, numpy_tally.TALLY_ROWS], ids=["per-step", "flushed", "bulk"])
@pytest.mark.parametrize(
    "case", ["softmax-labels-dropout", "logits-onehot-smoothing", "sigmoid-binary-input-dropout"]
)
def test_accuracy_counted_per_step_or_in_bulk_is_the_generic_count(case, tally_rows, monkeypatch):
    # 100 rows of tally hold two epochs of 45: the counts are taken in two flushes and a last one
    monkeypatch.setattr(numpy_tally, "TALLY_ROWS", tally_rows)
    for shuffle in (True, False):
        fast, plain = _net(case, "sgd", None), _net(case, "sgd", False)
        options = {"epochs": 5, "batch_size": 8, "verbose": 0, "shuffle": shuffle, "sample_weight": WEIGHTS}
        accuracy = fast.fit(X, CASES[case][2], **options).history["accuracy"]
        assert accuracy == plain.fit(X, CASES[case][2], **options).history["accuracy"]
        assert len(set(accuracy)) > 1  # the counts change between epochs: each is its own


def test_epochs_one_call_each_equal_fused_epochs(fused_only):
    # a callback makes fit run one epoch per call (run); without one the epochs fuse (run_epochs)
    fused, single = (_net("sigmoid-binary-input-dropout", "adam", None) for _ in range(2))
    a = fused.fit(X, BINARY, epochs=4, batch_size=8, verbose=0)
    stopper = xn.EarlyStopping(monitor="loss", patience=99)
    b = single.fit(X, BINARY, epochs=4, batch_size=8, verbose=0, callbacks=[stopper])
    assert a.history == b.history
    for got, want in zip(fused.get_weights(), single.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_train_step_uses_the_fused_loop_and_returns_the_batch_loss(fused_only):
    fast, plain = (
        _net("softmax-labels-dropout", "momentum", None),
        _net("softmax-labels-dropout", "momentum", False),
    )
    for net in (fast, plain):
        net.build(5)
    x = X[:16]
    y = LABELS[:16].astype(np.int32)
    loss_fast, correct_fast = fast.train_step(x, y)
    loss_plain, correct_plain = plain.train_step(x, y)
    assert float(loss_fast) == pytest.approx(float(loss_plain), rel=1e-12)
    assert float(correct_fast) == float(correct_plain)
    for got, want in zip(fast.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_targets_the_loop_does_not_take_run_the_generic_step():
    # 1-d float targets of a sigmoid output: the generic loss reshapes them, so the generic step runs
    def net(compile):
        layers = [xn.Dense(4, "tanh", in_features=5), xn.Dense(1, "sigmoid")]
        return xn.Network(layers, loss="logloss", backend="numpy", dtype="float64", seed=1, compile=compile)

    fast, plain = net(None), net(False)
    t = BINARY[:16, 0]
    assert float(fast.train_step(X[:16], t)[0]) == float(plain.train_step(X[:16], t)[0])
    for got, want in zip(fast.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_labels_outside_the_outputs_run_the_generic_step():
    # train_step does not check its labels: the generic one-hot of label 3 (of 3 outputs) is all zero
    fast, plain = (
        _net("softmax-labels-smoothing", "sgd", None),
        _net("softmax-labels-smoothing", "sgd", False),
    )
    labels = np.array([0, 3, 1, 2], np.int32)
    for net in (fast, plain):
        net.build(5)
        net.train_step(X[:4], labels)
    for got, want in zip(fast.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(got, want)


UNCOVERED = {
    "activation-layer": (
        [xn.Dense(4, in_features=5), xn.Activation("tanh"), xn.Dense(3, "softmax")],
        "cross_entropy",
        {},
    ),
    "gelu": ([xn.Dense(4, "gelu", in_features=5), xn.Dense(3, "softmax")], "cross_entropy", {}),
    "huber": ([xn.Dense(4, "relu", in_features=5), xn.Dense(3)], "huber", {}),
    "relu-output-logloss": ([xn.Dense(4, "tanh", in_features=5), xn.Dense(3, "relu")], "logloss", {}),
    "clipping": (
        [xn.Dense(4, "relu", in_features=5), xn.Dense(3, "softmax")],
        "cross_entropy",
        {"clip_norm": 1.0},
    ),
}


@pytest.mark.parametrize("case", list(UNCOVERED))
def test_what_the_loop_does_not_cover_runs_the_generic_step(case):
    layers, loss, clip = UNCOVERED[case]
    net = xn.Network(
        layers, loss=loss, optimizer=xn.SGD(0.1, **clip), backend="numpy", dtype="float64", seed=0
    )
    plan = plan_of(net._model())
    assert plan is None or not plan.dense_only  # an Activation layer: in the fused GPU runner's plan only
    y = LABELS if loss == "cross_entropy" else np.abs(REAL[:, :1]).repeat(3, axis=1) / 3
    net.fit(X, y, epochs=2, batch_size=8, verbose=0)  # the runner's generic step
    assert isinstance(net._runner(), NumpyFusedRunner) and net._runner().plan is None


def test_the_benchmarked_networks_take_the_fused_loop_with_sgd_folded():
    # benchmarks/speed.py's mnist and tiny shapes (smaller): a fused plan whose SGD needs no update rule
    mnist = xn.Network(
        [xn.Dense(16, "relu", in_features=8), xn.Dense(8, "relu"), xn.Dense(4, "softmax")],
        loss="cross_entropy",
        optimizer=xn.SGD(0.1),
        backend="numpy",
    )
    tiny = xn.Network(
        [xn.Dense(3, "tanh", in_features=2), xn.Dense(1, "sigmoid")],
        loss="logloss",
        optimizer=xn.SGD(0.5),
        backend="numpy",
    )
    for net in (mnist, tiny):
        plan = plan_of(net._model())
        assert plan is not None and plan.update is None and plan.from_logits


def test_a_diverging_run_stops_after_the_same_epoch_as_the_generic_step():
    def run(compile):
        net = xn.Network(
            [xn.Dense(4, "relu", in_features=5), xn.Dense(2)],
            loss="mse",
            optimizer=xn.SGD(5.0),
            backend="numpy",
            dtype="float64",
            seed=0,
            compile=compile,
        )
        with np.errstate(all="ignore"):
            history = net.fit(
                X * 10,
                REAL,
                epochs=40,
                batch_size=8,
                verbose=0,
                callbacks=[xn.TerminateOnNaN(raise_error=False)],
            )
        return history.history["loss"]

    fast, plain = run(None), run(False)
    assert len(fast) == len(plain) < 40
    assert not np.isfinite(fast[-1]) and not np.isfinite(plain[-1])
    np.testing.assert_allclose(fast[:-2], plain[:-2], rtol=1e-6)


def test_fused_epochs_check_the_parameters_once(monkeypatch, capsys):
    calls = []
    real = callbacks.parameters_finite
    monkeypatch.setattr(callbacks, "parameters_finite", lambda net: calls.append(1) or real(net))
    net = _net("softmax-labels-dropout", "sgd", None)
    net.fit(X, LABELS, epochs=30, batch_size=64, verbose=0)  # fused: the same final parameters 30 times
    assert len(calls) == 1
    net.fit(X, LABELS, epochs=5, batch_size=64, verbose=2)  # one epoch at a time: each its own
    assert len(calls) == 6
    capsys.readouterr()

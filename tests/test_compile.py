"""How backends run the pure functions: fused epochs, their host draws, and the compiled forward pass."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import xpnet as xn
from xpnet.engine import step
from xpnet.engine.epochs import EpochPlan
from xpnet.engine.jax_engine import padded_rows

RNG = np.random.default_rng(5)
X = RNG.normal(size=(45, 5))
LABELS = RNG.integers(0, 3, size=45)


def _net(backend, compile=None, seed=3):
    return xn.Network(
        [xn.Dense(12, "relu", in_features=5), xn.Dense(6, "tanh"), xn.Dense(3, "softmax")],
        loss="cross_entropy",
        optimizer=xn.SGD(0.1, momentum=0.9),
        backend=backend,
        dtype="float64",
        seed=seed,
        compile=compile,
    )


class Passive(xn.Callback):
    """Any callback makes fit return to Python after every epoch."""


# -- fused epochs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 2, 5, 64, 1000])
def test_one_draw_of_many_shuffles_equals_one_permutation_per_epoch(rows):
    plan_rng, loop_rng = np.random.default_rng(9), np.random.default_rng(9)
    plan = EpochPlan(np.zeros((rows, 1)), np.zeros(rows), None, 4, True, plan_rng, None, 1, 0.1)
    orders = plan.orders(7)
    np.testing.assert_array_equal(orders, [loop_rng.permutation(rows) for _ in range(7)])
    assert plan_rng.random() == loop_rng.random()  # the generators stand at the same place


def test_fused_epochs_record_the_history_of_epoch_by_epoch_training(backend):
    fused, stepped = _net(backend), _net(backend)
    for epochs in (3, 4):  # the second call continues the epoch numbers
        h_fused = fused.fit(X, LABELS, epochs=epochs, batch_size=8, verbose=0)
        h_stepped = stepped.fit(X, LABELS, epochs=epochs, batch_size=8, verbose=0, callbacks=[Passive()])
        assert h_fused.epoch == h_stepped.epoch
        assert h_fused.history["accuracy"] == h_stepped.history["accuracy"]
    assert fused.history.epoch == stepped.history.epoch == list(range(7))
    assert list(fused.history.history) == list(stepped.history.history) == ["loss", "accuracy"]
    np.testing.assert_allclose(fused.history.history["loss"], stepped.history.history["loss"], rtol=1e-12)
    assert fused.rng.random() == stepped.rng.random()


def test_fused_epochs_stop_with_the_epoch_whose_parameters_blew_up(backend):
    def exploding(callbacks):
        """A finite first loss, then every weight overflows (float32)."""
        net = xn.Network([xn.Dense(1, in_features=1)], optimizer=xn.SGD(1e38), backend=backend, seed=0)
        with np.errstate(all="ignore"):
            net.fit([[1.0], [2.0]], [3.0, 5.0], epochs=4, batch_size=2, verbose=0, callbacks=callbacks)
        return net

    fused = exploding([xn.TerminateOnNaN(raise_error=False)])
    stepped = exploding([xn.TerminateOnNaN(raise_error=False), Passive()])
    assert fused.epoch == stepped.epoch == 1 and fused.stop_training
    assert fused.optimizer.iterations == stepped.optimizer.iterations == 1  # no later epoch ran
    assert np.isfinite(fused.history.history["loss"]).all()
    for got, want in zip(fused.get_weights(), stepped.get_weights()):
        assert not np.isfinite(got).all()
        np.testing.assert_array_equal(got, want)


# -- the compiled forward pass ---------------------------------------------------------------------------


def test_padded_row_counts_are_few_and_tight():
    sizes = [padded_rows(n) for n in range(1, 5000)]
    for n, size in enumerate(sizes, start=1):
        assert n <= size < 1.25 * n or size == n
        assert padded_rows(size) == size
    for k in range(3, 12):  # at most eight sizes between consecutive powers of two
        assert len({s for s in sizes if 2**k < s <= 2 ** (k + 1)}) <= 8


def test_compiled_predict_and_evaluate_equal_eager(backend):
    compiled, eager = _net(backend), _net(backend, compile=False)
    for rows in (13, 45):  # 13 rows are padded to 14 when compiled
        got, want = xn.to_numpy(compiled.predict(X[:rows])), xn.to_numpy(eager.predict(X[:rows]))
        assert got.shape == (rows, 3)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    got = xn.to_numpy(compiled.predict(X, batch_size=10))
    np.testing.assert_allclose(got, xn.to_numpy(eager.predict(X)), rtol=1e-12, atol=1e-15)
    scores, expected = compiled.evaluate(X, LABELS, batch_size=16), eager.evaluate(X, LABELS, batch_size=16)
    assert scores["accuracy"] == expected["accuracy"]
    np.testing.assert_allclose(scores["loss"], expected["loss"], rtol=1e-12)


def test_predictions_from_many_threads_at_once_equal_one_at_a_time(backend):
    net = _net(backend)
    sizes = (3, 13, 30, 45)
    alone = {n: xn.to_numpy(net.predict(X[:n])) for n in sizes}
    results, errors = [], []

    def predict(n):
        try:
            for _ in range(10):
                results.append((n, xn.to_numpy(net.predict(X[:n]))))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=predict, args=(n,)) for n in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 40
    for n, out in results:
        np.testing.assert_array_equal(out, alone[n])


def test_jax_predict_compiles_once_per_padded_row_count(monkeypatch):
    pytest.importorskip("jax")
    traced = []
    forward = step.forward

    def counting(*args, **kwargs):
        traced.append(args[3].shape[0])  # runs when jax traces, not when it replays
        return forward(*args, **kwargs)

    monkeypatch.setattr(step, "forward", counting)
    net = _net("jax")
    for rows in (100, 105, 112, 120, 128, 129, 150, 120):
        assert net.predict(np.ones((rows, 5))).shape == (rows, 3)
    assert traced == [112, 128, 160]

"""The fused runner's loop (xpnet.engine.fused: flat buffers, device-resident inputs, one update,
recorded epochs) equals the generic step, on NumPy's reference kernels; the GPU tests run it on CuPy's."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.engine import cache, fused, fused_updates
from xpnet.engine.flat import ALIGN, Packing
from xpnet.engine.fused import FusedRunner
from xpnet.engine.fused_numpy import NumpyKernels
from xpnet.engine.numpy_engine import NumpyEngine
from xpnet.engine.plan import plan_of

RNG = np.random.default_rng(8)
X = RNG.normal(size=(45, 5))
LABELS = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
OPTIMIZERS = {
    "sgd": lambda: xn.SGD(0.1),
    "momentum": lambda: xn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "dampened": lambda: xn.SGD(0.05, momentum=0.8, dampening=0.3),
    "adam": lambda: xn.Adam(0.01, weight_decay=0.001),
    "adamw": lambda: xn.AdamW(0.01),
    "rmsprop": lambda: xn.RMSprop(0.005, momentum=0.5, centered=True),
}


def count_fused_epochs(monkeypatch):
    """A list that gets an entry for every fused epoch (``Session.epoch``) run from now on."""
    epochs = []
    plain = fused.Session.epoch

    def counted(session, epoch):
        epochs.append(1)
        return plain(session, epoch)

    monkeypatch.setattr(fused.Session, "epoch", counted)
    return epochs


def on_reference_kernels(monkeypatch):
    """NumPy's engine made to run the fused runner on the reference kernels (the engine cache
    cleared); a list counting its fused epochs."""

    def runner(engine, model):
        return FusedRunner(engine.backend, engine._step_function(model), plan_of(model), NumpyKernels)

    cache.clear()
    monkeypatch.setattr(NumpyEngine, "_runner", runner)
    return count_fused_epochs(monkeypatch)


@pytest.fixture
def fused_numpy(monkeypatch):
    """NumPy's engine running the fused runner on the reference kernels, counting its fused epochs."""
    yield on_reference_kernels(monkeypatch)
    cache.clear()


def _net(loss="cross_entropy", optimizer="sgd", dropout=0.0, dtype="float64", compile=None, out=3):
    act = {"cross_entropy": "softmax", "logloss": "sigmoid", "mse": "tanh"}[loss]
    layers = [xn.Dense(7, "relu", in_features=5), xn.Dense(6, "tanh")]
    if dropout:
        layers.append(xn.Dropout(dropout))
    layers.append(xn.Dense(out, act))
    return xn.Network(
        layers,
        loss=loss,
        optimizer=OPTIMIZERS[optimizer](),
        backend="numpy",
        dtype=dtype,
        seed=2,
        compile=compile,
    )


def _targets(loss, out=3):
    if loss == "cross_entropy":
        return LABELS
    if loss == "logloss":
        return (X[:, :out] > 0).astype(float)
    return np.tanh(X[:, :out])


def _same(fused, generic, hf, hg, tolerance=1e-12):
    for p, q in zip(fused.get_weights(), generic.get_weights()):
        np.testing.assert_allclose(p, q, rtol=0, atol=tolerance)
    for key in hg:
        np.testing.assert_allclose(hf[key], hg[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("loss", ["cross_entropy", "logloss", "mse"])
def test_fused_epochs_equal_the_generic_step(fused_numpy, loss, optimizer):
    fused, generic = _net(loss, optimizer), _net(loss, optimizer, compile=False)
    y = _targets(loss)
    hf = fused.fit(X, y, epochs=3, batch_size=8, verbose=0).history  # 45 rows: a padded last batch
    hg = generic.fit(X, y, epochs=3, batch_size=8, verbose=0).history
    assert sum(fused_numpy) == 3
    _same(fused, generic, hf, hg)
    assert fused.optimizer.iterations == generic.optimizer.iterations == 18


def test_dropout_sample_weights_smoothing_and_one_hot_targets(fused_numpy):
    w = RNG.uniform(0.0, 2.0, len(X))
    w[:9] = 0.0  # the first batch weighs nothing
    loss = xn.CategoricalCrossentropy(label_smoothing=0.1)
    one_hot = np.eye(3)[LABELS]
    nets = []
    for compile in (None, False):
        net = _net("cross_entropy", "adam", dropout=0.3, compile=compile)
        net.loss = loss
        nets.append((net, net.fit(X, one_hot, sample_weight=w, epochs=3, batch_size=9, verbose=0).history))
    assert sum(fused_numpy) == 3
    _same(nets[0][0], nets[1][0], nets[0][1], nets[1][1])


def test_the_layers_hold_views_of_the_flat_buffers_and_keep_them(fused_numpy):
    net = _net()
    net.fit(X, LABELS, epochs=2, batch_size=8, verbose=0)
    weight = net.layers[0].weight
    assert weight.base is not None  # a view
    net.fit(X, LABELS, epochs=1, batch_size=8, verbose=0)
    assert net.layers[0].weight is weight  # the same session: nothing copied in again
    net.layers[0].weight = np.zeros((5, 7))  # assigned: the next call packs it
    net.fit(X, LABELS, epochs=1, batch_size=8, verbose=0)
    assert net.layers[0].weight is not weight


def test_float32_epochs_equal_the_generic_step(fused_numpy):
    fused, generic = _net(dtype="float32"), _net(dtype="float32", compile=False)
    hf = fused.fit(X, LABELS, epochs=3, batch_size=16, verbose=0).history
    hg = generic.fit(X, LABELS, epochs=3, batch_size=16, verbose=0).history
    for p, q in zip(fused.get_weights(), generic.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hf["loss"], hg["loss"], rtol=1e-5)


def test_what_the_plan_does_not_cover_runs_the_generic_step(fused_numpy):
    net = xn.Network(
        [xn.Dense(4, "gelu", in_features=5), xn.BatchNormalization(), xn.Dense(3, "softmax")],
        loss="cross_entropy",
        backend="numpy",
        seed=1,
    )
    net.fit(X, LABELS, epochs=2, verbose=0)
    assert fused_numpy == []  # no fused epoch ran
    clipped = _net()
    clipped.optimizer.clip_norm = 1.0
    clipped.fit(X, LABELS, epochs=1, verbose=0)
    assert fused_numpy == []


def test_a_divergent_run_stops_at_its_first_non_finite_epoch(fused_numpy):
    runs = []
    for compile in (None, False):
        net = xn.Network(
            [xn.Dense(7, "relu", in_features=5), xn.Dense(3)],
            loss="mse",
            optimizer=xn.SGD(2.0),
            backend="numpy",
            dtype="float64",
            seed=2,
            compile=compile,
        )
        history = net.fit(
            X,
            X[:, :3] * 1e3,
            epochs=8,
            batch_size=8,
            verbose=0,
            callbacks=[xn.TerminateOnNaN(raise_error=False)],
        )
        runs.append(history.history["loss"])
    assert len(runs[0]) == len(runs[1]) < 8
    assert not np.isfinite(runs[0][-1])


def test_packing_aligns_every_array_and_keeps_the_state():
    params = [{"weight": np.ones((3, 2)), "bias": np.zeros(2)}, {}, {"weight": np.full((2, 1), 2.0)}]
    packing = Packing(params, {"0.weight": {"exp_avg": np.full((3, 2), 5.0)}}, ["exp_avg", "exp_avg_sq"])
    assert [slot.offset % ALIGN for slot in packing.slots] == [0, 0, 0]
    np.testing.assert_array_equal(packing.params[2]["weight"], params[2]["weight"])
    assert packing.opt_state["0.weight"]["exp_avg"].sum() == 30.0
    assert packing.opt_state["0.bias"]["exp_avg_sq"].sum() == 0.0
    assert packing.holds(packing.params, packing.opt_state) and not packing.holds(params, {})


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_fused_update_is_written_for_the_gpu(name):
    spec = plan_of(_net(optimizer=name)._model()).optimizer
    inputs, outputs, body = fused_updates.cuda_source(spec)
    assert inputs == "T g, raw T lr, raw T step"
    assert outputs.split(", ")[0] == "T p" and "p = p - " in body
    assert all(f"T {key}" in outputs for key in fused_updates.state_keys(spec))


def test_a_dropout_of_rate_zero_is_the_identity(fused_numpy):
    nets = []
    for compile in (None, False):  # Dropout(0) draws no mask: the fused runner must not multiply by one
        layers = [xn.Dense(7, "relu", in_features=5), xn.Dropout(0.0), xn.Dense(3, "softmax")]
        net = xn.Network(
            layers,
            loss="cross_entropy",
            optimizer=xn.Adam(0.01),
            backend="numpy",
            dtype="float64",
            seed=2,
            compile=compile,
        )
        net.fit(X, LABELS, epochs=3, batch_size=8, verbose=0)
        nets.append(net)
    assert sum(fused_numpy) == 3
    _same(nets[0], nets[1], {}, {})

"""The CuPy engine's fused runner on a GPU: its kernels equal NumPy's reference kernels, its epochs the
generic step, a recorded (CUDA graph) epoch the same kernels run one by one, bit for bit.

These run with ``--backend cupy`` on a machine with a CUDA device (docs/gpu.md); elsewhere they skip.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_fused import count_fused_epochs

import xpnet as xn
from xpnet.engine import cache
from xpnet.engine.cupy_engine import CupyEngine
from xpnet.engine.fused import FusedRunner
from xpnet.engine.fused_numpy import NumpyKernels
from xpnet.engine.plan import plan_of

pytestmark = pytest.mark.skip_backends(
    "numpy", "torch", "jax", "array_api_strict", reason="the fused GPU kernels need CuPy and a CUDA device"
)
RNG = np.random.default_rng(12)
X = RNG.normal(size=(300, 12))
LABELS = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
OPTIMIZERS = {
    "sgd": lambda: xn.SGD(0.1),
    "momentum": lambda: xn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: xn.Adam(0.01, weight_decay=0.001),
    "adamw": lambda: xn.AdamW(0.01),
    "rmsprop": lambda: xn.RMSprop(0.005, momentum=0.5, centered=True),
}


def _net(backend, loss="cross_entropy", optimizer="adam", dtype="float64", compile=None, dropout=0.0):
    act = {"cross_entropy": "softmax", "logloss": "sigmoid", "mse": None}[loss]
    layers = [xn.Dense(32, "relu", in_features=12), xn.Dense(16, "tanh")]
    if dropout:
        layers.append(xn.Dropout(dropout))
    layers.append(xn.Dense(3, act))
    return xn.Network(
        layers,
        loss=loss,
        optimizer=OPTIMIZERS[optimizer](),
        backend=backend,
        dtype=dtype,
        seed=3,
        compile=compile,
    )


def _targets(loss):
    if loss == "cross_entropy":
        return LABELS
    return (X[:, :3] > 0).astype(float) if loss == "logloss" else np.tanh(X[:, :3])


@pytest.fixture
def counted(monkeypatch):
    """The fused epochs that ran (each a ``Session.epoch``)."""
    return count_fused_epochs(monkeypatch)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("loss", ["cross_entropy", "logloss", "mse"])
def test_fused_epochs_equal_the_generic_step_in_float64(backend, counted, loss, optimizer):
    fused_net, generic = _net(backend, loss, optimizer), _net(backend, loss, optimizer, compile=False)
    y = _targets(loss)
    hf = fused_net.fit(X, y, epochs=3, batch_size=32, verbose=0).history  # 300 rows: a padded last batch
    hg = generic.fit(X, y, epochs=3, batch_size=32, verbose=0).history
    assert len(counted) == 3
    for p, q in zip(fused_net.get_weights(), generic.get_weights()):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-12)
    for key in hg:
        np.testing.assert_allclose(hf[key], hg[key], rtol=1e-12, err_msg=key)


def test_fused_epochs_equal_the_generic_step_in_float32(backend, counted):
    w = RNG.uniform(0.0, 2.0, len(X))
    nets = [_net(backend, dtype="float32", dropout=0.2, compile=c) for c in (None, False)]
    histories = [n.fit(X, LABELS, sample_weight=w, epochs=3, batch_size=50, verbose=0).history for n in nets]
    assert len(counted) == 3
    for p, q in zip(nets[0].get_weights(), nets[1].get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-5)


RECORDED = {
    "dense": lambda backend: _net(backend, dropout=0.2),
    "batch_norm": lambda backend: _norm_net(backend, "batch"),
}


@pytest.mark.parametrize("network", sorted(RECORDED))
def test_a_recorded_epoch_equals_the_same_kernels_run_one_by_one(backend, monkeypatch, network):
    results = []
    for record in (True, False):
        cache.clear()
        monkeypatch.setattr(
            CupyEngine,
            "_runner",
            lambda engine, model, record=record: _runner(engine, model, record),
        )
        net = RECORDED[network](backend)
        net.fit(X, LABELS, epochs=4, batch_size=32, verbose=0)  # epochs 2-4 replay a recording
        states = (xn.to_numpy(a) for layer in net.layers for a in layer.state.values())
        results.append([*net.get_weights(), *states])
    cache.clear()
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def _runner(engine, model, record):
    from xpnet.engine.fused_cupy import CupyKernels

    plan = plan_of(model)
    xp = engine.backend.xp
    return FusedRunner(
        engine.backend,
        engine._step_function(model),
        plan,
        lambda dtype: CupyKernels(xp, dtype, plan.optimizer),
        capture=record,
    )


@pytest.mark.parametrize("loss", ["cross_entropy", "logloss", "mse"])
def test_the_gpu_kernels_equal_the_reference_kernels(backend, loss):
    from xpnet.engine.fused_cupy import CupyKernels

    cupy = pytest.importorskip("cupy")
    spec = plan_of(_net(backend, loss)._model()).optimizer
    gpu, cpu = CupyKernels(backend.xp, "float64", spec), NumpyKernels("float64")
    z = RNG.normal(size=(20, 3))
    t = LABELS[:20].astype(np.int32) if loss == "cross_entropy" else _targets(loss)[:20]
    w = RNG.uniform(0, 1, 20)
    outputs = []
    for kernels, to in ((gpu, cupy.asarray), (cpu, np.asarray)):
        scales, grad = to(np.zeros((2, 10, 1))), to(np.zeros((20, 3)))
        scale, sums = scales.reshape(20, 1), to(np.zeros(3))
        with kernels.scope():
            kernels.row_scale(to(w.reshape(2, 10)), 3, scales)
            kind = {"cross_entropy": "categorical_crossentropy", "logloss": "binary_crossentropy"}
            kernels.loss(kind.get(loss, loss), to(z), to(t), scale, 0.1, grad, 17, sums)
            y = to(np.tanh(z))
            g, bias = to(z.copy()), to(np.zeros(3))
            kernels.act_grad(g, y, "tanh", bias)
            h = to(z.copy())
            kernels.bias_act(h, to(np.arange(3.0)), "sigmoid")
            out = to(np.zeros((3, 3)))
            kernels.matmul(to(z), to(z), out, ta=True)
        outputs.append([np.asarray(xn.to_numpy(a)) for a in (scale, grad, sums, g, bias, h, out)])
    for a, b in zip(*outputs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_predicting_from_another_thread_during_fit_leaves_its_weights_alone(backend):
    quiet = _net(backend)
    quiet.fit(X, LABELS, epochs=4, batch_size=16, verbose=0)
    busy = _net(backend)
    stop = threading.Event()

    def predict() -> None:
        while not stop.is_set():
            busy.predict(X[:64])

    thread = threading.Thread(target=predict)
    thread.start()
    try:
        busy.fit(X, LABELS, epochs=4, batch_size=16, verbose=0)
    finally:
        stop.set()
        thread.join()
    for a, b in zip(quiet.get_weights(), busy.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_load_move_and_an_exact_resume(backend, tmp_path):
    whole = _net(backend, dropout=0.2)
    whole.fit(X, LABELS, epochs=4, batch_size=32, verbose=0)
    half = _net(backend, dropout=0.2)
    half.fit(X, LABELS, epochs=2, batch_size=32, verbose=0)
    half.save(tmp_path / "half.safetensors")
    resumed = xn.load(tmp_path / "half.safetensors", backend=backend)
    resumed.fit(X, LABELS, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    on_cpu = resumed.to("numpy")
    np.testing.assert_allclose(xn.to_numpy(on_cpu.predict(X)), xn.to_numpy(whole.predict(X)), atol=1e-12)


NORMS = {"batch": lambda: xn.BatchNormalization(momentum=0.2), "layer": lambda: xn.LayerNormalization()}


def _norm_net(backend, kind, optimizer="adam", dtype="float64", compile=None):
    # no bias before a batch norm: its gradient is rounding noise, which Adam turns into lr * noise / eps
    layers = [xn.Dense(32, in_features=12, use_bias=kind != "batch"), NORMS[kind](), xn.Activation("relu")]
    layers += [xn.Dense(16, "tanh"), NORMS[kind](), xn.Dropout(0.2), xn.Dense(3, "softmax")]
    return xn.Network(
        layers, loss="cross_entropy", optimizer=OPTIMIZERS[optimizer](), backend=backend, dtype=dtype, seed=3,
        compile=compile,
    )  # fmt: skip


def _same_norm(fused_net, generic, hf, hg, tolerance):
    for p, q in zip(fused_net.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, rtol=0, atol=tolerance)
    for a, b in zip(fused_net.layers, generic.layers, strict=True):
        for key in b.state:  # BatchNormalization's running statistics
            np.testing.assert_allclose(xn.to_numpy(a.state[key]), xn.to_numpy(b.state[key]), atol=tolerance)
    for key in hg:
        np.testing.assert_allclose(hf[key], hg[key], rtol=tolerance, err_msg=key)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("kind", sorted(NORMS))
def test_normalized_epochs_equal_the_generic_step_in_float64(backend, counted, kind, optimizer):
    nets = [_norm_net(backend, kind, optimizer, compile=c) for c in (None, False)]
    # 300 rows in batches of 32: the last has 12 real rows, padded to 32 outside every batch statistic
    hf, hg = (n.fit(X, LABELS, epochs=3, batch_size=32, verbose=0).history for n in nets)
    assert len(counted) == 3
    _same_norm(*nets, hf, hg, 1e-12)
    np.testing.assert_allclose(
        xn.to_numpy(nets[0].predict_proba(X)), xn.to_numpy(nets[1].predict_proba(X)), atol=1e-12
    )


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_normalized_epochs_equal_the_generic_step_in_float32(backend, counted, kind):
    nets = [_norm_net(backend, kind, dtype="float32", compile=c) for c in (None, False)]
    hf, hg = (n.fit(X, LABELS, epochs=3, batch_size=50, verbose=0).history for n in nets)
    assert len(counted) == 3
    _same_norm(*nets, hf, hg, 1e-5)


@pytest.mark.parametrize("kind", sorted(NORMS))
@pytest.mark.parametrize("rows", [1, 20, 37])
def test_the_gpu_normalization_kernels_equal_the_reference_kernels(backend, kind, rows):
    from xpnet.engine.fused_cupy import CupyKernels
    from xpnet.engine.plan import NormSpec

    cupy = pytest.importorskip("cupy")
    spec = NormSpec(kind, 1e-5, 0.2)
    gpu = CupyKernels(backend.xp, "float64", plan_of(_net(backend)._model()).optimizer)
    x, dy = RNG.normal(size=(37, 70)) * 2 + 1, RNG.normal(size=(37, 70))
    x[rows:] = 1e6  # padding: in no statistic
    weight, bias = RNG.normal(size=70), RNG.normal(size=70)
    results = []
    for kernels, to in ((gpu, cupy.asarray), (NumpyKernels(), np.asarray)):
        n = 70 if kind == "batch" else 37
        stats = (to(np.zeros(n)), to(np.zeros(n)))
        state = (
            {"running_mean": to(np.ones(70)), "running_var": to(np.full(70, 2.0))}
            if kind == "batch"
            else None
        )
        out, dx, dweight, dbias = (
            to(np.zeros((37, 70))),
            to(np.zeros((37, 70))),
            to(np.zeros(70)),
            to(np.zeros(70)),
        )
        activated = to(np.zeros((37, 70)))
        with kernels.scope():
            kernels.normalize(spec, to(x), rows, to(weight), to(bias), stats, state, out)
            kernels.normalize_grad(spec, to(x), to(dy), rows, to(weight), stats, dweight, dbias, dx)
            kernels.activate(to(dy), activated, "tanh")
        kept = n if kind == "batch" else rows
        arrays = [
            out,
            dx,
            dweight,
            dbias,
            stats[0][:kept],
            stats[1][:kept],
            activated,
            *(state or {}).values(),
        ]
        results.append([np.asarray(xn.to_numpy(a)) for a in arrays])
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)

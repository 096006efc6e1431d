"""The fused runner on its CUDA kernels, emulated on the CPU (tests/cuda_emulator.py), equals the generic
step: the kernels' logic (indexing, block reductions, padding, running statistics, the update) is
checked here; the GPU tests check the same on a GPU, with its rounding and its CUDA graphs."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emulator import CXX, EmulatedKernels
from test_fused import OPTIMIZERS, count_fused_epochs
from test_fused_norm import NORMS, _layers

import xpnet as xn
from xpnet.engine import cache
from xpnet.engine.fused import FusedRunner
from xpnet.engine.fused_numpy import NumpyKernels
from xpnet.engine.numpy_engine import NumpyEngine
from xpnet.engine.plan import NormSpec, plan_of

pytestmark = pytest.mark.skipif(CXX is None, reason="the CUDA emulation needs g++")
RNG = np.random.default_rng(23)
X = RNG.normal(size=(21, 5)) * [1.0, 3.0, 0.5, 2.0, 1.0] + [0.0, 2.0, -1.0, 0.0, 5.0]
LABELS = (X[:, 0] + X[:, 1] > 2).astype(int) + (X[:, 2] > -1)


@pytest.fixture
def emulated(monkeypatch):
    """NumPy's engine running the fused runner on the emulated CUDA kernels, counting its fused epochs."""

    def runner(engine, model):
        plan = plan_of(model)
        kernels = None if plan is None else lambda dtype: EmulatedKernels(dtype, plan.optimizer)
        return FusedRunner(engine.backend, engine._step_function(model), plan, kernels)

    cache.clear()
    monkeypatch.setattr(NumpyEngine, "_runner", runner)
    yield count_fused_epochs(monkeypatch)
    cache.clear()


def _fit(layers, loss, optimizer, y, dtype="float64", **fit):
    nets = []
    for compile in (None, False):
        net = xn.Network(
            layers(),
            loss=loss,
            optimizer=OPTIMIZERS[optimizer](),
            backend="numpy",
            dtype=dtype,
            seed=5,
            compile=compile,
        )
        history = net.fit(X, y, epochs=2, batch_size=8, verbose=0, **fit).history  # 21 rows: 8, 8, 5
        nets.append((net, history))
    return nets


def _same(nets, tolerance=1e-12):
    (fused, hf), (generic, hg) = nets
    for p, q in zip(fused.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, rtol=0, atol=tolerance)
    for a, b in zip(fused.layers, generic.layers, strict=True):
        for key in b.state:
            np.testing.assert_allclose(a.state[key], b.state[key], rtol=tolerance, atol=tolerance)
    for key in hg:
        np.testing.assert_allclose(hf[key], hg[key], rtol=tolerance, atol=tolerance, err_msg=key)


TARGETS = {
    "cross_entropy": LABELS,
    "logloss": (X[:, :3] > 0).astype(float),
    "mse": np.tanh(X[:, :3]),
}
OUTPUTS = {"cross_entropy": "softmax", "logloss": "sigmoid", "mse": None}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("loss", sorted(TARGETS))
def test_the_cuda_kernels_of_a_dense_network_equal_the_generic_step(emulated, loss, optimizer):
    def layers():
        act = OUTPUTS[loss]
        return [xn.Dense(7, "relu", in_features=5), xn.Dense(6, "tanh"), xn.Dropout(0.3), xn.Dense(3, act)]

    nets = _fit(layers, loss, optimizer, TARGETS[loss])
    assert sum(emulated) == 2
    _same(nets)


@pytest.mark.parametrize("form", ["pre", "post", "input"])
@pytest.mark.parametrize("kind", sorted(NORMS))
def test_the_cuda_kernels_of_a_normalized_network_equal_the_generic_step(emulated, kind, form):
    nets = _fit(lambda: _layers(kind, form, dropout=0.2), "cross_entropy", "adam", LABELS)
    assert sum(emulated) == 2
    _same(nets)


def test_float32_sample_weights_and_a_leaky_sigmoid_network(emulated):
    def layers():
        return [
            xn.Dense(9, "leaky_relu", in_features=5),
            xn.BatchNormalization(),
            xn.Dense(4, "sigmoid"),
            xn.LayerNormalization(),
            xn.Dense(3, "softmax"),
        ]

    weight = RNG.uniform(0.0, 2.0, len(X))
    nets = _fit(layers, "cross_entropy", "momentum", np.eye(3)[LABELS], "float32", sample_weight=weight)
    assert sum(emulated) == 2
    _same(nets, tolerance=1e-5)


@pytest.mark.parametrize("kind", sorted(NORMS))
@pytest.mark.parametrize("rows", [1, 8, 33])
def test_the_normalization_kernels_equal_the_reference_kernels(kind, rows):
    spec = NormSpec(kind, 1e-5, 0.2)
    optimizer = plan_of(xn.Network([xn.Dense(2, in_features=2)], loss="mse")._model()).optimizer
    x, dy = RNG.normal(size=(40, 70)) * 2 + 1, RNG.normal(size=(40, 70))
    x[rows:] = 1e6  # padding: in no statistic
    weight, bias = RNG.normal(size=70), RNG.normal(size=70)
    results = []
    for kernels in (EmulatedKernels("float64", optimizer), NumpyKernels()):
        n = 70 if kind == "batch" else 40
        stats = (np.zeros(n), np.zeros(n))
        state = {"running_mean": np.ones(70), "running_var": np.full(70, 2.0)} if kind == "batch" else None
        out, dx = np.full((40, 70), np.nan), np.full((40, 70), np.nan)
        dweight, dbias = np.zeros(70), np.zeros(70)
        kernels.normalize(spec, x, rows, weight, bias, stats, state, out)
        kernels.normalize_grad(spec, x, dy, rows, weight, stats, dweight, dbias, dx)
        kept = n if kind == "batch" else rows  # a layer norm's padding rows have no statistics
        results.append([out, dx, dweight, dbias, stats[0][:kept], stats[1][:kept], *(state or {}).values()])
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)

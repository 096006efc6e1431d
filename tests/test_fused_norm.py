"""Normalization and Activation layers in the fused runner (issue 19) equal the generic step, on NumPy's
reference kernels: weights, BatchNormalization's running statistics and histories, with a padded last
batch whose padding must not enter the batch statistics. The GPU tests run the same on CuPy's kernels."""

from __future__ import annotations

import numpy as np
import pytest
from test_fused import OPTIMIZERS, on_reference_kernels

import xpnet as xn
from xpnet.engine import cache
from xpnet.engine.fused_numpy import NumpyKernels
from xpnet.engine.numpy_engine import NumpyEngine
from xpnet.engine.plan import ActivationSpec, NormSpec, plan_of

RNG = np.random.default_rng(19)
X = RNG.normal(size=(45, 5)) * [1.0, 3.0, 0.5, 2.0, 1.0] + [0.0, 2.0, -1.0, 0.0, 5.0]
LABELS = (X[:, 0] + X[:, 1] > 2).astype(int) + (X[:, 2] > -1)


@pytest.fixture
def fused_numpy(monkeypatch):
    """NumPy's engine running the fused runner on the reference kernels, counting its fused epochs."""
    yield on_reference_kernels(monkeypatch)
    cache.clear()


NORMS = {"batch": lambda: xn.BatchNormalization(momentum=0.2), "layer": lambda: xn.LayerNormalization()}


def _layers(kind, form="pre", dropout=0.0, out=3, act="softmax", bias=None):
    norm = NORMS[kind]
    # A bias before a batch norm cancels out: its gradient is rounding noise, which Adam and RMSprop
    # turn into steps of lr * noise / eps (1e-11 here), different for every rounding of the products.
    bias = kind != "batch" if bias is None else bias
    if form == "pre":  # the CLI's --batch-norm block: Dense, the norm, then the activation
        first = xn.Dense(7, in_features=5, use_bias=bias)
        layers = [first, norm(), xn.Activation("relu"), xn.Dense(6, "tanh")]
    elif form == "post":  # a norm after an activated Dense, then another
        layers = [xn.Dense(7, "relu", in_features=5), norm(), xn.Dense(6, "tanh", use_bias=False), norm()]
    else:  # "input": the features normalized first
        layers = [norm(), xn.Dense(7, "tanh", in_features=5)]
    if dropout:
        layers.append(xn.Dropout(dropout))
    return [*layers, xn.Dense(out, act)]


def _net(kind, optimizer="adam", dtype="float64", compile=None, loss="cross_entropy", **options):
    act = {"cross_entropy": "softmax", "logloss": "sigmoid", "mse": None}[loss]
    return xn.Network(
        _layers(kind, act=act, **options),
        loss=loss,
        optimizer=OPTIMIZERS[optimizer](),
        backend="numpy",
        dtype=dtype,
        seed=4,
        compile=compile,
    )


def _targets(loss):
    if loss == "cross_entropy":
        return LABELS
    return (X[:, :3] > 0).astype(float) if loss == "logloss" else np.tanh(X[:, :3])


def _states(net):
    return [xn.to_numpy(a) for layer in net.layers for a in layer.state.values()]


def _same(fused, generic, hf, hg, tolerance=1e-12):
    for p, q in zip(fused.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, rtol=0, atol=tolerance)
    for p, q in zip(_states(fused), _states(generic), strict=True):
        np.testing.assert_allclose(p, q, rtol=tolerance, atol=tolerance)
    for key in hg:
        np.testing.assert_allclose(hf[key], hg[key], rtol=tolerance, atol=tolerance, err_msg=key)


def _fit_both(kind, batch_size=8, epochs=3, y=LABELS, fit=None, **options):
    nets = [_net(kind, compile=c, **options) for c in (None, False)]
    histories = [
        n.fit(X, y, epochs=epochs, batch_size=batch_size, verbose=0, **(fit or {})).history for n in nets
    ]
    return nets, histories


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("kind", sorted(NORMS))
def test_normalized_epochs_equal_the_generic_step(fused_numpy, kind, optimizer):
    # 45 rows in batches of 8: the last batch has 5 real rows and 3 of padding
    (fused, generic), (hf, hg) = _fit_both(kind, optimizer=optimizer, dropout=0.3)
    assert sum(fused_numpy) == 3
    _same(fused, generic, hf, hg)
    if kind == "batch":  # the running statistics moved, and prediction reads them
        assert not np.allclose(_states(fused)[0], 0.0)
        np.testing.assert_allclose(fused.predict_proba(X), generic.predict_proba(X), rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", ["post", "input"])
@pytest.mark.parametrize("kind", sorted(NORMS))
def test_a_norm_after_an_activation_or_first_equals_the_generic_step(fused_numpy, kind, form):
    (fused, generic), (hf, hg) = _fit_both(kind, form=form, optimizer="momentum")
    assert sum(fused_numpy) == 3
    _same(fused, generic, hf, hg)


@pytest.mark.parametrize("loss", ["logloss", "mse"])
@pytest.mark.parametrize("kind", sorted(NORMS))
def test_every_loss_through_a_norm_equals_the_generic_step(fused_numpy, kind, loss):
    (fused, generic), (hf, hg) = _fit_both(kind, loss=loss, y=_targets(loss), optimizer="rmsprop")
    assert sum(fused_numpy) == 3
    _same(fused, generic, hf, hg)


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_float32_normalized_epochs_equal_the_generic_step(fused_numpy, kind):
    (fused, generic), (hf, hg) = _fit_both(kind, dtype="float32", dropout=0.2, batch_size=16)
    assert sum(fused_numpy) == 3
    _same(fused, generic, hf, hg, tolerance=1e-5)


@pytest.mark.parametrize("batch_size", [4, 11, 30])
def test_padding_never_enters_batch_statistics(fused_numpy, batch_size):
    # last batches of 1 row (a batch norm of one row: variance 0), 1 and 15 rows, padded to the batch
    # size; weight-0 rows are real rows: they count in the statistics, as in the generic step
    w = RNG.uniform(0.5, 2.0, len(X))
    w[:6] = 0.0
    (fused, generic), (hf, hg) = _fit_both("batch", batch_size=batch_size, fit={"sample_weight": w})
    assert sum(fused_numpy) == 3
    _same(fused, generic, hf, hg)


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_the_clis_block_with_a_bias_before_the_norm_equals_the_generic_step(fused_numpy, kind):
    (fused, generic), (hf, hg) = _fit_both(kind, optimizer="momentum", bias=True, dropout=0.3)
    assert sum(fused_numpy) == 3
    _same(fused, generic, hf, hg)


def test_running_statistics_assigned_between_fits_are_taken(fused_numpy):
    nets = [_net("batch", compile=c) for c in (None, False)]
    kept = []
    for net in nets:
        net.fit(X, LABELS, epochs=1, batch_size=8, verbose=0)
        kept.append(net.layers[1].state["running_mean"])
        net.fit(X, LABELS, epochs=1, batch_size=8, verbose=0)
        net.layers[1].state = {"running_mean": np.full(7, 3.0), "running_var": np.full(7, 0.5)}
        net.fit(X, LABELS, epochs=1, batch_size=8, verbose=0)
    assert sum(fused_numpy) == 3
    assert nets[0].layers[1].state["running_mean"] is kept[0]  # the session's own array, moved in place
    _same(nets[0], nets[1], {}, {})


def test_save_load_and_an_exact_resume_keep_the_running_statistics(fused_numpy, tmp_path):
    whole = _net("batch", dropout=0.2)
    whole.fit(X, LABELS, epochs=4, batch_size=8, verbose=0)
    half = _net("batch", dropout=0.2)
    half.fit(X, LABELS, epochs=2, batch_size=8, verbose=0)
    half.save(tmp_path / "half.safetensors")
    resumed = xn.load(tmp_path / "half.safetensors", backend="numpy")
    resumed.fit(X, LABELS, epochs=2, batch_size=8, verbose=0)
    assert sum(fused_numpy) == 8
    for a, b in zip(
        whole.get_weights() + _states(whole), resumed.get_weights() + _states(resumed), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_an_activation_before_the_first_trained_layer_equals_the_generic_step(fused_numpy):
    nets = []
    for compile in (None, False):
        layers = [xn.Activation("tanh"), xn.Dense(7, "relu", in_features=5), xn.LayerNormalization()]
        layers.append(xn.Dense(3, "softmax"))
        net = xn.Network(
            layers, loss="cross_entropy", backend="numpy", dtype="float64", seed=1, compile=compile
        )
        nets.append((net, net.fit(X, LABELS, epochs=3, batch_size=8, verbose=0).history))
    assert sum(fused_numpy) == 3
    _same(nets[0][0], nets[1][0], nets[0][1], nets[1][1])


def test_the_plan_reads_each_form_off_the_layers():
    plan = plan_of(_net("batch", dropout=0.1)._model())
    assert plan is not None and not plan.dense_only and plan.first == 0
    assert plan.layers[1] == NormSpec("batch", 1e-5, 0.2) and plan.layers[2] == ActivationSpec("relu")
    first = _net("layer", form="input")
    first.build(5)
    assert plan_of(first._model()).layers[0] == NormSpec("layer", 1e-5)


class OwnNorm(xn.BatchNormalization):
    """A subclass: its own math, so the generic step."""


UNCOVERED = {
    "subclass": lambda: [xn.Dense(4, in_features=5), OwnNorm(), xn.Dense(3, "softmax")],
    "hidden-softmax": lambda: [xn.Dense(4, in_features=5), xn.Activation("softmax"), xn.Dense(3, "softmax")],
    "last-activation": lambda: [xn.Dense(4, "relu", in_features=5), xn.Dense(3), xn.Activation("softmax")],
    "residual": lambda: [xn.Dense(4, in_features=5), xn.Residual([xn.BatchNormalization()]), xn.Dense(3)],
}


@pytest.mark.parametrize("case", sorted(UNCOVERED))
def test_what_the_plan_does_not_cover_runs_the_generic_step(fused_numpy, case):
    nets = []
    for compile in (None, False):
        layers = UNCOVERED[case]()
        net = xn.Network(
            layers, loss="cross_entropy", backend="numpy", dtype="float64", seed=1, compile=compile
        )
        net.fit(X, LABELS, epochs=2, batch_size=8, verbose=0)
        nets.append(net)
    assert fused_numpy == []  # no fused epoch ran
    for p, q in zip(nets[0].get_weights(), nets[1].get_weights(), strict=True):
        np.testing.assert_array_equal(p, q)


def test_numpys_own_loop_leaves_normalized_networks_to_the_generic_step():
    net = _net("batch")
    assert plan_of(net._model()) is not None
    assert NumpyEngine(net.backend).runner(net._model()).plan is None


def _batchnorm_reference(x, rows, params, state, dy, momentum=0.2, eps=1e-5):
    """BatchNormalization's own apply and vjp on the real rows only."""
    layer = xn.BatchNormalization(momentum=momentum, eps=eps)
    y, cache, new = layer._apply(params, state, x[:rows], True, np.ones((rows, 1)), np)
    grads, dx = layer.vjp(params, cache, dy[:rows], xp=np)
    return y, new, grads, dx


@pytest.mark.parametrize("rows", [1, 5, 8])
def test_the_reference_batch_norm_kernels_ignore_the_padding(rows):
    x, dy = RNG.normal(size=(8, 6)) * 3 + 1, RNG.normal(size=(8, 6))
    x[rows:] = 1e6  # padding that would ruin any statistic it entered
    params = {"weight": RNG.normal(size=6), "bias": RNG.normal(size=6)}
    state = {"running_mean": RNG.normal(size=6), "running_var": RNG.uniform(1, 2, 6)}
    y, new, grads, dx = _batchnorm_reference(x, rows, params, state, dy)
    kernels, spec = NumpyKernels(), NormSpec("batch", 1e-5, 0.2)
    stats, out, own = (
        (np.zeros(6), np.zeros(6)),
        np.full((8, 6), np.nan),
        {k: v.copy() for k, v in state.items()},
    )
    kernels.normalize(spec, x, rows, params["weight"], params["bias"], stats, own, out)
    got = {"weight": np.zeros(6), "bias": np.zeros(6)}
    back = np.full((8, 6), np.nan)
    kernels.normalize_grad(spec, x, dy, rows, params["weight"], stats, got["weight"], got["bias"], back)
    np.testing.assert_array_equal(out[:rows], y)
    np.testing.assert_array_equal(out[rows:], 0.0)
    np.testing.assert_array_equal(back[:rows], dx)
    np.testing.assert_array_equal(back[rows:], 0.0)
    for key in new:
        np.testing.assert_array_equal(own[key], new[key])
    for key in grads:
        np.testing.assert_array_equal(got[key], grads[key])


def test_the_reference_layer_norm_kernels_equal_the_layer():
    x, dy, rows = RNG.normal(size=(8, 6)) * 3 + 1, RNG.normal(size=(8, 6)), 5
    params = {"weight": RNG.normal(size=6), "bias": RNG.normal(size=6)}
    layer = xn.LayerNormalization()
    y, cache, _ = layer.apply(params, {}, x[:rows], training=True, xp=np)
    grads, dx = layer.vjp(params, cache, dy[:rows], xp=np)
    kernels, spec = NumpyKernels(), NormSpec("layer", 1e-5)
    stats, out, back = (np.zeros(8), np.zeros(8)), np.full((8, 6), np.nan), np.full((8, 6), np.nan)
    got = {"weight": np.zeros(6), "bias": np.zeros(6)}
    kernels.normalize(spec, x, rows, params["weight"], params["bias"], stats, None, out)
    kernels.normalize_grad(spec, x, dy, rows, params["weight"], stats, got["weight"], got["bias"], back)
    np.testing.assert_array_equal(out[:rows], y)
    np.testing.assert_array_equal(back[:rows], dx)
    assert not out[rows:].any() and not back[rows:].any()
    for key in grads:
        np.testing.assert_array_equal(got[key], grads[key])

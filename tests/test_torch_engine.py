"""The torch engine (xpnet.engine.torch_engine): flat buffers and one update of every parameter give
the generic step's numbers, the user sees the same parameters, and what it does not cover runs the
generic step; its steps against torch.optim on the same weights."""

from __future__ import annotations

import gc
import pickle
import weakref

import numpy as np
import pytest

import xpnet as xn
from xpnet.engine import EagerEngine, engine_for, torch_engine, torch_updates
from xpnet.engine.eager import EagerRunner
from xpnet.engine.step import Model
from xpnet.engine.torch_engine import FlatRunner, Session

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skip_backends("numpy", "jax", "cupy", "array_api_strict", reason="the torch engine")

RNG = np.random.default_rng(19)
X = RNG.normal(size=(45, 5))
LABELS = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
WEIGHTS = RNG.uniform(0.0, 2.0, len(X))
WEIGHTS[:4] = 0.0
OPTIMIZERS = {
    "sgd": lambda: xn.SGD(0.1),
    "nesterov": lambda: xn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "dampened": lambda: xn.SGD(0.05, momentum=0.8, dampening=0.3),
    "adam": lambda: xn.Adam(0.01, weight_decay=0.001),
    "adamw": lambda: xn.AdamW(0.01, weight_decay=0.05),
    "rmsprop": lambda: xn.RMSprop(0.005, momentum=0.5, centered=True, weight_decay=0.01),
    "rmsprop-plain": lambda: xn.RMSprop(0.005),
}


@pytest.fixture
def steps(monkeypatch):
    """A list that gets an entry for every step the flat update runs from now on."""
    counted = []
    plain = Session.step

    def step(session, *args, **kwargs):
        counted.append(type(session.update).__name__)
        return plain(session, *args, **kwargs)

    monkeypatch.setattr(Session, "step", step)
    return counted


def _net(backend, optimizer="adam", dtype="float64", compile=None, loss="cross_entropy", norm=False):
    act = {"cross_entropy": "softmax", "logloss": "sigmoid", "mse": "linear"}[loss]
    layers = [xn.Dense(7, "relu", in_features=5)]
    if norm:
        layers.append(xn.BatchNormalization())
    layers += [xn.Dropout(0.2), xn.Dense(6, "tanh"), xn.Dense(3, act)]
    return xn.Network(
        layers,
        loss=loss,
        optimizer=OPTIMIZERS[optimizer]() if isinstance(optimizer, str) else optimizer,
        backend=backend,
        dtype=dtype,
        seed=3,
        compile=compile,
    )


def _targets(loss):
    return {"cross_entropy": LABELS, "logloss": (X[:, :3] > 0).astype(float), "mse": np.tanh(X[:, :3])}[loss]


def _fit(net, loss="cross_entropy", epochs=3, **options):
    schedule = xn.LearningRateScheduler(lambda epoch: 0.02 / (1 + epoch))
    options = {"sample_weight": WEIGHTS, "batch_size": 8, "callbacks": [schedule], **options}
    return net.fit(X, _targets(loss), epochs=epochs, verbose=0, **options).history


def _same(a, b, ha=None, hb=None, tolerance=1e-12):
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=0, atol=tolerance)
    assert a.optimizer.state.keys() == b.optimizer.state.keys()
    for key, entry in b.optimizer.state.items():
        assert entry.keys() == a.optimizer.state[key].keys(), key
        for name, value in entry.items():
            got = xn.to_numpy(a.optimizer.state[key][name])
            np.testing.assert_allclose(got, xn.to_numpy(value), rtol=0, atol=tolerance, err_msg=key)
    for key in hb or {}:
        np.testing.assert_allclose(ha[key], hb[key], rtol=tolerance * 100, atol=tolerance, err_msg=key)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_the_flat_update_equals_the_generic_step(backend, steps, optimizer):
    flat, generic = _net(backend, optimizer), _net(backend, optimizer, compile=False)
    hf, hg = _fit(flat), _fit(generic)  # 45 rows, batch 8: a partial last batch
    assert isinstance(flat._runner(), FlatRunner)
    assert len(steps) == 18
    assert set(steps) == {"FlatRule" if optimizer.startswith("rmsprop") else "FusedKernel"}
    assert hf["lr"] == [0.02, 0.01, 0.02 / 3]
    _same(flat, generic, hf, hg)
    assert flat.optimizer.iterations == generic.optimizer.iterations == 18


@pytest.mark.parametrize("loss", ["logloss", "mse"])
def test_other_losses_and_a_normalization_layer(backend, steps, loss):
    flat, generic = (
        _net(backend, "adamw", loss=loss, norm=True),
        _net(backend, "adamw", loss=loss, norm=True, compile=False),
    )
    hf, hg = _fit(flat, loss), _fit(generic, loss)
    assert len(steps) == 18
    _same(flat, generic, hf, hg)
    for a, b in zip(flat.layers[1].state.values(), generic.layers[1].state.values()):  # running statistics
        np.testing.assert_allclose(xn.to_numpy(a), xn.to_numpy(b), rtol=0, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["nesterov", "adam", "rmsprop"])
def test_float32_equals_the_generic_step_to_float32_rounding(backend, steps, optimizer):
    flat, generic = _net(backend, optimizer, "float32"), _net(backend, optimizer, "float32", compile=False)
    hf, hg = _fit(flat), _fit(generic)
    assert len(steps) == 18
    _same(flat, generic, hf, hg, tolerance=1e-5)


def test_the_rule_on_flat_buffers_where_the_fused_kernel_is_missing(backend, steps, monkeypatch):
    monkeypatch.setattr(torch_updates, "_agreed", {})
    monkeypatch.delattr(torch, "_fused_adam_")
    flat, generic = _net(backend, "adam"), _net(backend, "adam", compile=False)
    hf, hg = _fit(flat), _fit(generic)
    assert set(steps) == {"FlatRule"}
    _same(flat, generic, hf, hg)


def test_a_fused_kernel_that_disagrees_with_the_rule_is_not_used(backend, monkeypatch):
    monkeypatch.setattr(torch_updates, "_agreed", {})
    adam = torch._fused_adam_

    def off(params, *args, lr, **kwargs):  # a torch whose kernel changed: twice the step
        return adam(params, *args, lr=2 * lr, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", off)
    update = torch_updates.flat_update(xn.Adam(), torch.float64, torch.device("cpu"))
    assert isinstance(update, torch_updates.FlatRule)
    monkeypatch.setattr(torch, "_fused_adam_", adam)
    assert not torch_updates.kernel_agrees(xn.Adam(), torch.float64, "cpu")  # decided once
    assert torch_updates.kernel_agrees(xn.Adam(), torch.float32, "cpu")


def test_the_layers_hold_views_of_one_buffer_and_keep_them(backend, steps):
    net = _net(backend, "adam")
    _fit(net, epochs=1)
    params = [p for layer in net.layers for p in layer.params.values()]
    storages = {p.untyped_storage().data_ptr() for p in params}
    assert len(storages) == 1 and all(p._base is not None for p in params)
    state = {v.untyped_storage().data_ptr() for entry in net.optimizer.state.values() for v in entry.values()}
    assert len(state) == 2  # exp_avg and exp_avg_sq: one buffer each
    weight = net.layers[0].weight
    _fit(net, epochs=1)
    assert net.layers[0].weight is weight  # the same session: nothing packed again
    generic = _net(backend, "adam", compile=False)
    _fit(generic, epochs=2)
    for target in (net, generic):  # assigned weights: the next call packs them
        target.layers[0].weight = np.full((5, 7), 0.1)
        _fit(target, epochs=1)
    assert net.layers[0].weight is not weight
    _same(net, generic)


def test_streamed_batches_take_the_one_update(backend, steps):
    flat, generic = _net(backend, "nesterov"), _net(backend, "nesterov", compile=False)
    hf = _fit(flat, device_data=False, batch_size=10)
    hg = _fit(generic, device_data=False, batch_size=10)
    assert len(steps) == 15
    _same(flat, generic, hf, hg)


def test_save_load_pickle_move_and_an_exact_resume(backend, steps, tmp_path):
    whole, generic = _net(backend, "adamw"), _net(backend, "adamw", compile=False)
    _fit(whole, epochs=4)
    _fit(generic, epochs=4)
    half = _net(backend, "adamw")
    _fit(half, epochs=2)
    half.save(tmp_path / "half.safetensors")
    again = pickle.loads(pickle.dumps(half))
    for resumed in (xn.load(tmp_path / "half.safetensors", backend=backend), again):
        assert resumed.optimizer.iterations == 12
        _fit(resumed, epochs=2)
        for a, b in zip(whole.get_weights(), resumed.get_weights()):
            np.testing.assert_array_equal(a, b)
        _same(resumed, generic)
    moved = whole.to("numpy")
    np.testing.assert_allclose(xn.to_numpy(moved.predict(X)), xn.to_numpy(generic.predict(X)), atol=1e-12)


def test_moving_the_network_lets_its_flat_buffers_go(backend):
    net = _net(backend, "adam")
    _fit(net, epochs=1)
    buffer = weakref.ref(net.layers[0].weight._base)
    net.to("numpy")
    gc.collect()
    assert buffer() is None
    _fit(net, epochs=1)  # and it trains on NumPy from there


def test_a_pickle_holds_each_element_once(backend):
    flat, generic = _net(backend, "adam"), _net(backend, "adam", compile=False)
    _fit(flat, epochs=1)
    _fit(generic, epochs=1)
    assert flat.layers[0].weight._base is not None
    assert len(pickle.dumps(flat)) == len(pickle.dumps(generic))


def test_a_divergent_run_stops_at_the_same_epoch(backend, steps):
    runs = []
    for compile in (None, False):
        net = xn.Network(
            [xn.Dense(7, "relu", in_features=5), xn.Dense(3)],
            loss="mse",
            optimizer=xn.SGD(2.0),
            backend=backend,
            dtype="float64",
            seed=2,
            compile=compile,
        )
        stop = xn.TerminateOnNaN(raise_error=False)
        runs.append(net.fit(X, X[:, :3] * 1e3, epochs=8, batch_size=8, verbose=0, callbacks=[stop]).history)
    assert steps and len(runs[0]["loss"]) == len(runs[1]["loss"]) < 8
    assert not np.isfinite(runs[0]["loss"][-1])


def test_the_finiteness_check_reads_the_flat_buffer_once(backend, monkeypatch):
    net = _net(backend, "adam", dtype="float32")
    _fit(net, epochs=1)
    runner, carry = net._runner(), net._arrays()
    assert runner._finite(carry)
    net.layers[2].weight[0, 0] = 3e38  # finite, but the buffer's sum overflows: every element is checked
    net.layers[2].weight[0, 1] = 3e38
    assert runner._finite(carry)
    net.layers[0].bias[1] = float("nan")
    assert not runner._finite(carry)
    reads = []
    monkeypatch.setattr(torch_engine.kernels, "all_finite", lambda arrays, xp: reads.append(arrays) or True)
    net.layers[0].bias[1] = 0.0
    net.layers[2].weight[0, :2] = 0.0
    assert runner._finite(carry) and reads == []  # one sum, no element-wise check


class _Doubled(xn.SGD):
    """A subclass with its own rule: not the SGD the one update computes."""

    def update(self, param, grad, state, xp, **options):
        return super().update(param, 2 * grad, state, xp, **options)


@pytest.mark.parametrize(
    "change",
    [
        lambda net: setattr(net, "optimizer", _Doubled(0.1)),
        lambda net: setattr(net.optimizer, "clip_norm", 0.5),
        lambda net: setattr(net.optimizer, "clip_value", 0.01),
    ],
    ids=["optimizer-subclass", "clip-norm", "clip-value"],
)
def test_what_the_one_update_does_not_cover_runs_the_generic_step(backend, steps, change):
    flat, generic = _net(backend, "adam"), _net(backend, "adam", compile=False)
    for net in (flat, generic):
        change(net)
    hf, hg = _fit(flat), _fit(generic)
    assert steps == [] and type(flat._runner()) is EagerRunner
    _same(flat, generic, hf, hg)


def test_a_mixed_policy_runs_the_generic_step(backend, steps):
    net = xn.Network([xn.Dense(4, "relu", in_features=5), xn.Dense(3, "softmax")], loss="cross_entropy",
                     optimizer=xn.Adam(0.01), backend=backend, dtype="mixed_bfloat16", seed=0)  # fmt: skip
    net.fit(X, LABELS, epochs=1, batch_size=8, verbose=0)
    assert steps == [] and type(net._runner()) is EagerRunner


def test_frozen_layers_tied_weights_and_autograd_tensors_run_the_generic_step(backend, steps):
    net = _net(backend, "adam")
    params, opt, states = net._arrays()
    frozen = Model(tuple(net.layers), net.loss, net.optimizer, trainable=(False, False, True, True))
    runner = engine_for(backend).runner(frozen)
    assert isinstance(runner, FlatRunner) and runner.session((params, opt, states), 1) is None
    layers = [xn.Dense(5, "tanh", in_features=5), xn.Dense(5, "tanh"), xn.Dense(3, "softmax")]
    tied = xn.Network(layers, loss="cross_entropy", optimizer=xn.SGD(0.1), backend=backend, dtype="float64")
    tied.layers[1].params["weight"] = tied.layers[0].params["weight"]
    tied.fit(X, LABELS, epochs=1, batch_size=8, verbose=0)
    assert steps == [] and tied.layers[1].params["weight"] is tied.layers[0].params["weight"]
    net.layers[0].params["weight"] = net.layers[0].params["weight"].clone().requires_grad_(True)
    params, opt, states = net._arrays()
    assert net._runner().session((params, opt, states), 1) is None


def test_a_missing_dampened_momentum_after_the_first_step_is_the_generic_steps(backend, steps):
    flat, generic = _net(backend, "dampened"), _net(backend, "dampened", compile=False)
    for net in (flat, generic):
        _fit(net, epochs=1)
        net.optimizer.state = {}  # the generic rule starts each buffer at its gradient, undamped
    before = len(steps)
    hf, hg = _fit(flat, epochs=2), _fit(generic, epochs=2)
    assert len(steps) == before + 6  # the first epoch after: generic; then packed again
    _same(flat, generic, hf, hg)


class _Transposed(xn.Dense):
    """A Dense layer whose weight gradient comes back as a transposed (non-contiguous) view."""

    def vjp(self, params, cache, dy, **options):
        grads, dx = super().vjp(params, cache, dy, **options)
        grads["weight"] = grads["weight"].mT.contiguous().mT
        return grads, dx


def test_gradients_the_kernels_cannot_read_are_applied_by_the_rule(backend, steps):
    nets = []
    for compile in (None, False):
        layers = [_Transposed(6, "tanh", in_features=5), xn.Dense(3, "softmax")]
        net = xn.Network(layers, loss="cross_entropy", optimizer=xn.Adam(0.01), backend=backend,
                         dtype="float64", seed=5, compile=compile)  # fmt: skip
        nets.append((net, _fit(net)))
    assert len(steps) == 18
    _same(nets[0][0], nets[1][0], nets[0][1], nets[1][1])
    assert nets[0][0].layers[0].weight._base is not None  # still the session's views


def test_the_distributed_step_and_compile_false_are_the_eager_engines(backend):
    engine = engine_for(backend)
    net = _net(backend, "adam")
    model = net._model()
    assert engine.step(model).__name__ == "stream_step"
    assert engine.step(model, allreduce=lambda flat: flat).__name__ != "stream_step"
    assert type(engine_for(backend, compile=False)) is EagerEngine
    assert not torch_engine.covers(
        Model(tuple(net.layers), net.loss, net.optimizer, transform=lambda g, xp: g)
    )


TORCH_OPTIMIZERS = {
    "sgd-momentum": (lambda: xn.SGD(0.1, momentum=0.9, weight_decay=0.01),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "adam": (lambda: xn.Adam(0.01, weight_decay=0.01),
             lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01)),
    "adamw": (lambda: xn.AdamW(0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TORCH_OPTIMIZERS))
def test_fit_equals_torch_optim_on_the_same_weights(backend, steps, name):
    mine, theirs = TORCH_OPTIMIZERS[name]
    net = xn.Network([xn.Dense(8, "tanh", in_features=5), xn.Dense(3, "softmax")], loss="cross_entropy",
                     optimizer=mine(), backend=backend, dtype="float64", seed=0)  # fmt: skip
    layers = [torch.nn.Linear(5, 8, dtype=torch.float64), torch.nn.Linear(8, 3, dtype=torch.float64)]
    with torch.no_grad():
        for module, layer in zip(layers, net.layers):
            module.weight.copy_(torch.tensor(xn.to_numpy(layer.weight)).T)
            module.bias.copy_(torch.tensor(xn.to_numpy(layer.bias)))
    ref = torch.nn.Sequential(layers[0], torch.nn.Tanh(), layers[1])
    net.fit(X, LABELS, epochs=3, batch_size=10, shuffle=False, verbose=0)
    opt, loss = theirs(ref.parameters()), torch.nn.CrossEntropyLoss()
    xt, yt = torch.tensor(X), torch.tensor(LABELS)
    for _ in range(3):
        for start in range(0, len(X), 10):
            opt.zero_grad()
            loss(ref(xt[start : start + 10]), yt[start : start + 10]).backward()
            opt.step()
    assert len(steps) == 15
    want = [p.detach().numpy() for p in ref.parameters()]
    for got, w in zip(net.get_weights(), want):
        np.testing.assert_allclose(got, w.T if w.ndim == 2 else w, rtol=1e-10, atol=1e-13)

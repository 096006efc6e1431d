"""The pure training step: compiled equals eager, padding and sample weights, the transform slot."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.train import step

RNG = np.random.default_rng(7)
X = RNG.normal(size=(45, 5))
LABELS = RNG.integers(0, 3, size=45)


def _net(backend, compile, optimizer=None, seed=3):
    return xn.Network(
        [xn.Dense(12, "relu", in_features=5), xn.Dropout(0.25), xn.Dense(6, "tanh"), xn.Dense(3, "softmax")],
        loss="cross_entropy",
        optimizer=optimizer or xn.Adam(0.01),
        backend=backend,
        dtype="float64",
        seed=seed,
        compile=compile,
    )


@pytest.mark.parametrize(
    "optimizer",
    [lambda: xn.Adam(0.01), lambda: xn.SGD(0.1, momentum=0.9, dampening=0.2)],
    ids=["adam", "sgd"],
)
def test_compiled_equals_eager_with_dropout_shuffling_and_a_partial_batch(backend, optimizer):
    fast, plain = _net(backend, None, optimizer()), _net(backend, False, optimizer())
    # 45 rows in batches of 8: the last batch has 5 rows (padded when compiled)
    h_fast = fast.fit(X, LABELS, epochs=3, batch_size=8, verbose=0)
    h_plain = plain.fit(X, LABELS, epochs=3, batch_size=8, verbose=0)
    for got, want in zip(fast.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_fast.history["loss"], h_plain.history["loss"], rtol=1e-10)
    assert h_fast.history["accuracy"] == h_plain.history["accuracy"]
    assert fast.optimizer.iterations == plain.optimizer.iterations == 18
    assert fast.rng.random() == plain.rng.random()  # the same draws were taken


def test_same_seed_gives_bit_identical_runs(backend):
    runs = []
    for _ in range(2):
        net = _net(backend, None)
        net.fit(X, LABELS, epochs=2, batch_size=8, verbose=0)
        runs.append(net.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def _model_and_arrays(backend, optimizer):
    net = _net(backend, False, optimizer)
    model = step.Model(tuple(net.layers), net.loss, net.optimizer)
    params, opt, states = net._arrays()
    copy = [{k: backend.asarray(v, copy=True) for k, v in p.items()} for p in params]
    return net, model, copy, opt, states


def test_zero_weight_padding_equals_the_unpadded_step(backend, xp):
    net, model, params, opt, states = _model_and_arrays(backend, xn.Adam(0.01))
    x, y = backend.asarray(X[:5], "float64"), backend.asarray(LABELS[:5])
    rng = np.random.default_rng(0)
    masks = step.draw_noise(net.layers, rng, 8, "float64")
    noise = [None if m is None else backend.asarray(m) for m in masks]
    short = [None if m is None else backend.asarray(m[:5]) for m in masks]
    plain = step.train_step(model, params, opt, states, x, y, None, short, 1, 0.01, xp=xp)
    pad_x = backend.asarray(np.concatenate([X[:5], X[:3]]), "float64")
    pad_y = backend.asarray(np.concatenate([LABELS[:5], LABELS[:3]]))
    weight = backend.asarray(np.array([1.0] * 5 + [0.0] * 3), "float64")
    padded = step.train_step(model, params, opt, states, pad_x, pad_y, weight, noise, 1, 0.01, xp=xp)
    assert float(padded.loss) == pytest.approx(float(plain.loss), rel=1e-13)
    assert float(padded.correct) == float(plain.correct)
    for a, b in zip(padded.params, plain.params):
        for name in a:
            np.testing.assert_allclose(xn.to_numpy(a[name]), xn.to_numpy(b[name]), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("loss", "targets"),
    [
        (xn.MeanSquaredError(), lambda r: r.normal(size=(3, 2))),
        (xn.BinaryCrossentropy(), lambda r: r.integers(0, 2, size=(3, 2)).astype(float)),
        (xn.BinaryCrossentropy(from_logits=True), lambda r: r.integers(0, 2, size=(3, 2)).astype(float)),
        (xn.CategoricalCrossentropy(), lambda r: np.eye(2)[r.integers(0, 2, size=3)]),
        (xn.CategoricalCrossentropy(from_logits=True), lambda r: np.eye(2)[r.integers(0, 2, size=3)]),
    ],
    ids=["mse", "bce", "bce-logits", "cce", "cce-logits"],
)
def test_integer_sample_weights_equal_repeated_rows(backend, f64, loss, targets):
    rng = np.random.default_rng(1)
    pred = rng.uniform(0.1, 0.9, size=(3, 2))
    if loss.name == "categorical_crossentropy" and not loss.from_logits:
        pred = pred / pred.sum(axis=1, keepdims=True)
    y = targets(rng)
    value, grad = loss.value_and_gradient(f64(pred), f64(y), sample_weight=f64(np.array([2.0, 1.0, 0.0])))
    rows = [0, 0, 1]
    want_value, want_grad = loss.value_and_gradient(f64(pred[rows]), f64(y[rows]))
    assert float(value) == pytest.approx(float(want_value), rel=1e-13)
    want = xn.to_numpy(want_grad)
    expected = np.stack([want[0] + want[1], want[2], np.zeros(2)])
    np.testing.assert_allclose(xn.to_numpy(grad), expected, rtol=1e-12, atol=1e-15)


def test_a_gradient_transform_runs_between_backward_and_update(backend, xp):
    seen = []

    def halve(grads, xp_):
        seen.append([sorted(g) for g in grads])
        return [{k: v * 0.5 for k, v in g.items()} for g in grads]

    net, _, params, opt, states = _model_and_arrays(backend, xn.SGD(0.2))
    x, y = backend.asarray(X[:8], "float64"), backend.asarray(LABELS[:8])
    noise = [
        None if m is None else backend.asarray(m)
        for m in step.draw_noise(net.layers, np.random.default_rng(0), 8, "f")
    ]
    with_transform = step.Model(tuple(net.layers), net.loss, xn.SGD(0.2), transform=halve)
    halved_rate = step.Model(tuple(net.layers), net.loss, xn.SGD(0.1))
    identity = step.Model(tuple(net.layers), net.loss, xn.SGD(0.1), transform=lambda g, xp_: g)
    a = step.train_step(with_transform, params, opt, states, x, y, None, noise, 1, 0.2, xp=xp)
    b = step.train_step(halved_rate, params, opt, states, x, y, None, noise, 1, 0.1, xp=xp)
    c = step.train_step(identity, params, opt, states, x, y, None, noise, 1, 0.1, xp=xp)
    assert seen == [[["bias", "weight"], [], ["bias", "weight"], ["bias", "weight"]]]
    for pa, pb, pc in zip(a.params, b.params, c.params):
        for name in pa:
            np.testing.assert_allclose(xn.to_numpy(pa[name]), xn.to_numpy(pb[name]), rtol=1e-14)
            np.testing.assert_array_equal(xn.to_numpy(pc[name]), xn.to_numpy(pb[name]))


def test_the_pure_step_leaves_its_inputs_alone(backend, xp):
    net, model, params, opt, states = _model_and_arrays(backend, xn.Adam(0.01))
    before = [{k: xn.to_numpy(v).copy() for k, v in p.items()} for p in params]
    x, y = backend.asarray(X[:8], "float64"), backend.asarray(LABELS[:8])
    noise = [
        None if m is None else backend.asarray(m)
        for m in step.draw_noise(net.layers, np.random.default_rng(0), 8, "f")
    ]
    result = step.train_step(model, params, opt, states, x, y, None, noise, 1, 0.01, xp=xp)
    assert opt == {} and set(result.opt_state) == {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
        "3.weight",
        "3.bias",
    }
    for p, b in zip(params, before):
        for name in p:
            np.testing.assert_array_equal(xn.to_numpy(p[name]), b[name])


OPTIMIZERS = [
    xn.SGD(0.1, momentum=0.9, dampening=0.3),
    xn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    xn.Adam(0.01, weight_decay=0.1),
    xn.AdamW(0.02),
    xn.RMSprop(0.01, momentum=0.9, centered=True),
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: repr(o)[:40])
def test_optimizer_updates_under_jit_with_traced_step_and_rate(optimizer):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(2)
    param = rng.normal(size=(3, 2))
    grads = [rng.normal(size=(3, 2)) for _ in range(4)]

    @jax.jit
    def update(p, g, s, t, lr):
        return optimizer.update(p, g, s, jnp, step=t, learning_rate=lr)

    p_jit, s_jit = jnp.asarray(param), optimizer.init_state(jnp.asarray(param), jnp)
    p_eager, s_eager = param.copy(), {}
    for t, g in enumerate(grads, start=1):
        p_jit, s_jit = update(
            p_jit, jnp.asarray(g), s_jit, jnp.asarray(float(t)), jnp.asarray(optimizer.learning_rate)
        )
        p_eager, s_eager = optimizer.update(p_eager, g, s_eager, np, step=t)
    assert update._cache_size() == 1  # one trace for every step number and rate
    np.testing.assert_allclose(np.asarray(p_jit), p_eager, rtol=1e-13, atol=1e-15)


def test_layer_protocol_expresses_the_fused_output():
    dense, act, drop = xn.Dense(2, "softmax"), xn.Activation("sigmoid"), xn.Dropout(0.5)
    assert dense.output_activation == "softmax" and act.output_activation == "sigmoid"
    assert drop.output_activation is None and xn.Dense(2).output_activation == "linear"
    net = xn.Network([xn.Dense(2, in_features=2), xn.Activation("sigmoid")], loss="logloss", backend="numpy")
    assert net._model().fused
    assert (
        not xn.Network([xn.Dense(2, "tanh", in_features=2)], loss="logloss", backend="numpy")._model().fused
    )


def test_fused_epochs_equal_one_call_per_epoch(backend):
    class Passive(xn.Callback):
        """Any callback makes fit return to Python after every epoch."""

    fused, stepped = _net(backend, None), _net(backend, None)
    h_fused = fused.fit(X, LABELS, epochs=5, batch_size=8, verbose=0)
    h_stepped = stepped.fit(X, LABELS, epochs=5, batch_size=8, verbose=0, callbacks=[Passive()])
    np.testing.assert_allclose(h_fused.history["loss"], h_stepped.history["loss"], rtol=1e-12)
    for got, want in zip(fused.get_weights(), stepped.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert fused.epoch == stepped.epoch == 5 and fused.optimizer.iterations == 30

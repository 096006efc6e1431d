"""Networks of one structure share what their engine builds (runner, step, forward pass), and nothing else."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import xpnet as xn
from xpnet.engine import cache as compiled

RNG = np.random.default_rng(5)
X = RNG.normal(size=(90, 4))
LABELS = (X[:, 0] - X[:, 2] > 0).astype(int) + (X[:, 1] > 0.7)


def _net(backend, seed=0, decay=0.0, dense=xn.Dense, dtype="float64"):
    block = xn.Residual([dense(8, "relu"), xn.Dropout(0.25), xn.Dense(8)], shortcut="linear")
    layers = [dense(8, "tanh", in_features=4), xn.BatchNormalization(), block, xn.Dense(3, "softmax")]
    adam = xn.Adam(0.02, weight_decay=decay)
    return xn.Network(layers, loss="cross_entropy", optimizer=adam, backend=backend, dtype=dtype, seed=seed)


def _trained(net, epochs=3):
    net.fit(X, LABELS, epochs=epochs, batch_size=16, verbose=0)
    return net


def _functions(net):
    """The network's epoch runner and its forward pass, as its engine keeps them."""
    net.predict(X[:5])
    return net._runner(), net._engine().inference(net.layers)


def _kept(kind):
    """What the process keeps of one kind (the cache's keys start with the kind)."""
    return [value for key, value in compiled._entries.items() if key[0] == kind]


def test_equal_structures_share_functions_and_train_as_if_alone(backend):
    first = _trained(_net(backend, seed=1))
    second = _trained(_net(backend, seed=2))
    (runner_a, forward_a), (runner_b, forward_b) = _functions(first), _functions(second)
    assert forward_a is forward_b
    # CuPy's fused runner and torch's flat runner hold one network's flat buffers: one per network
    assert (runner_a is runner_b) == (backend.name not in ("cupy", "torch"))

    compiled.clear()  # the same network trained with freshly compiled functions
    alone = _trained(_net(backend, seed=2))
    for got, want in zip(second.get_weights(), alone.get_weights()):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(xn.to_numpy(second.predict(X)), xn.to_numpy(alone.predict(X)))
    assert second.history.history == alone.history.history


def test_streamed_fits_share_their_compiled_step_and_train_as_if_alone(backend):
    batches = [(X[i : i + 16], LABELS[i : i + 16]) for i in range(0, len(X), 16)]
    first, second = _net(backend, seed=1), _net(backend, seed=2)
    compiled.clear()
    for net in (first, second):
        net.fit(batches, epochs=2, verbose=0)
    # JAX compiles the step once for both; the other engines run it eagerly, so nothing is kept
    assert len(_kept("step")) == (1 if backend.name == "jax" else 0)
    compiled.clear()
    alone = _net(backend, seed=2)
    alone.fit(batches, epochs=2, verbose=0)
    for got, want in zip(second.get_weights(), alone.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_other_hyper_parameters_or_dtypes_get_their_own_functions(backend):
    base = _functions(_trained(_net(backend)))
    decayed = _functions(_trained(_net(backend, decay=0.1)))
    single = _functions(_trained(_net(backend, dtype="float32")))
    assert base[0] is not decayed[0] and base[0] is not single[0]
    assert base[1] is not single[1]
    assert base[1] is decayed[1]  # the forward pass has no optimizer


def test_neither_the_learning_rate_nor_the_epoch_count_is_in_the_key(backend):
    net = _net(backend)
    net.fit(X, LABELS, epochs=2, batch_size=16, verbose=0)
    runner = net._runner()
    net.optimizer.learning_rate = 0.005
    net.fit(X, LABELS, epochs=5, batch_size=16, verbose=0)
    assert net._runner() is runner


class MyDense(xn.Dense):
    """A user's layer: its math might read anything, so its networks are never shared."""


def test_a_users_layer_class_keeps_its_own_functions(backend):
    first = _trained(_net(backend, dense=MyDense))
    second = _trained(_net(backend, dense=MyDense))
    assert not any(a is b for a, b in zip(_functions(first), _functions(second)))
    assert np.all(np.isfinite(xn.to_numpy(second.predict(X))))


def test_shared_functions_keep_no_network_arrays_alive(backend):
    compiled.clear()  # this network's functions are the ones kept
    net = _trained(_net(backend))
    _functions(net)
    arrays = [layer.params[name] for layer in net.layers for name in layer.params]
    arrays += [value for slot in net.optimizer.state.values() for value in slot.values()]
    refs = [weakref.ref(a) for a in arrays]
    del net, arrays
    gc.collect()
    assert compiled.size() > 0
    assert all(ref() is None for ref in refs)


def test_ours_looks_inside_blocks():
    assert compiled.ours([xn.Residual([xn.Dense(2)]), xn.Parallel([[xn.Dense(2)], [xn.Dense(2)]])])
    assert not compiled.ours([xn.Residual([MyDense(2)])])
    assert not compiled.ours([xn.Parallel([[xn.Dense(2)], [MyDense(2)]])])
    assert not compiled.ours([xn.Dense(2)], xn.Adam(), object())


def test_the_least_recently_used_function_goes_first(monkeypatch):
    monkeypatch.setattr(compiled, "LIMIT", 2)
    compiled.clear()
    made = []

    def make(name):
        made.append(name)
        return name

    for key in ["a", "b", "a", "c", "a", "b"]:
        assert compiled.shared(key, lambda key=key: make(key)) == key
    assert made == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came
    assert compiled.size() == 2
    compiled.clear()
    assert compiled.size() == 0


@pytest.mark.parametrize("make", [lambda: xn.Dense(3, "relu", in_features=2), lambda: xn.Dropout(0.5)])
def test_a_detached_layer_keeps_its_configuration_and_no_arrays(make):
    layer = make()
    layer.build(2, xn.get_backend("numpy"), "float64", np.random.default_rng(0))
    layer.forward(np.ones((4, 2)), training=True)
    twin = layer.detached()
    assert repr(twin) == repr(layer) and twin.in_features == layer.in_features
    assert twin.params == {} and twin.state == {} and not hasattr(twin, "_cache")
    assert set(layer.params) == ({"weight", "bias"} if isinstance(layer, xn.Dense) else set())  # untouched

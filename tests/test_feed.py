"""fit / predict / evaluate on streamed data: memmaps, device_data=False, iterables of batches, sources."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

import xpnet as xn
from xpnet.data.streams import ArraySource


def make_net(backend, seed=1, dropout=0.25):
    layers = [xn.Dense(6, "tanh", in_features=4), xn.Dropout(dropout), xn.Dense(3, "softmax")]
    return xn.Network(
        layers, loss="categorical_crossentropy", optimizer="adam", backend=backend, dtype="float64", seed=seed
    )


def data(rows=37):
    rng = np.random.default_rng(5)
    return rng.normal(size=(rows, 4)), rng.integers(0, 3, rows)


def weights(net):
    return net.get_weights()


def assert_same(a, b, backend):
    # JAX runs a streamed batch through one jitted step and the in-memory epoch through lax.scan:
    # the same math, compiled apart, may round differently in the last bit.
    exact = backend.name != "jax"
    for p, q in zip(weights(a), weights(b)):
        if exact:
            np.testing.assert_array_equal(p, q)
        else:
            np.testing.assert_allclose(p, q, rtol=0, atol=1e-12)


@pytest.fixture
def memmap(tmp_path):
    X, y = data()
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    return np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")


@pytest.mark.parametrize("shuffle", [False, True])
def test_device_data_false_trains_as_in_memory(backend, shuffle):
    X, y = data()
    a, b = make_net(backend), make_net(backend)
    ha = a.fit(X, y, epochs=3, batch_size=8, shuffle=shuffle, verbose=0).history
    hb = b.fit(X, y, epochs=3, batch_size=8, shuffle=shuffle, device_data=False, verbose=0).history
    assert_same(a, b, backend)
    np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=1e-13)
    assert hb["accuracy"] == ha["accuracy"]


def test_unshuffled_memmap_trains_as_in_memory(backend, memmap):
    X, y = data()
    a, b = make_net(backend), make_net(backend)
    a.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    b.fit(memmap[0], memmap[1], epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert_same(a, b, backend)


def test_shuffled_memmap_follows_the_block_order(backend, tmp_path):
    X, y = data()
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    source = xn.data.streams.from_npy(tmp_path / "x.npy", tmp_path / "y.npy", block_rows=10)
    reference = make_net(backend, dropout=0.0)
    # the documented order: blocks of 10 rows permuted, rows permuted inside each, by the network's generator
    rng = np.random.default_rng()
    rng.bit_generator.state = reference.rng.bit_generator.state
    expected = list(ArraySource(X, y, block_rows=10).batches(8, rng))
    reference.fit(expected, epochs=1, shuffle=False, verbose=0)
    net = make_net(backend, dropout=0.0)
    net.fit(source, epochs=1, batch_size=8, verbose=0)
    assert_same(net, reference, backend)
    first = [b.y.tolist() for b in expected][:2]
    assert first != [y[:8].tolist(), y[8:16].tolist()]  # it did shuffle


def test_iterables_of_batches_train_as_in_memory(backend):
    X, y = data()
    a = make_net(backend)
    a.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    batches = [(X[i : i + 8], y[i : i + 8]) for i in range(0, 37, 8)]

    def fresh():
        return iter(batches)

    for given in (batches, fresh, xn.data.streams.IterableSource(batches)):
        b = make_net(backend)
        b.fit(given, epochs=2, verbose=0)
        assert_same(a, b, backend)


def test_a_torch_dataloader_is_read_every_epoch(backend):
    torch = pytest.importorskip("torch")
    X, y = data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.asarray(X), torch.asarray(y)), batch_size=8, shuffle=False
    )
    a, b = make_net(backend), make_net(backend)
    a.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    b.fit(loader, epochs=2, verbose=0)
    assert_same(a, b, backend)


def test_a_one_shot_generator_serves_one_epoch_only(backend):
    X, y = data()
    one_shot = ((X[i : i + 8], y[i : i + 8]) for i in range(0, 37, 8))
    net = make_net(backend)
    before = weights(net)
    with pytest.raises(ValueError, match="X is a one-shot iterator .* one epoch, not 3"):
        net.fit(one_shot, epochs=3, verbose=0)
    assert net.epoch == 0 and all(np.array_equal(p, q) for p, q in zip(weights(net), before))
    net.fit(one_shot, epochs=1, verbose=0)  # nothing was read: its one epoch is still there
    assert net.epoch == 1
    with pytest.raises(ValueError, match="gave no batches this epoch"):
        net.fit(one_shot, epochs=1, verbose=0)
    val = ((X[i : i + 8], y[i : i + 8]) for i in range(0, 37, 8))
    with pytest.raises(ValueError, match="validation_data is a one-shot iterator"):
        make_net(backend).fit(X, y, validation_data=val, epochs=2, verbose=0)


def test_weight_zero_rows_change_nothing(backend):
    X, y = data()
    rng = np.random.default_rng(2)
    w = rng.uniform(0.5, 2.0, 37)
    plain = [(X[i : i + 8], y[i : i + 8], w[i : i + 8]) for i in range(0, 37, 8)]
    junk = rng.normal(size=(3, 4)) * 100
    padded = [
        (np.vstack([xb, junk]), np.concatenate([yb, [0, 1, 2]]), np.concatenate([wb, np.zeros(3)]))
        for xb, yb, wb in plain
    ]
    a, b = make_net(backend, dropout=0.0), make_net(backend, dropout=0.0)
    ha = a.fit(plain, epochs=2, verbose=0).history
    hb = b.fit(padded, epochs=2, verbose=0).history
    for p, q in zip(weights(a), weights(b)):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-13)
    assert hb["accuracy"] == ha["accuracy"]
    np.testing.assert_allclose(a.evaluate(plain)["loss"], b.evaluate(padded)["loss"], rtol=1e-13)


def test_batches_are_read_and_prepared_in_a_background_thread(backend):
    X, y = data()
    readers = set()

    def batches():
        for i in range(0, 37, 8):
            readers.add(threading.current_thread().name)
            yield X[i : i + 8], y[i : i + 8]

    make_net(backend).fit(batches, epochs=2, verbose=0)
    assert readers == {"xpnet-prefetch"}


def test_a_memmap_is_never_copied_whole(backend, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 40))  # 6.4 MB of rows (the predictions are 480 kB, the shuffle 160 kB)
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = rng.integers(0, 3, 20000)
    net = xn.Network(
        [xn.Dense(3, "softmax", in_features=40)], loss="categorical_crossentropy", backend=backend
    )
    net.fit(X[:64], y[:64], epochs=1, verbose=0)  # first-use work (compiling, caches) outside the trace
    tracemalloc.start()
    try:
        net.fit(mapped, y, epochs=1, batch_size=500, verbose=0)
        net.predict(mapped, batch_size=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 4


def test_predict_and_evaluate_stream_like_in_memory(backend, memmap):
    X, y = data()
    net = make_net(backend)
    net.fit(X, y, epochs=1, batch_size=8, verbose=0)
    want = xn.to_numpy(net.predict(X))
    np.testing.assert_allclose(xn.to_numpy(net.predict(memmap[0], batch_size=10)), want, rtol=1e-13)
    batches = [(X[i : i + 8], y[i : i + 8]) for i in range(0, 37, 8)]
    np.testing.assert_allclose(xn.to_numpy(net.predict(batches)), want, rtol=1e-13)
    scores = net.evaluate(X, y)
    for got in (net.evaluate(memmap[0], memmap[1], batch_size=5), net.evaluate(batches)):
        assert got["accuracy"] == scores["accuracy"]
        np.testing.assert_allclose(got["loss"], scores["loss"], rtol=1e-13)


def test_an_unbuilt_network_is_built_from_the_first_batch(backend):
    X, y = data()
    net = xn.Network([xn.Dense(3, "softmax")], loss="categorical_crossentropy", backend=backend, seed=0)
    net.fit([(X[:8], y[:8]), (X[8:], y[8:])], epochs=1, verbose=0)
    assert net.in_features == 4


def test_bad_batches_are_named(backend):
    X, y = data()
    net = make_net(backend)
    with pytest.raises(ValueError, match="batch 1: X_b has 5 features, but the network expects 4"):
        net.fit([(X[:8], y[:8]), (np.ones((8, 5)), y[:8])], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch 0: y_b has label 7"):
        net.fit([(X[:8], np.full(8, 7))], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch 0 has no targets"):
        net.fit([(X[:8],)], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y and sample_weight must be left out"):
        net.fit([(X[:8], y[:8])], y[:8], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y is None"):
        net.fit(X, None, device_data=False, verbose=0)


@pytest.mark.parametrize("kind", ["text", "numeric text", "objects", "complex"])
def test_batches_are_checked_as_in_memory_data_is(backend, kind):
    X, y = data()
    bad = {
        "text": X.astype(str),
        "numeric text": np.char.mod("%.3f", X),
        "objects": np.array([["a"] * 4] * 37, dtype=object),
        "complex": X + 1j,
    }[kind]
    with pytest.raises(ValueError) as in_memory:
        make_net(backend).fit(bad, y, epochs=1, verbose=0)
    with pytest.raises(ValueError) as streamed:
        make_net(backend).fit([(bad[:20], y[:20]), (bad[20:], y[20:])], epochs=1, verbose=0)
    assert str(streamed.value) == f"batch 0: X_b{str(in_memory.value)[1:]}"
    with pytest.raises(ValueError, match="^batch 0: X_b holds"):
        make_net(backend).fit(ArraySource(bad, y), epochs=1, verbose=0)

"""Checkpoints: round trips across backends, exact resumption, refusal of bad files, atomic writes."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import xpnet as xn
import xpnet.checkpoint as xio

pytest.importorskip("safetensors")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4))
Y = RNG.integers(0, 3, size=48)


def _net(backend):
    return xn.Network(
        [xn.Dense(8, "relu", in_features=4), xn.Dropout(0.25), xn.Dense(3, "softmax")],
        loss="cross_entropy",
        optimizer=xn.Adam(0.01),
        backend=backend,
        dtype="float64",
        seed=7,
    )


def test_resuming_after_load_equals_an_uninterrupted_run(backend, tmp_path):
    straight = _net(backend)
    straight.fit(X, Y, epochs=4, batch_size=10, verbose=0)

    first = _net(backend)
    first.fit(X, Y, epochs=2, batch_size=10, verbose=0)
    path = tmp_path / "half.safetensors"
    first.save(path)
    resumed = xn.load(path, backend=backend)
    assert resumed.epoch == 2 and resumed.optimizer.iterations == first.optimizer.iterations
    resumed.fit(X, Y, epochs=2, batch_size=10, verbose=0)
    for got, want in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_a_checkpoint_loads_on_another_backend(backend, tmp_path):
    net = _net(backend)
    net.fit(X, Y, epochs=1, verbose=0)
    net.input_scaling = {"mean": [0.1, 0.2, 0.3, 0.4], "scale": [1.0, 2.0, 3.0, 4.0]}
    net.metadata = {"features": ["a", "b", "c", "d"], "classes": ["x", "y", "z"]}
    path = tmp_path / "m.safetensors"
    net.save(path)
    there = xn.load(path, backend="numpy")
    assert there.backend.name == "numpy" and there.metadata == net.metadata
    np.testing.assert_allclose(xn.to_numpy(there.predict(X)), xn.to_numpy(net.predict(X)), rtol=1e-12)
    assert there.history.history["loss"] == net.history.history["loss"]


def test_load_uses_the_default_backend_not_the_saved_one(tmp_path, monkeypatch):
    net = _net("numpy")
    net.save(tmp_path / "m.safetensors")
    monkeypatch.setenv(
        "XPNET_BACKEND",
        "array_api_strict" if "array_api_strict" in xn.available_backends() else "numpy",
    )
    assert xn.load(tmp_path / "m.safetensors").backend.name == os.environ["XPNET_BACKEND"]


def test_float32_network_round_trips_exactly(tmp_path):
    net = xn.Network(
        [xn.Dense(3, "tanh", in_features=2, use_bias=False), xn.Dense(1)], backend="numpy", seed=0
    )
    net.save(tmp_path / "m.safetensors")
    loaded = xn.load(tmp_path / "m.safetensors", backend="numpy")
    assert loaded.dtype == "float32" and loaded.layers[0].bias is None
    for got, want in zip(loaded.get_weights(), net.get_weights()):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def _good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    _net("numpy").save(path)
    return path


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        xn.load(tmp_path / "nothing.safetensors")


def test_truncated_file_is_refused(tmp_path):
    data = _good_file(tmp_path).read_bytes()
    for cut in (4, 40, len(data) - 8):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|too short|corrupt"):
            xn.load(bad)


def test_oversized_header_is_refused(tmp_path):
    bad = tmp_path / "huge.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ValueError, match="oversized"):
        xn.load(bad)
    with pytest.raises(ValueError, match="over the limit"):
        xn.load(_good_file(tmp_path), max_bytes=100)


def test_a_pickle_or_text_file_is_not_a_model(tmp_path):
    import pickle

    for name, data in [("p.pkl", pickle.dumps({"a": 1})), ("t.txt", b"hello, world " * 10)]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match="not an xpnet model|truncated|oversized"):
            xn.load(path)


def test_foreign_safetensors_file_is_not_a_model(tmp_path):
    import safetensors.numpy

    path = tmp_path / "foreign.safetensors"
    path.write_bytes(safetensors.numpy.save({"w": np.ones(3)}))
    with pytest.raises(ValueError, match="not an xpnet model"):
        xn.load(path)


def test_tampered_architecture_is_refused(tmp_path):
    data = _good_file(tmp_path).read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["layers"] = json.dumps([{"class": "os.system", "config": {}}])
    blob = json.dumps(header).encode()
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + size :])
    with pytest.raises(ValueError, match="unknown layer class 'os.system'"):
        xn.load(bad)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = _good_file(tmp_path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(xio.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        _net("numpy").save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_unbuilt_network_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        xn.Network([xn.Dense(2)], backend="numpy").save(tmp_path / "m.safetensors")


@pytest.mark.parametrize(
    "loss", [xn.Huber(delta=0.3), xn.MeanAbsoluteError(), xn.CategoricalCrossentropy(label_smoothing=0.1)]
)
def test_a_loss_and_its_options_survive_a_checkpoint(backend, tmp_path, loss):
    k = 3 if loss.classification else 2
    net = xn.Network([xn.Dense(k, in_features=4)], loss=loss, backend=backend, dtype="float64", seed=0)
    net.save(tmp_path / "net.safetensors")
    back = xn.load(tmp_path / "net.safetensors", backend=backend.name, device=backend.device)
    assert type(back.loss) is type(loss) and back.loss.get_config() == loss.get_config()


@pytest.mark.parametrize("where", ["parameter", "optimizer state"])
def test_save_refuses_nan_and_keeps_the_old_file(backend, tmp_path, where):
    net = _net(backend)
    net.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "good.safetensors"
    net.save(path)
    before = path.read_bytes()
    if where == "parameter":
        net.layers[0].weight = np.full((4, 8), np.nan)
        needle = "layers.0.weight"
    else:
        state = net.optimizer.state["2.bias"]
        state["exp_avg"] = net.backend.asarray(np.full(3, np.inf), net.dtype)
        needle = "optimizer.2.bias.exp_avg"
    with pytest.raises(ValueError, match=rf"not saving .*good.safetensors: the network's {needle} hold NaN"):
        net.save(path)
    assert path.read_bytes() == before
    net.save(path, allow_nonfinite=True)  # the explicit opt-in writes it
    _, tensors = xio.read(path)
    assert not np.isfinite(tensors[needle]).any()

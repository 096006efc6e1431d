"""Hostile and damaged checkpoint files, and saves that are killed (issue 11).

Every damaged or crafted file raises ValueError (never another exception
type) within a small memory bound; saving keeps symlinks, hard links and file
modes; a save killed at any moment leaves a loadable file, and temporaries
from killed saves do not pile up.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import sys
import time
import tracemalloc

import numpy as np
import pytest

import xpnet as xn
import xpnet.checkpoint as xio

pytest.importorskip("safetensors")

MEMORY_BOUND = 8 * 2**20
"""Bytes a refused file may cost at most while it is being read (tracemalloc peak)."""


def _net(backend="numpy", seed=7, width=8):
    return xn.Network(
        [xn.Dense(width, "relu", in_features=4), xn.Dropout(0.25), xn.Dense(3, "softmax")],
        loss="cross_entropy",
        optimizer=xn.Adam(0.01),
        backend=backend,
        dtype="float64",
        seed=seed,
    )


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The bytes of a real checkpoint: trained, with optimizer state, scaling and history."""
    rng = np.random.default_rng(0)
    net = _net()
    net.input_scaling = {"mean": [0.0] * 4, "scale": [1.0] * 4}
    net.fit(rng.normal(size=(20, 4)), rng.integers(0, 3, 20), epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    net.save(path)
    return path.read_bytes()


def _split(data):
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _join(header, body, raw=None):
    blob = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + body


def _refused_cheaply(path, backend=None):
    """Load ``path``; it must raise ValueError and allocate little on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            xn.load(path, backend=backend)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"refusing {path.name} cost {peak / 2**20:.1f} MiB"
    return str(info.value)


# -- damaged files -------------------------------------------------------------------------


def test_byte_flips_load_or_raise_value_error(good, tmp_path):
    rng = np.random.default_rng(11)
    path = tmp_path / "flipped.safetensors"
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(good)
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            data[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        try:
            xn.load(path, backend="numpy")
            outcomes["loaded"] += 1
        except ValueError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0  # flips land in the header and in the numbers


def test_every_truncation_raises_value_error(good, tmp_path):
    path = tmp_path / "cut.safetensors"
    for cut in sorted({*range(0, 16), *range(0, len(good), 97), len(good) - 1}):
        path.write_bytes(good[:cut])
        _refused_cheaply(path)


def _crafted(good):
    """(name, file bytes, part of the message) of hand-made hostile files."""
    header, body = _split(good)
    meta = header["__metadata__"]
    cases = []

    def with_meta(name, needle, **changes):
        h = json.loads(json.dumps(header))
        h["__metadata__"].update(changes)
        cases.append((name, _join(h, body), needle))

    def with_header(name, needle, change):
        h = json.loads(json.dumps(header))
        change(h)
        cases.append((name, _join(h, body), needle))

    layers = json.loads(meta["layers"])
    optimizer = json.loads(meta["optimizer"])
    history = json.loads(meta["history"])

    def layer_config(index, **config):
        changed = json.loads(json.dumps(layers))
        changed[index]["config"].update(config)
        return json.dumps(changed)

    cases.append(("metadata list", _join({"__metadata__": [1]}, b""), "no xpnet metadata"))
    deep = b'{"a":' * 200_000 + b"1" + b"}" * 200_000
    cases.append(("nested 200k", _join(None, b"", raw=deep), "lists or objects"))
    deep = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    cases.append(("nested 50k", _join(None, b"", raw=deep), "nested too deeply"))
    cases.append(("4 MiB of lists", _join(None, b"", raw=b"[" + b"[]," * 2**20 + b"0]"), "lists or objects"))
    many = json.loads(json.dumps(header))
    many["__metadata__"]["history"] = json.dumps({"epoch": [0] * 2_000_000, "history": {}})
    cases.append(("2M values", _join(many, body), "values"))
    cases.append(("header size 2**63", struct.pack("<Q", 2**63) + b"{}", "oversized"))
    cases.append(("header past end", struct.pack("<Q", 1000) + b"{}", "truncated"))
    cases.append(("header not object", _join(None, b"", raw=b"[1, 2]"), "not a JSON object"))
    cases.append(("header not utf-8", _join(None, b"", raw=b'{"\xff": 1}'), "not valid JSON"))
    with_meta("Dense(100000)", "100000", layers=layer_config(0, units=100_000))
    with_meta("last Dense(100000)", "architecture needs", layers=layer_config(2, units=100_000))
    huge = layer_config(0, in_features=10**9)
    with_meta("in_features 10**9", "1000000000", in_features=str(10**9), layers=huge)
    with_meta("in_features text", "in_features", in_features="four")
    with_meta("in_features zero", "in_features", in_features="0")
    with_meta("units text", "invalid config", layers=layer_config(0, units="8"))
    with_meta("units negative", "invalid config", layers=layer_config(0, units=-1))
    with_meta("activation number", "invalid config", layers=layer_config(0, activation=5))
    with_meta("unknown config key", "invalid config", layers=layer_config(0, evil=1))
    with_meta("config not object", "config", layers=json.dumps([{"class": "Dense", "config": [8]}]))
    with_meta("layers empty", "non-empty", layers="[]")
    with_meta("layers not JSON", "not valid JSON", layers="[{")
    with_meta("layers deep", "nested too deeply", layers="[" * 50_000 + "]" * 50_000)
    with_meta("layer class list", "unknown layer class", layers=json.dumps([{"class": ["Dense"]}]))
    with_meta("dtype", "dtype", dtype="int8")
    with_meta("loss unknown", "loss", loss="evil")
    with_meta("epoch negative", "epoch", epoch="-1")
    with_meta("epoch huge", "epoch", epoch="9" * 5000)
    with_meta("iterations text", "iterations", optimizer=json.dumps({**optimizer, "iterations": "3"}))
    with_meta("iterations negative", "iterations", optimizer=json.dumps({**optimizer, "iterations": -2}))
    with_meta("optimizer unknown", "unknown optimizer", optimizer=json.dumps({**optimizer, "name": "evil"}))
    with_meta(
        "optimizer config",
        "optimizer config",
        optimizer=json.dumps({**optimizer, "config": {"learning_rate": "fast"}}),
    )
    with_meta("optimizer list", "optimizer", optimizer="[1]")
    with_meta("rng state", "rng_state", rng_state=json.dumps({"bit_generator": "PCG64", "state": 1}))
    with_meta("rng state list", "rng_state", rng_state="[]")
    with_meta("scaling short", "input_scaling", input_scaling=json.dumps({"mean": [0], "scale": [1]}))
    with_meta(
        "scaling text", "input_scaling", input_scaling=json.dumps({"mean": ["a"] * 4, "scale": [1] * 4})
    )
    with_meta("scaling zero", "zero", input_scaling=json.dumps({"mean": [0] * 4, "scale": [0] * 4}))
    with_meta("scaling list", "input_scaling", input_scaling="[1]")
    with_meta("metadata list", "metadata", metadata="[1]")
    with_meta("history short", "one value per epoch", history=json.dumps({**history, "epoch": [0]}))
    with_meta("history text", "numbers", history=json.dumps({"epoch": [0], "history": {"loss": ["x"]}}))
    with_meta("history list", "history", history="[]")
    with_meta("metadata not string", "not strings", epoch=3)
    del_meta = json.loads(json.dumps(header))
    del del_meta["__metadata__"]["rng_state"]
    cases.append(("missing entry", _join(del_meta, body), "lacks the metadata entries ['rng_state']"))

    def big_weight(h):
        h["layers.0.weight"]["shape"] = [8000, 8000]

    def bad_dtype(h):
        h["layers.0.weight"]["dtype"] = "F128"

    def negative_shape(h):
        h["layers.0.weight"]["shape"] = [-4, 8]

    def reversed_offsets(h):
        begin, end = h["layers.0.weight"]["data_offsets"]
        h["layers.0.weight"]["data_offsets"] = [end, begin]

    def beyond_body(h):
        h["layers.0.weight"]["data_offsets"] = [2**40, 2**40 + 256]

    def extra_tensor(h):
        h["layers.1.weight"] = dict(h["layers.0.bias"])

    def orphan_state(h):
        h["optimizer.1.weight.exp_avg"] = dict(h["layers.0.bias"])

    def missing_tensor(h):
        del h["layers.2.bias"]

    def entry_not_object(h):
        h["layers.0.weight"] = 5

    def wrong_shape(h):  # same byte count, other shape
        h["layers.0.weight"]["shape"] = [8, 4]

    for change, needle in [
        (big_weight, "needs"),
        (bad_dtype, "dtype"),
        (negative_shape, "shape"),
        (reversed_offsets, "corrupt"),
        (beyond_body, "corrupt"),
        (extra_tensor, "no place for"),
        (orphan_state, "no parameter"),
        (missing_tensor, "lacks the parameters"),
        (entry_not_object, "not a tensor description"),
        (wrong_shape, "architecture needs"),
    ]:
        with_header(change.__name__, needle, change)
    f32 = json.loads(json.dumps(header))
    f32["__metadata__"]["dtype"] = "float32"
    cases.append(("tensor dtype mismatch", _join(f32, body), "dtype F64"))
    return cases


@pytest.fixture(scope="module")
def crafted(good):
    return _crafted(good)


def test_crafted_files_raise_value_error_cheaply(crafted, tmp_path, backend):
    assert len(crafted) >= 50
    for name, data, needle in crafted:
        path = tmp_path / "crafted.safetensors"
        path.write_bytes(data)
        message = _refused_cheaply(path, backend)
        assert needle in message, f"{name}: {message}"
        assert message.startswith(f"{path}"), f"{name}: the error does not name the file: {message}"


def test_a_large_file_that_is_not_a_model_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.bin"
    with path.open("wb") as handle:  # sparse: 2 GiB that take no disk space
        handle.write(struct.pack("<Q", 64) + b"x" * 64)
        handle.truncate(2 * 2**30)
    assert "not valid JSON" in _refused_cheaply(path)
    with path.open("r+b") as handle:  # a header that claims most of the file
        handle.write(struct.pack("<Q", 2**31))
    assert "oversized" in _refused_cheaply(path)


def test_from_state_checks_tensors_given_directly(backend):
    tensors, metadata = _net(backend).state()
    tensors["layers.0.weight"] = np.zeros((8000, 3))
    with pytest.raises(ValueError, match="architecture needs"):
        xn.Network.from_state(metadata, tensors, backend=backend)


# -- saving: links, modes, temporaries -------------------------------------------------------


def _loads(path, net):
    for got, want in zip(xn.load(path, backend="numpy").get_weights(), net.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_saving_through_a_symlink_updates_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "m.safetensors"
    _net(seed=1).save(target)
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    net = _net(seed=2)
    net.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    _loads(target, net)
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to(tmp_path / "real" / "new.safetensors")
    net.save(dangling)
    assert dangling.is_symlink()
    _loads(tmp_path / "real" / "new.safetensors", net)


def test_saving_keeps_hard_links(tmp_path):
    first = tmp_path / "a.safetensors"
    _net(seed=1).save(first)
    second = tmp_path / "b.safetensors"
    os.link(first, second)
    net = _net(seed=2, width=16)  # a different size: the file shrinks or grows in place
    net.save(second)
    assert os.path.samefile(first, second) and os.stat(first).st_nlink == 2
    _loads(first, net)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_saving_keeps_the_mode_of_an_existing_file_and_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        new = tmp_path / "new.safetensors"
        _net().save(new)
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o640
        os.chmod(new, 0o604)
        _net(seed=3).save(new)
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o604
    finally:
        os.umask(old)


def test_the_next_save_removes_stale_temporaries_but_not_live_ones(tmp_path):
    path = tmp_path / "m.safetensors"
    stale = [tmp_path / f".m.safetensors.{i:012x}.tmp" for i in range(3)]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.safetensors.000000000000.tmp"
    other.write_bytes(b"not ours")
    if xio.fcntl is not None:  # a writer that is still alive holds a lock on its temporary
        live_path = tmp_path / ".m.safetensors.live00000000.tmp"
        live = os.open(live_path, os.O_WRONLY | os.O_CREAT)
        xio.fcntl.flock(live, xio.fcntl.LOCK_EX)
    _net().save(path)
    assert not any(p.exists() for p in stale) and other.exists()
    if xio.fcntl is not None:
        assert live_path.exists()
        os.close(live)
        _net().save(path)
        assert not live_path.exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
# The child only writes files with NumPy and is killed within 20 ms: a lock it inherits
# from another library's threads can at worst stall it, which the test tolerates.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:os.fork:DeprecationWarning")
def test_saves_killed_at_random_moments_never_leave_a_bad_file_or_piles_of_temporaries(tmp_path):
    path = tmp_path / "m.safetensors"
    nets = [_net(seed=s, width=2000) for s in (1, 2)]  # ~0.5 MB files: writes take a while
    nets[0].save(path)
    expected = [n.get_weights() for n in nets]
    rng = np.random.default_rng(5)
    for _ in range(20):
        pid = os.fork()
        if pid == 0:  # the child saves until it is killed
            try:
                for i in range(10**6):
                    nets[i % 2].save(path)
            finally:
                os._exit(1)
        time.sleep(float(rng.uniform(0.0, 0.02)))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        weights = xn.load(path, backend="numpy").get_weights()
        assert any(all(np.array_equal(a, b) for a, b in zip(weights, w)) for w in expected)
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(leftovers) <= 2, leftovers
    nets[1].save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]

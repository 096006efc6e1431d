"""The metadata a model file carries, tampered with (issue 22, defect 2 and its rough edges).

A model written by ``xpnet train`` stores a fitted tabular encoder, a target
scaling, an input scaling and the class labels as JSON. Each is checked when
the file is read: a tampered entry is one ValueError that names the file,
raised before anything of the data's size is allocated; ``xpnet predict`` on
it ends with one line and exit status 2. Files that are not regular files
(a directory, a FIFO, a symlink to ``/dev/zero``) are named for what they are.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
import struct
import tracemalloc

import numpy as np
import pytest

import xpnet as xn
from xpnet.cli import main

pd = pytest.importorskip("pandas")
pytest.importorskip("safetensors")

MEMORY_BOUND = 32 * 2**20
"""Bytes refusing a tampered file may cost (tracemalloc peak). The largest case, a 2.3 MB header
listing 200,000 categories, costs about 26 MiB as parsed JSON (bounded by the header limits of
:mod:`xpnet.checkpoint`); before it was refused, predicting 344 rows with it peaked at 1.2 GB."""


def _split(data):
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _join(header, body):
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + body


def _write_table(path, rows=60, seed=0, target="label"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "gappy", "town", "member", target])
        for i in range(rows):
            gap = "" if i % 7 == 0 else f"{rng.normal():.4f}"
            town = "abc"[i % 3]
            member = "TRUE" if i % 2 else "FALSE"
            value = int(x[i] > 0) if target == "label" else f"{3 * x[i] + rng.normal():.4f}"
            writer.writerow([f"{x[i]:.4f}", gap, town, member, value])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A classifier and a regressor written by ``xpnet train`` (numpy), and their data."""
    folder = tmp_path_factory.mktemp("models")
    made = {}
    for kind, target in (("classifier", "label"), ("regressor", "amount")):
        data = folder / f"{kind}.csv"
        _write_table(data, target=target)
        model = folder / f"{kind}.safetensors"
        argv = ["train", str(data), "--epochs", "2", "--hidden", "4", "--folds", "1", "--quiet"]
        assert main([*argv, "--backend", "numpy", "--out", str(model)]) == 0
        made[kind] = (model.read_bytes(), data)
    return made


def _tampered(good, change, entry="metadata"):
    header, body = _split(good)
    value = json.loads(header["__metadata__"][entry])
    changed = change(copy.deepcopy(value))
    header["__metadata__"][entry] = json.dumps(changed)
    return _join(header, body)


# -- the generator -----------------------------------------------------------------------------

HOSTILE = {
    "missing": None,
    "null": None,
    "text": "x",
    "true": True,
    "minus one": -1,
    "zero": 0,
    "subnormal": 1e-320,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "huge": 1e308,
    "empty list": [],
    "list of text": ["a", "b"],
    "object": {"a": 1},
}
"""Values a careless or hostile editor puts in a JSON entry (``"missing"`` deletes the entry)."""


def _at(value, path):
    for step in path[:-1]:
        value = value[step]
    return value


def _setter(path, hostile):
    def change(meta):
        owner = _at(meta, path)
        if hostile == "missing":
            del owner[path[-1]]
        else:
            owner[path[-1]] = copy.deepcopy(HOSTILE[hostile])
        return meta

    return change


def _paths(meta):
    """Every entry of the keys the issue lists: encoder (each column's fields), target_scaling,
    classes, feature_names, task and target_name."""
    paths = [("encoder",), ("encoder", "max_categories"), ("encoder", "columns")]
    for i, column in enumerate(meta["encoder"]["columns"]):
        paths += [("encoder", "columns", i)] + [("encoder", "columns", i, key) for key in column]
    for key in ("target_scaling", "classes", "feature_names", "task", "target_name"):
        if key in meta:
            paths.append((key,))
            if isinstance(meta[key], dict):
                paths += [(key, name) for name in meta[key]]
            if isinstance(meta[key], list) and meta[key]:
                paths.append((key, 0))
    return paths


def tampered_metadata(good):
    """(name, entry, change) for every listed entry and every hostile value (a generator of cases):
    the ``metadata`` entry's keys, and the ``input_scaling`` entry (its means, or its scales, all
    set to the hostile value)."""
    header, _ = _split(good)
    meta = json.loads(header["__metadata__"]["metadata"])
    width = int(header["__metadata__"]["in_features"])
    for path in _paths(meta):
        for hostile in HOSTILE:
            name = "/".join(map(str, path)) + f" = {hostile}"
            yield name, "metadata", _setter(path, hostile)
    for key in ("mean", "scale"):
        for hostile in HOSTILE:
            other = 0.0 if key == "scale" else 1.0
            value = [copy.deepcopy(HOSTILE[hostile])] * width

            def change(_, key=key, value=value, other=other):
                return {key: value, ("scale" if key == "mean" else "mean"): [other] * width}

            yield f"input_scaling/{key} = {hostile}", "input_scaling", change


def _scaling(values):
    def change(scaling):
        return {"mean": [0.0] * len(values), "scale": values}

    return change


def bad_cases(models):
    """(name, model kind, file bytes, part of the message) that must be refused at load."""
    cls, reg = models["classifier"][0], models["regressor"][0]

    def enc(i, **changes):
        def change(meta):
            meta["encoder"]["columns"][i].update(changes)
            return meta

        return change

    def meta(**changes):
        def change(m):
            m.update(changes)
            return m

        return change

    def categories(n):
        def change(m):
            m["encoder"]["columns"][2]["categories"] = [f"c{i}" for i in range(n)]
            m["encoder"]["max_categories"] = n
            return m

        return change

    cases = [
        (
            "200k categories",
            "classifier",
            _tampered(cls, categories(200_000)),
            "makes 200005 features, but the network takes 8",
        ),
        ("scale nan", "classifier", _tampered(cls, enc(0, scale=math.nan)), "'scale' is nan"),
        ("scale 0", "classifier", _tampered(cls, enc(0, scale=0)), "'scale' is 0"),
        ("scale 1e-320", "classifier", _tampered(cls, enc(0, scale=1e-320)), "normal size"),
        ("median inf", "classifier", _tampered(cls, enc(0, median=math.inf)), "'median' is inf"),
        ("mean text", "classifier", _tampered(cls, enc(0, mean="1")), "'mean' is '1'"),
        ("indicator flipped", "classifier", _tampered(cls, enc(0, indicator=True)), "makes 9 features"),
        ("kind evil", "classifier", _tampered(cls, enc(0, kind="evil")), "kind 'evil'"),
        (
            "repeated category",
            "classifier",
            _tampered(cls, enc(2, categories=["a", "a", "b"])),
            "more than once",
        ),
        ("classes short", "classifier", _tampered(cls, meta(classes=[0])), "1 classes"),
        ("classes repeated", "classifier", _tampered(cls, meta(classes=[0, 0])), "more than once"),
        ("classes objects", "classifier", _tampered(cls, meta(classes=[{}, []])), "list of labels"),
        ("classes on regression", "regressor", _tampered(reg, meta(classes=[0, 1])), "need 0"),
        ("task swapped", "classifier", _tampered(cls, meta(task="regression")), "task is 'regression'"),
        (
            "names not encoder's",
            "classifier",
            _tampered(cls, meta(feature_names=["a", "b", "c", "d"])),
            "not its",
        ),
        (
            "target scale nan",
            "regressor",
            _tampered(reg, meta(target_scaling={"mean": [0], "scale": [math.nan]})),
            "target_scaling",
        ),
        (
            "target scale inf",
            "regressor",
            _tampered(reg, meta(target_scaling={"mean": [0], "scale": [math.inf]})),
            "target_scaling",
        ),
        (
            "target scale 0",
            "regressor",
            _tampered(reg, meta(target_scaling={"mean": [0], "scale": [0]})),
            "zero",
        ),
        (
            "target two outputs",
            "regressor",
            _tampered(reg, meta(target_scaling={"mean": [0, 0], "scale": [1, 1]})),
            "1 finite",
        ),
        (
            "target mean 1e300",
            "regressor",
            _tampered(reg, meta(target_scaling={"mean": [1e300], "scale": [1]})),
            "float32's range",
        ),
        (
            "target on classifier",
            "classifier",
            _tampered(cls, meta(target_scaling={"mean": [0], "scale": [1]})),
            "classification loss",
        ),
    ]
    width = json.loads(_split(reg)[0]["__metadata__"]["in_features"])
    for name, values in (("input scale 1e-320", [1e-320] * width), ("input scale 1e-40", [1e-40] * width)):
        data = _tampered(reg, _scaling(values), entry="input_scaling")
        cases.append((name, "regressor", data, "smallest normal"))
    return cases


def _load_refused(path, backend):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            xn.load(path, backend=backend)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"refusing cost {peak / 2**20:.1f} MiB"
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def _backend_args(backend):
    """``--backend`` and ``--device`` for the backend under test (array_api_strict's Device('device1'))."""
    device = re.sub(r"^.*Device\('(.*)'\)$", r"\1", str(backend.device))
    return ["--backend", backend.name, "--device", device]


def _predict(model, data, backend, capsys):
    capsys.readouterr()
    status = main(["predict", str(model), str(data), *_backend_args(backend)])
    out, err = capsys.readouterr()
    return status, out, err.strip()


def test_tampered_entries_are_refused_at_load_naming_the_file(models, tmp_path, backend, capsys):
    cases = bad_cases(models)
    assert len(cases) >= 20
    for name, kind, data, needle in cases:
        path = tmp_path / f"{kind}.safetensors"
        path.write_bytes(data)
        message = _load_refused(path, backend)
        assert needle in message, f"{name}: {message}"
        status, out, err = _predict(path, models[kind][1], backend, capsys)
        assert status == 2 and out == "", name
        assert err.splitlines() == [f"xpnet: error: {message}"], name


def test_every_generated_tampering_loads_and_predicts_or_is_one_line_naming_the_file(
    models, tmp_path, backend, capsys
):
    """No tampered entry may end in a traceback, a crash or non-finite predictions."""
    outcomes = {"refused": 0, "predicted": 0}
    for kind in ("classifier", "regressor"):
        good, data = models[kind]
        for name, entry, change in tampered_metadata(good):
            path = tmp_path / f"{kind}.safetensors"
            path.write_bytes(_tampered(good, change, entry))
            status, out, err = _predict(path, data, backend, capsys)
            err = "\n".join(line for line in err.splitlines() if not line.startswith("note: "))
            if status == 2:
                assert len(err.splitlines()) == 1 and err.startswith("xpnet: error: "), (name, err)
                assert str(path) in err or "the model's encoder" in err, (name, err)
                outcomes["refused"] += 1
                continue
            assert status == 0, (name, err)
            frame = pd.read_csv(pd.io.common.StringIO(out))
            numbers = frame.select_dtypes("number").to_numpy()
            assert len(frame) == 60 and np.all(np.isfinite(numbers)), name
            outcomes["predicted"] += 1
    print(outcomes)
    assert outcomes["refused"] > 300 and outcomes["predicted"] > 0, outcomes


def test_a_checkpoint_error_names_the_file(tmp_path, backend):
    net = xn.Network([xn.Dense(2, in_features=3)], backend=backend)
    path = tmp_path / "m.safetensors"
    net.save(path)
    header, body = _split(path.read_bytes())
    header["__metadata__"]["layers"] = json.dumps([{"class": "os.system", "config": {}}])
    path.write_bytes(_join(header, body))
    with pytest.raises(ValueError, match=rf"^{path}: unknown layer class 'os.system'"):
        xn.load(path, backend=backend)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX special files")
def test_special_files_are_named_for_what_they_are(tmp_path, backend):
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe")
    os.symlink("/dev/zero", tmp_path / "zero.safetensors")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.safetensors")
    for name, needle in (
        ("folder", "is a directory, not a model file"),
        ("pipe", "is a named pipe (FIFO), not a model file"),
        ("zero.safetensors", "(a symlink to /dev/zero) is a character device, not a model file"),
    ):
        with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            xn.load(tmp_path / name, backend=backend)
    with pytest.raises(FileNotFoundError, match="a symlink to .*nowhere, which does not exist"):
        xn.load(tmp_path / "dangling.safetensors", backend=backend)
    with pytest.raises(FileNotFoundError, match="no model file at"):
        xn.load(tmp_path / "absent.safetensors", backend=backend)

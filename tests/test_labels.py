"""DataFrame column labels as the user gave them (issue 22, defect 1).

Integer labels (``pd.DataFrame(array)``), ``1`` beside ``"1"``, MultiIndex
tuples: matched by value in ``fit``, ``predict`` and ``evaluate``, kept in the
checkpoint's JSON, so ``predict`` after ``load`` matches them too. Duplicate
and unstorable labels: one ValueError naming them.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet as xn
from xpnet.data import TabularEncoder, labels

pd = pytest.importorskip("pandas")

PREPROCESS = [None, "auto", "always"]


def _data(columns):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    return pd.DataFrame(X, columns=columns), X[:, 0] - 2.0 * X[:, 2]


def _net(backend):
    return xn.Network(
        [xn.Dense(1)], loss="mse", optimizer=xn.SGD(0.1), backend=backend, dtype="float64", seed=0
    )


LABELLINGS = {
    "integers": [0, 1, 2],
    "one beside '1'": [1, "1", 2],
    "multiindex": pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)]),
    "floats and booleans": [0.5, True, "x"],
}


@pytest.mark.parametrize("preprocess", PREPROCESS)
@pytest.mark.parametrize("labelling", list(LABELLINGS))
def test_labels_are_matched_as_given_before_and_after_load(backend, tmp_path, labelling, preprocess):
    frame, y = _data(LABELLINGS[labelling])
    net = _net(backend)
    net.fit(frame, y, epochs=3, verbose=0, preprocess=preprocess)
    expected = xn.to_numpy(net.predict(frame))
    reordered = frame.iloc[:, [2, 0, 1]].copy()
    np.testing.assert_allclose(xn.to_numpy(net.predict(reordered)), expected, rtol=1e-12)
    net.save(tmp_path / "m.safetensors")
    loaded = xn.load(tmp_path / "m.safetensors", backend=backend)
    np.testing.assert_allclose(xn.to_numpy(loaded.predict(reordered)), expected, rtol=1e-12)
    assert loaded.evaluate(reordered, y)["loss"] == pytest.approx(net.evaluate(frame, y)["loss"], rel=1e-9)


def test_one_and_text_one_are_different_columns(backend):
    frame, y = _data([1, "1", 2])
    net = _net(backend)
    net.fit(frame, y, epochs=3, verbose=0)
    swapped = frame.rename(columns={1: "tmp"}).rename(columns={"1": 1, "tmp": "1"})
    swapped = swapped.iloc[:, [1, 0, 2]]  # same column order, labels 1 and "1" exchanged
    assert not np.allclose(xn.to_numpy(net.predict(swapped)), xn.to_numpy(net.predict(frame)))
    with pytest.raises(ValueError, match=r"lacks the network's feature column\(s\) \[2\]"):
        net.predict(frame.rename(columns={2: "2"}))


@pytest.mark.parametrize("preprocess", PREPROCESS)
def test_duplicate_labels_are_one_value_error_naming_them(backend, preprocess):
    frame, y = _data(["a", "a", "b"])
    with pytest.raises(ValueError, match=r"duplicate column labels \['a'\]"):
        _net(backend).fit(frame, y, epochs=1, verbose=0, preprocess=preprocess)
    frame, y = _data([1, 1.0, "b"])
    with pytest.raises(ValueError, match=r"duplicate column labels \[1"):
        _net(backend).fit(frame, y, epochs=1, verbose=0, preprocess=preprocess)


@pytest.mark.parametrize("preprocess", PREPROCESS)
def test_labels_a_model_file_cannot_store_are_named(backend, preprocess):
    frame, y = _data([pd.Timestamp("2024-01-01"), float("nan"), "c"])
    with pytest.raises(ValueError, match=r"\[Timestamp.*, nan\] that a model file cannot store") as info:
        _net(backend).fit(frame, y, epochs=1, verbose=0, preprocess=preprocess)
    assert "x{i}" in str(info.value)  # and how to rename them


def test_predict_refuses_a_needed_column_given_twice(backend):
    frame, y = _data(["a", "b", "c"])
    net = _net(backend)
    net.fit(frame, y, epochs=1, verbose=0)
    twice = pd.concat([frame, frame[["b"]]], axis=1)
    with pytest.raises(ValueError, match=r"\['b'\] more than once"):
        net.predict(twice)


def test_encoder_of_integer_labels_keeps_them_and_names_outputs():
    frame = pd.DataFrame({0: [1.0, 2.0, 3.0], ("t", 1): ["a", "b", "a"]})
    encoder = TabularEncoder().fit(frame)
    assert encoder.names == [0, ["t", 1]]
    assert encoder.feature_names_out == ["0", "('t', 1)=a", "('t', 1)=b"]
    again = TabularEncoder.from_state(encoder.get_state())
    np.testing.assert_array_equal(again.transform(frame.iloc[:, ::-1]), encoder.transform(frame))


def test_stored_labels_round_trip_through_json_keys():
    import json

    columns = [0, "0", 2.5, True, None, ("a", 1)]
    stored = labels.stored(columns)
    assert json.loads(json.dumps(stored)) == stored
    assert [labels.key(s) for s in stored] == [labels.key(c) for c in columns]
    assert len({labels.key(c) for c in columns}) == len(columns)

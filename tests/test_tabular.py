"""Tables: the tabular encoder, target encoding, CSV files as people write them, DataFrames in Network."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import xpnet as xn

pd = pytest.importorskip("pandas")

from xpnet.data import TabularEncoder, TargetEncoder, read_table  # noqa: E402

PENGUINS = Path(__file__).parent / "data" / "penguins.csv"


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "age": [20.0, np.nan, 40.0, 60.0],
            "town": ["paris", "rome", "paris", None],
            "member": [True, False, True, True],
            "visits": [1, 2, 3, 4],
        }
    )


def test_encoder_imputes_flags_standardizes_and_one_hot_encodes(frame):
    encoder = TabularEncoder().fit(frame)
    assert encoder.feature_names_out == [
        "age",
        "age_missing",
        "town=paris",
        "town=rome",
        "member=False",
        "member=True",
        "visits",
    ]
    out = encoder.transform(frame)
    filled = np.array([20.0, 40.0, 40.0, 60.0])  # the gap takes the median of 20, 40, 60
    np.testing.assert_allclose(out[:, 0], (filled - filled.mean()) / filled.std())
    np.testing.assert_array_equal(out[:, 1], [0, 1, 0, 0])
    np.testing.assert_array_equal(out[:, 2:4], [[1, 0], [0, 1], [1, 0], [0, 0]])  # a gap: all zeros
    np.testing.assert_array_equal(out[:, 4:6], [[0, 1], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(out[:, 6], (np.arange(1, 5) - 2.5) / np.std(np.arange(1, 5)))


def test_encoder_unseen_category_is_all_zeros_and_no_indicator_without_training_gaps(frame):
    encoder = TabularEncoder().fit(frame.dropna())
    assert "age_missing" not in encoder.feature_names_out
    new = pd.DataFrame({"age": [np.nan], "town": ["oslo"], "member": [False], "visits": [2]})
    out = encoder.transform(new)
    assert out[0, encoder.feature_names_out.index("age")] == pytest.approx(
        (30.0 - np.mean([20.0, 40.0])) / np.std([20.0, 40.0])
    )
    assert out[0, 1:3].tolist() == [0.0, 0.0]


def test_encoder_state_is_json_and_matches_columns_by_name(frame):
    encoder = TabularEncoder().fit(frame)
    again = TabularEncoder.from_state(json.loads(json.dumps(encoder.get_state())))
    shuffled = frame[["visits", "town", "age", "member"]].assign(extra=1)
    np.testing.assert_array_equal(again.transform(shuffled), encoder.transform(frame))
    with pytest.raises(ValueError, match=r"feature column\(s\) \['age', 'member'\]"):
        again.transform(frame[["town", "visits"]])


@pytest.mark.parametrize(
    ("values", "task", "classes"),
    [
        ([0.0, 1.0, 1.0, 0.0], "classification", [0, 1]),  # 0/1 written as floats
        (["no", "yes", "no", "no"], "classification", ["no", "yes"]),
        ([True, False, True, True], "classification", [False, True]),
        ([1.5, 2.0, 3.0, 4.0], "regression", []),
        (list(range(30)), "regression", []),  # whole numbers, but many of them
    ],
)
def test_target_task_is_inferred(values, task, classes):
    encoder = TargetEncoder().fit(pd.Series(values, name="y"))
    assert encoder.task == task and encoder.classes == classes


def test_target_task_override_and_scaling():
    column = pd.Series([10.0, 20.0, 30.0, 40.0], name="price")
    encoder = TargetEncoder("regression").fit(column)
    np.testing.assert_allclose(encoder.transform(column), (column - 25.0) / column.std(ddof=0))
    codes = TargetEncoder("classification").fit(column).transform(column[::-1])
    assert codes.tolist() == [3, 2, 1, 0]


def test_semicolon_file_with_decimal_commas(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("größe;preis\n1,5;1.200,50\n2,5;3.400,00\n", encoding="latin-1")
    frame, notes = read_table(path, decimal=",", thousands=".", encoding="latin-1")
    assert list(frame.columns) == ["größe", "preis"] and not notes
    np.testing.assert_allclose(frame.to_numpy(), [[1.5, 1200.5], [2.5, 3400.0]])


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path, delimiter):
    path = tmp_path / "t.csv"
    path.write_text(delimiter.join(["a", "b", "c"]) + "\n" + delimiter.join(["1", "x y", "3"]) + "\n")
    frame, _ = read_table(path)
    assert list(frame.columns) == ["a", "b", "c"] and frame.iloc[0, 1] == "x y"


def test_saved_pandas_index_is_dropped_with_a_note(tmp_path):
    path = tmp_path / "saved.csv"
    pd.DataFrame({"a": [3.0, 1.0, 2.0], "y": ["u", "v", "u"]}).to_csv(path)  # index=True, as by default
    frame, notes = read_table(path)
    assert list(frame.columns) == ["a", "y"] and "saved pandas index" in notes[0]


def test_numeric_header_is_refused_and_no_header_reads_it(tmp_path):
    path = tmp_path / "bare.csv"
    path.write_text("1.0,2.0,0\n3.0,4.0,1\n5.0,6.0,0\n")
    with pytest.raises(ValueError, match="no-header"):
        read_table(path)
    frame, _ = read_table(path, header=False)
    assert list(frame.columns) == ["column1", "column2", "column3"] and len(frame) == 3


def test_text_among_numbers_names_every_column_and_first_rows(tmp_path):
    path = tmp_path / "bad.csv"
    rows = [f"{i},{i * 2},{i % 2}" for i in range(10)]
    rows[2] = "?,4,0"
    rows[7] = "7,none,1"
    rows[8] = "?,16,0"
    path.write_text("a,b,y\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"'a' \(data rows \[3, 9\]: \['\?'\]\); 'b' \(data rows \[8\]"):
        read_table(path)
    frame, notes = read_table(path, na_values=["?", "none"])
    assert frame["a"].isna().sum() == 2 and "'a' 2 (data rows 3, 9)" in notes[0]


def test_penguins_have_gaps_and_text():
    frame, notes = read_table(PENGUINS)
    assert frame.shape == (344, 8) and "'sex' 11" in notes[0]
    assert {"species", "island", "sex"} == {c for c in frame.columns if frame[c].dtype.kind not in "iuf"}


def _penguin_net(backend, loss, units, last):
    return xn.Network(
        [xn.Dense(16, "relu"), xn.Dense(units, last)],
        loss=loss,
        optimizer=xn.Adam(0.01),
        backend=backend,
        dtype="float64",
        seed=0,
    )


def test_network_fits_penguins_with_preprocess_auto(backend, tmp_path):
    frame, _ = read_table(PENGUINS)
    species = TargetEncoder().fit(frame["species"])
    y = species.transform(frame["species"])
    X = frame.drop(columns=["species"])
    net = _penguin_net(backend, "cross_entropy", 3, "softmax")
    with pytest.raises(ValueError, match="non-numeric columns.*preprocess"):
        net.fit(X, y, epochs=1)
    net.fit(X, y, epochs=30, batch_size=64, verbose=0, preprocess="auto")
    majority = np.bincount(y).max() / len(y)
    assert net.evaluate(X, y)["accuracy"] > max(0.9, majority)
    net.save(tmp_path / "p.safetensors")
    loaded = xn.load(tmp_path / "p.safetensors", backend=backend)
    reordered = X[list(reversed(X.columns))]
    np.testing.assert_allclose(
        xn.to_numpy(loaded.predict(reordered)), xn.to_numpy(net.predict(X)), atol=1e-12
    )


def test_regression_predicts_in_the_target_units(backend, tmp_path):
    frame, _ = read_table(PENGUINS)
    frame = frame.dropna(subset=["body_mass_g"])
    X, y = frame.drop(columns=["body_mass_g"]), frame["body_mass_g"]
    net = _penguin_net(backend, "mse", 1, None)
    net.fit(X, y, epochs=40, batch_size=64, verbose=0, preprocess="auto")
    assert net.metadata["target_scaling"]["mean"] == [pytest.approx(y.mean())]
    pred = xn.to_numpy(net.predict(X)).ravel()
    mae = np.mean(np.abs(pred - y.to_numpy()))
    assert mae < 0.5 * np.mean(np.abs(y - y.mean()))  # far better than the mean, in grams
    assert net.evaluate(X, y)["loss"] < 0.3  # the loss it trained on: standardized units
    net.save(tmp_path / "r.safetensors")
    loaded = xn.load(tmp_path / "r.safetensors", backend=backend)
    np.testing.assert_allclose(xn.to_numpy(loaded.predict(X)).ravel(), pred, rtol=1e-10)


def test_dataframe_columns_are_matched_by_name(backend):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    y = frame["a"] - 2 * frame["c"]
    net = xn.Network([xn.Dense(1)], loss="mse", optimizer=xn.SGD(0.1), backend=backend, seed=0)
    net.fit(frame, y, epochs=5, verbose=0)
    assert net.metadata["feature_names"] == ["a", "b", "c"]
    expected = xn.to_numpy(net.predict(frame))
    swapped = frame[["c", "a", "b"]].assign(unused=1.0)
    np.testing.assert_array_equal(xn.to_numpy(net.predict(swapped)), expected)
    with pytest.raises(ValueError, match=r"lacks the network's feature column\(s\) \['b'\]"):
        net.predict(frame[["a", "c"]])
    with pytest.raises(ValueError, match="preprocess must be"):
        net.fit(frame, y, preprocess="yes")


# -- silent reinterpretations (issue 22, defect 6 and rough edges) ---------------------------------

from xpnet.data.tabular import EncodingNote  # noqa: E402


def _flags(rows=60):
    rng = np.random.default_rng(0)
    x = rng.normal(size=rows)
    flag = rng.random(rows) > 0.5
    return pd.DataFrame({"x": x, "flag": flag}), (x + 2 * flag > 1).astype(int)


@pytest.mark.parametrize(
    "spelling",
    [
        {True: 1, False: 0},
        {True: "yes", False: "no"},
        {True: "TRUE", False: "FALSE"},
        {True: "y", False: "N"},
    ],
    ids=["1/0", "yes/no", "TRUE/FALSE", "y/N"],
)
def test_a_boolean_column_takes_any_spelling_of_truth_at_predict(backend, spelling):
    """A column trained as True/False and given as 1/0 or yes/no was taken as all unseen."""
    frame, y = _flags()
    net = xn.Network(
        [xn.Dense(1, "sigmoid")], loss="logloss", optimizer=xn.Adam(0.05), backend=backend, seed=0
    )
    net.fit(frame, y, epochs=20, verbose=0, preprocess="auto")
    expected = xn.to_numpy(net.predict(frame))
    respelled = frame.assign(flag=frame["flag"].map(spelling))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EncodingNote)  # and no note: nothing was unseen
        np.testing.assert_array_equal(xn.to_numpy(net.predict(respelled)), expected)


def test_text_truth_values_take_booleans_too():
    frame = pd.DataFrame({"answer": ["yes", "no", "yes"]})
    encoder = TabularEncoder().fit(frame)
    np.testing.assert_array_equal(
        encoder.transform(pd.DataFrame({"answer": [True, False, 1]})), encoder.transform(frame)
    )


def _notes(action):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EncodingNote)
        result = action()
    return result, [str(w.message) for w in caught if issubclass(w.category, EncodingNote)]


def test_the_encoder_says_what_it_reinterprets_in_one_line_each():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "code": [f"c{i}" for i in rng.integers(0, 5000, 2000)],
            "dose": [str(v) if i % 2 else "unknown" for i, v in enumerate(rng.integers(0, 9, 2000))],
            "x": np.where(np.arange(2000) == 7, np.inf, rng.normal(size=2000)),
            "town": rng.choice(["a", "b"], 2000),
        }
    )
    encoder, notes = _notes(lambda: TabularEncoder().fit(frame))
    assert len(notes) == 3
    assert (
        notes[0].startswith("column 'code' has 1,") and "the 100 most frequent are its categories" in notes[0]
    )
    assert notes[1].startswith("column 'dose' holds numbers in 1,000 of 2,000 rows and text in the others")
    assert notes[2] == "column 'x' holds 1 infinite value(s), taken as missing in training"
    new = frame.head(10).assign(town=["z"] * 9 + ["a"], x=[np.inf] + [np.nan] * 9)
    _, notes = _notes(lambda: encoder.transform(new))
    assert "column 'x' holds 1 infinite value(s), replaced by the training median" in notes
    assert not [n for n in notes if n.startswith("column 'code'")]  # its cut was said once, in fit
    unseen = "column 'town': 9 of 10 values were not seen in training (e.g. ['z']) and encode as unseen"
    assert f"{unseen} (all zeros)" in notes
    quiet = frame.drop(columns=["code", "dose"]).assign(x=rng.normal(size=2000))
    _, notes = _notes(
        lambda: TabularEncoder().fit(quiet).transform(quiet.head(5).assign(x=[np.nan, 1, 2, 3, 4]))
    )
    assert notes == [
        "column 'x' has 1 missing value(s), which it had none of in training: replaced by the training median"
    ]


def test_duplicate_header_names_are_said(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a,a,y\n1,2,3,4,0\n2,3,4,5,1\n")
    frame, notes = read_table(path)
    assert list(frame.columns) == ["a", "b", "a.1", "a.2", "y"]
    assert notes == ["the header of dup.csv names 3 columns 'a': they are read as 'a', 'a.1', 'a.2'"]

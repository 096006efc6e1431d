"""Data helpers: built-in datasets, CSV reading, stratified splits, scaling."""

from __future__ import annotations

import numpy as np
import pytest

from xpnet.data import encode_labels, kfold, load_dataset, read_csv, standardization, train_test_split


def test_xor_needs_nothing():
    data = load_dataset("xor")
    assert data.X.shape == (4, 2) and list(data.y) == [0, 1, 1, 0] and data.task == "classification"


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("digits", (1797, 64), 10), ("iris", (150, 4), 3), ("breast-cancer", (569, 30), 2)],
)
def test_bundled_datasets(name, shape, classes):
    pytest.importorskip("sklearn")
    data = load_dataset(name)
    assert data.X.shape == shape and len(data.classes) == classes and len(data.feature_names) == shape[1]


def test_unknown_dataset_lists_the_built_in_ones():
    with pytest.raises(ValueError, match="built-in datasets: .*xor.*digits"):
        load_dataset("mnist")


def test_stratified_split_keeps_class_proportions():
    y = np.array([0] * 80 + [1] * 20)
    X = np.arange(100.0).reshape(-1, 1)
    X_train, X_test, _, y_test = train_test_split(X, y, 0.25, seed=1)
    assert (y_test == 1).sum() == 5 and (y_test == 0).sum() == 20
    assert sorted(np.concatenate([X_train, X_test]).ravel()) == list(X.ravel())
    again = train_test_split(X, y, 0.25, seed=1)
    np.testing.assert_array_equal(again[1], X_test)


def test_kfold_partitions_the_rows_and_spreads_each_class():
    y = np.array([0] * 23 + [1] * 7 + [2] * 2)
    folds = kfold(y, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(32))  # every row in exactly one fold
    assert {len(f) for f in folds} <= {6, 7}
    for c, count in ((0, 23), (1, 7)):
        per_fold = [int((y[f] == c).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == count
    assert all(np.array_equal(a, b) for a, b in zip(folds, kfold(y, 5, seed=3)))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, kfold(y, 5, seed=4)))
    plain = kfold(np.zeros(10), 3, seed=0, stratify=False)
    assert [len(f) for f in plain] == [4, 3, 3]


@pytest.mark.parametrize("folds", [1, 11, 2.5, True])
def test_kfold_refuses_impossible_fold_counts(folds):
    with pytest.raises(ValueError, match="folds must be an integer from 2 to the number of rows"):
        kfold(np.zeros(10), folds)


def test_standardization_leaves_constant_columns_alone():
    scaling = standardization(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert scaling == {"mean": [2.0, 5.0], "scale": [1.0, 1.0]}


def test_read_csv_classification_and_regression(tmp_path):
    pytest.importorskip("pandas")
    path = tmp_path / "t.csv"
    path.write_text("a,b,label,price\n1,2,cat,1.5\n3,4,dog,2.5\n5,6,cat,3.5\n")
    data = read_csv(path, target="label")
    assert data.task == "classification" and data.classes == ["cat", "dog"] and list(data.y) == [0, 1, 0]
    assert data.feature_names == ["a", "b", "price"]
    numeric = tmp_path / "n.csv"
    numeric.write_text("a,b,price\n1,2,1.5\n3,4,2.5\n")
    data = read_csv(numeric)
    assert data.task == "regression" and data.target_name == "price"


def test_read_csv_reports_missing_values(tmp_path):
    pytest.importorskip("pandas")
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n1,,0\n3,4,1\n")
    with pytest.raises(ValueError, match="column 'b' has a missing or non-finite value in data row 1"):
        read_csv(path)


def test_encode_labels_sorts_classes():
    codes, classes = encode_labels(np.array(["b", "a", "b"]))
    assert classes == ["a", "b"] and list(codes) == [1, 0, 1]

"""Data at the edges: built-in datasets, CSV tables, held-out splits and feature scaling.

Everything here works on the host in NumPy (and pandas for CSV); networks
move the arrays to their backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN_DATASETS: tuple[str, ...] = ("xor", "digits", "iris", "wine", "breast_cancer")


@dataclass
class Dataset:
    """Features and target of a table, with what is known about them.

    Attributes
    ----------
    X : numpy.ndarray, shape (samples, features), float64
    y : numpy.ndarray, shape (samples,)
        Class codes 0..k-1 for classification, floats for regression.
    feature_names : list[str]
    target_name : str
    task : {"classification", "regression"}
    classes : list
        The original class labels, indexed by code (empty for regression).
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_name: str
    task: str
    classes: list[Any] = field(default_factory=list)


def encode_labels(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Class labels as codes 0..k-1 in sorted order, and the labels by code."""
    classes, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.astype(np.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def load_dataset(name: str) -> Dataset:
    """A dataset that needs no download: ``xor`` or one of scikit-learn's bundled tables.

    Raises
    ------
    ValueError
        For an unknown name, listing the built-in ones.
    """
    key = name.lower().replace("-", "_")
    if key == "xor":
        X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
        return Dataset(X, np.array([0, 1, 1, 0]), ["x1", "x2"], "xor", "classification", [0, 1])
    if key not in BUILTIN_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; built-in datasets: {list(BUILTIN_DATASETS)}")
    try:
        from sklearn import datasets
    except ImportError as exc:
        raise ImportError(
            f"the built-in dataset {name!r} comes with scikit-learn: pip install scikit-learn"
        ) from exc
    bunch = getattr(datasets, f"load_{key}")()
    names = [str(n) for n in getattr(bunch, "feature_names", [])] or [
        f"pixel{i}" for i in range(bunch.data.shape[1])
    ]
    classes = [str(c) for c in bunch.target_names]
    return Dataset(
        np.asarray(bunch.data, dtype=np.float64),
        np.asarray(bunch.target, dtype=np.int64),
        names,
        "target",
        "classification",
        classes,
    )


def _read_table(path: str | Path) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("reading CSV files needs pandas: pip install pandas") from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable CSV file: {exc}") from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{path} has no data rows")
    return frame


def _numeric_features(frame: Any, columns: list[str], path: Path) -> np.ndarray:
    bad = [c for c in columns if frame[c].dtype.kind not in "biuf"]
    if bad:
        raise ValueError(
            f"{path}: feature column(s) {bad} are not numeric; encode them as numbers or drop them"
        )
    X = frame[columns].to_numpy(dtype=np.float64)
    missing = ~np.isfinite(X)
    if missing.any():
        row, col = np.argwhere(missing)[0]
        raise ValueError(
            f"{path}: column {columns[col]!r} has a missing or non-finite value in data row {row + 1}"
        )
    return X


def read_csv(path: str | Path, target: str | None = None) -> Dataset:
    """Read a CSV table of numeric features and one target column.

    Parameters
    ----------
    path : str or Path
        The CSV file, with a header row.
    target : str, optional
        The target column; the last column by default. Integer, boolean or
        text targets mean classification, float targets regression.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        For a missing target column, non-numeric features or missing values.
    """
    frame = _read_table(path)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    target = columns[-1] if target is None else target
    if target not in columns:
        raise ValueError(f"{path} has no column {target!r}; its columns are {columns}")
    features = [c for c in columns if c != target]
    if not features:
        raise ValueError(f"{path} has only the target column {target!r} and no features")
    X = _numeric_features(frame, features, Path(path))
    column = frame[target]
    if column.isna().any():
        raise ValueError(f"{path}: the target column {target!r} has missing values")
    if column.dtype.kind == "f":
        return Dataset(X, column.to_numpy(dtype=np.float64), features, target, "regression")
    codes, classes = encode_labels(column.astype(str) if column.dtype.kind == "O" else column.to_numpy())
    return Dataset(X, codes, features, target, "classification", classes)


def read_features(path: str | Path, feature_names: list[str]) -> tuple[np.ndarray, Any]:
    """Read the named feature columns of a CSV (other columns, like the target, are ignored).

    Returns the features and the whole pandas DataFrame.
    """
    frame = _read_table(path)
    frame.columns = [str(c) for c in frame.columns]
    missing = [c for c in feature_names if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the model's feature column(s) {missing}")
    return _numeric_features(frame, feature_names, Path(path)), frame


def train_test_split(
    X: np.ndarray, y: np.ndarray, test_size: float, seed: int | None = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded held-out split; stratified by class when ``stratify`` (classification).

    Each class puts ``round(test_size * count)`` samples in the test part
    (at least one when it has two or more samples).
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    rng = np.random.default_rng(seed)
    n = len(y)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(n)]
    test = []
    for members in groups:
        members = rng.permutation(members)
        take = round(test_size * len(members))
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        test.append(members[:take])
    test_index = np.sort(np.concatenate(test)) if test else np.array([], dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[test_index] = False
    return X[mask], X[test_index], y[mask], y[test_index]


def standardization(X: np.ndarray) -> dict[str, list[float]]:
    """Mean and scale (standard deviation, 1 where it is 0) of each column, as JSON-able lists."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return {"mean": mean.tolist(), "scale": scale.tolist()}

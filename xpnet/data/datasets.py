"""Data at the edges: built-in datasets, held-out splits and feature scaling.

Everything here works on the host in NumPy; networks move the arrays to their
backend. CSV files are read by :mod:`xpnet.data.csvfiles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


def kfold(y: np.ndarray, folds: int, seed: int | None = 0, stratify: bool = True) -> list[np.ndarray]:
    """Seeded ``folds``-fold partition of the rows of ``y``: the sorted row numbers of each fold.

    Rows are shuffled and dealt to the folds in turn, class after class when
    ``stratify`` (classification), so fold sizes differ by at most one and each
    class is spread as evenly as its count allows.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= len(y):
        raise ValueError(f"folds must be an integer from 2 to the number of rows ({len(y)}), got {folds!r}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    order = np.concatenate([rng.permutation(members) for members in groups])
    return [np.sort(order[i::folds]) for i in range(folds)]


def standardization(X: np.ndarray) -> dict[str, list[float]]:
    """Mean and scale (standard deviation, 1 where it is 0) of each column, as JSON-able lists."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return {"mean": mean.tolist(), "scale": scale.tolist()}

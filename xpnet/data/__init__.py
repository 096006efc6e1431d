"""Data helpers: built-in datasets, CSV reading, splits and scaling."""

from .datasets import (
    BUILTIN_DATASETS,
    Dataset,
    encode_labels,
    load_dataset,
    read_csv,
    read_features,
    standardization,
    train_test_split,
)

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "encode_labels",
    "load_dataset",
    "read_csv",
    "read_features",
    "standardization",
    "train_test_split",
]

"""Data helpers: built-in datasets, CSV reading, the tabular encoder, splits and scaling."""

from .csvfiles import read_csv, read_features, read_table
from .datasets import (
    BUILTIN_DATASETS,
    Dataset,
    encode_labels,
    load_dataset,
    standardization,
    train_test_split,
)
from .tabular import TabularEncoder, TargetEncoder

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "TabularEncoder",
    "TargetEncoder",
    "encode_labels",
    "load_dataset",
    "read_csv",
    "read_features",
    "read_table",
    "standardization",
    "train_test_split",
]

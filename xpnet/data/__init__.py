"""Data helpers: built-in datasets, CSV reading, the tabular encoders, splits and scaling; batch sources
that stream."""

from .csvfiles import read_csv, read_features, read_table
from .datasets import (
    BUILTIN_DATASETS,
    Dataset,
    encode_labels,
    kfold,
    load_dataset,
    standardization,
    train_test_split,
)
from .encoders import RobustTabularEncoder, encoder_from_state
from .streams import (
    ArraySource,
    Batch,
    BatchSource,
    CSVSource,
    IterableSource,
    ParquetSource,
    Prefetcher,
    as_source,
    device_converter,
    from_npy,
)
from .tabular import TabularEncoder, TargetEncoder

__all__ = [
    "BUILTIN_DATASETS",
    "ArraySource",
    "Batch",
    "BatchSource",
    "CSVSource",
    "Dataset",
    "IterableSource",
    "ParquetSource",
    "Prefetcher",
    "RobustTabularEncoder",
    "TabularEncoder",
    "TargetEncoder",
    "as_source",
    "device_converter",
    "encode_labels",
    "encoder_from_state",
    "from_npy",
    "kfold",
    "load_dataset",
    "read_csv",
    "read_features",
    "read_table",
    "standardization",
    "train_test_split",
]

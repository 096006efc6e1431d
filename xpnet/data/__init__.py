"""Data helpers: built-in datasets, CSV reading, splits and scaling; batch sources that stream."""

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
    "as_source",
    "device_converter",
    "encode_labels",
    "from_npy",
    "load_dataset",
    "read_csv",
    "read_features",
    "standardization",
    "train_test_split",
]

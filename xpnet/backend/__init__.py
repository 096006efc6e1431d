"""Floor 1: array backends, their fast kernels, and how each runs a training step.

Only this package imports array-api-compat or an array library.
"""

from .registry import (
    BACKEND_NAMES,
    FLOAT_DTYPES,
    LOW_FLOAT_DTYPES,
    MATMUL_PRECISIONS,
    Array,
    Backend,
    BackendUnavailableError,
    available_backends,
    describe_backends,
    device_of,
    float_dtype,
    get_backend,
    namespace_of,
    owning,
    to_numpy,
)

__all__ = [
    "BACKEND_NAMES",
    "FLOAT_DTYPES",
    "LOW_FLOAT_DTYPES",
    "MATMUL_PRECISIONS",
    "Array",
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "describe_backends",
    "device_of",
    "float_dtype",
    "get_backend",
    "namespace_of",
    "owning",
    "to_numpy",
]

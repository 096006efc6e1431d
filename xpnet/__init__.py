"""xpnet: neural networks written once against the Python Array API.

The same layers, losses and optimizers train on NumPy, CuPy, PyTorch, JAX and
array-api-strict; the backend is chosen per network.
"""

from .activations import ACTIVATIONS
from .backend import (
    BACKEND_NAMES,
    Backend,
    BackendUnavailableError,
    available_backends,
    get_backend,
    to_numpy,
)
from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    TerminateOnNaN,
    cosine_decay,
    exponential_decay,
    step_decay,
)
from .history import History
from .io import load
from .layers import Activation, Dense, Dropout, Layer
from .losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Loss,
    MeanSquaredError,
    get_loss,
)
from .network import Network
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, get_optimizer

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BACKEND_NAMES",
    "SGD",
    "Activation",
    "Adam",
    "AdamW",
    "Backend",
    "BackendUnavailableError",
    "BinaryCrossentropy",
    "CSVLogger",
    "Callback",
    "CategoricalCrossentropy",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "History",
    "Layer",
    "LearningRateScheduler",
    "Loss",
    "MeanSquaredError",
    "ModelCheckpoint",
    "Network",
    "Optimizer",
    "RMSprop",
    "TerminateOnNaN",
    "available_backends",
    "cosine_decay",
    "exponential_decay",
    "get_backend",
    "get_loss",
    "get_optimizer",
    "load",
    "step_decay",
    "to_numpy",
]

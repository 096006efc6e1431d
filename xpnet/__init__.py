"""xpnet: neural networks written once against the Python Array API.

The same layers, losses and optimizers train on NumPy, CuPy, PyTorch, JAX and
array-api-strict; the backend is chosen per network.
"""

from . import distributed
from .backend import (
    BACKEND_NAMES,
    Backend,
    BackendUnavailableError,
    available_backends,
    get_backend,
    to_numpy,
)
from .nn.activations import ACTIVATIONS
from .nn.layers import Activation, Dense, Dropout, Layer
from .nn.losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Huber,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    get_loss,
)
from .nn.metrics import METRICS, Metric, get_metric
from .nn.normalization import BatchNormalization, LayerNormalization
from .nn.residual import Parallel, Residual
from .optim import schedules
from .optim.loss_scaling import LossScaler
from .optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop, get_optimizer
from .optim.schedules import cosine_decay, exponential_decay, step_decay, warmup
from .train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from .train.ensemble import KFoldEnsemble, average_networks, kfold_ensemble
from .train.history import History
from .train.network import Network, load
from .train.policy import POLICIES, DTypePolicy
from .train.recipe import TabularRecipe, tabular_model

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BACKEND_NAMES",
    "METRICS",
    "POLICIES",
    "SGD",
    "Activation",
    "Adam",
    "AdamW",
    "Backend",
    "BackendUnavailableError",
    "BatchNormalization",
    "BinaryCrossentropy",
    "CSVLogger",
    "Callback",
    "CategoricalCrossentropy",
    "DTypePolicy",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "History",
    "Huber",
    "KFoldEnsemble",
    "Layer",
    "LayerNormalization",
    "LearningRateScheduler",
    "Loss",
    "LossScaler",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Metric",
    "ModelCheckpoint",
    "Network",
    "Optimizer",
    "Parallel",
    "RMSprop",
    "ReduceLROnPlateau",
    "Residual",
    "TabularRecipe",
    "TerminateOnNaN",
    "available_backends",
    "average_networks",
    "cosine_decay",
    "distributed",
    "exponential_decay",
    "get_backend",
    "get_loss",
    "get_metric",
    "get_optimizer",
    "kfold_ensemble",
    "load",
    "schedules",
    "step_decay",
    "tabular_model",
    "to_numpy",
    "warmup",
]


def _keep_old_module_paths() -> None:
    """Make the module paths of xpnet 0.1's flat layout (``xpnet.layers``, ...) keep importing."""
    import importlib
    import sys

    moved = {
        "activations": "nn.activations",
        "initializers": "nn.initializers",
        "layers": "nn.layers",
        "losses": "nn.losses",
        "metrics": "nn.metrics",
        "optimizers": "optim.optimizers",
        "callbacks": "train.callbacks",
        "history": "train.history",
        "network": "train.network",
        "progress": "train.progress",
        "kernels": "backend.numpy_kernels",
        "train.step": "engine.step",
        "train.compiled": "engine.cache",
        "train.fusion": "engine.plan",
    }
    for old, new in moved.items():
        sys.modules.setdefault(f"{__name__}.{old}", importlib.import_module(f"{__name__}.{new}"))


_keep_old_module_paths()

"""The old home of the runners, kept as an alias: they live in :mod:`xpnet.engine` now.

``Epoch`` and ``EpochPlan`` are in :mod:`xpnet.engine.epochs`, ``EagerRunner``
in :mod:`xpnet.engine.eager`, ``JaxEpochRunner`` in :mod:`xpnet.engine.jax_epochs`,
``JaxInference`` and ``padded_rows`` in :mod:`xpnet.engine.jax_engine`. The
names resolve on first use, so this floor imports nothing above it.
"""

from __future__ import annotations

import importlib
from typing import Any

_MOVED = {
    "Epoch": "epochs",
    "EpochPlan": "epochs",
    "EagerRunner": "eager",
    "JaxEpochRunner": "jax_epochs",
    "JaxInference": "jax_engine",
    "padded_rows": "jax_engine",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"xpnet.engine.{_MOVED[name]}"), name)

"""The old home of NumPy's fused loop, kept as an alias: it lives in :mod:`xpnet.engine` now.

``NumpyFusedRunner`` is in :mod:`xpnet.engine.numpy_engine`; the plan
(``Plan``, ``DenseSpec``, ``DropoutSpec``, ``fused_plan``) in
:mod:`xpnet.engine.plan`. The names resolve on first use, so this floor
imports nothing above it.
"""

from __future__ import annotations

import importlib
from typing import Any

_MOVED = {
    "NumpyFusedRunner": "numpy_engine",
    "Plan": "plan",
    "DenseSpec": "plan",
    "DropoutSpec": "plan",
    "fused_plan": "plan",
    "ELEMENTWISE": "plan",
    "LOSSES": "plan",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"xpnet.engine.{_MOVED[name]}"), name)

"""Checks at the boundary: user inputs converted to a network's backend, or one clear error.

Plain functions of a network and the user's data; nothing here keeps state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Array, to_numpy
from ..nn.losses import CategoricalCrossentropy


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int, or ValueError naming ``name`` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def features(net: Any, X: Any, name: str = "X") -> Array:
    """``X`` checked and converted to ``net``'s backend and dtype, with its input scaling applied.

    Builds ``net`` for ``X``'s feature count if it is not built yet.
    """
    if X is None:
        raise ValueError(f"{name} is None; expected an array of shape (samples, features)")
    if hasattr(X, "dtypes") and hasattr(X, "columns"):
        bad = [str(c) for c, t in zip(X.columns, X.dtypes) if getattr(t, "kind", "O") not in "biuf"]
        if bad:
            raise ValueError(f"{name} has non-numeric columns {bad}; encode them as numbers first")
    try:
        x = net.backend.asarray(X, net.dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, of shape (samples, features): {exc}") from exc
    if x.ndim != 2:
        hint = "; use X.reshape(-1, 1) for a single feature" if x.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has no samples")
    if not net.built:
        net.build(int(x.shape[1]))
    if x.shape[1] != net.in_features:
        raise ValueError(f"{name} has {x.shape[1]} features, but the network expects {net.in_features}")
    check_finite(x, name, net.backend.xp)
    return scaled(net, x)


def scaled(net: Any, x: Array) -> Array:
    """Apply ``input_scaling`` (``(x - mean) / scale``), if the network has one."""
    if not net.input_scaling:
        return x
    mean = net.backend.asarray(np.asarray(net.input_scaling["mean"]), net.dtype)
    scale = net.backend.asarray(np.asarray(net.input_scaling["scale"]), net.dtype)
    return (x - mean) / scale


def check_finite(x: Array, name: str, xp: Any) -> None:
    """Raise ValueError naming the first row of ``x`` that holds NaN or infinity."""
    # A finite sum proves every element finite without an input-sized mask.
    if bool(xp.isfinite(xp.sum(x))) or bool(xp.all(xp.isfinite(x))):
        return
    rows = np.nonzero(~np.isfinite(to_numpy(x)).reshape(x.shape[0], -1).all(axis=1))[0]
    raise ValueError(
        f"{name} contains NaN or infinity (first at row {int(rows[0])}); remove or impute those values"
    )


def targets(net: Any, y: Any, n: int, name: str = "y") -> Array:
    """Targets on the device, shaped like the outputs (one-hot for categorical)."""
    if y is None:
        raise ValueError(f"{name} is None; expected one target per sample")
    xp = net.backend.xp
    try:
        t = net.backend.asarray(y)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if t.ndim == 0 or t.shape[0] != n:
        got = "a scalar" if t.ndim == 0 else f"{t.shape[0]} samples"
        raise ValueError(f"X has {n} samples but {name} has {got}")
    k = net.out_features
    if isinstance(net.loss, CategoricalCrossentropy) and t.ndim == 1:
        # Integer labels stay labels: each batch is one-hot encoded when it is used.
        if not is_integer(t, xp):
            t = net.backend.asarray(t, net.dtype)
            check_finite(t, name, xp)
            if not bool(xp.all(t == xp.round(t))):
                raise ValueError(f"{name} must hold integer class labels 0..{k - 1}")
        lo, hi = int(xp.min(t)), int(xp.max(t))
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{name} has label {bad}, but the network has {k} outputs: labels must be in [0, {k})"
            )
        return t if is_integer(t, xp) else xp.astype(t, xp.int32)
    t = net.backend.asarray(t, net.dtype)
    if t.ndim == 1:
        t = xp.reshape(t, (-1, 1))
    if t.ndim != 2 or t.shape[1] != k:
        raise ValueError(
            f"{name} must have shape ({n},) or ({n}, {k}) for a network with {k} outputs, "
            f"got {tuple(t.shape)}"
        )
    check_finite(t, name, xp)
    if net._classification and not bool(xp.all((t >= 0) & (t <= 1))):
        raise ValueError(f"{name} must hold targets in [0, 1] for {net.loss.name}")
    return t


def is_integer(t: Array, xp: Any) -> bool:
    return bool(xp.isdtype(t.dtype, "integral"))

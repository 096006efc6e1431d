"""The one set of checks every input passes: features, targets and sample weights.

In-memory data and streamed batches are checked by the same functions, on
the host when the data is there (a NumPy array, checked with NumPy before it
is copied: no device sync, no device reductions) and on the device when the
caller gave the network's own arrays. ``where`` names the input in every
message: ``"X"``, ``"validation y"``, ``"batch 3: X_b"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Array, device_of, namespace_of, to_numpy
from ..nn.losses import CategoricalCrossentropy

CHUNK_ROWS = 1 << 20
"""Rows of a memmap checked at a time (weights are read, never copied whole)."""


def features(net: Any, x: Array, where: str, source: Any = None) -> Array:
    """``x`` (already in the network's dtype) checked: 2-D, not empty, the network's width (building
    it for that width first when it is not built), finite. ``source``, the values before the cast to
    the network's dtype, tells finite values beyond its range from NaN in the message."""
    if x.ndim != 2:
        hint = "; use X.reshape(-1, 1) for a single feature" if x.ndim == 1 else ""
        raise ValueError(f"{where} must be 2-D (samples, features), got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{where} is empty: it has no samples")
    if not net.built:
        net.build(int(x.shape[1]))
    if x.shape[1] != net.in_features:
        raise ValueError(f"{where} has {x.shape[1]} features, but the network expects {net.in_features}")
    try:
        finite(x, where)
    except ValueError:
        if source is not None:
            beyond_range(source, net.dtype, where)
        raise
    return x


def finite(x: Array, where: str) -> None:
    """Raise ValueError naming the first row of ``x`` that holds NaN or infinity."""
    xp = namespace_of(x)
    # A finite sum proves every element finite without an input-sized mask.
    with np.errstate(all="ignore"):
        if bool(xp.isfinite(xp.sum(x))) or bool(xp.all(xp.isfinite(x))):
            return
    rows = np.nonzero(~np.isfinite(to_numpy(x)).reshape(x.shape[0], -1).all(axis=1))[0]
    raise ValueError(
        f"{where} contains NaN or infinity (first at row {int(rows[0])}); remove or impute those values"
    )


def beyond_range(source: Any, dtype: str, where: str) -> None:
    """Raise a clearer ValueError when ``source`` is finite but overflows ``dtype``."""
    host = to_numpy(source)
    if host.dtype.kind != "f" or not bool(np.all(np.isfinite(host))):
        return
    top = float(np.finfo(dtype).max)
    biggest = float(np.max(np.abs(host)))
    raise ValueError(
        f"{where} holds finite values beyond {dtype}'s range (largest magnitude {biggest:.3g} > {top:.3g}); "
        "rescale the data or use dtype='float64'"
    )


def targets(net: Any, t: Array, n: int, where: str) -> Array:
    """Numeric targets ``t`` (host or device) as the loss takes them, checked.

    Categorical cross-entropy's integer labels ``(n,)`` stay labels, as
    int32 (any integer dtype, or floats holding integers, each in
    ``[0, outputs)``); every other target becomes ``(n, outputs)`` in the
    network's dtype, standardized with the network's target scaling, finite,
    and in ``[0, 1]`` for a classification loss.
    """
    xp = namespace_of(t)
    if t.ndim == 0 or t.shape[0] != n:
        got = "a scalar" if t.ndim == 0 else f"{t.shape[0]} samples"
        raise ValueError(f"X has {n} samples but {where} has {got}")
    k = net.out_features
    if isinstance(net.loss, CategoricalCrossentropy) and t.ndim == 1:
        return _labels(net, t, xp, k, where)
    t = xp.astype(t, _dtype(net, xp)) if t.dtype != _dtype(net, xp) else t
    if t.ndim == 1:
        t = xp.reshape(t, (-1, 1))
    scaling = net.metadata.get("target_scaling")
    if scaling and not net._classification:
        mean, scale = (_constant(scaling[key], net.dtype, xp, t) for key in ("mean", "scale"))
        t = (t - mean) / scale
    if t.ndim != 2 or t.shape[1] != k:
        raise ValueError(
            f"{where} must have shape ({n},) or ({n}, {k}) for a network with {k} outputs, "
            f"got {tuple(t.shape)}"
        )
    finite(t, where)
    if net._classification and not bool(xp.all((t >= 0) & (t <= 1))):
        raise ValueError(f"{where} must hold targets in [0, 1] for {net.loss.name}")
    return t


def _labels(net: Any, t: Array, xp: Any, k: int, where: str) -> Array:
    """Integer class labels, checked against the ``k`` outputs, as int32."""
    if not xp.isdtype(t.dtype, "integral"):
        t = xp.astype(t, _dtype(net, xp))
        finite(t, where)
        if not bool(xp.all(t == xp.round(t))):
            raise ValueError(f"{where} must hold integer class labels 0..{k - 1}")
    if t.shape[0]:
        lo, hi = int(xp.min(t)), int(xp.max(t))
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{where} has label {bad}, but the network has {k} outputs: labels must be in [0, {k})"
            )
    # One label dtype whatever the caller's: uint8 labels would wrap in the one-hot.
    return t if t.dtype == xp.int32 else xp.astype(t, xp.int32)


def _constant(values: Any, dtype: str, xp: Any, like: Array) -> Array:
    """Saved float64 values in ``dtype`` beside ``like``."""
    return xp.asarray(np.asarray(values, dtype=np.float64).astype(dtype), device=device_of(like))


def _dtype(net: Any, xp: Any) -> Any:
    return getattr(xp, net.dtype)


def sample_weights(w: Any, n: int, where: str = "sample_weight", *, copy: bool = True) -> np.ndarray:
    """Host weights ``(n,)`` checked: numbers, one per row, finite, ``>= 0``.

    Read ``CHUNK_ROWS`` at a time; ``copy=True`` returns them as float64,
    ``copy=False`` as given (a memmap stays a memmap, never read whole).
    """
    host = w if isinstance(w, np.ndarray) else np.asarray(to_numpy(w) if hasattr(w, "shape") else w)
    if host.dtype.kind not in "iuf" or host.dtype == np.bool_:
        raise ValueError(f"{where} must be numbers, got dtype {host.dtype}")
    if host.ndim == 2 and host.shape[1] == 1:
        host = host[:, 0]
    if host.shape != (n,):
        raise ValueError(f"{where} must have shape ({n},), one weight per row, got {host.shape}")
    for i in range(0, n, CHUNK_ROWS):
        part = np.asarray(host[i : i + CHUNK_ROWS], dtype=np.float64)
        if not np.all(np.isfinite(part)) or np.any(part < 0):
            raise ValueError(f"{where} must hold finite weights >= 0")
    return host.astype(np.float64) if copy else host


def any_positive(weight: np.ndarray) -> bool:
    """Whether some row of host ``weight`` (a memmap, say) is above 0, read ``CHUNK_ROWS`` at a time."""
    return any(bool(np.any(weight[i : i + CHUNK_ROWS] > 0)) for i in range(0, len(weight), CHUNK_ROWS))

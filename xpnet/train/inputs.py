"""Checks at the boundary: user inputs converted to a network's backend, or one clear error.

Plain functions of a network and the user's data; nothing here keeps state
but what :func:`prepare` records in ``net.metadata`` (JSON, saved with the
network). These keys of ``net.metadata`` change what the network does:

``"feature_names"``
    Columns of the DataFrame the network was fitted on. A DataFrame given to
    ``fit``, ``predict`` or ``evaluate`` is matched to them by name (a missing
    one is a ValueError naming it; extra columns are ignored).
``"encoder"``
    A :class:`xpnet.data.tabular.TabularEncoder` or
    :class:`xpnet.data.encoders.RobustTabularEncoder` state: DataFrames are
    encoded by it (impute, scale, bin, one-hot) before ``input_scaling``.
``"target_scaling"``
    ``{"mean", "scale"}`` of a regression target: targets given to ``fit`` and
    ``evaluate`` are standardized with it, and ``predict`` answers
    ``output * scale + mean``, in the target's own units. Losses (``fit``'s
    history, ``evaluate``) stay those of the standardized target it trains on.
``"classes"``
    The class labels by output index, for faces that name classes (the CLI,
    scikit-learn); ``predict`` itself returns probabilities.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..backend import Array, to_numpy
from ..data.encoders import default_encoder, encoder_from_state
from ..data.tabular import check_columns, is_dataframe, needs_encoding
from ..nn.losses import CategoricalCrossentropy
from ..nn.shapes import parameter_count

PREPROCESS = (None, "auto", "always")


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int, or ValueError naming ``name`` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def seed(value: Any) -> int | None:
    """``value`` as a seed (None or a non-negative integer), or ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be None or a non-negative integer, got {value!r}")
    return int(value)


def numeric(net: Any, data: Any, name: str) -> Any:
    """``data`` as real numbers, the same way on every backend, or one clear ValueError.

    The network's own arrays pass through unchanged (their dtype checked).
    Anything else becomes a NumPy array: a DataFrame or Series column by
    column (missing values refused, mixed numeric dtypes promoted); booleans,
    integers and real floats are accepted; complex numbers, dates and times,
    text (numeric strings too) and other objects are refused. Views with
    negative strides are copied, which torch cannot share.
    """
    if net.backend.owns(data) and not isinstance(data, np.ndarray):
        if net.backend.xp.isdtype(data.dtype, ("bool", "integral", "real floating")):
            return data
        _real(to_numpy(data), name)  # raises, with the message host data get
    if type(data).__module__.startswith("pandas") and hasattr(data, "to_numpy"):
        host = _pandas_numeric(data, name)
    else:
        try:
            host = to_numpy(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a rectangular array of numbers: {exc}") from exc
    host = _real(host, name)
    if any(stride < 0 for stride in host.strides):
        host = np.ascontiguousarray(host)
    return host


def _pandas_numeric(data: Any, name: str) -> np.ndarray:
    frame = data.to_frame() if hasattr(data, "to_frame") and not hasattr(data, "columns") else data
    dtypes = [getattr(t, "numpy_dtype", t) for t in frame.dtypes]
    bad = [str(c) for c, t in zip(frame.columns, dtypes) if getattr(t, "kind", "O") not in "biuf"]
    if bad:
        raise ValueError(f"{name} has non-numeric columns {bad}; encode them as numbers first")
    missing = frame.isna().to_numpy()
    if missing.any():
        row, column = (int(i) for i in np.argwhere(missing)[0])
        raise ValueError(
            f"{name} has missing values (NaN, None or pandas NA), first in column "
            f"{frame.columns[column]!r} at row {row}; remove or impute them"
        )
    host = frame.to_numpy(dtype=np.result_type(*dtypes)) if dtypes else frame.to_numpy()
    return host.reshape(-1) if frame is not data else host


def _real(host: np.ndarray, name: str) -> np.ndarray:
    kind = host.dtype.kind
    if kind in "biuf":
        return host
    if kind == "c":
        raise ValueError(
            f"{name} holds complex numbers; xpnet trains on real numbers (pass X.real or abs(X))"
        )
    if kind in "mM":
        raise ValueError(f"{name} holds dates or times ({host.dtype}); convert them to numbers first")
    if kind in "US":
        raise ValueError(f"{name} holds text ({host.dtype}); convert it to numbers first")
    if kind == "O":
        for value in host.flat:
            if not isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
                raise ValueError(
                    f"{name} holds {value!r} of type {type(value).__name__}; expected real numbers"
                )
        return host.astype(np.float64)
    raise ValueError(f"{name} has dtype {host.dtype}; expected real numbers (bool, integer or float)")


def features(net: Any, X: Any, name: str = "X") -> Array:
    """``X`` checked and converted to ``net``'s backend and dtype, with its input scaling applied.

    Builds ``net`` for ``X``'s feature count if it is not built yet.
    """
    if X is None:
        raise ValueError(f"{name} is None; expected an array of shape (samples, features)")
    X = table(net, X, name)
    source = numeric(net, X, name)
    try:
        with np.errstate(over="ignore"):  # values beyond the dtype's range are reported below
            x = net.backend.asarray(source, net.dtype)
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
    try:
        check_finite(x, name, net.backend.xp)
    except ValueError:
        _beyond_range(source, net.dtype, name)
        raise
    return scaled(net, x)


def prepare(net: Any, X: Any, y: Any, preprocess: str | None, sample_weight: Any = None) -> None:
    """Record what ``fit`` learns from the data itself, once, in ``net.metadata``.

    A DataFrame's column names are remembered. With ``preprocess="auto"`` a
    DataFrame with non-numeric columns or gaps is given a fitted
    :func:`~xpnet.data.encoders.default_encoder` (``"always"``: any DataFrame),
    and a regression target its scaling. What is already recorded (a network
    fitted before, or loaded) is kept, so training continues on the same scale.
    The target's mean and spread weigh rows by ``sample_weight``, as the loss does.
    """
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be None, 'auto' or 'always', got {preprocess!r}")
    meta = net.metadata
    if is_dataframe(X) and "feature_names" not in meta:
        meta["feature_names"] = [str(c) for c in X.columns]
    if preprocess is None:
        return
    if is_dataframe(X) and "encoder" not in meta:
        gaps = bool(X.isna().to_numpy().any())
        if preprocess == "always" or gaps or needs_encoding(X):
            meta["encoder"] = default_encoder(len(X)).fit(X).get_state()
    if not net.loss.classification and y is not None and "target_scaling" not in meta:
        values = np.asarray(to_numpy(y) if not hasattr(y, "to_numpy") else y.to_numpy(), dtype=np.float64)
        weight = _row_weights(sample_weight, len(values))
        mean = np.average(values, axis=0, weights=weight)
        scale = np.sqrt(np.average((values - mean) ** 2, axis=0, weights=weight))
        meta["target_scaling"] = {
            "mean": np.atleast_1d(mean).tolist(),
            "scale": np.atleast_1d(np.where(scale > 0, scale, 1.0)).tolist(),
        }


def _row_weights(sample_weight: Any, n: int) -> np.ndarray | None:
    """``sample_weight`` as host weights fit to average with, or None (bad ones are refused later)."""
    if sample_weight is None:
        return None
    try:
        weight = np.asarray(to_numpy(sample_weight), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    usable = weight.shape == (n,) and bool(np.all(np.isfinite(weight))) and bool(np.all(weight >= 0))
    return weight if usable and weight.sum() > 0 else None


def table(net: Any, X: Any, name: str) -> Any:
    """A DataFrame matched to the fitted column names and encoded; other inputs as they are."""
    meta = net.metadata
    names = meta.get("feature_names")
    if is_dataframe(X) and names is not None:
        check_columns(X, names, "the network")
        X = X[names] if list(X.columns) != names else X
    elif names is not None and "encoder" in meta and isinstance(X, (list, np.ndarray)):
        import pandas as pd

        X = pd.DataFrame(list(X), columns=names)  # raw values in the fitted column order
    if "encoder" in meta:
        if not is_dataframe(X):
            raise ValueError(f"{name} must be a DataFrame with the columns {names}: the network encodes them")
        return encoder_from_state(meta["encoder"]).transform(X)
    if is_dataframe(X):
        bad = [str(c) for c, t in zip(X.columns, X.dtypes) if getattr(t, "kind", "O") not in "biuf"]
        if bad:
            raise ValueError(
                f"{name} has non-numeric columns {bad}; encode them as numbers first, "
                'or fit with preprocess="auto"'
            )
    return X


def outputs(net: Any, out: Array) -> Array:
    """Network outputs in the target's units (``out * scale + mean`` with a target scaling)."""
    scaling = net.metadata.get("target_scaling")
    if not scaling or net._classification:
        return out
    mean, scale = _pair(net, scaling)
    return out * scale + mean


def _pair(net: Any, scaling: dict[str, Any]) -> tuple[Array, Array]:
    mean = net.backend.asarray(np.asarray(scaling["mean"], dtype=np.float64), net.dtype)
    scale = net.backend.asarray(np.asarray(scaling["scale"], dtype=np.float64), net.dtype)
    return mean, scale


def _beyond_range(source: Any, dtype: str, name: str) -> None:
    """Raise a clearer ValueError when ``source`` is finite but overflows ``dtype``."""
    host = to_numpy(source)
    if host.dtype.kind != "f" or not bool(np.all(np.isfinite(host))):
        return
    top = float(np.finfo(dtype).max)
    biggest = float(np.max(np.abs(host)))
    raise ValueError(
        f"{name} holds finite values beyond {dtype}'s range (largest magnitude {biggest:.3g} > {top:.3g}); "
        "rescale the data or use dtype='float64'"
    )


def owned(out: Array, x: Array, xp: Any) -> Array:
    """``out``, copied when it is ``x`` itself (a network without parameters), so callers never share it."""
    return xp.asarray(out, copy=True) if out is x else out


def check_size(layers: Any, in_features: int, dtype: str) -> None:
    """Refuse, before anything is allocated, a network whose parameters cannot fit in memory.

    Building draws each layer's initial weights on the host in float64, then
    copies them in ``dtype``; both must fit in the memory available now.
    """
    count = parameter_count(layers, in_features)
    need = count * (8 + np.dtype(dtype).itemsize)
    have = available_memory()
    if have is not None and need > have:
        raise ValueError(
            f"the network has {count:,} parameters and needs about {_size(need)} to build, "
            f"but only {_size(have)} of memory is available; make its layers smaller"
        )


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def available_memory() -> int | None:
    """Bytes of host memory available now (Linux MemAvailable, else physical memory), or None."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


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
    host = numeric(net, y, name)
    if not isinstance(host, np.ndarray) and _wide_unsigned(host, xp):
        host = to_numpy(host)  # the network's own array: checked and converted on the host, as NumPy's are
    if isinstance(host, np.ndarray) and host.dtype.kind == "u" and host.dtype.itemsize > 1:
        # torch lacks reductions on wide unsigned types; labels are small, so int64 holds them
        if host.size and int(host.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds {int(host.max())}, too large for a label or a target")
        host = host.astype(np.int64)
    try:
        t = net.backend.asarray(host)
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
        # One label dtype whatever the caller's: uint8 labels would wrap in the one-hot.
        return t if t.dtype == xp.int32 else xp.astype(t, xp.int32)
    t = net.backend.asarray(t, net.dtype)
    if t.ndim == 1:
        t = xp.reshape(t, (-1, 1))
    scaling = net.metadata.get("target_scaling")
    if scaling and not net._classification:
        mean, scale = _pair(net, scaling)
        t = (t - mean) / scale
    if t.ndim != 2 or t.shape[1] != k:
        raise ValueError(
            f"{name} must have shape ({n},) or ({n}, {k}) for a network with {k} outputs, "
            f"got {tuple(t.shape)}"
        )
    check_finite(t, name, xp)
    if net._classification and not bool(xp.all((t >= 0) & (t <= 1))):
        raise ValueError(f"{name} must hold targets in [0, 1] for {net.loss.name}")
    return t


def _wide_unsigned(t: Array, xp: Any) -> bool:
    """Whether ``t`` holds unsigned integers wider than 8 bits (which torch cannot reduce)."""
    return bool(xp.isdtype(t.dtype, "unsigned integer")) and t.dtype != xp.uint8


def is_integer(t: Array, xp: Any) -> bool:
    return bool(xp.isdtype(t.dtype, "integral"))

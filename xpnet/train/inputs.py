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
from ..data import labels
from ..data.encoders import default_encoder, encoder_from_state
from ..data.tabular import TabularEncoder, is_dataframe, needs_encoding
from ..nn.shapes import parameter_count
from . import checks

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
        real(to_numpy(data), name)  # raises, with the message host data get
    if type(data).__module__.startswith("pandas") and hasattr(data, "to_numpy"):
        host = _pandas_numeric(data, name)
    else:
        try:
            host = to_numpy(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a rectangular array of numbers: {exc}") from exc
    host = real(host, name)
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


def real(host: np.ndarray, name: str) -> np.ndarray:
    """Host ``host`` when it holds real numbers (object arrays of numbers as float64), else a
    ValueError saying what it holds: text, complex numbers, dates or other objects."""
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


def rows(net: Any, X: Any, name: str = "X") -> Any:
    """``X`` as the network's rows of numbers: a DataFrame matched to the fitted columns and
    encoded (:func:`table`), then :func:`numeric` (a host array, or the network's own array)."""
    if X is None:
        raise ValueError(f"{name} is None; expected an array of shape (samples, features)")
    return numeric(net, table(net, X, name), name)


def features(net: Any, X: Any, name: str = "X") -> Array:
    """``X`` checked and converted to ``net``'s backend and dtype, with its input scaling applied.

    Host data is cast and checked on the host (:func:`~xpnet.train.checks.features`),
    then copied to the device once; the network's own arrays are checked on the
    device. Builds ``net`` for ``X``'s feature count if it is not built yet.
    """
    return scaled(net, device_features(net, rows(net, X, name), name))


def device_features(net: Any, source: Any, name: str) -> Array:
    """Rows from :func:`rows` in the network's dtype, checked, on its device (no input scaling)."""
    x = host_features(net, source, name) if isinstance(source, np.ndarray) else None
    if x is not None:
        return net.backend.asarray(x)
    x = net.backend.asarray(source, net.dtype)
    return checks.features(net, x, name, source)


def host_features(net: Any, source: np.ndarray, name: str) -> np.ndarray:
    """Host rows from :func:`numeric` in the network's dtype, checked on the host."""
    try:
        with np.errstate(over="ignore"):  # values beyond the dtype's range are reported by the check
            x = np.asarray(source, dtype=net.dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, of shape (samples, features): {exc}") from exc
    return checks.features(net, x, name, source)  # type: ignore[no-any-return]


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
        meta["feature_names"] = labels.stored(X.columns)
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
        X = labels.select(X, names, "the network")
    elif names is not None and "encoder" in meta and isinstance(X, (list, np.ndarray)):
        import pandas as pd

        columns = pd.Index([labels.restored(name) for name in names], tupleize_cols=False)
        X = pd.DataFrame(list(X), columns=columns)  # raw values in the fitted column order
    if "encoder" in meta:
        if not is_dataframe(X):
            raise ValueError(f"{name} must be a DataFrame with the columns {names}: the network encodes them")
        encoder = encoder_from_state(meta["encoder"])
        return _in_range(encoder, encoder.transform(X), net.dtype, name)
    if is_dataframe(X):
        bad = [str(c) for c, t in zip(X.columns, X.dtypes) if getattr(t, "kind", "O") not in "biuf"]
        if bad:
            raise ValueError(
                f"{name} has non-numeric columns {bad}; encode them as numbers first, "
                'or fit with preprocess="auto"'
            )
    return X


def _in_range(encoder: TabularEncoder, encoded: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """``encoded``, or a ValueError naming the columns the model's encoder puts beyond ``dtype``."""
    far = encoder.beyond(encoded, float(np.finfo(dtype).max))
    if not far:
        return encoded
    specs = {labels.key(c["name"]): c for c in encoder.columns}
    parts = []
    for label, big in far[: labels.SHOWN]:
        spec = specs[labels.key(label)]
        fitted = f"mean {spec['mean']:.3g}, scale {spec['scale']:.3g}" if "mean" in spec else "categories"
        parts.append(f"{labels.shown(label)!r} to {big:.3g} (the encoder's {fitted})")
    raise ValueError(
        f"the model's encoder puts {name}'s column(s) beyond {dtype}'s range: {'; '.join(parts)}; "
        "the values are far from those the model was trained on, or the model file was altered"
    )


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


def targets(net: Any, y: Any, n: int, name: str = "y") -> Array:
    """Targets on the device, as the loss takes them (:func:`~xpnet.train.checks.targets`),
    checked on the host when they are there, else on the device."""
    if y is None:
        raise ValueError(f"{name} is None; expected one target per sample")
    host = numeric(net, y, name)
    if not isinstance(host, np.ndarray) and _wide_unsigned(host, net.backend.xp):
        host = to_numpy(host)  # the network's own array: checked and converted on the host, as NumPy's are
    if isinstance(host, np.ndarray):
        return net.backend.asarray(host_targets(net, host, n, name))
    return checks.targets(net, host, n, name)


def host_targets(net: Any, y: Any, n: int, name: str) -> np.ndarray:
    """Targets from the host, checked there, as :func:`targets` makes them."""
    host = np.asarray(numeric(net, y, name))
    if host.dtype.kind == "u" and host.dtype.itemsize > 1:
        # torch lacks reductions on wide unsigned types; labels are small, so int64 holds them
        if host.size and int(host.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds {int(host.max())}, too large for a label or a target")
        host = host.astype(np.int64)
    return checks.targets(net, host, n, name)  # type: ignore[no-any-return]


def _wide_unsigned(t: Array, xp: Any) -> bool:
    """Whether ``t`` holds unsigned integers wider than 8 bits (which torch cannot reduce)."""
    return bool(xp.isdtype(t.dtype, "unsigned integer")) and t.dtype != xp.uint8

"""Checkpoints: a network in one safetensors file, written atomically, read without pickle.

The file holds every parameter and optimizer-state array as a tensor, and in
its metadata the architecture, loss, optimizer hyper-parameters and step
count, dtype, epoch, the host generator's state, input scaling and user
metadata. Loading a file never runs code: the header is JSON and the tensors
are raw numbers, checked before anything is built.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .history import History
from .layers import LAYERS
from .network import Network
from .optimizers import OPTIMIZERS

FORMAT = "xpnet"
FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Larger headers are refused: no real checkpoint comes near it, a hostile one might."""


def _safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError("saving and loading networks needs safetensors: pip install safetensors") from exc
    return safetensors.numpy


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A crash at any moment leaves either the old file or the new one, never a
    partial one.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def save(net: Network, path: str | Path) -> None:
    """Write ``net`` to ``path`` as a safetensors checkpoint (atomically).

    Parameters
    ----------
    net : Network
        A built network (trained or not).
    path : str or Path
        Target file, conventionally ``*.safetensors``.
    """
    if not net.built:
        raise ValueError("the network is not built yet: fit it or give in_features first")
    st = _safetensors()
    tensors: dict[str, np.ndarray] = {}
    for index, layer in enumerate(net.layers):
        for name, value in layer.params.items():
            tensors[f"layers.{index}.{name}"] = np.ascontiguousarray(to_numpy(value))
    for key, state in net.optimizer.state.items():
        for name, value in state.items():
            tensors[f"optimizer.{key}.{name}"] = np.ascontiguousarray(to_numpy(value))
    layers = [{"class": type(layer).__name__, "config": layer.get_config()} for layer in net.layers]
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layers": json.dumps(layers),
        "in_features": str(net.in_features),
        "loss": net.loss.name,
        "optimizer": json.dumps(
            {
                "name": net.optimizer.name,
                "config": net.optimizer.get_config(),
                "iterations": net.optimizer.iterations,
            }
        ),
        "dtype": net.dtype,
        "epoch": str(net.epoch),
        "rng_state": json.dumps(_jsonable(net.rng.bit_generator.state)),
        "input_scaling": json.dumps(_jsonable(net.input_scaling)),
        "metadata": json.dumps(_jsonable(net.metadata)),
        "history": json.dumps({"epoch": net.history.epoch, "history": net.history.history}),
    }
    atomic_write_bytes(path, st.save(tensors, metadata=metadata))


def _header(data: bytes, path: Path) -> dict[str, Any]:
    if len(data) < 8:
        raise ValueError(f"{path} is not an xpnet model: it is too short to be a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"{path} is not an xpnet model: its header claims {size} bytes (oversized)")
    if 8 + size > len(data):
        raise ValueError(f"{path} is truncated: its header needs {size} bytes, the file has {len(data) - 8}")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not an xpnet model: its header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not an xpnet model: its header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not an xpnet model (no xpnet metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has xpnet format version {meta.get('format_version')!r}; "
            f"this xpnet reads version {FORMAT_VERSION}"
        )
    return header


def load(
    path: str | Path, *, backend: Any = None, device: Any = None, max_bytes: int | None = None
) -> Network:
    """Read a network written by :func:`save`, onto any backend.

    Parameters
    ----------
    path : str or Path
        The checkpoint.
    backend, device : optional
        Where to put the network; ``None`` uses the default selection
        (``$XPNET_BACKEND``, else auto), not the backend it was saved from.
    max_bytes : int, optional
        Refuse files larger than this.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is corrupt, truncated, oversized or not an xpnet model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise ValueError(f"{path} is {path.stat().st_size} bytes, over the limit of {max_bytes}")
    data = path.read_bytes()
    meta = _header(data, path)["__metadata__"]
    st = _safetensors()
    try:
        tensors = st.load(data)
    except Exception as exc:  # safetensors raises its own error type for corrupt data
        raise ValueError(f"{path} is corrupt: {exc}") from exc
    try:
        return _rebuild(meta, tensors, backend, device)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a valid xpnet model: {exc!r}") from exc


def _rebuild(meta: dict[str, str], tensors: dict[str, np.ndarray], backend: Any, device: Any) -> Network:
    layers = []
    for spec in json.loads(meta["layers"]):
        cls = LAYERS.get(spec["class"])
        if cls is None:
            raise ValueError(f"unknown layer class {spec['class']!r} in the model file")
        layers.append(cls(**spec["config"]))
    opt = json.loads(meta["optimizer"])
    if opt["name"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt['name']!r} in the model file")
    optimizer = OPTIMIZERS[opt["name"]](**opt["config"])
    net = Network(
        layers,
        loss=meta["loss"],
        optimizer=optimizer,
        backend=backend,
        device=device,
        dtype=meta["dtype"],
    )
    net.build(int(meta["in_features"]))
    for index, layer in enumerate(net.layers):
        for name in list(layer.params):
            value = tensors[f"layers.{index}.{name}"]
            if tuple(value.shape) != tuple(layer.params[name].shape):
                raise ValueError(
                    f"layer {index} {name} has shape {value.shape} in the file, "
                    f"but the architecture needs {tuple(layer.params[name].shape)}"
                )
            layer.params[name] = net.backend.asarray(value, net.dtype, copy=True)
    prefix = "optimizer."
    for key, value in tensors.items():
        if key.startswith(prefix):
            slot, _, name = key[len(prefix) :].rpartition(".")
            net.optimizer.state.setdefault(slot, {})[name] = net.backend.asarray(value, net.dtype, copy=True)
    net.optimizer.iterations = int(opt["iterations"])
    net.epoch = int(meta["epoch"])
    net.rng.bit_generator.state = json.loads(meta["rng_state"])
    net.input_scaling = json.loads(meta["input_scaling"])
    net.metadata = json.loads(meta["metadata"])
    recorded = json.loads(meta["history"])
    net.history = History()
    net.history.epoch = list(recorded["epoch"])
    net.history.history = {k: list(v) for k, v in recorded["history"].items()}
    return net

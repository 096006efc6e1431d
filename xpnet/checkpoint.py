"""The checkpoint file format: tensors and metadata in one safetensors file.

This module knows files, not networks: :func:`write` takes a dict of NumPy
arrays and a dict of metadata strings and writes them atomically;
:func:`read` checks a file and returns them. What the tensors and metadata
mean is :mod:`xpnet.train.serialize`'s business. Reading never runs code: the
header is JSON and the tensors are raw numbers, checked before use.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

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


def write(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write ``tensors`` and ``metadata`` to ``path`` as an xpnet safetensors file, atomically."""
    st = _safetensors()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    atomic_write_bytes(path, st.save(tensors, metadata=meta))


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


def read(path: str | Path, *, max_bytes: int | None = None) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Read and check an xpnet checkpoint; return its metadata and tensors.

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
    return meta, tensors

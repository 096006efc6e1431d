"""The checkpoint file format: tensors and metadata in one safetensors file.

This module knows files, not networks: :func:`write` takes a dict of NumPy
arrays and a dict of metadata strings and writes them atomically;
:func:`read` checks a file and returns them. What the tensors and metadata
mean is :mod:`xpnet.train.serialize`'s business. Reading never runs code: the
header is JSON and the tensors are raw numbers, checked before use.

Reading is bounded by what the file declares, checked before it is believed:
the 8-byte header size is compared with the file size before the header is
read, every tensor's dtype, shape and byte range are checked against the body
before any tensor memory is allocated, and a caller's ``check`` sees the
metadata and tensor shapes before the body is read. Whatever is wrong with a
file, reading raises ValueError.

Writing goes through a temporary file in the target's folder (see
:func:`atomic_write_bytes` for symlinks, hard links, file modes and
temporaries left by killed writers).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

try:  # POSIX: a writer holds a lock on its temporary, so a stale one is one nobody holds
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "xpnet"
FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Larger headers are refused: no real checkpoint comes near it, a hostile one might."""

DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
"""safetensors dtype codes this reader understands, as NumPy dtypes."""

MAX_HEADER_VALUES = 1_000_000
MAX_HEADER_CONTAINERS = 100_000
"""Bounds on the JSON values (counted by commas) and lists/objects (by brackets) in a header,
metadata strings included: parsed JSON takes up to ~25x its text, so these bound what a
hostile header costs in memory (tens of MiB at most), far above any real checkpoint's."""

STALE_SECONDS = 3600.0
"""Without file locks (Windows), a temporary older than this is taken as stale."""

TensorSpecs = dict[str, tuple[str, tuple[int, ...]]]
"""Tensor name -> (safetensors dtype code, shape), as a header declares them."""


def _safetensors() -> Any:
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError("saving and loading networks needs safetensors: pip install safetensors") from exc
    return safetensors.numpy


# -- writing -----------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A crash at any moment leaves either the old file or the new one, never a
    partial one, and no temporary that outlives the next write to ``path``:

    - a symlink is followed: its target is replaced and the link kept;
    - an existing file keeps its permission bits; a new one gets the
      process's umask applied to 0o666, as ``open`` gives;
    - a file with several hard links is rewritten in place, so every link
      still shows the new contents. That last step cannot be atomic: the
      complete new contents are first written and flushed to the temporary,
      which stays next to the file until the in-place write has finished;
    - temporaries ``.<name>.*.tmp`` left by writers that were killed are
      removed (on POSIX, only those that no live writer holds a lock on).
    """
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    try:
        existing: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise IsADirectoryError(f"{path} exists and is not a regular file")
    handle, temporary = _locked_temporary(target)
    try:
        with os.fdopen(handle, "wb", closefd=False) as stream:
            stream.write(data)
            stream.flush()
            if existing is not None:
                os.chmod(temporary, stat.S_IMODE(existing.st_mode))
            os.fsync(stream.fileno())
        if existing is not None and existing.st_nlink > 1:
            _overwrite_in_place(target, data)
            os.unlink(temporary)
        else:
            os.replace(temporary, target)
        _sync_folder(target.parent)
    except BaseException as exc:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise
    finally:
        os.close(handle)  # releases the lock


def _naming(exc: OSError, path: str | Path) -> OSError:
    """``exc`` said for ``path`` ("could not write m.safetensors: No space left on device"), same errno."""
    reason = exc.strerror or str(exc)
    named = OSError(f"could not write {path}: {reason} (any file there before is unchanged)")
    named.errno = exc.errno  # no strerror or filename: str() would become "[Errno 28] ..." again
    return named


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}."


def _locked_temporary(target: Path) -> tuple[int, str]:
    """A new temporary next to ``target``, open and (on POSIX) locked by us."""
    while True:
        name = target.parent / f"{_temporary_prefix(target)}{secrets.token_hex(6)}.tmp"
        handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        if fcntl is None:
            return handle, str(name)
        fcntl.flock(handle, fcntl.LOCK_EX)
        # A cleaner may have taken the lock between our open and our flock, and unlinked it.
        if os.fstat(handle).st_nlink > 0:
            return handle, str(name)
        os.close(handle)


def remove_stale_temporaries(target: str | Path) -> list[str]:
    """Remove temporaries of ``target`` left by writers that died; return their paths."""
    target = Path(target)
    prefix = _temporary_prefix(target)
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        path = target.parent / name
        if _remove_if_stale(path):
            removed.append(str(path))
    return removed


def _remove_if_stale(path: Path) -> bool:
    if fcntl is None:  # pragma: no cover - Windows
        try:
            if os.stat(path).st_mtime < os.path.getmtime(path.parent) - STALE_SECONDS:
                os.unlink(path)
                return True
        except OSError:
            pass
        return False
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a live writer holds it
        os.close(handle)
        return False
    try:
        if os.path.samestat(os.fstat(handle), os.stat(path)):
            os.unlink(path)
            return True
    except OSError:
        pass
    finally:
        os.close(handle)
    return False


def _overwrite_in_place(target: Path, data: bytes) -> None:
    with open(target, "r+b") as stream:
        stream.write(data)
        stream.truncate()
        stream.flush()
        os.fsync(stream.fileno())


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(handle)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(handle)


def write(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write ``tensors`` and ``metadata`` to ``path`` as an xpnet safetensors file, atomically."""
    st = _safetensors()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    atomic_write_bytes(path, st.save(tensors, metadata=meta))


# -- reading -----------------------------------------------------------------------------


def loads_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` that raises only ValueError (deep nesting included), naming ``what``."""
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} is not valid JSON ({exc})") from exc
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be an xpnet model") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise ValueError(f"{what} is not valid JSON ({exc})") from exc


def _header(stream: Any, path: Path, file_size: int) -> tuple[dict[str, str], TensorSpecs, dict[str, Any]]:
    if file_size < 8:
        raise ValueError(f"{path} is not an xpnet model: it is too short to be a safetensors file")
    (size,) = struct.unpack("<Q", stream.read(8))
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"{path} is not an xpnet model: its header claims {size} bytes (oversized)")
    if 8 + size > file_size:
        raise ValueError(f"{path} is truncated: its header needs {size} bytes, the file has {file_size - 8}")
    raw = stream.read(size)
    values, containers = raw.count(b","), raw.count(b"[") + raw.count(b"{")
    if values > MAX_HEADER_VALUES or containers > MAX_HEADER_CONTAINERS:
        raise ValueError(
            f"{path} is not an xpnet model: its header holds {values} values and {containers} "
            f"lists or objects (at most {MAX_HEADER_VALUES} and {MAX_HEADER_CONTAINERS})"
        )
    header = loads_json(raw, f"{path}: the header")
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not an xpnet model: its header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not an xpnet model (no xpnet metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has xpnet format version {meta.get('format_version')!r}; "
            f"this xpnet reads version {FORMAT_VERSION}"
        )
    bad = [k for k, v in meta.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{path} is corrupt: metadata entries {bad[:5]} are not strings")
    body = file_size - 8 - size
    specs, offsets = {}, {}
    for name, entry in header.items():
        dtype, shape, (begin, end) = _tensor_entry(name, entry, path)
        nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
        if not 0 <= begin <= end <= body or end - begin != nbytes:
            raise ValueError(
                f"{path} is corrupt or truncated: tensor {name!r} of shape {shape} needs {nbytes} bytes "
                f"at [{begin}, {end}) of a {body}-byte body"
            )
        specs[name] = (dtype, shape)
        offsets[name] = 8 + size + begin
    return meta, specs, offsets


def _tensor_entry(name: str, entry: Any, path: Path) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is corrupt: the header entry {name!r} is not a tensor description")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(
            f"{path} is corrupt: tensor {name!r} has dtype {dtype!r}; expected one of {list(DTYPES)}"
        )

    def naturals(value: Any, length: int | None) -> TypeGuard[list[int]]:
        return (
            isinstance(value, list)
            and (length is None or len(value) == length)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        )

    if not naturals(shape, None) or len(shape) > 8:
        raise ValueError(f"{path} is corrupt: tensor {name!r} has shape {shape!r}")
    if not naturals(offsets, 2):
        raise ValueError(f"{path} is corrupt: tensor {name!r} has data_offsets {offsets!r}")
    return dtype, tuple(shape), (offsets[0], offsets[1])


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _regular_file(path: Path) -> None:
    """FileNotFoundError when nothing is at ``path``; ValueError saying what it is when not a file.

    Checked with ``stat`` before opening: opening a FIFO would wait for a
    writer, and a device such as ``/dev/zero`` never ends.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"no model file at {path}: it is a symlink to {os.readlink(path)}, which does not exist"
            ) from None
        raise FileNotFoundError(f"no model file at {path}") from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read as a model file: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    real = os.path.realpath(path)
    via = f" (a symlink to {real})" if real != os.path.abspath(path) else ""
    raise ValueError(f"{path}{via} is {kind}, not a model file")


def read(
    path: str | Path,
    *,
    max_bytes: int | None = None,
    check: Callable[[dict[str, str], TensorSpecs], Any] | None = None,
) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Read and check an xpnet checkpoint; return its metadata and tensors.

    Parameters
    ----------
    path : str or Path
        The file.
    max_bytes : int, optional
        Refuse larger files.
    check : callable, optional
        Called with the metadata and the declared tensor specs
        (``{name: (dtype code, shape)}``) after the header is checked and
        before any tensor is read; it raises ValueError to refuse the file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is corrupt, truncated, oversized or not an xpnet model
        (a directory, a FIFO or a device included); the message names ``path``.
    """
    path = Path(path)
    _regular_file(path)
    with open(path, "rb") as stream:
        file_size = os.fstat(stream.fileno()).st_size
        if max_bytes is not None and file_size > max_bytes:
            raise ValueError(f"{path} is {file_size} bytes, over the limit of {max_bytes}")
        meta, specs, offsets = _header(stream, path, file_size)
        if check is not None:
            try:
                check(meta, specs)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        tensors = {}
        for name, (dtype, shape) in specs.items():
            array = np.empty(shape, dtype=DTYPES[dtype])
            stream.seek(offsets[name])
            view = memoryview(array.reshape(-1)).cast("B")  # type: ignore[arg-type]
            if array.nbytes and stream.readinto(view) != array.nbytes:
                raise ValueError(f"{path} is truncated: tensor {name!r} ends past the end of the file")
            tensors[name] = array.astype(array.dtype.newbyteorder("="), copy=False)
    return meta, tensors

"""A cuBLAS handle of xpnet's own, called through ctypes, that CUDA graphs can record.

CuPy's cuBLAS wrappers refuse to run while a stream is being captured
(``setStream`` raises "calling cuBLAS API during stream capture is currently
unsupported"), though cuBLAS itself supports capture once a handle has a
workspace of its own (cublasSetWorkspace; NVIDIA's guide asks for 32 MiB on
Hopper). This module binds the handful of cuBLAS calls a fused step needs to
the library CuPy already loaded, with no dependency beyond CuPy: nvmath-python
would do the same at the price of another package on every GPU machine.

Matrices are CuPy arrays in row-major (C) order; cuBLAS is column-major, so
``C = op(A) @ op(B)`` is computed as ``C^T = op(B)^T @ op(A)^T`` on the same
memory, with no copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
from typing import Any

WORKSPACE_BYTES = 32 * 2**20
"""The handle's own workspace (what cuBLAS asks for on Hopper)."""
_OP_N, _OP_T = 0, 1
_DEFAULT_MATH, _TF32_MATH = 0, 3
_LIBRARY: Any = None


class CublasError(RuntimeError):
    """A cuBLAS call failed (its status is in the message)."""


def library() -> Any:
    """The cuBLAS shared library, as the process loaded it (CuPy loads it first)."""
    global _LIBRARY
    if _LIBRARY is None:
        for name in _candidates():
            try:
                _LIBRARY = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise CublasError("cuBLAS (libcublas) could not be loaded; is CuPy installed for this CUDA?")
    return _LIBRARY


def _candidates() -> list[str]:
    """Where libcublas may be, best first: the copy CuPy mapped into this process, the one
    cuda-pathfinder finds (CUDA 13 wheels keep it under ``nvidia/cu13/lib``), then by name."""
    with contextlib.suppress(Exception):  # CuPy absent or built without cuBLAS: the other places
        import cupy_backends.cuda.libs.cublas  # noqa: F401  (maps CuPy's libcublas)
    names = mapped("libcublas.so")
    with contextlib.suppress(Exception):
        from cuda.pathfinder import load_nvidia_dynamic_lib

        names.append(load_nvidia_dynamic_lib("cublas").abs_path)
    names += [f"libcublas.so.{v}" for v in (13, 12, 11)] + ["libcublas.so"]
    found = ctypes.util.find_library("cublas")
    if found:
        names.append(found)
    for root in (os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"):
        names += sorted(glob.glob(os.path.join(root, "lib64", "libcublas.so*")))
    with contextlib.suppress(ImportError):
        import nvidia  # the wheels CuPy's CUDA 12/13 builds depend on

        for path in nvidia.__path__:
            names += sorted(glob.glob(os.path.join(path, "*", "lib", "libcublas.so*")))
    return [name for name in names if name]


def mapped(prefix: str, maps: str = "/proc/self/maps") -> list[str]:
    """The paths of the shared libraries named ``prefix...`` that this process has mapped (Linux)."""
    try:
        with open(maps) as lines:
            paths = [line.split(None, 5)[-1].strip() for line in lines if prefix in line]
    except OSError:
        return []
    return sorted({path for path in paths if os.path.basename(path).startswith(prefix)})


def _check(status: int, what: str) -> None:
    if status != 0:
        raise CublasError(f"{what} failed with cuBLAS status {status}")


class Handle:
    """A cuBLAS handle bound to one stream, with its own workspace (see the module docstring).

    Parameters
    ----------
    stream : cupy.cuda.Stream
        Every call of this handle runs there (and records there while it captures).
    tf32 : bool
        Let float32 products use TF32 tensor cores (``CUBLAS_TF32_TENSOR_OP_MATH``).
    """

    def __init__(self, stream: Any, *, tf32: bool = False) -> None:
        import cupy

        lib = library()
        self._lib = lib
        handle = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self._handle: ctypes.c_void_p | None = handle
        self.stream = stream
        _check(lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream.ptr)), "cublasSetStream")
        self._workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        _check(
            lib.cublasSetWorkspace_v2(
                handle, ctypes.c_void_p(self._workspace.data.ptr), ctypes.c_size_t(WORKSPACE_BYTES)
            ),
            "cublasSetWorkspace",
        )
        _check(lib.cublasSetMathMode(handle, _TF32_MATH if tf32 else _DEFAULT_MATH), "cublasSetMathMode")
        self._one = {4: ctypes.c_float(1.0), 8: ctypes.c_double(1.0)}
        self._zero = {4: ctypes.c_float(0.0), 8: ctypes.c_double(0.0)}

    def gemm(self, a: Any, b: Any, out: Any, *, ta: bool = False, tb: bool = False) -> None:
        """``out = op(a) @ op(b)`` for C-contiguous float32 or float64 CuPy matrices."""
        size = out.dtype.itemsize
        call = self._lib.cublasSgemm_v2 if size == 4 else self._lib.cublasDgemm_v2
        rows, cols = int(out.shape[0]), int(out.shape[1])
        inner = int(a.shape[0] if ta else a.shape[1])
        status = call(
            self._handle,
            _OP_T if tb else _OP_N,
            _OP_T if ta else _OP_N,
            cols,
            rows,
            inner,
            ctypes.byref(self._one[size]),
            ctypes.c_void_p(b.data.ptr),
            int(b.shape[1]),
            ctypes.c_void_p(a.data.ptr),
            int(a.shape[1]),
            ctypes.byref(self._zero[size]),
            ctypes.c_void_p(out.data.ptr),
            cols,
        )
        _check(status, "cublas gemm")

    def close(self) -> None:
        """Destroy the handle (also when it is garbage-collected)."""
        if self._handle is not None:
            self._lib.cublasDestroy_v2(self._handle)
            self._handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            return

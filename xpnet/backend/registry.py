"""Array backends: the one module that imports array-api-compat or an array library.

A :class:`Backend` bundles an Array API namespace ``xp`` with the device that
arrays live on. Everything above this module reaches arrays only through
``backend.xp`` and ``backend.asarray``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat as aac
import numpy as np

Array = Any
"""Type of an array of any backend (the Array API has no runtime array type)."""

BACKEND_NAMES: tuple[str, ...] = ("numpy", "cupy", "torch", "jax", "array_api_strict")
_ALIASES = {"array-api-strict": "array_api_strict", "strict": "array_api_strict", "np": "numpy"}
FLOAT_DTYPES: tuple[str, ...] = ("float32", "float64")
LOW_FLOAT_DTYPES: tuple[str, ...] = ("bfloat16", "float16")
"""16-bit floats a mixed dtype policy computes in, where the library has them (:func:`float_dtype`)."""
LOW_FLOAT_BACKENDS: dict[str, tuple[str, ...]] = {
    "bfloat16": ("numpy", "cupy", "torch", "jax"),
    "float16": ("numpy", "cupy", "torch", "jax"),
}
"""The backends that compute in each 16-bit float (numpy's and cupy's bfloat16 come from ``ml_dtypes``)."""
MATMUL_PRECISIONS: tuple[str, ...] = ("highest", "tf32")
"""Float32 matrix-multiply precisions :meth:`Backend.matmul_scope` sets."""


class BackendUnavailableError(RuntimeError):
    """A known backend cannot be used on this machine (not installed, or no device)."""


@dataclass(frozen=True, eq=False)
class Backend:
    """An Array API namespace bound to one device.

    Parameters
    ----------
    name : str
        One of :data:`BACKEND_NAMES`.
    xp : module
        The Array API namespace (NumPy itself for NumPy >= 2.1, otherwise the
        array-api-compat wrapper).
    device : object
        The device every array of this backend is created on.
    """

    name: str
    xp: Any
    device: Any
    _is_array: Callable[[Any], bool] = field(repr=False)
    _sync: Callable[[Any], None] = field(repr=False, default=lambda x: None)
    _before_float64: Callable[[], None] = field(repr=False, default=lambda: None)
    _scope: Callable[[], Any] = field(repr=False, default=contextlib.nullcontext)
    _put: Callable[[np.ndarray], Any] | None = field(repr=False, default=None)
    """A faster copy of a host array to the device than ``xp.asarray(..., device=)`` (JAX)."""
    _matmul: Callable[[str], Any] = field(repr=False, default=lambda precision: contextlib.nullcontext())
    """``_matmul(precision)``: a context in which float32 matrix multiplies run at ``precision``."""
    _quiet: Callable[[], Any] = field(repr=False, default=contextlib.nullcontext)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Backend) and other.name == self.name and str(other.device) == str(self.device)
        )

    def __hash__(self) -> int:
        return hash((self.name, str(self.device)))

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by name and device, since namespaces and device objects do not pickle.
        return (get_backend, (self.name, self.device_spec))

    @property
    def device_spec(self) -> str | int:
        """The device as :func:`get_backend` accepts it: ``"cpu"``, ``"cuda:0"``, ``0``, ``"device1"``."""
        if self.name == "cupy":
            return int(self.device.id)
        if self.name == "jax":
            return f"{self.device.platform}:{self.device.id}"
        if self.name == "array_api_strict":
            return _strict_device_name(self.device)
        return str(self.device)

    def dtype(self, name: str | Any) -> Any:
        """Return the namespace's floating dtype for ``"float32"`` or ``"float64"``."""
        if not isinstance(name, str):
            return name
        if name not in FLOAT_DTYPES:
            raise ValueError(f"dtype must be one of {list(FLOAT_DTYPES)}, got {name!r}")
        if name == "float64":
            self._before_float64()
        return getattr(self.xp, name)

    def compute_dtype(self, name: str) -> Any:
        """The namespace's dtype for ``"float32"``, ``"float64"``, ``"bfloat16"`` or ``"float16"``.

        Raises
        ------
        ValueError
            For another name, or a 16-bit float this library does not have
            (array_api_strict), naming the backends that have it.
        BackendUnavailableError
            When the dtype needs a package that is missing here (NumPy's and
            CuPy's bfloat16 come from ``ml_dtypes``) or a newer CuPy.
        """
        if name in FLOAT_DTYPES:
            return self.dtype(name)
        return float_dtype(self.xp, name)

    def matmul_scope(self, precision: str) -> Any:
        """A context in which this backend's float32 matrix multiplies run at ``precision``.

        ``"highest"`` is full float32; ``"tf32"`` lets tensor cores round the
        inputs to TensorFloat-32 (10-bit mantissa, float32 sums), where the
        hardware has them:

        - jax: ``jax.default_matmul_precision`` (``"highest"`` / ``"tensorfloat32"``),
          read when a function is traced, so it belongs inside the traced code;
        - torch on CUDA: ``torch.backends.cuda.matmul.fp32_precision`` (``"ieee"`` /
          ``"tf32"``), set on entry and restored on exit, so other code keeps the
          process's setting (the flag is process-wide: code in other threads sees it
          meanwhile); torch on the CPU: nothing (no TF32 there);
        - cupy: CuPy's float32 GEMM compute type (``COMPUTE_TYPE_DEFAULT`` /
          ``COMPUTE_TYPE_TF32``, which CuPy itself reads from ``$CUPY_TF32``), restored on exit;
        - numpy and array_api_strict: nothing (CPUs have no TF32; results are float32).

        A ``precision`` other than :data:`MATMUL_PRECISIONS` is a ValueError.
        """
        if precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got {precision!r}")
        return self._matmul(precision)

    def overflow_scope(self) -> Any:
        """A context in which floating-point overflow warns nothing (NumPy warns by default).

        Float16 training overflows by design: the loss scaler finds the
        non-finite gradients and skips the step, so those warnings say nothing.
        """
        return self._quiet()

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend's library (on any device)."""
        return self._is_array(x)

    def asarray(self, x: Any, dtype: str | Any | None = None, *, copy: bool = False) -> Array:
        """Convert ``x`` (NumPy, list, pandas, or any backend's array) to this backend.

        Parameters
        ----------
        x : array_like
            The data. Arrays of other backends go through host memory.
        dtype : str or dtype, optional
            ``"float32"``, ``"float64"`` or a dtype of this namespace; by default
            the dtype is kept.
        copy : bool
            Always return a new array, so that later in-place updates never
            reach the caller's data.
        """
        with self.scope():
            return self._asarray(x, dtype, copy)

    def _asarray(self, x: Any, dtype: str | Any | None, copy: bool) -> Array:
        xp = self.xp
        dt = self.dtype(dtype) if dtype is not None else None
        if self.owns(x):
            if str(aac.device(x)) != str(self.device):
                x = aac.to_device(x, self.device)
            if dt is not None and x.dtype != dt:
                return xp.astype(x, dt)
            return xp.asarray(x, copy=True) if copy else x
        host = to_numpy(x)
        if self._put is not None:  # it always copies
            want = None if dt is None else np.dtype(dt)
            return self._put(host if want is None or host.dtype == want else host.astype(want))
        # torch and NumPy share the host buffer unless told to copy
        must_copy = copy or not host.flags.writeable
        return xp.asarray(host, dtype=dt, device=self.device, copy=True if must_copy else None)

    def to_numpy(self, x: Array) -> np.ndarray:
        """Copy ``x`` to host memory as a NumPy array."""
        return to_numpy(x)

    def synchronize(self, x: Array | None = None) -> None:
        """Wait until queued device work (on ``x``, for JAX) has finished; a no-op on CPU."""
        self._sync(x)

    def scope(self) -> Any:
        """A context manager in which this backend's arrays are made on its device.

        CuPy: ``cupy.cuda.Device(id)``, since array-api-compat's CuPy creation
        functions ignore ``device=``; a no-op elsewhere.
        """
        return self._scope()

    @property
    def mutable(self) -> bool:
        """Whether this backend's arrays support in-place updates (all but JAX)."""
        return self.name != "jax"


def to_numpy(array: Any) -> np.ndarray:
    """Return ``array`` of any backend (or a list, scalar or DataFrame) as a NumPy array.

    NumPy input is returned as it is, without a copy.
    """
    if isinstance(array, np.ndarray):
        return array
    if aac.is_cupy_array(array):
        return array.get()
    if aac.is_torch_array(array):
        return array.detach().cpu().numpy()
    if aac.is_jax_array(array):
        return np.asarray(array)
    if type(array).__module__.startswith("array_api_strict"):
        import array_api_strict

        return np.asarray(array.to_device(array_api_strict.Device("CPU_DEVICE")))
    if hasattr(array, "to_numpy"):  # pandas
        return np.asarray(array.to_numpy())
    return np.asarray(array)


def _library(xp: Any) -> str:
    """Which library a namespace belongs to: a name of :data:`BACKEND_NAMES` (or the module's name)."""
    name = getattr(xp, "__name__", "")
    for library in ("numpy", "cupy", "torch"):
        if name in (library, f"array_api_compat.{library}"):
            return library
    if name == "jax.numpy":
        return "jax"
    return "array_api_strict" if name.startswith("array_api_strict") else name


@functools.lru_cache(maxsize=32)
def float_dtype(xp: Any, name: str) -> Any:
    """The floating dtype called ``name`` in the namespace ``xp``, 16-bit ones included.

    ``"float32"`` and ``"float64"`` are the standard's; ``"bfloat16"`` and
    ``"float16"`` are each library's own (NumPy's and CuPy's bfloat16 is
    ``ml_dtypes.bfloat16``). Errors are as :meth:`Backend.compute_dtype` says.
    """
    if name in FLOAT_DTYPES:
        return getattr(xp, name)
    if name not in LOW_FLOAT_DTYPES:
        raise ValueError(f"unknown floating dtype {name!r}; known: {[*FLOAT_DTYPES, *LOW_FLOAT_DTYPES]}")
    library = _library(xp)
    if library not in LOW_FLOAT_BACKENDS[name]:
        raise ValueError(
            f"the {library} backend has no {name} (the Array API standard defines float32 and "
            f"float64 only); {name} computation runs on {', '.join(LOW_FLOAT_BACKENDS[name])}"
        )
    if library == "torch":
        import torch

        return getattr(torch, name)
    if library == "jax":
        import jax.numpy as jnp

        return getattr(jnp, name)
    if name == "float16":
        return np.dtype(np.float16)  # NumPy's, and CuPy's (CuPy's dtypes are NumPy's)
    return _bfloat16(library)


def _bfloat16(library: str) -> Any:
    """``ml_dtypes.bfloat16`` for NumPy and CuPy, or BackendUnavailableError saying what to install."""
    try:
        import ml_dtypes
    except ImportError as exc:
        raise BackendUnavailableError(
            f"bfloat16 on the {library} backend needs the ml_dtypes package, which is not installed: "
            "pip install ml_dtypes (or use dtype='mixed_float16', or the torch or jax backend)"
        ) from exc
    dtype = np.dtype(ml_dtypes.bfloat16)
    if library == "cupy":
        import cupy

        try:
            cupy.zeros(1, dtype=dtype)
        except Exception as exc:  # CuPy before its bfloat16 support: TypeError / NotImplementedError
            raise BackendUnavailableError(
                f"this CuPy ({cupy.__version__}) has no bfloat16 arrays (newer CuPy releases have them "
                "through ml_dtypes); use dtype='mixed_float16' on cupy, or the torch backend"
            ) from exc
    return dtype


def _numpy(device: Any) -> Backend:
    if device not in (None, "cpu"):
        raise ValueError(f"the numpy backend has only the device 'cpu', got {device!r}")
    xp: Any = np
    if not (hasattr(np, "astype") and hasattr(np, "concat")):  # NumPy < 2.1
        import array_api_compat.numpy as xp
    return Backend("numpy", xp, "cpu", lambda x: isinstance(x, np.ndarray), _quiet=_numpy_quiet)


def _numpy_quiet() -> Any:
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def _cupy(device: Any) -> Backend:
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            "the cupy backend needs CuPy, which is not installed: "
            "pip install cupy-cuda12x (or cupy-cuda13x, matching your CUDA driver)"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when there is no driver
        raise BackendUnavailableError(
            f"the cupy backend needs a CUDA GPU, and none works here ({exc}); "
            "use backend='numpy' on this machine"
        ) from exc
    if count == 0:
        raise BackendUnavailableError(
            "the cupy backend needs a CUDA GPU, and this machine has none; "
            "use backend='numpy' on this machine"
        )
    if device is None:
        index = 0
    elif isinstance(device, str) and device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
    else:
        index = int(getattr(device, "id", device))
    if not 0 <= index < count:
        raise ValueError(f"cupy device {index} does not exist: this machine has {count} GPU(s)")
    import array_api_compat.cupy as xp

    return Backend(
        "cupy",
        xp,
        cupy.cuda.Device(index),
        aac.is_cupy_array,
        lambda x: cupy.cuda.Device(index).synchronize(),
        _scope=lambda: cupy.cuda.Device(index),
        _matmul=_cupy_precision,
    )


@contextlib.contextmanager
def _cupy_precision(precision: str) -> Any:
    """CuPy's float32 GEMM compute type set to ``precision`` inside, restored after."""
    from cupy._core import _routines_linalg as linalg

    wanted = getattr(linalg, "COMPUTE_TYPE_TF32" if precision == "tf32" else "COMPUTE_TYPE_DEFAULT")
    before = linalg.get_compute_type(np.float32)
    linalg.set_compute_type(np.float32, wanted)
    try:
        yield
    finally:
        linalg.set_compute_type(np.float32, before)


def _torch(device: Any) -> Backend:
    try:
        import torch
    except ImportError as exc:
        raise BackendUnavailableError(
            "the torch backend needs PyTorch, which is not installed: pip install torch"
        ) from exc
    import array_api_compat.torch as xp

    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"torch device {str(dev)!r} needs CUDA, which this PyTorch build or "
                "machine lacks; use device='cpu'"
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())

        def sync(x: Any) -> None:
            torch.cuda.synchronize(dev)

        matmul = _torch_cuda_precision
    else:

        def sync(x: Any) -> None:
            return None

        def matmul(precision: str) -> Any:
            return contextlib.nullcontext()  # no TF32 on the CPU

    return Backend("torch", xp, dev, aac.is_torch_array, sync, _matmul=matmul)


@contextlib.contextmanager
def _torch_cuda_precision(precision: str) -> Any:
    """torch's CUDA float32 matmul precision set inside, restored after (the new API only: torch
    refuses to read its legacy ``allow_tf32`` flags while the two disagree)."""
    import torch

    flags = torch.backends.cuda.matmul
    before = flags.fp32_precision
    flags.fp32_precision = "tf32" if precision == "tf32" else "ieee"
    try:
        yield
    finally:
        flags.fp32_precision = before


def _jax(device: Any) -> Backend:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        raise BackendUnavailableError(
            "the jax backend needs JAX, which is not installed: pip install jax"
        ) from exc
    if device is None:
        dev = jax.devices()[0]
    elif isinstance(device, str):
        kind, _, index = device.partition(":")
        try:
            dev = jax.devices(kind)[int(index or 0)]
        except (RuntimeError, IndexError) as exc:
            raise BackendUnavailableError(f"jax has no device {device!r}: {exc}") from exc
    else:
        dev = device

    def sync(x: Any) -> None:
        if x is not None:
            x.block_until_ready()

    def enable_x64() -> None:
        # JAX silently truncates float64 to float32 unless x64 mode is on.
        jax.config.update("jax_enable_x64", True)

    def put(host: np.ndarray) -> Any:
        return jax.device_put(host, dev)

    def matmul(precision: str) -> Any:
        return jax.default_matmul_precision("tensorfloat32" if precision == "tf32" else "highest")

    return Backend("jax", jnp, dev, aac.is_jax_array, sync, enable_x64, _put=put, _matmul=matmul)


def _array_api_strict(device: Any) -> Backend:
    try:
        import array_api_strict as xp
    except ImportError as exc:
        raise BackendUnavailableError(
            "the array_api_strict backend needs array-api-strict: pip install array-api-strict"
        ) from exc
    names = [_strict_device_name(d) for d in xp.__array_namespace_info__().devices()]
    if device is None:
        dev = xp.Device("CPU_DEVICE")
    elif isinstance(device, xp.Device):
        dev = device
    else:
        if str(device) not in names:
            raise ValueError(f"array_api_strict has no device {device!r}; its devices: {names}")
        dev = xp.Device(str(device))
    return Backend(
        "array_api_strict",
        xp,
        dev,
        lambda x: type(x).__module__.startswith("array_api_strict"),
    )


def _strict_device_name(device: Any) -> str:
    # Device's repr is "array_api_strict.Device('device1')"; the name is between quotes.
    text = repr(device)
    return text.split("'")[1] if "'" in text else text


_LOADERS: dict[str, Callable[[Any], Backend]] = {
    "numpy": _numpy,
    "cupy": _cupy,
    "torch": _torch,
    "jax": _jax,
    "array_api_strict": _array_api_strict,
}


def _normalize(name: str) -> str:
    key = _ALIASES.get(name.lower(), name.lower())
    if key != "auto" and key not in _LOADERS:
        raise ValueError(f"unknown backend {name!r}; valid names: {[*BACKEND_NAMES, 'auto']}")
    return key


def get_backend(name: str | Backend | None = None, device: Any = None) -> Backend:
    """Return the backend called ``name`` on ``device``.

    Parameters
    ----------
    name : {"numpy", "cupy", "torch", "jax", "array_api_strict", "auto"} or None
        ``None`` reads ``$XPNET_BACKEND`` and falls back to ``"auto"``, which
        picks ``"cupy"`` where a CUDA device works and ``"numpy"`` otherwise.
        A :class:`Backend` is returned as it is (or moved to ``device``).
    device : object, optional
        Backend-specific: cupy ``0``; torch ``"cpu"`` / ``"cuda:0"``;
        array_api_strict ``"device1"``; jax ``"cpu"`` / ``"gpu:0"``.

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    BackendUnavailableError
        For a known backend that cannot run here, saying why and what to do.
    """
    if isinstance(name, Backend):
        return name if device is None else get_backend(name.name, device)
    if name is None:
        name = os.environ.get("XPNET_BACKEND") or "auto"
    key = _normalize(name)
    if key == "auto":
        try:
            return _cupy(device)
        except BackendUnavailableError as exc:
            if device is None or str(device) == "cpu":
                return _numpy(device)
            # Never fall back to the CPU when a device was asked for.
            raise BackendUnavailableError(
                f"device {device!r} asked for, but the auto backend found no usable GPU ({exc}); "
                "name a backend that has that device (e.g. backend='torch')"
            ) from exc
    return _LOADERS[key](device)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine, in :data:`BACKEND_NAMES` order."""
    names = []
    for name in BACKEND_NAMES:
        try:
            get_backend(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return names


def describe_backends() -> list[dict[str, Any]]:
    """One entry per known backend: its name, whether it is usable, why not, and its devices."""
    rows: list[dict[str, Any]] = []
    for name in BACKEND_NAMES:
        try:
            backend = get_backend(name)
        except BackendUnavailableError as exc:
            rows.append({"name": name, "available": False, "reason": str(exc), "devices": []})
            continue
        rows.append({"name": name, "available": True, "reason": "", "devices": _devices(backend)})
    return rows


def _devices(backend: Backend) -> Sequence[str]:
    if backend.name == "numpy":
        return ["cpu"]
    if backend.name == "cupy":
        import cupy

        return [str(i) for i in range(cupy.cuda.runtime.getDeviceCount())]
    if backend.name == "torch":
        import torch

        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if backend.name == "jax":
        import jax

        return [f"{d.platform}:{d.id}" for d in jax.devices()]
    return [_strict_device_name(d) for d in backend.xp.__array_namespace_info__().devices()]


def namespace_of(*arrays: Any) -> Any:
    """The Array API namespace of ``arrays`` (NumPy itself for NumPy >= 2.1 arrays)."""
    if all(isinstance(a, np.ndarray) for a in arrays):
        return _numpy(None).xp
    return aac.array_namespace(*arrays)


def device_of(array: Any) -> Any:
    """The device ``array`` lives on."""
    return aac.device(array)


def owning(array: Any) -> Any:
    """``array``, or its own copy when it is a torch view into a larger buffer.

    torch pickles a view with the whole buffer it views: a network whose
    parameters are views into one flat buffer (the torch engine's) would
    carry that buffer once per parameter. Other libraries pickle a view's
    elements only.
    """
    if aac.is_torch_array(array) and array.untyped_storage().nbytes() != array.numel() * array.element_size():
        return array.clone()
    return array

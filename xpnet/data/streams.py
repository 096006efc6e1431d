"""Batch sources: data that reaches a network one batch at a time, never copied whole.

Every source follows one small protocol, :class:`BatchSource`:
``source.batches(batch_size, rng)`` returns a fresh iterator of :class:`Batch`
``(x, y, w)`` of host (NumPy) arrays for one epoch, and may be called again for
the next epoch; ``source.n_rows`` and ``source.num_batches(batch_size)`` give
the size when it is known (``None`` when not).

- :class:`ArraySource`: in-memory arrays and NumPy memmaps (:func:`from_npy`
  opens ``.npy`` files with ``mmap_mode="r"``);
- :class:`IterableSource`: batches the user makes, re-iterated every epoch;
- :class:`ParquetSource` (pyarrow, row group by row group) and :class:`CSVSource`
  (pandas, chunk by chunk).

Row sources cut their rows into batches of exactly ``batch_size`` rows (the last
may be shorter) whatever the blocks they read, so every source of the same rows
gives the same batches. :class:`Prefetcher` prepares the next batch (for
instance its copy to the device) in a background thread while the current one
trains.

Shuffling
---------
With ``rng`` (a :class:`numpy.random.Generator`, the network's host generator),
in-memory arrays are shuffled as a whole (``rng.permutation(n_rows)``, the order
``Network.fit`` uses). Data on disk is shuffled by blocks of contiguous rows, so
that each read stays sequential and only one block is held in memory: the order
of the blocks is drawn with ``rng.permutation``, then the rows inside each block
with ``rng.permutation`` as the block is reached. Blocks are ``block_rows`` rows
of a memmap (by default about 32 MiB of them), the row groups of a Parquet file,
and the chunks of a CSV file, whose chunk order stays as in the file (a text
file cannot be entered in the middle); a memmap whose one block holds every row
is shuffled exactly as in-memory arrays are. The same generator state gives the
same order on every run and every process.

Memory
------
A memmap's pages, once read, count in the process's resident memory until the
kernel wants them back. :class:`ArraySource` lets go of each block's pages when
it moves on (``madvise(MADV_DONTNEED)`` on Linux: the data stay in the page
cache and in the file), so a pass over a file larger than memory keeps about
one block resident (benchmarks/memmap.py).
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..backend import Backend, to_numpy
from .csvfiles import exact_floats
from .tabular import is_dataframe

DEFAULT_BLOCK_BYTES = 32 * 2**20
"""Bytes of rows a shuffled memmap reads at a time when ``block_rows`` is not given."""


class Batch(NamedTuple):
    """One batch on the host: features ``x`` (rows, features), targets ``y`` and weights ``w``.

    ``y`` and ``w`` are ``None`` when the source has none.
    """

    x: Any
    y: Any = None
    w: Any = None


@runtime_checkable
class BatchSource(Protocol):
    """What every batch source offers (see the module docstring)."""

    @property
    def n_rows(self) -> int | None:
        """Rows per epoch, or None when unknown before iterating."""

    def num_batches(self, batch_size: int) -> int | None:
        """Batches per epoch at ``batch_size``, or None when unknown."""

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """A fresh iterator over one epoch; shuffled with ``rng`` when it is given."""


# -- rows into batches ----------------------------------------------------------------


def _rebatch(chunks: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Cut a stream of row blocks of any sizes into batches of exactly ``batch_size`` rows."""
    held: list[Batch] = []
    count = 0
    for chunk in chunks:
        start = 0
        n = len(chunk.x)
        while start < n:
            take = min(batch_size - count, n - start)
            held.append(_rows(chunk, slice(start, start + take)))
            count += take
            start += take
            if count == batch_size:
                yield _concat(held)
                held, count = [], 0
    if held:
        yield _concat(held)


def _rows(batch: Batch, index: Any) -> Batch:
    return Batch(*(None if a is None else a[index] for a in batch))


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return Batch(*(None if parts[0][i] is None else np.concatenate([p[i] for p in parts]) for i in range(3)))


def _count_batches(n_rows: int | None, batch_size: int) -> int | None:
    return None if n_rows is None else -(-n_rows // batch_size)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _block_order(n_rows: int, bounds: Sequence[tuple[int, int]], rng: np.random.Generator) -> Iterator[Any]:
    """Row indices of each block, blocks in an order drawn from ``rng``, rows shuffled inside."""
    if len(bounds) == 1:  # one block: exactly the in-memory order
        yield rng.permutation(n_rows)
        return
    for b in rng.permutation(len(bounds)):
        start, stop = bounds[int(b)]
        yield start + rng.permutation(stop - start)


# -- arrays and memmaps -------------------------------------------------------------------


class ArraySource:
    """Rows of host arrays: in-memory NumPy arrays or NumPy memmaps (never copied whole).

    Parameters
    ----------
    X : numpy.ndarray or numpy.memmap, shape (rows, features)
        Other array-likes (lists, DataFrames, any backend's arrays) are copied
        to host memory once.
    y, sample_weight : array_like, optional
        One entry per row.
    block_rows : int, optional
        Shuffle by blocks of this many contiguous rows (see the module
        docstring). Default: about 32 MiB of rows for a memmap, the whole
        array (a full permutation) for in-memory data.

    Examples
    --------
    >>> import numpy as np
    >>> source = ArraySource(np.arange(10.0).reshape(5, 2), np.arange(5))
    >>> [b.y.tolist() for b in source.batches(2)]
    [[0, 1], [2, 3], [4]]
    """

    def __init__(self, X: Any, y: Any = None, sample_weight: Any = None, *, block_rows: int | None = None):
        self.X = _host_rows(X, "X")
        if self.X.ndim != 2:
            raise ValueError(f"X must be 2-D (rows, features), got shape {self.X.shape}")
        n = self.X.shape[0]
        self.y = None if y is None else _host_rows(y, "y", n)
        self.sample_weight = None if sample_weight is None else _host_rows(sample_weight, "sample_weight", n)
        if self.sample_weight is not None and self.sample_weight.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D (rows,), got shape {self.sample_weight.shape}")
        self._mapped = [(a, name) for a, name in self._arrays() if _mapped_size(a) is not None]
        self.check_files()
        if block_rows is None:
            on_disk = isinstance(self.X, np.memmap)
            row_bytes = max(1, self.X.strides[0] if on_disk else 1)
            block_rows = max(1, DEFAULT_BLOCK_BYTES // row_bytes) if on_disk else max(1, n)
        self.block_rows = _check_batch_size(block_rows)

    def _arrays(self) -> list[tuple[Any, str]]:
        named = (("X", self.X), ("y", self.y), ("sample_weight", self.sample_weight))
        return [(a, name) for name, a in named if a is not None]

    def check_files(self) -> None:
        """ValueError naming the file behind a memmap that is now shorter than the array.

        Reading a page of a memmap past its file's end kills the process with
        SIGBUS, which no ``except`` catches; so the file's size (``fstat`` of
        the mapped file) is compared with the mapping before every batch is
        read. A file cut between this check and the read can still do it.
        """
        for a, name in self._mapped:
            _check_mapped(a, name)

    @property
    def n_rows(self) -> int:
        """Rows per epoch."""
        return int(self.X.shape[0])

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch at ``batch_size``."""
        return -(-self.n_rows // _check_batch_size(batch_size))

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """One epoch of batches: views of the arrays in order, or gathered rows when shuffled."""
        batch_size = _check_batch_size(batch_size)
        arrays = Batch(self.X, self.y, self.sample_weight)
        n = self.n_rows
        if rng is None:
            return self._in_order(arrays, batch_size)
        bounds = [(i, min(i + self.block_rows, n)) for i in range(0, n, self.block_rows)]
        return self._shuffled(arrays, batch_size, _block_order(n, bounds, rng))

    def _gather(self, arrays: Batch, index: np.ndarray) -> Batch:
        self.check_files()
        return _gather(arrays, index)

    def _in_order(self, arrays: Batch, batch_size: int) -> Iterator[Batch]:
        done = 0
        for i in range(0, self.n_rows, batch_size):
            if i - done >= self.block_rows:
                _release_rows(self.X, done, i)
                done = i
            self.check_files()
            yield _rows(arrays, slice(i, i + batch_size))
        _release_rows(self.X, done, self.n_rows)

    def _shuffled(self, arrays: Batch, batch_size: int, blocks: Iterator[np.ndarray]) -> Iterator[Batch]:
        """Batches gathered from the blocks' row indices; a memmap's pages of a block are let go
        once the last batch holding any of its rows is gathered.

        Not when the next block starts: a batch that straddles two blocks would read the first
        one's rows again after its release, and the kernel maps back tens of kB around each of
        them (fault-around), which left most of every block resident (1.2 GB for a 1.2 GB file).
        """
        served: list[tuple[int, int, int]] = []  # (first row, row after the last, rows up to its end)

        def tracked() -> Iterator[Batch]:
            offset = 0
            for index in blocks:
                offset += len(index)
                if len(index):
                    served.append((int(index.min()), int(index.max()) + 1, offset))
                yield Batch(index)

        gathered = 0
        # Rows are gathered batch by batch, so no more than one batch is ever copied.
        for b in _rebatch(tracked(), batch_size):
            batch = self._gather(arrays, b.x)
            gathered += len(b.x)
            while served and served[0][2] <= gathered:
                _release_rows(self.X, *served.pop(0)[:2])
            yield batch
        for start, stop, _ in served:
            _release_rows(self.X, start, stop)


def _mapped_size(a: Any) -> tuple[Any, int] | None:
    """A file-backed memmap's mapping and the file size it needs, or None for other arrays."""
    mapping = getattr(a, "_mmap", None) if isinstance(a, np.memmap) else None
    if mapping is None or not hasattr(mapping, "size"):
        return None
    start = int(a.offset) - int(a.offset) % mmap.ALLOCATIONGRANULARITY
    return mapping, start + len(mapping)


def _check_mapped(a: Any, name: str) -> None:
    """ValueError when the file behind memmap ``a`` is shorter than its mapping (see
    :meth:`ArraySource.check_files`); nothing for other arrays."""
    found = _mapped_size(a)
    if found is None:
        return
    mapping, needed = found
    try:
        size = mapping.size()  # fstat of the mapped file itself, even if it was renamed
    except (OSError, ValueError):  # a closed mapping: numpy's own error comes on use
        return
    if size < needed:
        raise ValueError(
            f"{name}: the file {a.filename} behind this memmap now has {size} bytes, but the array "
            f"needs {needed}: it was truncated while in use (reading it would kill the process "
            "with SIGBUS); restore the file, or load it again"
        )


def check_mapped(a: Any, name: str) -> None:
    """Public form of the memmap file check, for arrays read outside an :class:`ArraySource`."""
    _check_mapped(a, name)


def _release_rows(X: np.ndarray, start: int, stop: int) -> None:
    """Unmap the resident pages of rows ``[start, stop)`` of a file-backed memmap (Linux ``madvise``).

    Pages of a memmap that have been read count in the process's resident
    memory until the kernel needs them back; letting each block go once it is
    read keeps a pass over a file larger than memory at about one block
    resident. The data stay valid (the pages come back from the page cache or
    the file when read again); copy-on-write maps (mode ``"c"``), whose pages
    may hold private changes, and non-contiguous views are left alone.

    The range is widened by :data:`SPILL_BYTES` on each side (within ``X``):
    a read maps back the page cache's whole folio around it (fault-around;
    folios of up to 2 MiB on recent kernels), so reading one block also maps
    pages of its neighbours, which their own release may have let go before.
    """
    madvise = _madvise()
    if madvise is None or not isinstance(X, np.memmap) or X.mode == "c" or not X.flags.c_contiguous:
        return
    page, base = _PAGE, X.ctypes.data
    first = max(base, base + start * X.strides[0] - SPILL_BYTES)
    last = min(base + X.nbytes, base + stop * X.strides[0] + SPILL_BYTES)
    begin, end = -(-first // page) * page, last // page * page
    if end > begin:
        madvise(begin, end - begin, _MADV_DONTNEED)


SPILL_BYTES = 2 * 2**20
"""Bytes let go beyond each end of a memmap block's rows (see :func:`_release_rows`)."""
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MADV_DONTNEED = 4  # Linux


def _madvise() -> Any:
    global _MADVISE
    if _MADVISE is False:
        import ctypes
        import sys

        _MADVISE = None
        if sys.platform.startswith("linux"):
            try:
                function = ctypes.CDLL(None, use_errno=True).madvise
                function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                function.restype = ctypes.c_int
                _MADVISE = function
            except (OSError, AttributeError):
                _MADVISE = None
    return _MADVISE


_MADVISE: Any = False


def _gather(arrays: Batch, index: np.ndarray) -> Batch:
    # np.take: a third of the time of a[index] on rows, and without the GIL while it copies
    return Batch(*(None if a is None else np.take(np.asarray(a), index, axis=0) for a in arrays))


def _host_rows(a: Any, name: str, n: int | None = None) -> np.ndarray:
    host = a if isinstance(a, np.ndarray) else to_numpy(a)
    if host.ndim == 0:
        raise ValueError(f"{name} must have one entry per row, got a scalar")
    if n is not None and host.shape[0] != n:
        raise ValueError(f"X has {n} rows but {name} has {host.shape[0]}")
    return host


def from_npy(
    x_path: str | os.PathLike[str],
    y_path: str | os.PathLike[str] | None = None,
    weight_path: str | os.PathLike[str] | None = None,
    *,
    block_rows: int | None = None,
) -> ArraySource:
    """An :class:`ArraySource` over ``.npy`` files opened with ``mmap_mode="r"`` (read as needed).

    Parameters
    ----------
    x_path, y_path, weight_path : path
        ``.npy`` files of features (rows, features), targets and sample weights.
    block_rows : int, optional
        Rows per shuffling block (see :class:`ArraySource`).
    """

    def open_(path: Any) -> np.ndarray | None:
        return None if path is None else np.load(Path(path), mmap_mode="r", allow_pickle=False)

    return ArraySource(open_(x_path), open_(y_path), open_(weight_path), block_rows=block_rows)


# -- iterables of batches -------------------------------------------------------------------


class IterableSource:
    """Batches the user makes, ``(X_b, y_b)`` or ``(X_b, y_b, w_b)`` (or ``X_b`` alone), every epoch.

    Parameters
    ----------
    batches : iterable or callable
        A re-iterable (a list, a torch ``DataLoader``, any object whose
        ``iter()`` starts over), or a function of no arguments returning a fresh
        iterator (``lambda: my_generator(path)``). A one-shot iterator (a
        generator object) serves one epoch only; asking for a second raises
        ValueError.

    Notes
    -----
    The batches are used as they come: ``batch_size`` is ignored and the source
    does not shuffle (shuffle inside the iterable, e.g. ``DataLoader(shuffle=True)``).
    Each batch's arrays are returned as NumPy arrays.
    """

    def __init__(self, batches: Iterable[Any] | Callable[[], Iterator[Any]]) -> None:
        if not callable(batches) and not isinstance(batches, Iterable):
            raise TypeError(
                f"batches must be an iterable of (X, y[, w]) batches or a function returning one, "
                f"got {type(batches).__name__}"
            )
        self.source = batches
        self._one_shot = isinstance(batches, Iterator)
        self._epochs = 0

    @property
    def n_rows(self) -> None:
        """Unknown until the batches are read."""
        return None

    @property
    def reiterable(self) -> bool:
        """Whether every call of :meth:`batches` starts over (False for a one-shot iterator)."""
        return not self._one_shot

    def num_batches(self, batch_size: int | None = None) -> int | None:
        """``len()`` of the iterable when it has one (a list, a ``DataLoader``), else None."""
        try:
            return len(self.source)  # type: ignore[arg-type]
        except TypeError:
            return None

    def check_epochs(self, epochs: int, what: str = "X") -> None:
        """ValueError, before any is read, when a one-shot iterator is asked for several epochs."""
        if self._one_shot and self._epochs + epochs > 1:
            raise ValueError(
                f"{what} is a one-shot iterator (a generator can be iterated only once), which gives "
                f"one epoch, not {self._epochs + epochs}; {_REITERABLE}"
            )

    def batches(
        self, batch_size: int | None = None, rng: np.random.Generator | None = None
    ) -> Iterator[Batch]:
        """The next epoch's batches, converted to NumPy and checked."""
        if self._one_shot and self._epochs > 0:
            raise ValueError(
                "this iterator of batches is exhausted after one epoch (a generator can be iterated "
                f"only once); {_REITERABLE}"
            )
        self._epochs += 1
        items = self.source() if callable(self.source) else iter(self.source)
        return (_as_batch(item, i) for i, item in enumerate(items))


_REITERABLE = (
    "pass a list, a re-iterable such as a torch DataLoader, or a function returning a fresh iterator, "
    "e.g. lambda: make_batches()"
)


def check_epochs(source: Any, epochs: int, what: str = "X") -> None:
    """Refuse, before training, more epochs than ``source`` can give (a one-shot iterator: one)."""
    if isinstance(source, IterableSource):
        source.check_epochs(epochs, what)


def _as_batch(item: Any, index: int) -> Batch:
    parts = tuple(item) if isinstance(item, (tuple, list)) else (item,)
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"batch {index} has {len(parts)} parts; expected X_b, (X_b, y_b) or (X_b, y_b, w_b)")
    arrays = [None if p is None else to_numpy(p) for p in parts]
    x = arrays[0]
    if x is None or x.ndim != 2:
        shape = None if x is None else x.shape
        raise ValueError(f"batch {index}: X_b must be 2-D (rows, features), got shape {shape}")
    for name, a in zip(("y_b", "w_b"), arrays[1:]):
        if a is not None and (a.ndim == 0 or a.shape[0] != x.shape[0]):
            raise ValueError(f"batch {index}: X_b has {x.shape[0]} rows but {name} has shape {a.shape}")
    return Batch(*arrays)


# -- files in pieces ---------------------------------------------------------------------------


class _TableSource:
    """Shared column handling of Parquet and CSV: features, target and weight columns by name."""

    def __init__(self, columns: Sequence[str], features: Sequence[str] | None, target: Any, weight: Any):
        known = list(columns)
        named = [c for c in (target, weight) if c is not None]
        missing = [c for c in [*named, *(features or [])] if c not in known]
        if missing:
            raise ValueError(f"columns {missing} are not in the file; its columns: {known}")
        self.features = list(features) if features is not None else [c for c in known if c not in named]
        if not self.features:
            raise ValueError("no feature columns are left: name them with features=[...]")
        self.target = target
        self.weight = weight

    @property
    def _wanted(self) -> list[str]:
        return [*self.features, *(c for c in (self.target, self.weight) if c is not None)]

    def _from_frame(self, columns: dict[str, np.ndarray]) -> Batch:
        xs = [np.asarray(columns[c]) for c in self.features]
        bad = [c for c, a in zip(self.features, xs) if a.dtype.kind not in "biuf"]
        if bad:
            raise ValueError(f"feature columns {bad} are not numeric; encode them as numbers first")
        x = np.column_stack(xs) if xs else np.empty((0, 0))
        y = None if self.target is None else np.asarray(columns[self.target])
        w = None if self.weight is None else np.asarray(columns[self.weight], dtype=np.float64)
        return Batch(x, y, w)


class ParquetSource(_TableSource):
    """Rows of a Parquet file read one row group at a time through pyarrow.

    Parameters
    ----------
    path : path
        The Parquet file.
    features : list of str, optional
        Feature columns, in order; default: every column but ``target`` and ``weight``.
    target, weight : str, optional
        The target column and the sample-weight column.

    Notes
    -----
    Shuffling permutes the row groups, then the rows inside each (see the
    module docstring): write the file with several row groups to shuffle well.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        features: Sequence[str] | None = None,
        target: str | None = None,
        weight: str | None = None,
    ) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self._file = pq.ParquetFile(self.path)
        super().__init__(self._file.schema_arrow.names, features, target, weight)

    @property
    def n_rows(self) -> int:
        """Rows per epoch (from the file's metadata)."""
        return int(self._file.metadata.num_rows)

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch at ``batch_size``."""
        return -(-self.n_rows // _check_batch_size(batch_size))

    def _group(self, i: int) -> Batch:
        table = self._file.read_row_group(i, columns=self._wanted)
        return self._from_frame({c: table.column(c).to_numpy() for c in self._wanted})

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """One epoch of batches, row group by row group."""
        batch_size = _check_batch_size(batch_size)
        count = self._file.num_row_groups
        if rng is None:
            return _rebatch((self._group(i) for i in range(count)), batch_size)
        order = rng.permutation(count)

        def shuffled() -> Iterator[Batch]:
            for i in order:
                group = self._group(int(i))
                yield _rows(group, rng.permutation(len(group.x)))

        return _rebatch(shuffled(), batch_size)


class CSVSource(_TableSource):
    """Rows of a CSV file read ``chunk_rows`` at a time through pandas.

    Parameters
    ----------
    path : path
        The CSV file, with a header row.
    features, target, weight
        As for :class:`ParquetSource`.
    chunk_rows : int
        Rows read at a time (and the shuffling block: rows are shuffled inside
        each chunk, the chunks stay in file order).
    **read_csv_options
        Passed to :func:`pandas.read_csv` (``sep``, ``dtype``, ...).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        features: Sequence[str] | None = None,
        target: str | None = None,
        weight: str | None = None,
        chunk_rows: int = 65536,
        **read_csv_options: Any,
    ) -> None:
        import pandas as pd

        self.path = Path(path)
        self.chunk_rows = _check_batch_size(chunk_rows)
        self._options = read_csv_options
        header = pd.read_csv(self.path, nrows=0, **read_csv_options)
        super().__init__([str(c) for c in header.columns], features, target, weight)
        self._rows: int | None = None

    @property
    def n_rows(self) -> int | None:
        """Rows per epoch, known after the first complete epoch."""
        return self._rows

    def num_batches(self, batch_size: int) -> int | None:
        """Batches per epoch, known after the first complete epoch."""
        return _count_batches(self._rows, _check_batch_size(batch_size))

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """One epoch of batches, chunk by chunk."""
        batch_size = _check_batch_size(batch_size)
        return _rebatch(self._chunks(rng), batch_size)

    def _chunks(self, rng: np.random.Generator | None) -> Iterator[Batch]:
        import pandas as pd

        seen = 0
        options = {"usecols": self._wanted, "chunksize": self.chunk_rows, **exact_floats(), **self._options}
        with pd.read_csv(self.path, **options) as reader:
            for frame in reader:
                chunk = self._from_frame({c: frame[c].to_numpy() for c in self._wanted})
                seen += len(chunk.x)
                yield chunk if rng is None else _rows(chunk, rng.permutation(len(chunk.x)))
        self._rows = seen


KINDS = ("source", "batches", "memmap", "frame", "rows")
"""What :func:`kind_of` tells inputs apart as."""


def kind_of(X: Any) -> str:
    """What ``X`` is, as every consumer of data asks it (one of :data:`KINDS`).

    ``"source"``: a :class:`BatchSource`; ``"batches"``: an iterator, a
    function, or an iterable that is not an array (a list counts when it
    holds tuples of arrays); ``"memmap"``: a NumPy memmap; ``"frame"``: a
    DataFrame; ``"rows"``: anything else (arrays of any backend, nested lists
    of numbers, a pandas Series).
    """
    if isinstance(X, np.memmap):
        return "memmap"
    if isinstance(X, np.ndarray):  # before the protocol check, which is slow
        return "rows"
    if isinstance(X, BatchSource):
        return "source"
    if is_dataframe(X):
        return "frame"
    if hasattr(X, "__array_namespace__"):
        return "rows"
    if hasattr(X, "shape") and hasattr(X, "dtype"):  # arrays without the protocol: torch tensors, Series
        return "rows"
    if isinstance(X, (list, tuple)):
        first = X[0] if X else None
        batches = isinstance(first, (tuple, list)) and bool(first) and hasattr(first[0], "ndim")
        return "batches" if batches else "rows"
    return "batches" if callable(X) or isinstance(X, Iterable) else "rows"


def as_source(X: Any, y: Any = None, sample_weight: Any = None) -> BatchSource:
    """``X`` (with ``y`` and ``sample_weight``) as a :class:`BatchSource`.

    A source is returned as it is; batches (:func:`kind_of`) become an
    :class:`IterableSource`; everything else (arrays, memmaps, DataFrames,
    nested lists of numbers) an :class:`ArraySource`.
    """
    kind = kind_of(X)
    if kind == "source":
        extra = [n for n, v in (("y", y), ("sample_weight", sample_weight)) if v is not None]
        if extra:
            raise ValueError(f"{extra} must be left out when X is a batch source: the source gives them")
        return X  # type: ignore[no-any-return]
    if kind == "batches":
        if y is not None or sample_weight is not None:
            raise ValueError("y and sample_weight must be left out when X is an iterable of batches")
        return IterableSource(X)
    return ArraySource(X, y, sample_weight)


# -- background preparation ----------------------------------------------------------------------


class _Failure:
    """An exception raised in the producer thread, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class Prefetcher:
    """Prepare the next batches in one background thread while the current one is used.

    Parameters
    ----------
    batches : iterable
        Usually ``source.batches(batch_size, rng)``.
    convert : callable, optional
        Applied to each item in the background thread (e.g. the copy to the
        device, :func:`device_converter`); default: the item as it is.
    depth : int
        Items prepared ahead (1 or 2 is enough to hide a copy behind a step).

    Notes
    -----
    Use it as a context manager (or call :meth:`close`): leaving the ``with``
    block, by the end of the data, a ``break`` or an exception, stops and
    joins the thread. An exception raised while reading or converting is
    raised again in the consuming thread, at the batch it belongs to.

    Examples
    --------
    >>> import numpy as np
    >>> source = ArraySource(np.ones((5, 2)))
    >>> with Prefetcher(source.batches(2), lambda b: b.x.sum()) as ready:
    ...     [float(s) for s in ready]
    [4.0, 4.0, 2.0]
    """

    def __init__(self, batches: Iterable[Any], convert: Callable[[Any], Any] | None = None, depth: int = 2):
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_check_batch_size(depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(iter(batches), convert), name="xpnet-prefetch", daemon=True
        )
        self._thread.start()

    def _produce(self, items: Iterator[Any], convert: Callable[[Any], Any] | None) -> None:
        try:
            for item in items:
                if self._stop.is_set() or not self._put(item if convert is None else convert(item)):
                    return
            self._put(_DONE)
        except BaseException as exc:  # carried to the consumer, raised there
            self._put(_Failure(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless asked to stop first; whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the background thread and wait for it (idempotent)."""
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a producer waiting on a full queue
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    @property
    def running(self) -> bool:
        """Whether the background thread is still alive."""
        return self._thread.is_alive()

    def __enter__(self) -> Iterator[Any]:
        return iter(self)

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def device_converter(backend: Backend, dtype: str) -> Callable[[Batch], Batch]:
    """A function moving a host :class:`Batch` to ``backend``: features and weights in ``dtype``,
    integer targets kept integer (class labels), other targets in ``dtype``.

    The backend's engine makes it (:meth:`~xpnet.engine.eager.EagerEngine.converter`):
    on CuPy the copy goes through pinned host memory on a separate CUDA
    stream, so that it overlaps the step running on the default stream when
    called from a :class:`Prefetcher`.
    """
    from ..engine import engine_for

    return engine_for(backend).converter(dtype)

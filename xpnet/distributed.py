"""Data parallelism over processes: MPI through mpi4py, NCCL through CuPy on GPUs.

``comm = init()`` returns a :class:`Communicator`. Under ``mpiexec``/``srun`` it
wraps ``MPI.COMM_WORLD``; in a single process (no launcher, or no mpi4py) it is
a communicator of size 1 whose collectives return their input, so the same
script runs with and without MPI.

The collectives one training step needs:

- :meth:`Communicator.allreduce_sum` of one flat buffer (:func:`flatten` packs a
  dict or list of gradient arrays into one, :func:`unflatten` unpacks it);
- :meth:`Communicator.bcast` of the initial parameters from rank 0;
- :meth:`Communicator.rows`, the slice of a global batch each rank trains on.

Arrays of any backend are accepted and returned on their own backend and
device. NumPy buffers go to MPI directly; other backends' arrays pass through
host memory, except CuPy arrays when NCCL is available, which are reduced on
the GPU by an NCCL communicator whose unique id rank 0 broadcasts over MPI.
Each GPU rank must use its own GPU (e.g. ``device=comm.local_rank``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .backend import Array, device_of, namespace_of, to_numpy
from .engine.flat import Layout as Layout
from .engine.flat import flatten as flatten
from .engine.flat import unflatten as unflatten

LAUNCHER_VARIABLES: tuple[str, ...] = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")
"""Environment variables set by MPI launchers (MPICH/Intel hydra, PMIx, Open MPI, Slurm srun)."""


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``, ``srun``)."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def init(comm: Any = None) -> Communicator:
    """The communicator of this run.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Use this MPI communicator (a sub-communicator, say). By default
        ``MPI.COMM_WORLD`` when an MPI launcher started the process, and a
        single-process communicator otherwise.

    Raises
    ------
    RuntimeError
        When a launcher started this process but mpi4py is not installed (each
        process would otherwise train alone and write the same files).

    Examples
    --------
    >>> import xpnet as xn
    >>> comm = xn.distributed.init()     # doctest: +SKIP
    >>> comm.rank, comm.size             # doctest: +SKIP
    (0, 1)
    """
    if comm is None and not launched_by_mpi():
        return Communicator(None)
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(
            "this process was started by an MPI launcher, but mpi4py is not installed: "
            "pip install 'xpnet[mpi]' (mpi4py and the mpich wheel)"
        ) from exc
    return Communicator(MPI.COMM_WORLD if comm is None else comm)


class Communicator:
    """The processes of one run, and the collectives a training step needs.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Comm or None
        ``None`` makes a single-process communicator (size 1, no MPI).
    """

    def __init__(self, mpi_comm: Any = None) -> None:
        self.mpi = mpi_comm
        self._nccl: dict[int, Any] = {}
        self._local_rank: int | None = None

    @property
    def rank(self) -> int:
        """This process's number, 0 .. size - 1."""
        return 0 if self.mpi is None else int(self.mpi.Get_rank())

    @property
    def size(self) -> int:
        """Number of processes."""
        return 1 if self.mpi is None else int(self.mpi.Get_size())

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0, the one that prints and writes checkpoints."""
        return self.rank == 0

    @property
    def local_rank(self) -> int:
        """This process's number among those on the same machine (to pick its GPU)."""
        if self._local_rank is None:
            if self.mpi is None:
                self._local_rank = 0
            else:
                from mpi4py import MPI

                node = self.mpi.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
                self._local_rank = int(node.Get_rank())
                node.Free()
        return self._local_rank

    def __repr__(self) -> str:
        kind = "single process" if self.mpi is None else "MPI"
        return f"Communicator(rank={self.rank}, size={self.size}, {kind})"

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` rows.

        The first ``n % size`` ranks get one row more than the others, so every
        row goes to exactly one rank (a rank may get none when ``n < size``).
        """
        return shard(n, self.rank, self.size)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.mpi is not None:
            self.mpi.Barrier()

    def allreduce_sum(self, buffer: Array) -> Array:
        """The elementwise sum of ``buffer`` over all processes, on every process.

        Parameters
        ----------
        buffer : array of any backend
            The same shape and dtype on every process (flatten many arrays into
            one with :func:`flatten`: one collective per step).

        Returns
        -------
        array
            On ``buffer``'s backend and device; ``buffer`` itself is not
            modified (with size 1 it is returned as it is).
        """
        if self.mpi is None:
            return buffer
        if _is_cupy(buffer) and _nccl_module() is not None:
            return self._nccl_collective(buffer, "sum")
        host = np.ascontiguousarray(to_numpy(buffer))
        total = np.empty_like(host)
        self.mpi.Allreduce(host, total)
        return _like(total, buffer)

    def bcast(self, buffer: Array, root: int = 0) -> Array:
        """Rank ``root``'s ``buffer`` on every process (e.g. the initial parameters).

        Every process passes an array of the same shape and dtype (its own
        values are ignored on ranks other than ``root``); a mismatch raises
        ValueError on every rank. ``buffer`` itself is not modified.
        """
        if self.mpi is None:
            return buffer
        self._check_same_layout(buffer, root)
        if _is_cupy(buffer) and _nccl_module() is not None:
            return self._nccl_collective(buffer, "bcast", root)
        host = np.array(to_numpy(buffer), copy=True, order="C")
        self.mpi.Bcast(host, root=root)
        return _like(host, buffer)

    def bcast_object(self, value: Any, root: int = 0) -> Any:
        """Rank ``root``'s picklable ``value`` on every process (small things: seeds, ids)."""
        return value if self.mpi is None else self.mpi.bcast(value, root=root)

    def _check_same_layout(self, buffer: Array, root: int) -> None:
        mine = (tuple(int(d) for d in buffer.shape), str(buffer.dtype).rsplit(".", 1)[-1])
        theirs = self.mpi.bcast(mine, root=root)
        agree = self.mpi.allreduce(int(mine == theirs), op=_mpi_min())
        if not agree:
            raise ValueError(
                f"bcast needs the same shape and dtype on every rank: rank {root} has {theirs}, "
                f"rank {self.rank} has {mine}"
            )

    # -- NCCL (CuPy arrays on GPUs) -------------------------------------------------------------

    def _nccl_collective(self, buffer: Any, op: str, root: int = 0) -> Any:
        """Sum or broadcast a CuPy array on its GPU through NCCL, on the current stream.

        Written against cupy.cuda.nccl's documented API; it needs several GPUs
        to run and is not exercised by the CPU-only CI.
        """
        import cupy

        nccl = _nccl_module()
        device = int(buffer.device.id)
        with cupy.cuda.Device(device):
            communicator = self._nccl_communicator(device)
            source = cupy.ascontiguousarray(buffer)
            out = cupy.empty_like(source)
            kind = _nccl_dtype(nccl, source.dtype)
            stream = cupy.cuda.get_current_stream().ptr
            if op == "sum":
                communicator.allReduce(
                    source.data.ptr, out.data.ptr, source.size, kind, nccl.NCCL_SUM, stream
                )
            else:
                communicator.broadcast(source.data.ptr, out.data.ptr, source.size, kind, root, stream)
        return out

    def _nccl_communicator(self, device: int) -> Any:
        # Collective: every rank reaches this on its first GPU collective, in the same order.
        if device not in self._nccl:
            nccl = _nccl_module()
            unique_id = nccl.get_unique_id() if self.is_root else None
            unique_id = self.mpi.bcast(unique_id, root=0)
            self._nccl[device] = nccl.NcclCommunicator(self.size, unique_id, self.rank)
        return self._nccl[device]


def shard(n: int, rank: int, size: int) -> slice:
    """Rows ``rank`` of ``size`` processes takes from ``n`` rows (see :meth:`Communicator.rows`)."""
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    base, extra = divmod(int(n), size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def _like(host: np.ndarray, template: Any) -> Any:
    """``host`` on ``template``'s backend and device (NumPy stays NumPy)."""
    if isinstance(template, np.ndarray):
        return host
    xp = namespace_of(template)
    return xp.asarray(host, device=device_of(template))


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def _nccl_module() -> Any:
    try:
        from cupy.cuda import nccl
    except ImportError:
        return None
    return nccl if getattr(nccl, "available", True) else None


def _nccl_dtype(nccl: Any, dtype: Any) -> int:
    kinds = {
        "float32": nccl.NCCL_FLOAT32,
        "float64": nccl.NCCL_FLOAT64,
        "int32": nccl.NCCL_INT32,
        "int64": nccl.NCCL_INT64,
    }
    name = np.dtype(dtype).name
    if name not in kinds:
        raise ValueError(f"NCCL collectives take {sorted(kinds)} buffers, got {name}")
    return kinds[name]


def _mpi_min() -> Any:
    from mpi4py import MPI

    return MPI.MIN

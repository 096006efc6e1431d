"""Distributed tests run in one process (size 1) in the ordinary suite, and under ``mpiexec -n 2``
and ``-n 3`` in the ``tests-mpi`` nox session (``python tests/distributed_tests/run_mpi.py``).

Every test here is collective: each rank runs the same tests in the same order. When a test fails on
one rank, that rank aborts the whole MPI job at the end of its session (pytest runs with ``-x``), so
the other ranks never wait forever in a collective the failed rank will not reach.
"""

from __future__ import annotations

import sys

import pytest

import xpnet as xn

_EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def comm() -> xn.distributed.Communicator:
    """The communicator of this run: size 1 alone, MPI under a launcher."""
    return xn.distributed.init()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After the failure report is printed, end every rank of a failed MPI run."""
    status = config.stash.get(_EXIT_STATUS, 0)
    if status in (0, 5) or not xn.distributed.launched_by_mpi():
        return
    from mpi4py import MPI

    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(status)

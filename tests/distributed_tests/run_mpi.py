"""Run tests/distributed_tests under ``mpiexec`` with 2 ranks, then 3 (uneven splits); fail if any rank fails.

    python tests/distributed_tests/run_mpi.py [pytest options, e.g. --backend numpy --backend torch]

A rank whose test fails aborts the MPI job (see conftest.py); a hang is cut by ``MPIEXEC_TIMEOUT``
and, behind it, by this driver's own timeout (both `$XPNET_MPI_TIMEOUT` seconds, default 300).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = int(os.environ.get("XPNET_MPI_TIMEOUT", "300"))
RANKS = (2, 3)


def run(ranks: int, pytest_args: list[str]) -> int:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        print("mpiexec not found: pip install 'xpnet[mpi]' (mpi4py and the mpich wheel)", file=sys.stderr)
        return 2
    here = Path(__file__).parent
    command = [
        mpiexec,
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    command += [str(here), *pytest_args]
    env = {**os.environ, "MPIEXEC_TIMEOUT": str(TIMEOUT_S)}
    print(f"$ {' '.join(command)}", flush=True)
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        return process.wait(timeout=TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        print(f"{ranks} ranks: timed out after {TIMEOUT_S + 30} s", file=sys.stderr)
        return 124


def main() -> int:
    failed = [n for n in RANKS if run(n, sys.argv[1:]) != 0]
    if failed:
        print(f"distributed tests failed with {failed} ranks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

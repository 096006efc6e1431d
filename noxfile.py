"""Test matrix: the same tests on every backend, plus lint, types and examples.

``nox`` runs every session that works on a CPU-only machine; ``nox -s tests-cupy``
runs the GPU session (it skips, and passes, where no CUDA device exists).
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = False

# The package that provides each backend. torch is pinned: 2.13.0 is a CPU wheel that
# installs offline here, where an unpinned torch pulls gigabytes of CUDA packages.
BACKENDS = {
    "numpy": [],
    "array_api_strict": ["array-api-strict"],
    "torch": ["torch==2.13.0"],
    "jax": ["jax"],
    "cupy": [os.environ.get("XPNET_CUPY_PACKAGE", "cupy-cuda12x")],  # cupy-cuda13x for CUDA 13
}
# Reference implementations the tests compare against, on every backend.
REFERENCES = ["torch==2.13.0"]
CPU_BACKENDS = [name for name in BACKENDS if name != "cupy"]

nox.options.sessions = [
    "lint",
    "typecheck",
    *(f"tests-{name}" for name in CPU_BACKENDS),
    "tests-mpi",
    "examples",
]


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the package."""
    session.install("-e", ".[all]", "mypy")
    session.run("mypy", "xpnet")


def _tests(backend: str) -> None:
    @nox.session(name=f"tests-{backend}")
    def session_function(session: nox.Session) -> None:
        session.install("-e", ".[test]", *BACKENDS[backend], *REFERENCES)
        if backend == "cupy":
            probe = (
                "import cupy\ntry:\n    print(cupy.cuda.runtime.getDeviceCount())\n"
                "except Exception:\n    print(0)"
            )
            if str(session.run("python", "-c", probe, silent=True)).strip() in ("", "0"):
                session.skip("no CUDA device here: the cupy tests need a GPU (see docs/gpu.md)")
        session.run("pytest", "--backend", backend, *session.posargs)

    session_function.__doc__ = f"The test suite on the {backend} backend."


for _name in BACKENDS:
    _tests(_name)


@nox.session(name="tests-mpi")
def tests_mpi(session: nox.Session) -> None:
    """tests/distributed_tests under mpiexec with 2 and 3 ranks (mpich from pip), on numpy and torch."""
    session.install("-e", ".[test,mpi]", *REFERENCES)
    backends = ["--backend", "numpy", "--backend", "torch"]
    session.run("python", "tests/distributed_tests/run_mpi.py", *backends, *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every script in examples/ on numpy."""
    session.install("-e", ".[test]")
    for script in sorted(Path("examples").glob("[!_]*.py")):
        args = ["--samples", "4000", "--epochs", "1"] if script.name == "gpu.py" else []
        session.run("python", str(script), "--backend", "numpy", *args)

"""Test matrix: the same tests on every backend, plus lint, types and examples.

``nox`` runs every session that works on a CPU-only machine; ``nox -s tests-cupy``
runs the GPU session (it skips, and passes, where no CUDA device exists).

The CPU sessions (all but ``lint``) share one environment, ``.nox/shared``, with
every CPU backend, the reference torch and the ``mpi`` extra (mpi4py, mpich) in
it: torch is installed once, not once per session (about 1.5 GB on disk instead
of 7). It is reinstalled when pyproject.toml or this file changes.
"""

from __future__ import annotations

import hashlib
import os
import sys
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
SHARED = Path(".nox") / "shared"

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
    session.install("ruff==0.17.6")  # newer ruff formats more (Markdown code blocks came in 0.17)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _shared(session: nox.Session) -> str:
    """The shared environment's python, created or brought up to date with pyproject.toml."""
    python = SHARED / "bin" / "python"
    packages = ["-e", ".[test,mpi]", "mypy", *REFERENCES]
    packages += [p for name in CPU_BACKENDS for p in BACKENDS[name] if p not in packages]
    wanted = hashlib.sha256(
        (Path("pyproject.toml").read_text() + Path(__file__).read_text()).encode()
    ).hexdigest()
    stamp = SHARED / "installed.sha256"
    if not python.exists():
        session.run(sys.executable, "-m", "venv", str(SHARED), external=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        session.run(str(python), "-m", "pip", "install", "-q", *packages, external=True)
        stamp.write_text(wanted)
    return str(python)


@nox.session(venv_backend="none")
def typecheck(session: nox.Session) -> None:
    """mypy on the package."""
    session.run(_shared(session), "-m", "mypy", "xpnet", external=True)


def _workers() -> list[str]:
    """pytest-xdist's ``-n`` for this machine: one worker per core, at most 4 (each imports
    every backend, about 1 GB); ``$XPNET_TEST_WORKERS`` overrides, 1 runs in one process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = int(os.environ.get("XPNET_TEST_WORKERS", min(cores, 4)))
    return ["-n", str(count)] if count > 1 else []


def _tests(backend: str) -> None:
    if backend != "cupy":

        @nox.session(name=f"tests-{backend}", venv_backend="none")
        def shared_session(session: nox.Session) -> None:
            args = ["--backend", backend, *_workers(), *session.posargs]
            session.run(_shared(session), "-m", "pytest", *args, external=True)

        shared_session.__doc__ = f"The test suite on the {backend} backend."
        return

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
        session.run("pytest", "--backend", backend, *_workers(), *session.posargs)

    session_function.__doc__ = f"The test suite on the {backend} backend."


for _name in BACKENDS:
    _tests(_name)


@nox.session(name="tests-mpi", venv_backend="none")
def tests_mpi(session: nox.Session) -> None:
    """tests/distributed_tests under mpiexec with 2 and 3 ranks (mpich from pip): numpy and torch, and
    the tests of fit's numbers on JAX."""
    python = _shared(session)
    # The shared environment's bin/ first on PATH: run_mpi.py finds its mpiexec there.
    path = f"{(SHARED / 'bin').resolve()}{os.pathsep}{os.environ.get('PATH', '')}"
    runs = [
        ["--backend", "numpy", "--backend", "torch"],
        # JAX's compiled halves around the host allreduce, on the tests of fit's numbers
        ["--backend", "jax", "-k", "equals_one_process or clipping or weights"],
    ]
    for backends in runs:
        session.run(
            python,
            "tests/distributed_tests/run_mpi.py",
            *backends,
            *session.posargs,
            env={"PATH": path},
            external=True,
        )


@nox.session(venv_backend="none")
def examples(session: nox.Session) -> None:
    """Run every script in examples/ on numpy."""
    python = _shared(session)
    for script in sorted(Path("examples").glob("[!_]*.py")):
        args = ["--samples", "4000", "--epochs", "1"] if script.name == "gpu.py" else []
        session.run(python, str(script), "--backend", "numpy", *args, external=True)

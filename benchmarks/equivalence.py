"""Largest difference between ``fit(..., distributed=comm)`` and one process with the same batch_size.

    mpiexec -n 2 python benchmarks/equivalence.py
    mpiexec -n 3 python benchmarks/equivalence.py

float64, Adam, dropout 0.3, shuffled, 1001 rows in batches of 64 (the last has 41 rows), 5 epochs, on
numpy, torch and jax (compiled). Every rank trains the single-process reference too; rank 0 prints the
largest difference of any weight and of any logged loss or accuracy, over all ranks.
"""

from __future__ import annotations

import numpy as np

import xpnet as xn


def network(backend: str) -> xn.Network:
    layers = [xn.Dense(32, "relu", in_features=20), xn.Dropout(0.3), xn.Dense(5, "softmax")]
    return xn.Network(
        layers, loss="categorical_crossentropy", optimizer="adam", backend=backend, dtype="float64", seed=3
    )


def main() -> None:
    comm = xn.distributed.init()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(1001, 20)), rng.integers(0, 5, 1001)
    for backend in ("numpy", "torch", "jax"):
        alone, net = network(backend), network(backend)
        want = alone.fit(X, y, epochs=5, batch_size=64, verbose=0).history
        got = net.fit(X, y, epochs=5, batch_size=64, distributed=comm, verbose=0).history
        weights = max(float(np.max(np.abs(a - b))) for a, b in zip(alone.get_weights(), net.get_weights()))
        logs = max(abs(g - w) for key in want for g, w in zip(got[key], want[key]))
        if comm.mpi is not None:
            weights, logs = (comm.mpi.allreduce(v, op=_max()) for v in (weights, logs))
        if comm.is_root:
            print(f"{comm.size} ranks, {backend}: max |weight diff| {weights:.3g}, max |log diff| {logs:.3g}")


def _max():
    from mpi4py import MPI

    return MPI.MAX


if __name__ == "__main__":
    main()

"""Data-parallel fit speed per backend, compiled against eager, under ``mpiexec``.

    mpiexec -n 2 python benchmarks/distributed_speed.py [--rows 16384] [--epochs 2] [--repeats 3]

A 64-128-128-10 ReLU network (float32, Adam, batches of 256 split over the
ranks) fits the same random rows with ``distributed=comm``, on JAX eager
(``compile=False``), JAX compiled (the step's two compiled halves around the
host allreduce) and NumPy. Each figure is the fastest of ``--repeats`` fits
after a warm-up fit (which compiles); rank 0 prints seconds and the ratio to
JAX eager.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import xpnet as xn

CASES = [("jax", False), ("jax", None), ("numpy", None)]


def network(backend: str, compile: bool | None) -> xn.Network:
    layers = [xn.Dense(128, "relu", in_features=64), xn.Dense(128, "relu"), xn.Dense(10, "softmax")]
    return xn.Network(
        layers, loss="categorical_crossentropy", optimizer="adam", backend=backend, seed=0, compile=compile
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    comm = xn.distributed.init()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, 64)).astype(np.float32)
    y = rng.integers(0, 10, args.rows)
    times = {}
    for backend, compile in CASES:
        net = network(backend, compile)
        net.fit(X[:512], y[:512], batch_size=256, distributed=comm, verbose=0)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            net.fit(X, y, epochs=args.epochs, batch_size=256, distributed=comm, verbose=0)
            best = min(best, time.perf_counter() - start)
        times[backend, compile] = best
    if comm.rank == 0:
        eager = times["jax", False]
        print(f"{comm.size} ranks, {args.rows} rows x {args.epochs} epochs, batch 256:")
        for (backend, compile), seconds in times.items():
            name = f"{backend} compile={compile}"
            print(f"  {name:22s} {seconds:7.3f} s   {eager / seconds:5.2f}x jax eager")


if __name__ == "__main__":
    main()

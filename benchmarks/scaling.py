"""Data-parallel scaling: measured step and allreduce times here, and a ring-allreduce model beyond.

Measures, on this machine:
  - the training step time of the mnist (784-256-128-10) and wide (1024-4096-4096-10) networks
    of benchmarks/speed.py (numpy backend, float32, SGD), at three batch sizes each, through
    ``Network.fit`` (so data handling is included), fitted as t(b) = t0 + c * b;
  - ``Communicator.allreduce_sum`` of each network's flattened float32 parameter buffer (and of 8
    bytes, for the latency) under ``mpiexec -n 1`` and ``mpiexec -n 2`` (MPICH from pip, shared
    memory between the two processes).

Steps run with one BLAS thread (``--threads``): one rank per core is how data-parallel ranks
are placed, and on this shared 2-core machine a second BLAS thread made steps up to 10x slower.
Each figure is the fastest of ``--repeats`` runs (the slowest rank's, for an allreduce): this
machine is shared, and the fastest run is the one least disturbed by other work.

Models (nothing below is measured): a ring allreduce over N ranks costs
T(N) = 2 (N - 1) * alpha + 2 (N - 1) / N * bytes / bandwidth; with the allreduce after the
backward pass (no overlap), a rank training b rows per step runs at efficiency
E = t(b) / (t(b) + T(N)), and needs b >= (9 T(N) - t0) / c rows for E >= 90%.

    python benchmarks/scaling.py               # prints JSON lines, then the Markdown tables
    python benchmarks/scaling.py --repeats 9
    python benchmarks/scaling.py --report out.txt  # the tables again, from a run's JSON lines
    python benchmarks/scaling.py --report out.txt --step mnist:128:0.0013  # a step time from elsewhere
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

import xpnet as xn

NETWORKS = {"mnist": (784, 256, 128, 10), "wide": (1024, 4096, 4096, 10)}
BATCHES = {"mnist": (32, 128, 512), "wide": (64, 256, 512)}
BENCH_BATCH = {"mnist": 128, "wide": 512}  # the batch of benchmarks/speed.py
STEPS = {"mnist": 40, "wide": 3}
RANKS = (8, 64)
# Assumed links (not measured here): line rate, and a per-message latency typical of each.
LINKS = {"10 Gbit/s Ethernet": (10e9 / 8, 25e-6), "100 Gbit/s InfiniBand": (100e9 / 8, 3e-6)}


def parameter_count(sizes: tuple[int, ...]) -> int:
    return sum(i * o + o for i, o in itertools.pairwise(sizes))


def ring_time(ranks: int, nbytes: float, bandwidth: float, latency: float) -> float:
    """Seconds of one ring allreduce of ``nbytes`` over ``ranks`` processes."""
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) * latency + 2 * (ranks - 1) / ranks * nbytes / bandwidth


# -- measurements ---------------------------------------------------------------------------------


def time_steps(name: str, batch: int, repeats: int) -> float:
    """Fastest seconds per training step of network ``name`` at ``batch`` rows (numpy, float32)."""
    sizes = NETWORKS[name]
    rng = np.random.default_rng(0)
    n = STEPS[name] * batch
    X = rng.normal(size=(n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n)
    hidden = [xn.Dense(units, "relu") for units in sizes[2:-1]]
    layers = [xn.Dense(sizes[1], "relu", in_features=sizes[0]), *hidden, xn.Dense(sizes[-1])]
    net = xn.Network(layers, loss="cross_entropy", optimizer=xn.SGD(0.01), backend="numpy", seed=0)
    net.fit(X[:batch], y[:batch], batch_size=batch, verbose=0)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net.fit(X, y, batch_size=batch, shuffle=False, verbose=0)
        times.append((time.perf_counter() - start) / STEPS[name])
    return min(times)


def allreduce_worker(repeats: int) -> None:
    """Run under mpiexec: time allreduce_sum of each buffer; rank 0 prints one JSON line each."""
    comm = xn.distributed.init()
    buffers = {"latency (8 B)": 2, **{name: parameter_count(s) for name, s in NETWORKS.items()}}
    for name, count in buffers.items():
        buffer = np.ones(count, dtype=np.float32)
        comm.allreduce_sum(buffer)  # warm up
        times = []
        for _ in range(repeats):
            comm.barrier()
            start = time.perf_counter()
            comm.allreduce_sum(buffer)
            times.append(time.perf_counter() - start)
        slowest = comm.mpi.allreduce(min(times), op=_max())
        if comm.is_root:
            record = {"what": "allreduce", "buffer": name, "ranks": comm.size, "bytes": buffer.nbytes}
            print(json.dumps({**record, "seconds": slowest}), flush=True)


def _max():
    from mpi4py import MPI

    return MPI.MAX


def measure_allreduce(ranks: int, repeats: int) -> list[dict]:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install 'xpnet[mpi]'")
    command = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", "--repeats", str(repeats)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


# -- the model and the tables ------------------------------------------------------------------------


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares t0, c of t(b) = t0 + c * b (t0 = 0 from a single point)."""
    if len(points) == 1:
        return 0.0, points[0][1] / points[0][0]
    b = np.array([p[0] for p in points], dtype=np.float64)
    t = np.array([p[1] for p in points], dtype=np.float64)
    c, t0 = np.polyfit(b, t, 1)
    return max(float(t0), 0.0), float(c)


def report(steps: dict, allreduce: list[dict], model_steps: dict | None = None) -> str:
    """The Markdown tables; the model uses ``model_steps`` where given, else the measured ``steps``."""
    lines = [
        "## Measured here",
        "",
        "| network | params | batch | step ms | samples/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, points in steps.items():
        for batch, seconds in points:
            count = parameter_count(NETWORKS[name])
            lines.append(f"| {name} | {count:,} | {batch} | {seconds * 1e3:.2f} | {batch / seconds:,.0f} |")
    lines += ["", "| buffer | bytes | ranks | allreduce ms |", "| --- | --- | --- | --- |"]
    for r in allreduce:
        lines.append(f"| {r['buffer']} | {r['bytes']:,} | {r['ranks']} | {r['seconds'] * 1e3:.3f} |")
    two = {r["buffer"]: r for r in allreduce if r["ranks"] == 2}
    if two:
        alpha = two["latency (8 B)"]["seconds"] / 2
        wide = two["wide"]
        beta = wide["bytes"] / max(wide["seconds"] - 2 * alpha, 1e-12)
        predicted = ring_time(2, two["mnist"]["bytes"], beta, alpha)
        lines += [
            "",
            f"Fitted to the 2-rank runs: alpha = {alpha * 1e6:.1f} us, bandwidth = {beta / 1e9:.2f} GB/s; "
            f"the model then gives {predicted * 1e3:.3f} ms for mnist's buffer "
            f"(measured {two['mnist']['seconds'] * 1e3:.3f} ms).",
        ]
    lines += ["", "## Modelled", ""]
    lines += [
        "| network | link | ranks | allreduce ms | E at its bench batch per rank | rows per rank for 90% | "
        "global batch for 90% |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, points in {**steps, **(model_steps or {})}.items():
        t0, c = fit_line(points)
        nbytes = 4 * parameter_count(NETWORKS[name])
        b = BENCH_BATCH[name]
        for link, (bandwidth, latency) in LINKS.items():
            for ranks in RANKS:
                t_ar = ring_time(ranks, nbytes, bandwidth, latency)
                efficiency = (t0 + c * b) / (t0 + c * b + t_ar)
                need = int(np.ceil((9 * t_ar - t0) / c))
                rows = f"{need:,} | {need * ranks:,}" if need > 1 else "any | any"
                lines.append(
                    f"| {name} | {link} | {ranks} | {t_ar * 1e3:.2f} | {efficiency:.0%} (b={b}) | {rows} |"
                )
        lines.append(f"| {name} | step fit | | t0 = {t0 * 1e3:.3f} ms, c = {c * 1e6:.2f} us/row | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for the steps (default 1)")
    parser.add_argument("--report", metavar="FILE", help="print the tables from a run's JSON lines")
    parser.add_argument(
        "--step",
        action="append",
        default=[],
        metavar="NET:BATCH:SECONDS",
        help="with --report: model NET from this step time instead of the measured ones",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        records = [json.loads(line) for line in open(args.report) if line.startswith("{")]
        steps: dict[str, list[tuple[int, float]]] = {}
        for r in records:
            if r["what"] == "step":
                steps.setdefault(r["network"], []).append((r["batch"], r["seconds"]))
        given: dict[str, list[tuple[int, float]]] = {}
        for text in args.step:
            name, batch, seconds = text.split(":")
            given.setdefault(name, []).append((int(batch), float(seconds)))
        print(report(steps, [r for r in records if r["what"] == "allreduce"], given))
        return
    if args.worker:
        allreduce_worker(max(args.repeats, 10))
        return
    allreduce = []
    for ranks in (1, 2):
        for record in measure_allreduce(ranks, max(args.repeats, 10)):
            print(json.dumps(record), flush=True)
            allreduce.append(record)
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    with threadpool_limits(args.threads):
        steps = measure_steps(args.repeats)
    print(f"\n(cpu cores: {os.cpu_count()}, BLAS threads {args.threads}, numpy {np.__version__})\n")
    print(report(steps, allreduce))


def measure_steps(repeats: int) -> dict[str, list[tuple[int, float]]]:
    steps: dict[str, list[tuple[int, float]]] = {}
    for name in NETWORKS:
        for batch in BATCHES[name]:
            seconds = time_steps(name, batch, repeats)
            print(
                json.dumps({"what": "step", "network": name, "batch": batch, "seconds": seconds}), flush=True
            )
            steps.setdefault(name, []).append((batch, seconds))
    return steps


if __name__ == "__main__":
    main()

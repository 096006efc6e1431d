"""Training from a float32 memmap larger than a worker's memory: peak RSS and speed against in-memory data.

Writes a ``--gb`` GiB float32 ``.npy`` file under ``--dir`` (default /tmp; deleted at the end), reads it
once so that it sits in the page cache, then trains one epoch of the same network in three fresh
processes, each reporting its own peak RSS and time:

- ``memmap``: ``fit(np.load(path, mmap_mode="r"), y, shuffle=True)``: the documented block shuffle,
  the next batch gathered and converted in the background while the current one trains;
- ``iterable``: ``fit(lambda: batches(path))``, a generator reading the file in order with
  ``np.fromfile`` (no memory map at all);
- ``memory``: ``fit(X, y, shuffle=True)`` on the first ``--memory-gb`` GiB of the same rows loaded
  into memory (the fast path: whole data on the device, gathered per batch).

Peak RSS is each process's VmHWM, which counts the pages of a memmap it has read while they stay
mapped; the file is written with plain writes, so the parent holds none of it either. One BLAS thread
(``--threads``) per process, as in benchmarks/scaling.py.

Speeds are rows per second, so the in-memory run may use fewer rows. The machine is shared: compare
ratios from one run only.

    python benchmarks/memmap.py                 # 4 GiB, 256 features, batch 1024, numpy
    python benchmarks/memmap.py --gb 0.25 --memory-gb 0.125   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# The xpnet of this checkout, not an installed one (the script's folder comes first on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FEATURES = 256
CLASSES = 10


def write(path: Path, rows: int, chunk_rows: int = 1 << 16) -> None:
    """A float32 ``.npy`` file of ``rows`` x FEATURES normal values, written in chunks (never whole)."""
    rng = np.random.default_rng(0)
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, FEATURES)}
    with open(path, "wb") as stream:  # written, not mapped: this process stays small
        np.lib.format.write_array_header_1_0(stream, header)
        for start in range(0, rows, chunk_rows):
            stop = min(start + chunk_rows, rows)
            rng.standard_normal((stop - start, FEATURES), dtype=np.float32).tofile(stream)


def warm(path: Path) -> None:
    """Read the file once so that it is in the page cache."""
    with open(path, "rb") as stream:
        while stream.read(64 << 20):
            pass


def labels(rows: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, CLASSES, rows).astype(np.int32)


def network(backend: str):
    import xpnet as xn

    layers = [xn.Dense(64, "relu", in_features=FEATURES), xn.Dense(CLASSES, "softmax")]
    return xn.Network(layers, loss="categorical_crossentropy", optimizer="adam", backend=backend, seed=0)


def file_batches(path: Path, batch_size: int, y: np.ndarray):
    """Batches read in file order with ``np.fromfile`` (the iterable a user might write)."""
    header = np.load(path, mmap_mode="r").offset
    rows = y.shape[0]

    def read():
        with open(path, "rb") as stream:
            stream.seek(header)
            for start in range(0, rows, batch_size):
                count = min(batch_size, rows - start)
                x = np.fromfile(stream, dtype=np.float32, count=count * FEATURES).reshape(count, FEATURES)
                yield x, y[start : start + count]

    return read


def child(args: argparse.Namespace) -> None:
    """One measured epoch; prints a JSON line with the rows and the seconds."""
    path = Path(args.path)
    mapped = np.load(path, mmap_mode="r")
    rows = mapped.shape[0]
    y = labels(rows)
    net = network(args.backend)
    if args.mode == "memory":
        rows = min(rows, int(args.memory_gb * 2**30) // (4 * FEATURES))
        X, y = np.array(mapped[:rows]), y[:rows]
        data, target = X, y
    elif args.mode == "memmap":
        data, target = mapped, y
    else:
        data, target = file_batches(path, args.batch_size, y), None
    if args.backend == "jax":  # compile first, on a few batches
        net.fit(X[:4096] if args.mode == "memory" else mapped[:4096], y[:4096], epochs=1, verbose=0)
    start = time.perf_counter()
    net.fit(data, target, epochs=1, batch_size=args.batch_size, verbose=0)
    seconds = time.perf_counter() - start
    print(json.dumps({"mode": args.mode, "rows": rows, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: mapped file pages included), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(args: argparse.Namespace, mode: str, path: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--path", str(path), "--backend", args.backend]
    command += ["--batch-size", str(args.batch_size), "--memory-gb", str(args.memory_gb)]
    threads = str(args.threads)
    env = {
        **os.environ,
        **{v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=4.0, help="size of the memmap in GiB")
    parser.add_argument("--memory-gb", type=float, default=0.5, help="GiB of rows for the in-memory run")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode (the fastest is kept)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (the machine is shared)")
    parser.add_argument("--child", choices=["memmap", "iterable", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return
    path = Path(args.dir) / f"xpnet-memmap-{os.getpid()}.npy"
    rows = int(args.gb * 2**30) // (4 * FEATURES)
    try:
        started = time.perf_counter()
        write(path, rows)
        warm(path)
        print(
            f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB, {rows} rows) in "
            f"{time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        results: dict[str, dict] = {}
        for _ in range(args.repeats):  # alternating, the fastest of each: the machine is shared
            for mode in ("memory", "memmap", "iterable"):
                run = measure(args, mode, path)
                if mode not in results or run["rows_per_s"] > results[mode]["rows_per_s"]:
                    results[mode] = run
    finally:
        path.unlink(missing_ok=True)
    base = results["memory"]["rows_per_s"]
    for r in results.values():
        r["speed_vs_memory"] = r["rows_per_s"] / base
        print(json.dumps(r))
    print("\n| data | rows | peak RSS (MB) | rows/s | vs in-memory |\n|---|---:|---:|---:|---:|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['rows']} | {r['peak_rss_mb']:.0f} | {r['rows_per_s']:.0f} | "
            f"{r['speed_vs_memory']:.2f}x |"
        )


if __name__ == "__main__":
    main()

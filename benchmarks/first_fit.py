"""The first fit in a new process, with the compilation cache cold and then warm.

Each measurement is a fresh Python process that imports xpnet, builds the
tiny XOR network (2-3-1, tanh and sigmoid, log-loss) and times its first
``fit(epochs=200)``, then a second ``fit(epochs=500)`` (a new epoch count).
The first process gets an empty cache directory (``$XPNET_CACHE_DIR``), the
later ones the same directory, so they find what the first compiled; a run
with the cache turned off (``XPNET_CACHE_DIR=off``) is the baseline.

    python benchmarks/first_fit.py                  # jax
    python benchmarks/first_fit.py --backend cupy   # on a GPU: CuPy's kernel cache is its own
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import time, json
start = time.perf_counter()
import numpy as np
import xpnet as xn
imported = time.perf_counter()
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
y = np.array([0, 1, 1, 0])
net = xn.Network([xn.Dense(3, "tanh", in_features=2), xn.Dense(1, "sigmoid")], loss="logloss",
                 optimizer=xn.SGD(0.5), backend={backend!r}, seed=0)
made = time.perf_counter()
net.fit(X, y, epochs=200, batch_size=4, verbose=0)
first = time.perf_counter()
net.fit(X, y, epochs=500, batch_size=4, verbose=0)
second = time.perf_counter()
print(json.dumps({{"import": imported - start, "first_fit": first - made, "new_count_fit": second - first}}))
"""


def run(backend: str, cache: str) -> dict[str, float]:
    env = dict(os.environ, XPNET_CACHE_DIR=cache)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(backend=backend)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--repeats", type=int, default=3, help="warm processes (and cache-off ones)")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"cache off": [], "cold cache": [], "warm cache": []}
    with tempfile.TemporaryDirectory() as directory:
        rows["cold cache"].append(run(args.backend, directory))
        for _ in range(args.repeats):
            rows["warm cache"].append(run(args.backend, directory))
            rows["cache off"].append(run(args.backend, "off"))
    print(f"backend {args.backend}; seconds, median of the processes (one cold one)")
    print()
    print("| cache | processes | import xpnet | first fit(epochs=200) | then fit(epochs=500) |")
    print("| --- | --- | --- | --- | --- |")
    for label, results in rows.items():
        med = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(
            f"| {label} | {len(results)} | {med['import']:.3f} | {med['first_fit']:.3f} "
            f"| {med['new_count_fit']:.3f} |"
        )


if __name__ == "__main__":
    main()

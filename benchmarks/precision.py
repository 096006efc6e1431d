"""Dtype policies on the CPU: held-out accuracy on digits, and training speed beside float32.

accuracy: scikit-learn's digits (1,797 8x8 images), a stratified quarter held out,
  64-64-10 ReLU, Adam lr 0.003, batch 32, 30 epochs, several seeds, for
  float32 / mixed_bfloat16 / mixed_float16 on each backend.
speed: training samples per second of one epoch (after a warm-up epoch), the
  repeats interleaved across policies and medians reported (a shared machine
  drifts), on a fixed linear teacher's data:
    mnist  784-256-128-10 ReLU, batch 128, 16,384 samples, SGD lr 0.1
    wide   1024-4096-4096-10 ReLU, batch 512, 4,096 samples, SGD lr 0.01

A backend may name its device after an ``@``: ``--backend torch@cuda:0``, ``--backend jax@gpu:0``.
Prints one JSON line per run, then Markdown tables, and the load average.

    python benchmarks/precision.py accuracy --backend numpy --backend torch --backend jax
    python benchmarks/precision.py speed --backend torch --configs wide --policies mixed_bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np

import xpnet as xn

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
SPEED = {
    "mnist": ((784, 256, 128, 10), 16_384, 128, 0.1),
    "wide": ((1024, 4096, 4096, 10), 4_096, 512, 0.01),
}


def _backend(spec: str) -> xn.Backend:
    """``name`` or ``name@device`` as a backend."""
    name, _, device = spec.partition("@")
    return xn.get_backend(name, device or None)


def accuracy(backends: list[str], seeds: int, epochs: int) -> list[dict[str, Any]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.25, stratify=y, random_state=0
    )
    rows = []
    for backend in backends:
        for seed in range(seeds):
            for policy in POLICIES:
                net = xn.Network(
                    [xn.Dense(64, "relu"), xn.Dense(10, "softmax")],
                    loss="cross_entropy",
                    optimizer=xn.Adam(0.003),
                    backend=_backend(backend),
                    dtype=policy,
                    seed=seed,
                )
                start = time.perf_counter()
                net.fit(X_train, y_train, epochs=epochs, batch_size=32, verbose=0)
                row = {
                    "what": "accuracy",
                    "backend": backend,
                    "policy": policy,
                    "seed": seed,
                    "accuracy": net.evaluate(X_test, y_test)["accuracy"],
                    "seconds": time.perf_counter() - start,
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def speed(backends: list[str], configs: list[str], repeats: int, policies: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in configs:
        sizes, samples, batch, lr = SPEED[name]
        rng = np.random.default_rng(0)
        X = rng.normal(size=(samples, sizes[0])).astype(np.float32)
        y = np.argmax(X @ rng.normal(size=(sizes[0], sizes[-1])).astype(np.float32), axis=1)
        for backend in backends:
            nets = {}
            for policy in policies:
                layers = [xn.Dense(n, "relu") for n in sizes[1:-1]] + [xn.Dense(sizes[-1], "softmax")]
                net = xn.Network(
                    layers,
                    loss="cross_entropy",
                    optimizer=xn.SGD(lr),
                    backend=_backend(backend),
                    dtype=policy,
                    seed=0,
                )
                net.fit(X, y, epochs=1, batch_size=batch, verbose=0)  # builds, compiles, warms up
                nets[policy] = net
            times: dict[str, list[float]] = {policy: [] for policy in policies}
            for _ in range(repeats):
                for policy, net in nets.items():
                    start = time.perf_counter()
                    net.fit(X, y, epochs=1, batch_size=batch, verbose=0)
                    times[policy].append(time.perf_counter() - start)
            for policy in policies:
                row = {
                    "what": "speed",
                    "config": name,
                    "backend": backend,
                    "policy": policy,
                    "samples_per_s": samples / statistics.median(times[policy]),
                    "ratio_to_float32": statistics.median(times["float32"])
                    / statistics.median(times[policy]),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def tables(rows: list[dict[str, Any]]) -> str:
    lines = []
    runs = [r for r in rows if r["what"] == "accuracy"]
    if runs:
        lines += ["| backend | " + " | ".join(POLICIES) + " |", "| --- |" + " --- |" * len(POLICIES)]
        for backend in dict.fromkeys(r["backend"] for r in runs):
            cells = []
            for policy in POLICIES:
                values = [
                    100 * r["accuracy"] for r in runs if r["backend"] == backend and r["policy"] == policy
                ]
                cells.append(f"{statistics.mean(values):.2f} ± {statistics.pstdev(values):.2f}")
            lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    timed = [r for r in rows if r["what"] == "speed"]
    if timed:
        lines += [
            "",
            "| config | backend | " + " | ".join(POLICIES) + " |",
            "| --- | --- |" + " --- |" * len(POLICIES),
        ]
        for config, backend in dict.fromkeys((r["config"], r["backend"]) for r in timed):
            found = {r["policy"]: r for r in timed if (r["config"], r["backend"]) == (config, backend)}
            cells = [
                f"{found[p]['samples_per_s']:,.0f} ({found[p]['ratio_to_float32']:.2f}x)"
                if p in found
                else "-"
                for p in POLICIES
            ]
            lines.append(f"| {config} | {backend} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["accuracy", "speed"])
    parser.add_argument("--backend", action="append", dest="backends")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--configs", nargs="+", default=["mnist", "wide"], choices=list(SPEED))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    args = parser.parse_args()
    backends = args.backends or ["numpy", "torch", "jax"]
    before = os.getloadavg()
    if args.what == "accuracy":
        rows = accuracy(backends, args.seeds, args.epochs)
    else:
        rows = speed(
            backends, args.configs, args.repeats, ["float32", *(p for p in args.policies if p != "float32")]
        )
    print(tables(rows))
    print(f"load average before {before[0]:.1f}, after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

"""Dtype policies on the CPU: held-out accuracy on digits, and training speed beside float32.

accuracy: scikit-learn's digits (1,797 8x8 images), a stratified quarter held out,
  64-64-10 ReLU, Adam lr 0.003, batch 32, 30 epochs, several seeds, for
  float32 / mixed_bfloat16 / mixed_float16 on each backend.
speed: training samples per second of one epoch (after a warm-up epoch), the
  repeats interleaved across variants (the policies, and float32 with
  ``matmul_precision="tf32"``) and medians reported (a shared machine drifts),
  on a fixed linear teacher's data:
    mnist  784-256-128-10 ReLU, batch 128, 16,384 samples, SGD lr 0.1
    wide   1024-4096-4096-10 ReLU, batch 512, 4,096 samples, SGD lr 0.01
    gpu    4096-4096-4096-10 ReLU, batch 4,096, 32,768 samples, SGD lr 0.01
  ``--peers cuda`` adds torch eager on that device, float32 and under
  ``torch.autocast`` (float16 with a GradScaler); ``--memory`` the peak device
  memory of building each trainer and running one epoch (CuPy's pool, torch's
  CUDA counters), and the table of issue 20's targets.

A backend may name its device after an ``@``: ``--backend torch@cuda:0``, ``--backend jax@gpu:0``.
Prints one JSON line per run, then Markdown tables, and the load average.

    python benchmarks/precision.py accuracy --backend numpy --backend torch --backend jax
    python benchmarks/precision.py speed --backend torch --configs wide --policies mixed_bfloat16
    python benchmarks/precision.py speed --backend cupy --configs gpu wide --peers cuda --memory
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import xpnet as xn

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
VARIANTS = (*POLICIES, "tf32")
"""What the speed runs compare: the policies, and float32 with TF32 matrix products."""
SPEED = {
    "mnist": ((784, 256, 128, 10), 16_384, 128, 0.1),
    "wide": ((1024, 4096, 4096, 10), 4_096, 512, 0.01),
    "gpu": ((4096, 4096, 4096, 10), 32_768, 4_096, 0.01),
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


def _network(sizes: tuple[int, ...], lr: float, backend: str, variant: str, seed: int = 0) -> xn.Network:
    """The speed configuration's network in ``variant``: a dtype policy, or ``"tf32"`` (float32
    with TF32 matrix products)."""
    layers = [xn.Dense(n, "relu") for n in sizes[1:-1]] + [xn.Dense(sizes[-1], "softmax")]
    return xn.Network(
        layers,
        loss="cross_entropy",
        optimizer=xn.SGD(lr),
        backend=_backend(backend),
        dtype="float32" if variant == "tf32" else variant,
        matmul_precision="tf32" if variant == "tf32" else "highest",
        seed=seed,
    )


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    sizes, samples, _, _ = SPEED[name]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(samples, sizes[0])).astype(np.float32)
    return X, np.argmax(X @ rng.normal(size=(sizes[0], sizes[-1])).astype(np.float32), axis=1)


def _xpnet_epoch(name: str, backend: str, variant: str) -> Callable[[], None]:
    """One training epoch of xpnet, built and warmed up (its first epoch builds and compiles)."""
    sizes, _, batch, lr = SPEED[name]
    X, y = _data(name)
    net = _network(sizes, lr, backend, variant)
    net.fit(X, y, epochs=1, batch_size=batch, verbose=0)
    return lambda: net.fit(X, y, epochs=1, batch_size=batch, verbose=0)


def _torch_epoch(name: str, device: str, variant: str) -> Callable[[], None]:
    """torch eager on ``device``, float32 or under ``autocast`` in the variant's 16-bit dtype: the
    step a PyTorch user writes (float16 with a ``GradScaler``)."""
    import torch

    sizes, _, batch, lr = SPEED[name]
    X, y = _data(name)
    torch.manual_seed(0)
    layers: list[Any] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    low = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(variant)
    kind = torch.device(device).type
    scaler = torch.amp.GradScaler(kind, enabled=low is torch.float16)
    rng = np.random.default_rng(0)

    def epoch() -> None:
        order = torch.from_numpy(rng.permutation(len(X))).to(device)
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(kind, dtype=low or torch.float32, enabled=low is not None):
                loss = torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if kind == "cuda":
            torch.cuda.synchronize()

    epoch()
    return epoch


def peak_mib(backend: str, build: Callable[[], Callable[[], None]]) -> float | None:
    """Peak device memory (MiB) in use while ``build()`` makes a trainer and runs one epoch, over
    what was in use before: CuPy's memory pool (every allocation watched) or torch's CUDA counters;
    None on a host backend."""
    name, _, device = backend.partition("@")
    if name == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        cupy.cuda.Device().synchronize()
        base = pool.used_bytes()
        peak = [base]

        def watched(size: int) -> Any:
            memory = pool.malloc(size)
            peak[0] = max(peak[0], pool.used_bytes())
            return memory

        cupy.cuda.set_allocator(watched)
        try:
            build()()
            cupy.cuda.Device().synchronize()
        finally:
            cupy.cuda.set_allocator(pool.malloc)
        return (peak[0] - base) / 2**20
    if name == "torch" and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        build()()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return None


def speed(
    backends: list[str], configs: list[str], repeats: int, variants: list[str], peers: list[str], memory: bool
) -> list[dict[str, Any]]:
    """Samples per second of xpnet's variants on each backend and of torch eager's on each peer
    device, the repeats interleaved; ratios to the same trainer in float32."""
    rows = []
    for name in configs:
        samples = SPEED[name][1]
        makers: dict[tuple[str, str, str], Callable[[], Callable[[], None]]] = {}
        for backend in backends:
            for variant in variants:
                makers[("xpnet", backend, variant)] = functools.partial(_xpnet_epoch, name, backend, variant)
        for device in peers:
            for variant in (v for v in variants if v != "tf32"):
                makers[("torch", f"torch@{device}", variant)] = functools.partial(
                    _torch_epoch, name, device, variant
                )
        trainers = {key: make() for key, make in makers.items()}
        times: dict[tuple[str, str, str], list[float]] = {key: [] for key in trainers}
        for _ in range(repeats):
            for key, run in trainers.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
        del trainers
        for (who, backend, variant), measured in times.items():
            base = statistics.median(times[(who, backend, "float32")])
            row = {
                "what": "speed",
                "config": name,
                "framework": who,
                "backend": backend,
                "policy": variant,
                "samples_per_s": samples / statistics.median(measured),
                "ratio_to_float32": base / statistics.median(measured),
                "peak_mib": peak_mib(backend, makers[(who, backend, variant)]) if memory else None,
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
        lines += ["", *_speed_table(timed), "", *_target_table(timed)]
    return "\n".join(lines)


def _speed_table(timed: list[dict[str, Any]]) -> list[str]:
    """Samples/s per variant (speed over the same trainer's float32), with peak MiB when measured."""
    lines = [
        "| config | trainer | " + " | ".join(VARIANTS) + " |",
        "| --- | --- |" + " --- |" * len(VARIANTS),
    ]
    for config, backend in dict.fromkeys((r["config"], r["backend"]) for r in timed):
        found = {r["policy"]: r for r in timed if (r["config"], r["backend"]) == (config, backend)}
        cells = []
        for variant in VARIANTS:
            row = found.get(variant)
            cell = "-" if row is None else f"{row['samples_per_s']:,.0f} ({row['ratio_to_float32']:.2f}x)"
            if row is not None and row["peak_mib"] is not None:
                cell += f", {row['peak_mib']:,.0f} MiB"
            cells.append(cell)
        torch_peer = next(iter(found.values()))["framework"] == "torch"
        trainer = f"{backend} eager (autocast)" if torch_peer else f"xpnet[{backend}]"
        lines.append(f"| {config} | {trainer} | " + " | ".join(cells) + " |")
    return lines


TARGETS = (("mixed_bfloat16", 4.0), ("tf32", 3.0))
"""Issue 20's speed targets on the gpu configuration: each variant over float32, same trainer."""


def _target_table(timed: list[dict[str, Any]]) -> list[str]:
    """Issue 20's targets from the rows measured: speed over float32, over torch eager under
    autocast in the same dtype, and peak memory over float32's."""
    lines = ["| config | xpnet backend | measure | value | target |", "| --- | --- | --- | --- | --- |"]
    ours = [r for r in timed if r["framework"] == "xpnet"]
    torch_rows = {(r["config"], r["policy"]): r for r in timed if r["framework"] == "torch"}
    for r in ours:
        config, variant = r["config"], r["policy"]
        goal = dict(TARGETS).get(variant)
        if goal is not None:
            lines.append(
                f"| {config} | {r['backend']} | {variant} / float32 | {r['ratio_to_float32']:.2f}x | "
                f">= {goal:.1f}x (gpu) |"
            )
        peer = torch_rows.get((config, variant))
        if peer is not None and variant != "float32":
            ratio = r["samples_per_s"] / peer["samples_per_s"]
            lines.append(
                f"| {config} | {r['backend']} | {variant}: xpnet / {peer['backend']} autocast | "
                f"{ratio:.2f}x | >= 1.0x (gpu, mixed_bfloat16) |"
            )
        same = (config, r["backend"], "float32")
        base = next((b for b in ours if (b["config"], b["backend"], b["policy"]) == same), None)
        if variant.startswith("mixed") and base and r["peak_mib"] and base["peak_mib"]:
            lines.append(
                f"| {config} | {r['backend']} | {variant} peak memory / float32 | "
                f"{r['peak_mib'] / base['peak_mib']:.2f}x | <= 0.6x (gpu, mixed_bfloat16) |"
            )
    return lines


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
    parser.add_argument("--policies", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--peers", nargs="*", default=[], help="torch devices (cuda, cpu) for torch eager beside xpnet"
    )
    parser.add_argument("--memory", action="store_true", help="also peak device memory (cupy, torch cuda)")
    args = parser.parse_args()
    backends = args.backends or ["numpy", "torch", "jax"]
    before = os.getloadavg()
    if args.what == "accuracy":
        rows = accuracy(backends, args.seeds, args.epochs)
    else:
        variants = ["float32", *(p for p in args.policies if p != "float32")]
        rows = speed(backends, args.configs, args.repeats, variants, args.peers, args.memory)
    print(tables(rows))
    print(f"load average before {before[0]:.1f}, after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

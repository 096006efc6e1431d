"""xpnet[torch] with its engine's one update against the generic step, in one process.

Three trainers on speed.py's data and weights: ``flat`` (the torch engine:
flat buffers, one update per step), ``generic`` (the same network on the eager
engine, in place: what torch ran before) and ``torch-cpu`` (speed.py's PyTorch
peer). Repeats are interleaved, the order rotating each round; medians of µs
per step, and the speed ratios.

    OMP_NUM_THREADS=1 python benchmarks/torch_engine_ab.py --configs tiny mnist adam --repeats 9
    OMP_NUM_THREADS=1 python benchmarks/torch_engine_ab.py --as-user
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable

import speed
import torch

import xpnet as xn
from xpnet.engine import EagerEngine


def _trainer(cfg: speed.Config, X, y, generic: bool, as_user: bool) -> Callable[[], None]:
    """speed.run_xpnet's trainer; ``generic``: its network gets the eager engine."""
    plain = xn.Network._engine

    def eager(net: xn.Network) -> EagerEngine:
        key = (net.backend, net.compile)
        if key not in net._engines:
            net._engines[key] = EagerEngine(net.backend)
        return net._engines[key]

    if generic:
        xn.Network._engine = eager  # type: ignore[method-assign]
    try:
        return speed.run_xpnet(cfg, X, y, "torch", as_user)
    finally:
        xn.Network._engine = plain  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs", nargs="*", default=["tiny", "mnist", "adam"], choices=list(speed.CONFIGS)
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--as-user", action="store_true", help="as speed.py --as-user")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"load": os.getloadavg()}))
    for name in args.configs:
        cfg = speed.CONFIGS[name]
        if args.as_user and name == "tiny":
            cfg = dataclasses.replace(cfg, epochs=speed.USER_TINY_EPOCHS[1])
        X, y = speed.make_data(cfg)
        runs = {
            "flat": _trainer(cfg, X, y, False, args.as_user),
            "generic": _trainer(cfg, X, y, True, args.as_user),
            "torch-cpu": speed.run_torch(cfg, X, y, "cpu"),
        }
        times: dict[str, list[float]] = {label: [] for label in runs}
        labels = list(runs)
        for i in range(args.repeats):
            for label in labels[i % 3 :] + labels[: i % 3]:  # no trainer always runs first
                start = time.perf_counter()
                runs[label]()
                times[label].append(time.perf_counter() - start)
        steps = cfg.epochs if name == "tiny" else -(-cfg.samples // cfg.batch)
        us = {label: statistics.median(values) / steps * 1e6 for label, values in times.items()}
        ratios = {
            "flat / generic": us["generic"] / us["flat"],
            "flat / torch-cpu": us["torch-cpu"] / us["flat"],
            "generic / torch-cpu": us["torch-cpu"] / us["generic"],
        }
        row = {"config": name, **{f"{k} µs": round(v, 1) for k, v in us.items()}}
        row.update({k: round(v, 3) for k, v in ratios.items()})
        print(json.dumps(row, ensure_ascii=False), flush=True)
    print(json.dumps({"load": os.getloadavg()}))


if __name__ == "__main__":
    main()

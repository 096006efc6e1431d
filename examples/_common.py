"""Command-line options shared by the examples: where to run and how long."""

from __future__ import annotations

import argparse

import xpnet as xn


def parse(description: str, epochs: int, seed: int = 0) -> argparse.Namespace:
    """Parse ``--backend``, ``--device``, ``--seed`` and ``--epochs`` and say where we run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--backend", default=None, help="numpy, cupy, torch, jax, array_api_strict (default: auto)"
    )
    parser.add_argument("--device", default=None, help="backend device, e.g. cuda:0 or device1")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--plot", default=None, help="save the example's figure to this PNG, if it draws one")
    args = parser.parse_args()
    args.backend = xn.get_backend(args.backend, args.device)
    print(f"backend: {args.backend.name} ({args.backend.device})")
    return args

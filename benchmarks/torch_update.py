"""One optimizer update over a network's parameters on torch, four ways (µs per update, best of 5).

The choice the torch engine made (xpnet/engine/torch_updates.py), measured:

  per parameter   xpnet's rule once per parameter (the generic step)
  flat rule       the gradients copied into one flat buffer, then the rule once on flat buffers
  copy            that copy alone
  foreach         torch's ``_foreach_`` ops over the lists of tensors (torch.optim's foreach code)
  fused           torch's fused kernel over the lists (torch.optim's ``fused=True``): the engine's

    OMP_NUM_THREADS=1 python benchmarks/torch_update.py            # mnist's and tiny's parameters
    python benchmarks/torch_update.py --threads 2 --dtype float64
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import array_api_compat.torch as xp
import numpy as np
import torch

import xpnet as xn

SHAPES = {
    "mnist": [(784, 256), (256,), (256, 128), (128,), (128, 10), (10,)],
    "tiny": [(2, 3), (3,), (3, 1), (1,)],
}
OPTIMIZERS: dict[str, Callable[[], xn.Optimizer]] = {
    "sgd": lambda: xn.SGD(0.1),
    "nesterov": lambda: xn.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adam": lambda: xn.Adam(1e-3),
    "adamw": lambda: xn.AdamW(1e-3),
    "rmsprop": lambda: xn.RMSprop(1e-3),
}
STEP, LR = 5, 1e-3


def best_us(run: Callable[[], object], calls: int) -> float:
    run()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return min(times)


def ways(
    opt: xn.Optimizer, shapes: list[tuple[int, ...]], dtype: torch.dtype
) -> dict[str, Callable[[], None]]:
    rng = np.random.default_rng(0)
    params = [torch.asarray(rng.normal(size=s), dtype=dtype) for s in shapes]
    grads = [torch.asarray(rng.normal(size=s) * 1e-3, dtype=dtype) for s in shapes]
    keys = opt.state_keys()
    options = {"overwrite_grad": False} if isinstance(opt, xn.SGD) else {}
    states = [opt.init_state(p, xp) for p in params]

    def per_parameter() -> None:
        for p, g, s in zip(params, grads, states):
            opt.update(p, g, s, xp, inplace=True, step=STEP, learning_rate=LR, **options)

    sizes = [p.numel() for p in params]
    offsets = np.cumsum([0, *sizes]).tolist()
    flat = torch.cat([p.reshape(-1) for p in params])
    flat_grad = torch.zeros_like(flat)
    flat_state = {k: torch.zeros_like(flat) for k in keys}

    def views(buffer: torch.Tensor) -> list[torch.Tensor]:
        return [buffer[offsets[i] : offsets[i + 1]].view(s) for i, s in enumerate(shapes)]

    grad_views, param_views = views(flat_grad), views(flat)
    state_views = {k: views(v) for k, v in flat_state.items()}

    def copy() -> None:
        torch._foreach_copy_(grad_views, grads)

    def flat_rule() -> None:
        copy()
        spoil = {"overwrite_grad": True} if isinstance(opt, xn.SGD) else {}
        opt.update(flat, flat_grad, flat_state, xp, inplace=True, step=STEP, learning_rate=LR, **spoil)

    found = {"per parameter": per_parameter, "flat rule": flat_rule, "copy": copy}
    foreach = _foreach(opt, param_views, grads, state_views)
    if foreach is not None:
        found["foreach"] = foreach
    fused = _fused(opt, param_views, grads, state_views)
    if fused is not None:
        found["fused"] = fused
    return found


def _foreach(opt: xn.Optimizer, params: list, grads: list, state: dict) -> Callable[[], None] | None:
    """torch.optim's multi-tensor code for these optimizers, as it is written there."""
    if isinstance(opt, xn.Adam):

        def adam() -> None:
            m, v = state["exp_avg"], state["exp_avg_sq"]
            if opt.decoupled:
                torch._foreach_mul_(params, 1 - LR * opt.weight_decay)
            torch._foreach_lerp_(m, grads, 1 - opt.beta1)
            torch._foreach_mul_(v, opt.beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - opt.beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, (1 - opt.beta2**STEP) ** 0.5)
            torch._foreach_add_(denom, opt.eps)
            torch._foreach_addcdiv_(params, m, denom, -LR / (1 - opt.beta1**STEP))

        return adam
    if isinstance(opt, xn.RMSprop):

        def rmsprop() -> None:
            square = state["square_avg"]
            torch._foreach_mul_(square, opt.alpha)
            torch._foreach_addcmul_(square, grads, grads, 1 - opt.alpha)
            avg = torch._foreach_sqrt(square)
            torch._foreach_add_(avg, opt.eps)
            torch._foreach_addcdiv_(params, grads, avg, -LR)

        return rmsprop
    if isinstance(opt, xn.SGD) and opt.momentum:

        def momentum() -> None:
            d = torch._foreach_add(grads, params, alpha=opt.weight_decay)
            buffers = state["momentum"]
            torch._foreach_mul_(buffers, opt.momentum)
            torch._foreach_add_(buffers, d)
            torch._foreach_add_(d, buffers, alpha=opt.momentum)
            torch._foreach_add_(params, d, alpha=-LR)

        return momentum
    return None


def _fused(opt: xn.Optimizer, params: list, grads: list, state: dict) -> Callable[[], None] | None:
    """The torch engine's update (xpnet.engine.torch_updates.FusedKernel) on these lists."""
    from xpnet.engine.flat import Packing
    from xpnet.engine.torch_updates import FusedKernel

    if isinstance(opt, xn.RMSprop):
        return None
    packing = Packing([{"w": p} for p in params], {}, opt.state_keys())
    kernel = FusedKernel(opt)
    return lambda: kernel(packing, grads, STEP, LR)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    names = ["per parameter", "flat rule", "copy", "foreach", "fused"]
    print(f"{args.dtype}, {args.threads} thread(s); µs per update, best of 5")
    print()
    print("| parameters | optimizer | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for shape_name, shapes in SHAPES.items():
        calls = 300 if shape_name == "mnist" else 5000
        count = sum(int(np.prod(s)) for s in shapes)
        for name, make in OPTIMIZERS.items():
            times = {way: best_us(run, calls) for way, run in ways(make(), shapes, dtype).items()}
            cells = [f"{times[n]:.1f}" if n in times else "" for n in names]
            print(f"| {shape_name} ({count:,}) | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

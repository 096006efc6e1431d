"""One update for every parameter: the optimizers of a fused plan over flat buffers.

A fused runner keeps all parameters, gradients and optimizer state in one
buffer each (:class:`~xpnet.engine.flat.Packing`), so one update reaches them
all. :func:`reference` runs the optimizer's own rule
(:meth:`~xpnet.optim.optimizers.Optimizer.update`) on the flat buffers, in
place; :func:`cuda_source` writes the same rule as the body of one CUDA
elementwise kernel, with the learning rate and the step number read from
device memory (so a recorded epoch replays under any schedule). Both follow
torch.optim: L2 weight decay added to the gradient (AdamW: decoupled),
momentum buffers that start at the first gradient, Adam's bias corrections.
"""

from __future__ import annotations

from typing import Any

from ..optim.optimizers import OPTIMIZERS, Optimizer
from .plan import UpdateSpec


def state_keys(spec: UpdateSpec | None) -> tuple[str, ...]:
    """The flat state buffers ``spec``'s optimizer keeps."""
    return () if spec is None else optimizer(spec).state_keys()


def optimizer(spec: UpdateSpec) -> Optimizer:
    """The optimizer ``spec`` names (its learning rate comes with every step)."""
    return OPTIMIZERS[spec.name](**dict(spec.config))


def reference(
    spec: UpdateSpec, param: Any, grad: Any, state: dict[str, Any], xp: Any, lr: Any, step: Any
) -> None:
    """The optimizer's own update on flat buffers, written into ``param`` and ``state``."""
    optimizer(spec).update(param, grad, state, xp, inplace=True, step=step, learning_rate=lr)


def cuda_source(spec: UpdateSpec) -> tuple[str, str, str]:
    """``(inputs, outputs, body)`` of a CuPy ``ElementwiseKernel`` for ``spec``: inputs ``g`` (the
    gradient) and ``raw T lr, raw T step`` (one element each); outputs ``p`` and the state buffers."""
    c = {key: float(value) for key, value in spec.config if not isinstance(value, bool)}
    flags = {key: value for key, value in spec.config if isinstance(value, bool)}
    keys = state_keys(spec)
    outputs = ", ".join(["T p", *(f"T {key}" for key in keys)])
    inputs = "T g, raw T lr, raw T step"
    if spec.name == "sgd":
        return inputs, outputs, _sgd(c, flags)
    if spec.name in ("adam", "adamw"):
        return inputs, outputs, _adam(c, decoupled=spec.name == "adamw")
    if spec.name == "rmsprop":
        return inputs, outputs, _rmsprop(c, flags)
    raise ValueError(f"no fused update for {spec.name!r}")


def _decayed(c: dict[str, float]) -> str:
    decay = c.get("weight_decay", 0.0)
    return f"T d = g + (T){decay!r} * p;" if decay else "T d = g;"


def _sgd(c: dict[str, float], flags: dict[str, Any]) -> str:
    lines = [_decayed(c)]
    momentum, dampening = c["momentum"], c["dampening"]
    if momentum:
        damp = f"(step[0] == (T)1 ? (T)1 : (T){1.0 - dampening!r})" if dampening else "(T)1"
        lines.append(f"momentum = momentum * (T){momentum!r} + {damp} * d;")
        lines.append(f"d = d + (T){momentum!r} * momentum;" if flags.get("nesterov") else "d = momentum;")
    lines.append("p = p - lr[0] * d;")
    return "\n".join(lines)


def _adam(c: dict[str, float], *, decoupled: bool) -> str:
    b1, b2, eps, decay = c["beta1"], c["beta2"], c["eps"], c["weight_decay"]
    lines = []
    if decoupled:
        lines += [f"p = p * ((T)1 - lr[0] * (T){decay!r});" if decay else "", "T d = g;"]
    else:
        lines.append(_decayed(c))
    lines += [
        f"exp_avg = exp_avg * (T){b1!r} + (T){1.0 - b1!r} * d;",
        f"exp_avg_sq = exp_avg_sq * (T){b2!r} + (T){1.0 - b2!r} * (d * d);",
        f"T step_size = lr[0] / ((T)1 - pow((T){b1!r}, step[0]));",
        f"T denom = sqrt(exp_avg_sq) * ((T)1 / sqrt((T)1 - pow((T){b2!r}, step[0]))) + (T){eps!r};",
        "p = p - step_size * (exp_avg / denom);",
    ]
    return "\n".join(line for line in lines if line)


def _rmsprop(c: dict[str, float], flags: dict[str, Any]) -> str:
    alpha, eps, momentum = c["alpha"], c["eps"], c["momentum"]
    keep = 1.0 - alpha
    lines = [_decayed(c), f"square_avg = square_avg * (T){alpha!r} + (T){keep!r} * (d * d);"]
    if flags.get("centered"):
        lines.append(f"grad_avg = grad_avg * (T){alpha!r} + (T){keep!r} * d;")
        lines.append(f"T avg = sqrt(square_avg - grad_avg * grad_avg) + (T){eps!r};")
    else:
        lines.append(f"T avg = sqrt(square_avg) + (T){eps!r};")
    if momentum:
        lines.append(f"momentum_buffer = momentum_buffer * (T){momentum!r} + d / avg;")
        lines.append("p = p - lr[0] * momentum_buffer;")
    else:
        lines.append("p = p - lr[0] * (d / avg);")
    return "\n".join(lines)

"""The text of ``Network.summary``: layers, output shapes, parameter counts, backend."""

from __future__ import annotations

import math
from typing import Any


def summary_text(net: Any) -> str:
    """A table of ``net``'s layers with output shapes and parameter counts, then totals."""
    rows = [("Layer", "Output shape", "Params")]
    n = net.layers[0].in_features
    for layer in net.layers:
        count = sum(math.prod(p.shape) for p in layer.params.values())
        if n is not None:
            n = layer.output_features(n)
        rows.append((repr(layer), f"(None, {n if n is not None else '?'})", f"{count:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    rule = "-" * (sum(widths) + 4)
    dtype = net.dtype
    policy = getattr(net, "policy", None)
    if policy is not None and policy.mixed:
        dtype = f"{policy.name} (variables {policy.variable_dtype}, compute {policy.compute_dtype})"
    if getattr(net, "matmul_precision", "highest") != "highest":
        dtype += f", matmul {net.matmul_precision}"
    lines = [f"Network on {net.backend.name} ({net.backend.device}), dtype {dtype}", rule]
    for i, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}")
        if i == 0:
            lines.append(rule)
    lines += [
        rule,
        f"Total params: {net.parameter_count():,}",
        f"Loss: {net.loss.name}   Optimizer: {net.optimizer!r}",
    ]
    return "\n".join(lines)

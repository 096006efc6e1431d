"""The second half of a training step: gradients applied by the optimizer's rule.

:func:`apply_gradients` is the plain update; :func:`update` puts the
model's gradient transform before it and, with a loss scaler, skips it
when a gradient is not finite (:mod:`xpnet.optim.loss_scaling`), as arrays
(no device read), so compiled code runs it as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..optim import loss_scaling
from .model import Array, Model, OptState, Params


def loss_scale(model: Model, opt_state: OptState) -> Array | None:
    """The loss scale of a model with a loss scaler (its state in ``opt_state``), else None."""
    if model.loss_scaler is None:
        return None
    return opt_state[loss_scaling.STATE_KEY]["scale"]


def update(
    model: Model,
    params: Params,
    opt_state: OptState,
    grads: Params,
    step: Any,
    learning_rate: Any,
    *,
    xp: Any,
    inplace: bool = False,
) -> tuple[Params, OptState]:
    """:func:`gradients`' gradients applied: the model's transform, then the update, which a
    loss scaler skips (parameters and optimizer state kept) when a gradient is not finite."""
    scaler = model.loss_scaler
    if scaler is None:
        grads = grads if model.transform is None else model.transform(grads, xp)
        return apply_gradients(model, params, opt_state, grads, step, learning_rate, xp=xp, inplace=inplace)
    full = initial_opt_state(model, params, opt_state, xp)
    state = full[loss_scaling.STATE_KEY]
    finite = loss_scaling.all_finite(grads, xp)  # before clipping, which could hide an inf
    grads = grads if model.transform is None else model.transform(grads, xp)
    number = step - state["skipped"]  # a skipped step is no step for the optimizer
    new_params, new_opt = apply_gradients(model, params, full, grads, number, learning_rate, xp=xp)
    kept = [loss_scaling.select(finite, new, old, xp) for new, old in zip(new_params, params)]
    for key, entry in new_opt.items():
        if key != loss_scaling.STATE_KEY:
            new_opt[key] = loss_scaling.select(finite, entry, full[key], xp)
    new_opt[loss_scaling.STATE_KEY] = scaler.update(state, finite, xp)
    return kept, new_opt


def apply_gradients(
    model: Model,
    params: Params,
    opt_state: OptState,
    grads: Params,
    step: Any,
    learning_rate: Any,
    *,
    xp: Any,
    inplace: bool = False,
) -> tuple[Params, OptState]:
    """The second half of :func:`train_step`: the optimizer's update from ``grads`` (as
    :func:`gradients` gives them, after any transform), returning new params and state."""
    new_params = list(params)
    new_opt = dict(opt_state)
    update = updater(model, params, new_params, new_opt, step, learning_rate, xp, inplace)
    for i, layer_grads in enumerate(grads):
        if layer_grads:
            update(i, layer_grads)
    return new_params, new_opt


def updater(
    model: Model,
    params: Params,
    new_params: Params,
    new_opt: OptState,
    step: Any,
    learning_rate: Any,
    xp: Any,
    inplace: bool,
) -> Callable[[int, dict[str, Array]], None]:
    """``update(i, grads)``: layer ``i``'s new parameters and optimizer state into ``new_params``
    and ``new_opt``."""
    optimizer = model.optimizer
    options = {"inplace": inplace, "step": step, "learning_rate": learning_rate}
    if model.spoils_grads:
        options["overwrite_grad"] = True

    def update(i: int, grads: dict[str, Array]) -> None:
        fresh = {}
        for name, value in params[i].items():
            key = f"{i}.{name}"
            state = new_opt.get(key, {})
            fresh[name], new_opt[key] = optimizer.update(value, grads[name], state, xp, **options)
        new_params[i] = fresh

    return update


def initial_opt_state(model: Model, params: Params, opt_state: OptState, xp: Any) -> OptState:
    """``opt_state`` with every parameter's entry present (zeros where missing), for fixed-shape
    loops, and a loss scaler's first state."""
    full = dict(opt_state)
    for i, layer_params in enumerate(params):
        for name, value in layer_params.items():
            key = f"{i}.{name}"
            if not full.get(key) and model.optimizer.state_keys():
                full[key] = model.optimizer.init_state(value, xp)
            full.setdefault(key, {})
            if model.loss_scaler is not None and loss_scaling.STATE_KEY not in full:
                full[loss_scaling.STATE_KEY] = model.loss_scaler.init_state(value, xp)
    return full

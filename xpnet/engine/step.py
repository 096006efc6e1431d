"""The training step: forward, loss, backward and optimizer update as one pure function.

:func:`train_step` takes every array explicitly (parameters, optimizer state,
layer state, the batch, sample weights, dropout masks, the step number and
the learning rate) and returns the new arrays with the batch's loss and
correct count. Nothing is read from or written to layer objects, so the same
function runs eagerly (NumPy, torch, CuPy: in-place updates where ``inplace``)
and traced under ``jax.jit``; each backend's engine (:mod:`xpnet.engine`)
decides which.

A :class:`Model` is the static part, and the backend-free description every
engine receives: the layers' math, the loss, the optimizer's rule, an
optional gradient transform, and the arithmetic: a mixed dtype policy's
compute dtype (:mod:`xpnet.engine.precision`), float16's loss scaler
(:mod:`xpnet.optim.loss_scaling`) and the float32 matmul precision, which
the engine applies around the step (:meth:`~xpnet.Backend.matmul_scope`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import float_dtype
from ..nn.activations import get_activation
from ..nn.layers import Layer
from ..nn.metrics import correct_count
from . import precision
from .model import Array, GradientTransform, LayerState, Model, OptState, Params, detached
from .update import apply_gradients, initial_opt_state, loss_scale, update, updater

__all__ = [
    "GradientTransform",
    "Model",
    "StepResult",
    "apply_gradients",
    "backward",
    "detached",
    "draw_noise",
    "forward",
    "gradients",
    "initial_opt_state",
    "loss_scale",
    "loss_terms",
    "train_step",
    "update",
]


class StepResult(NamedTuple):
    """What :func:`train_step` returns (a pytree for JAX)."""

    params: Params
    opt_state: OptState
    layer_state: LayerState
    loss: Array
    correct: Array | None


def forward(
    layers: Sequence[Layer],
    params: Params,
    states: LayerState,
    x: Array,
    *,
    training: bool,
    xp: Any,
    noise: Sequence[Any] | None = None,
    keep_caches: bool = True,
    compute_dtype: str | None = None,
) -> tuple[Array, list[Any], LayerState]:
    """Output, caches and new layer states; ``keep_caches=False`` keeps only the last cache.

    With a ``compute_dtype`` the layers compute in it and the output comes
    back in ``x``'s dtype (:func:`~xpnet.engine.precision.output`).
    """
    out, caches, new_states, _ = _apply(
        layers, params, states, x, training, xp, noise, keep_caches, compute_dtype
    )
    if compute_dtype is not None:
        out = precision.output(layers[-1], out, caches[-1], x.dtype, xp)[0]
    return out, caches, new_states


def _apply(
    layers: Sequence[Layer],
    params: Params,
    states: LayerState,
    x: Array,
    training: bool,
    xp: Any,
    noise: Sequence[Any] | None,
    keep_caches: bool,
    compute_dtype: str | None,
) -> tuple[Array, list[Any], LayerState, Params]:
    """:func:`forward` in the compute dtype, with the parameters each layer computed with."""
    caches: list[Any] = []
    new_states: LayerState = []
    used = params
    if compute_dtype is not None:
        low = float_dtype(xp, compute_dtype)
        x = precision.cast(x, low, xp)
        used = [
            precision.cast_params(p, low, xp) if layer.autocast else p for layer, p in zip(layers, params)
        ]
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        x, cache, state = layer.apply(
            used[i], states[i], x, training=training, noise=None if noise is None else noise[i], xp=xp
        )
        caches.append(cache if keep_caches or i == last else None)
        new_states.append(state)
    return x, caches, new_states, used


def loss_terms(
    model: Model, out: Array, last_cache: Any, y: Array, weight: Array | None, xp: Any
) -> tuple[Array, Array, Array, bool]:
    """Loss, its gradient, the probabilities, and whether the gradient is w.r.t. the logits."""
    loss = model.loss
    extra = {} if weight is None else {"sample_weight": weight}
    if loss.output_activation is None:
        value, grad = loss.value_and_gradient(out, y, xp=xp, **extra)
        return value, grad, out, False
    fused = getattr(loss, "fused")  # noqa: B009  (losses with an output activation have it)
    if model.fused:  # a mixed policy's logits are 16-bit; its output is float32
        logits = precision.cast(model.layers[-1].logits(last_cache), out.dtype, xp)
        value, grad = fused(logits, out, y, xp=xp, **extra)
        return value, grad, out, True
    # Any other final activation: the outputs are logits, as torch takes them.
    prob = get_activation(loss.output_activation).forward(out, xp)
    value, grad = fused(out, prob, y, xp=xp, **extra)
    return value, grad, prob, False


def backward(
    model: Model,
    params: Params,
    caches: Sequence[Any],
    grad: Array,
    from_logits: bool,
    xp: Any,
    visit: Callable[[int, dict[str, Array]], None],
) -> None:
    """Backpropagate ``grad``; ``visit(i, grads)`` runs as soon as layer ``i``'s gradients exist.

    Every ``dy`` a layer receives was made during this step, so layers may
    overwrite it; layer ``i``'s input gradient is computed before ``visit``
    may update its parameters in place.
    """
    layers, first = model.layers, model.first
    last = len(layers) - 1
    for i in range(last, first - 1, -1):
        grads, grad = layers[i].vjp(
            params[i],
            caches[i],
            grad,
            xp=xp,
            need_input_grad=i > first,
            from_logits=from_logits and i == last,
            overwrite_dy=True,
        )
        visit(i, grads)


def train_step(
    model: Model,
    params: Params,
    opt_state: OptState,
    layer_state: LayerState,
    x: Array,
    y: Array,
    weight: Array | None,
    noise: Sequence[Any] | None,
    step: Any,
    learning_rate: Any,
    *,
    xp: Any,
    inplace: bool = False,
) -> StepResult:
    """One optimizer step on a batch; pure unless ``inplace``.

    Parameters
    ----------
    model : Model
    params : list of dict
        Each layer's parameters.
    opt_state : dict
        Optimizer state keyed ``"<layer>.<param>"`` (missing keys start empty).
    layer_state : list of dict
        Each layer's state (running statistics).
    x, y : Array
        The batch.
    weight : Array or None
        Per-sample weights ``(n,)``: loss ``sum(w_i l_i) / sum(w_i)``; rows of
        weight 0 change nothing, and a batch of them only gives 0 gradients to
        the optimizer. None: the plain mean.
    noise : list or None
        Each layer's device copy of :meth:`~xpnet.nn.layers.Layer.draw`.
    step : int or 0-d array
        The 1-based number of this optimizer step.
    learning_rate : float or 0-d array
    xp : namespace
    inplace : bool
        Write new parameters and optimizer state into the given arrays.

    Returns
    -------
    StepResult
        New params, optimizer state and layer state; the batch loss (0-d)
        and, for classification losses, its correct count (0-d), else None.
    """
    if model.transform is not None or model.loss_scaler is not None:
        opt_state = initial_opt_state(model, params, opt_state, xp) if model.loss_scaler else opt_state
        scale = loss_scale(model, opt_state)
        grads, new_state, value, correct = gradients(
            model, params, layer_state, x, y, weight, noise, xp=xp, loss_scale=scale
        )
        new_params, new_opt = update(
            model, params, opt_state, grads, step, learning_rate, xp=xp, inplace=inplace
        )
        return StepResult(new_params, new_opt, new_state, value, correct)
    caches, new_layer_state, value, grad, from_logits, correct, used = _forward_loss(
        model, params, layer_state, x, y, weight, noise, xp
    )
    new_params = list(params)
    new_opt = dict(opt_state)
    apply = updater(model, params, new_params, new_opt, step, learning_rate, xp, inplace)
    visit = apply
    if model.compute_dtype is not None:  # each gradient in its float32 master's dtype

        def visit(i: int, grads: dict[str, Array]) -> None:
            apply(i, precision.like(grads, params[i], xp))

    backward(model, used, caches, grad, from_logits, xp, visit)
    return StepResult(new_params, new_opt, new_layer_state, value, correct)


def gradients(
    model: Model,
    params: Params,
    layer_state: LayerState,
    x: Array,
    y: Array,
    weight: Array | None,
    noise: Sequence[Any] | None,
    *,
    xp: Any,
    loss_scale: Array | None = None,
) -> tuple[Params, LayerState, Array, Array | None]:
    """The first half of :func:`train_step`: every layer's gradients (``{}`` for layers without
    parameters, each in its parameter's dtype), the new layer state, the batch loss and the
    correct count (or None).

    With ``loss_scale`` (:func:`loss_scale`) the loss gradient is multiplied by
    it before the backward pass and the parameter gradients divided by it after.
    """
    caches, new_layer_state, value, grad, from_logits, correct, used = _forward_loss(
        model, params, layer_state, x, y, weight, noise, xp, loss_scale
    )
    collected: Params = [{} for _ in model.layers]
    inverse = None if loss_scale is None else 1.0 / loss_scale

    def collect(i: int, grads: dict[str, Array]) -> None:
        grads = precision.like(grads, params[i], xp) if model.compute_dtype is not None else grads
        collected[i] = grads if inverse is None else {k: g * inverse for k, g in grads.items()}

    backward(model, used, caches, grad, from_logits, xp, collect)
    return collected, new_layer_state, value, correct


def _forward_loss(
    model: Model,
    params: Params,
    layer_state: LayerState,
    x: Array,
    y: Array,
    weight: Array | None,
    noise: Sequence[Any] | None,
    xp: Any,
    scale: Array | None = None,
) -> tuple[list[Any], LayerState, Array, Array, bool, Array | None, Params]:
    """The training forward pass and loss: caches, new layer state, loss, its gradient (times
    ``scale``, in the output's dtype), whether that is w.r.t. the logits, the correct count (None
    for regression), and the parameters the layers computed with."""
    out, caches, new_layer_state, used = _apply(
        model.layers, params, layer_state, x, True, xp, noise, True, model.compute_dtype
    )
    if model.compute_dtype is None:
        value, grad, prob, from_logits = loss_terms(model, out, caches[-1], y, weight, xp)
    else:  # the loss in the variables' dtype, its gradient back in the compute dtype
        last = model.layers[-1]
        wide, logits = precision.output(last, out, caches[-1], x.dtype, xp)
        value, grad, prob, from_logits = loss_terms(model, wide, caches[-1], y, weight, xp)
        if logits is not None and not from_logits:
            grad, from_logits = precision.through_output(last, logits, wide, grad, xp), True
    if scale is not None:
        grad = grad * scale
    if model.compute_dtype is not None:
        grad = precision.cast(grad, out.dtype, xp)
    correct = None
    if model.loss.classification:
        correct = correct_count(prob, y, xp, binary=model.binary, sample_weight=weight)
    return caches, new_layer_state, value, grad, from_logits, correct, used


def draw_noise(
    layers: Sequence[Layer], rng: np.random.Generator, rows: int, dtype: Any
) -> list[np.ndarray | None]:
    """Each layer's host randomness for a training batch of ``rows`` rows, in layer order."""
    return [layer.draw(rng, (rows, int(layer.in_features or 0)), dtype) for layer in layers]

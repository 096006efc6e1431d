"""The training step: forward, loss, backward and optimizer update as one pure function.

:func:`train_step` takes every array explicitly (parameters, optimizer state,
layer state, the batch, sample weights, dropout masks, the step number and
the learning rate) and returns the new arrays with the batch's loss and
correct count. Nothing is read from or written to layer objects, so the same
function runs eagerly (NumPy, torch, CuPy: in-place updates where ``inplace``)
and traced under ``jax.jit``; each backend's engine (:mod:`xpnet.engine`)
decides which.

A :class:`Model` is the static part, and the backend-free description every
engine receives: the layers' math, the loss, the optimizer's rule and an
optional gradient transform.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..nn.activations import get_activation
from ..nn.layers import Layer
from ..nn.losses import CategoricalCrossentropy, Loss
from ..nn.metrics import correct_count
from ..optim.optimizers import Optimizer

Array = Any
Params = list[dict[str, Array]]
OptState = dict[str, dict[str, Array]]
LayerState = list[dict[str, Array]]
GradientTransform = Callable[[Params, Any], Params]
"""``transform(grads, xp) -> grads`` over every layer's gradients (clipping, an allreduce)."""


@dataclass(frozen=True, eq=False)
class Model:
    """The static side of a step: which math runs, not on which arrays.

    Parameters
    ----------
    layers : sequence of Layer
        Only their pure methods (``apply``, ``vjp``, ``logits``) are used.
    loss : Loss
    optimizer : Optimizer
        Its :meth:`~xpnet.optim.optimizers.Optimizer.update` rule and fixed
        hyper-parameters (the learning rate and step number come as arguments).
    transform : callable, optional
        Applied to all gradients between backward and update; the whole
        backward pass then runs before the first update. Without one each
        layer is updated as soon as its gradients exist (the same numbers,
        while the arrays are still in cache).
    trainable : tuple of bool, optional
        Which layers have parameters (default: non-empty ``layer.params``).
    """

    layers: tuple[Layer, ...]
    loss: Loss
    optimizer: Optimizer
    transform: GradientTransform | None = None
    trainable: tuple[bool, ...] = field(default=())
    fused: bool = field(init=False)
    """Whether the last layer's activation fuses with the loss (sigmoid+BCE, softmax+CE)."""
    first: int = field(init=False)
    """Index of the first layer with parameters: backward stops there."""
    spoils_grads: bool = field(init=False)
    """Whether the optimizer may overwrite each gradient (it takes ``overwrite_grad`` and no
    transform sees the gradients): they are made fresh by each step and read by nothing else."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.trainable:
            object.__setattr__(self, "trainable", tuple(bool(layer.params) for layer in self.layers))
        wanted = self.loss.output_activation
        # Read once per step: computed here, not per call.
        object.__setattr__(self, "fused", wanted is not None and self.layers[-1].output_activation == wanted)
        first = next((i for i, t in enumerate(self.trainable) if t), len(self.layers))
        object.__setattr__(self, "first", first)
        takes = _takes_overwrite(type(self.optimizer).update)
        object.__setattr__(self, "spoils_grads", takes and self.transform is None)

    @property
    def binary(self) -> bool:
        """Whether accuracy thresholds each output (every loss but categorical cross-entropy)."""
        return not isinstance(self.loss, CategoricalCrossentropy)


@functools.lru_cache(maxsize=64)
def _takes_overwrite(update: Callable[..., Any]) -> bool:
    """Whether an optimizer's ``update`` takes ``overwrite_grad`` (read once per class)."""
    return "overwrite_grad" in inspect.signature(update).parameters


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
) -> tuple[Array, list[Any], LayerState]:
    """Output, caches and new layer states; ``keep_caches=False`` keeps only the last cache."""
    caches: list[Any] = []
    new_states: LayerState = []
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        x, cache, state = layer.apply(
            params[i], states[i], x, training=training, noise=None if noise is None else noise[i], xp=xp
        )
        caches.append(cache if keep_caches or i == last else None)
        new_states.append(state)
    return x, caches, new_states


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
    if model.fused:
        value, grad = fused(model.layers[-1].logits(last_cache), out, y, xp=xp, **extra)
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
    if model.transform is not None:
        grads, new_state, value, correct = gradients(model, params, layer_state, x, y, weight, noise, xp=xp)
        grads = model.transform(grads, xp)
        new_params, new_opt = apply_gradients(
            model, params, opt_state, grads, step, learning_rate, xp=xp, inplace=inplace
        )
        return StepResult(new_params, new_opt, new_state, value, correct)
    caches, new_layer_state, value, grad, from_logits, correct = _forward_loss(
        model, params, layer_state, x, y, weight, noise, xp
    )
    new_params = list(params)
    new_opt = dict(opt_state)
    update = _updater(model, params, new_params, new_opt, step, learning_rate, xp, inplace)
    backward(model, params, caches, grad, from_logits, xp, update)
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
) -> tuple[Params, LayerState, Array, Array | None]:
    """The first half of :func:`train_step`: every layer's gradients (``{}`` for layers without
    parameters), the new layer state, the batch loss and the correct count (or None)."""
    caches, new_layer_state, value, grad, from_logits, correct = _forward_loss(
        model, params, layer_state, x, y, weight, noise, xp
    )
    collected: Params = [{} for _ in model.layers]
    backward(model, params, caches, grad, from_logits, xp, collected.__setitem__)
    return collected, new_layer_state, value, correct


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
    update = _updater(model, params, new_params, new_opt, step, learning_rate, xp, inplace)
    for i, layer_grads in enumerate(grads):
        if layer_grads:
            update(i, layer_grads)
    return new_params, new_opt


def _forward_loss(
    model: Model,
    params: Params,
    layer_state: LayerState,
    x: Array,
    y: Array,
    weight: Array | None,
    noise: Sequence[Any] | None,
    xp: Any,
) -> tuple[list[Any], LayerState, Array, Array, bool, Array | None]:
    """The training forward pass and loss: caches, new layer state, loss, its gradient, whether
    that is w.r.t. the logits, and the correct count (None for regression)."""
    out, caches, new_layer_state = forward(
        model.layers, params, layer_state, x, training=True, xp=xp, noise=noise
    )
    value, grad, prob, from_logits = loss_terms(model, out, caches[-1], y, weight, xp)
    correct = None
    if model.loss.classification:
        correct = correct_count(prob, y, xp, binary=model.binary, sample_weight=weight)
    return caches, new_layer_state, value, grad, from_logits, correct


def _updater(
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


def draw_noise(
    layers: Sequence[Layer], rng: np.random.Generator, rows: int, dtype: Any
) -> list[np.ndarray | None]:
    """Each layer's host randomness for a training batch of ``rows`` rows, in layer order."""
    return [layer.draw(rng, (rows, int(layer.in_features or 0)), dtype) for layer in layers]


def initial_opt_state(model: Model, params: Params, opt_state: OptState, xp: Any) -> OptState:
    """``opt_state`` with every parameter's entry present (zeros where missing), for fixed-shape loops."""
    full = dict(opt_state)
    for i, layer_params in enumerate(params):
        for name, value in layer_params.items():
            key = f"{i}.{name}"
            if not full.get(key) and model.optimizer.state_keys():
                full[key] = model.optimizer.init_state(value, xp)
            full.setdefault(key, {})
    return full


def detached(model: Model) -> Model:
    """``model`` with :meth:`~xpnet.nn.layers.Layer.detached` layers and optimizer: no arrays."""
    layers = tuple(layer.detached() for layer in model.layers)
    return Model(layers, model.loss, model.optimizer.detached(), model.transform, model.trainable)

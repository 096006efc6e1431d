"""The static side of a training step: :class:`Model`, the backend-free description every engine receives.

A model names which math runs (the layers' pure methods, the loss, the
optimizer's rule, a gradient transform) and at which precision (a mixed
policy's compute dtype, float16's loss scaler, the float32 matmul
precision), never on which arrays. :mod:`xpnet.engine.step` runs it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..nn.layers import Layer
from ..nn.losses import CategoricalCrossentropy, Loss
from ..optim.loss_scaling import LossScaler
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
    compute_dtype : str, optional
        A mixed policy's compute dtype (``"bfloat16"``, ``"float16"``); None
        computes in the parameters' dtype.
    loss_scaler : LossScaler, optional
        Dynamic loss scaling (float16); its state is the optimizer state's
        :data:`~xpnet.optim.loss_scaling.STATE_KEY` entry.
    matmul_precision : {"highest", "tf32"}
        The float32 matmul precision the engine runs the step at.
    """

    layers: tuple[Layer, ...]
    loss: Loss
    optimizer: Optimizer
    transform: GradientTransform | None = None
    trainable: tuple[bool, ...] = field(default=())
    compute_dtype: str | None = None
    loss_scaler: LossScaler | None = None
    matmul_precision: str = "highest"
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
        if not any(self.trainable):  # nothing to scale gradients for
            object.__setattr__(self, "loss_scaler", None)
        wanted = self.loss.output_activation
        # Read once per step: computed here, not per call.
        object.__setattr__(self, "fused", wanted is not None and self.layers[-1].output_activation == wanted)
        first = next((i for i, t in enumerate(self.trainable) if t), len(self.layers))
        object.__setattr__(self, "first", first)
        takes = _takes_overwrite(type(self.optimizer).update)
        whole = self.transform is None and self.loss_scaler is None
        object.__setattr__(self, "spoils_grads", takes and whole)

    @property
    def binary(self) -> bool:
        """Whether accuracy thresholds each output (every loss but categorical cross-entropy)."""
        return not isinstance(self.loss, CategoricalCrossentropy)


@functools.lru_cache(maxsize=64)
def _takes_overwrite(update: Callable[..., Any]) -> bool:
    """Whether an optimizer's ``update`` takes ``overwrite_grad`` (read once per class)."""
    return "overwrite_grad" in inspect.signature(update).parameters


def detached(model: Model) -> Model:
    """``model`` with :meth:`~xpnet.nn.layers.Layer.detached` layers and optimizer: no arrays."""
    layers = tuple(layer.detached() for layer in model.layers)
    return Model(
        layers,
        model.loss,
        model.optimizer.detached(),
        model.transform,
        model.trainable,
        model.compute_dtype,
        model.loss_scaler,
        model.matmul_precision,
    )

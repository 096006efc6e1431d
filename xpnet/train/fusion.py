"""Which networks the fused NumPy loop covers: a step's :class:`~xpnet.train.step.Model` as its plan.

:mod:`xpnet.backend.numpy_fused` knows layers, losses and optimizers only as
plain specifications; this module names the classes (exactly these classes,
so a subclass with its own math runs the generic step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..backend.numpy_fused import DenseSpec, DropoutSpec, Plan, fused_plan
from ..nn.layers import Dense, Dropout, Layer
from ..nn.losses import BinaryCrossentropy, CategoricalCrossentropy, Loss, MeanSquaredError
from ..optim.optimizers import SGD

if TYPE_CHECKING:
    from .step import Model


def _layer_spec(layer: Layer) -> DenseSpec | DropoutSpec | None:
    if type(layer) is Dense:
        return DenseSpec(layer.activation.name, layer.use_bias)
    if type(layer) is Dropout:
        return DropoutSpec(layer.rate)
    return None


def _loss_name(loss: Loss) -> str | None:
    kinds = {BinaryCrossentropy: "binary_crossentropy", CategoricalCrossentropy: "categorical_crossentropy"}
    kinds[MeanSquaredError] = "mse"
    return kinds.get(type(loss))


def numpy_plan(model: Model) -> Plan | None:
    """The fused loop's plan for ``model``, or None when it runs the generic step.

    Covered: ``Dense`` and ``Dropout`` layers (every Dense layer trained),
    binary or categorical cross-entropy or mean squared error, any optimizer
    (plain SGD fastest), no gradient transform (clipping or an allreduce run
    the generic step).
    """
    default = tuple(bool(layer.params) for layer in model.layers)
    if model.transform is not None or model.trainable != default:  # frozen layers: the generic step
        return None
    optimizer = model.optimizer
    plain = type(optimizer) is SGD and not optimizer.momentum and not optimizer.weight_decay
    return fused_plan(
        [_layer_spec(layer) for layer in model.layers],
        _loss_name(model.loss),
        label_smoothing=getattr(model.loss, "label_smoothing", 0.0),
        update=None if plain else optimizer.update,
        update_options={"overwrite_grad": True} if model.spoils_grads else None,
    )

"""Fused plans: which networks a fused training loop covers, as plain specifications.

A :class:`Plan` names a stack of ``Dense``, ``Dropout``, ``Activation``,
``BatchNormalization`` and ``LayerNormalization`` layers, a loss and an
update rule; :func:`plan_of` reads one off a step's
:class:`~xpnet.engine.step.Model` (exactly these classes, so a subclass with
its own math runs the generic step). The fused GPU runner
(:mod:`xpnet.engine.fused`) runs every plan; the NumPy engine's fused loop
(:mod:`xpnet.engine.numpy_loop`) the plans of Dense and Dropout layers only
(:attr:`Plan.dense_only`). What no plan covers runs the generic step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..nn.layers import Activation, Dense, Dropout, Layer
from ..nn.losses import BinaryCrossentropy, CategoricalCrossentropy, Loss, MeanSquaredError
from ..nn.normalization import BatchNormalization, LayerNormalization
from ..optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from .step import Model

Array = Any

ELEMENTWISE = frozenset({"linear", "relu", "leaky_relu", "tanh", "sigmoid"})
"""Activations the fused loop computes in place (hidden layers, and a mean-squared-error output)."""
LOSSES = {"binary_crossentropy": "sigmoid", "categorical_crossentropy": "softmax", "mse": None}
"""Losses the fused loop computes, with the output activation each fuses with."""


@dataclass(frozen=True)
class DenseSpec:
    """A ``Dense`` layer: its activation's name and whether it adds a bias."""

    activation: str
    bias: bool = True


@dataclass(frozen=True)
class DropoutSpec:
    """A ``Dropout`` layer: its rate (its masks come from ``Epoch.draw``)."""

    rate: float


@dataclass(frozen=True)
class ActivationSpec:
    """An ``Activation`` layer between others (an elementwise activation, by name)."""

    activation: str


@dataclass(frozen=True)
class NormSpec:
    """A ``BatchNormalization`` (``kind="batch"``: statistics over the batch's rows, running
    statistics moved by ``momentum``) or ``LayerNormalization`` (``"layer"``: over each row's
    features) layer, with its trainable ``weight`` and ``bias``."""

    kind: str
    eps: float
    momentum: float = 0.0


LayerSpec = DenseSpec | DropoutSpec | ActivationSpec | NormSpec
"""What a plan says of one layer."""
PARAMETERS = (DenseSpec, NormSpec)
"""The specs of layers with parameters (every one of them trains in a plan)."""


@dataclass(frozen=True)
class UpdateSpec:
    """An optimizer a fused update computes: its name and hyper-parameters (not the learning rate,
    which, with the step number, comes from device memory)."""

    name: str
    config: tuple[tuple[str, Any], ...]

    def get(self, key: str) -> Any:
        return dict(self.config)[key]


@dataclass(frozen=True)
class Plan:
    """What the fused loop runs: the layers, the loss and the update rule.

    Parameters
    ----------
    layers : sequence of DenseSpec, DropoutSpec, ActivationSpec or NormSpec
        In order; the last one is a Dense layer.
    loss : {"binary_crossentropy", "categorical_crossentropy", "mse"}
    label_smoothing : float
        Categorical cross-entropy's.
    update : callable or None
        The optimizer's ``update(param, grad, state, xp, *, inplace, step,
        learning_rate, **update_options)``; None for plain SGD (no momentum,
        no weight decay), whose learning rate the loop folds into the
        backward pass.
    update_options : mapping
        Extra keyword arguments of ``update`` (``overwrite_grad``: the
        gradients are the loop's own buffers).
    optimizer : UpdateSpec or None
        The optimizer as a fused update kernel can compute it (SGD, Adam,
        AdamW, RMSprop, exactly these classes), else None.
    tf32 : bool
        Whether float32 matrix products may use TF32 (``matmul_precision="tf32"``;
        a GPU's cuBLAS reads it, NumPy has no such precision).
    """

    layers: tuple[LayerSpec, ...]
    loss: str
    label_smoothing: float = 0.0
    update: Callable[..., tuple[Array, dict[str, Array]]] | None = None
    update_options: Mapping[str, Any] = field(default_factory=dict)
    optimizer: UpdateSpec | None = None
    tf32: bool = False
    first: int = field(init=False)
    """Index of the first layer with parameters (Dense or a normalization): backward stops there."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        dense = [i for i, spec in enumerate(self.layers) if isinstance(spec, DenseSpec)]
        if not dense or dense[-1] != len(self.layers) - 1:
            raise ValueError("a fused plan ends with a Dense layer")
        if self.loss not in LOSSES:
            raise ValueError(f"the fused loop computes {sorted(LOSSES)}, not {self.loss!r}")
        last = self.layers[-1]
        assert isinstance(last, DenseSpec)
        wanted = LOSSES[self.loss]
        allowed = ELEMENTWISE if wanted is None else {wanted, "linear"}
        hidden = [s.activation for s in self.layers[:-1] if isinstance(s, (DenseSpec, ActivationSpec))]
        if last.activation not in allowed or not set(hidden) <= ELEMENTWISE:
            raise ValueError(f"the fused loop does not compute this network's activations: {self.layers}")
        kinds = {spec.kind for spec in self.layers if isinstance(spec, NormSpec)}
        if not kinds <= {"batch", "layer"}:
            raise ValueError(f"the fused loop normalizes over the batch or the layer, not {sorted(kinds)}")
        first = next(i for i, spec in enumerate(self.layers) if isinstance(spec, PARAMETERS))
        object.__setattr__(self, "first", first)

    @property
    def dense_only(self) -> bool:
        """Whether every layer is Dense or Dropout (what the NumPy engine's own loop runs)."""
        return all(isinstance(spec, (DenseSpec, DropoutSpec)) for spec in self.layers)

    @property
    def from_logits(self) -> bool:
        """Whether the loss gradient is taken with respect to the last layer's logits."""
        return LOSSES[self.loss] is not None


def fused_plan(
    layers: Sequence[LayerSpec | None],
    loss: str | None,
    *,
    label_smoothing: float = 0.0,
    update: Callable[..., Any] | None = None,
    update_options: Mapping[str, Any] | None = None,
    optimizer: UpdateSpec | None = None,
    tf32: bool = False,
) -> Plan | None:
    """The :class:`Plan` for these layers and loss, or None when the fused loop does not cover them.

    A None among ``layers`` (a layer of another kind) or an unknown ``loss``
    gives None, as does any combination :class:`Plan` refuses.
    """
    if loss is None or any(spec is None for spec in layers):
        return None
    try:
        return Plan(
            tuple(spec for spec in layers if spec is not None),
            loss,
            label_smoothing,
            update,
            dict(update_options or {}),
            optimizer,
            tf32,
        )
    except ValueError:
        return None


def _layer_spec(layer: Layer) -> LayerSpec | None:
    if type(layer) is Dense:
        return DenseSpec(layer.activation.name, layer.use_bias)
    if type(layer) is Dropout:
        return DropoutSpec(layer.rate)
    if type(layer) is Activation:
        return ActivationSpec(layer.activation.name)
    if type(layer) is BatchNormalization:
        return NormSpec("batch", layer.eps, layer.momentum)
    if type(layer) is LayerNormalization:
        return NormSpec("layer", layer.eps)
    return None


def _loss_name(loss: Loss) -> str | None:
    kinds = {BinaryCrossentropy: "binary_crossentropy", CategoricalCrossentropy: "categorical_crossentropy"}
    kinds[MeanSquaredError] = "mse"
    return kinds.get(type(loss))


def plan_of(model: Model) -> Plan | None:
    """The fused plan for ``model``, or None when it runs the generic step.

    Covered: ``Dense``, ``Dropout``, ``Activation`` (elementwise, between
    layers), ``BatchNormalization`` and ``LayerNormalization`` layers (every
    Dense and normalization layer trained), binary or categorical
    cross-entropy or mean squared error, any optimizer (plain SGD fastest),
    no gradient transform (clipping or an allreduce run the generic step), no
    mixed dtype policy (its casts and loss scaling are the generic step's).
    The same for an attached model and its detached copy.
    """
    trained = tuple(type(layer) in TRAINED for layer in model.layers)
    if model.transform is not None or model.trainable != trained:  # frozen layers: the generic step
        return None
    if model.compute_dtype is not None or model.loss_scaler is not None:
        return None
    optimizer = model.optimizer
    plain = type(optimizer) is SGD and not optimizer.momentum and not optimizer.weight_decay
    return fused_plan(
        [_layer_spec(layer) for layer in model.layers],
        _loss_name(model.loss),
        label_smoothing=getattr(model.loss, "label_smoothing", 0.0),
        update=None if plain else optimizer.update,
        update_options={"overwrite_grad": True} if model.spoils_grads else None,
        optimizer=_update_spec(optimizer),
        tf32=model.matmul_precision == "tf32",
    )


TRAINED = (Dense, BatchNormalization, LayerNormalization)
"""The layer classes with parameters a plan covers."""


def _update_spec(optimizer: Optimizer) -> UpdateSpec | None:
    if type(optimizer) not in (SGD, Adam, AdamW, RMSprop):
        return None
    config = {
        k: v for k, v in optimizer.get_config().items() if k != "learning_rate" and not k.startswith("clip_")
    }
    return UpdateSpec(optimizer.name, tuple(sorted(config.items())))

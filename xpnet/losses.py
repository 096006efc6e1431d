"""Loss functions: means over the batch, as torch.nn's defaults.

``mse`` and ``binary_crossentropy`` average over all elements;
``categorical_crossentropy`` sums over classes and averages over samples.
Cross-entropies take probabilities by default and logits with
``from_logits=True``; the logit forms are the fused, stable pairs
(sigmoid + BCE, softmax + CE) whose gradient is ``(p - y) / n``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .activations import log_softmax, sigmoid
from .backend import device_of, namespace_of

Array = Any
_LOG_FLOOR = -100.0  # torch.nn.BCELoss clamps log(p) here so a p of 0 gives a finite loss


def one_hot(labels: Array, num_classes: int, dtype: Any, xp: Any) -> Array:
    """Integer labels ``(n,)`` as a one-hot ``(n, num_classes)`` array of ``dtype``."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=device_of(labels))
    return xp.astype(xp.reshape(labels, (-1, 1)) == classes, dtype)


class Loss(ABC):
    """Base class: ``loss(y_pred, y_true)`` is the scalar loss, ``gradient`` its derivative.

    Subclasses set ``name``, ``output_activation`` (the final activation whose
    gradient fuses with this loss, or ``None``) and ``classification``.
    """

    name: str = ""
    output_activation: str | None = None
    classification: bool = False

    def __init__(self, *, from_logits: bool = False) -> None:
        self.from_logits = from_logits

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"

    def __call__(self, y_pred: Array, y_true: Array) -> Array:
        return self.value_and_gradient(y_pred, y_true)[0]

    def gradient(self, y_pred: Array, y_true: Array) -> Array:
        """Gradient of the loss with respect to ``y_pred``."""
        return self.value_and_gradient(y_pred, y_true)[1]

    @abstractmethod
    def value_and_gradient(self, y_pred: Array, y_true: Array) -> tuple[Array, Array]:
        """Return ``(loss, d loss / d y_pred)``; ``loss`` is a 0-d array on the device."""

    def targets(self, y_true: Array, y_pred: Array) -> Array:
        """``y_true`` in ``y_pred``'s shape and dtype."""
        xp = namespace_of(y_pred)
        if y_true.ndim == 1 and y_pred.ndim == 2 and y_pred.shape[1] == 1:
            y_true = xp.reshape(y_true, (-1, 1))
        return y_true if y_true.dtype == y_pred.dtype else xp.astype(y_true, y_pred.dtype)


class MeanSquaredError(Loss):
    """Mean of ``(y_pred - y_true) ** 2`` over all elements."""

    name = "mse"

    def value_and_gradient(self, y_pred: Array, y_true: Array) -> tuple[Array, Array]:
        xp = namespace_of(y_pred)
        diff = y_pred - self.targets(y_true, y_pred)
        size = diff.shape[0] * (diff.shape[1] if diff.ndim > 1 else 1)
        return xp.sum(diff * diff) / size, diff * (2.0 / size)


class BinaryCrossentropy(Loss):
    """Log-loss of 0/1 targets, averaged over all elements.

    ``y_pred`` are probabilities, or logits when ``from_logits=True``.
    """

    name = "binary_crossentropy"
    output_activation = "sigmoid"
    classification = True

    def value_and_gradient(self, y_pred: Array, y_true: Array) -> tuple[Array, Array]:
        xp = namespace_of(y_pred)
        y = self.targets(y_true, y_pred)
        size = y.shape[0] * (y.shape[1] if y.ndim > 1 else 1)
        if self.from_logits:
            z = y_pred
            per = xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
            return xp.sum(per) / size, (sigmoid(z, xp) - y) / size
        p = y_pred
        log_p = xp.maximum(xp.log(p), _LOG_FLOOR)
        log_q = xp.maximum(xp.log1p(-p), _LOG_FLOOR)
        value = -xp.sum(y * log_p + (1.0 - y) * log_q) / size
        tiny = xp.finfo(p.dtype).smallest_normal
        grad = (p - y) / (xp.maximum(p * (1.0 - p), tiny) * size)
        return value, grad


class CategoricalCrossentropy(Loss):
    """Cross-entropy of class targets: integer labels ``(n,)`` or one-hot ``(n, k)``.

    Summed over classes, averaged over samples. ``y_pred`` are probabilities,
    or logits when ``from_logits=True``.
    """

    name = "categorical_crossentropy"
    output_activation = "softmax"
    classification = True

    def targets(self, y_true: Array, y_pred: Array) -> Array:
        xp = namespace_of(y_pred)
        if y_true.ndim == 1:
            return one_hot(y_true, y_pred.shape[-1], y_pred.dtype, xp)
        return super().targets(y_true, y_pred)

    def value_and_gradient(self, y_pred: Array, y_true: Array) -> tuple[Array, Array]:
        xp = namespace_of(y_pred)
        y = self.targets(y_true, y_pred)
        n = y.shape[0]
        if self.from_logits:
            log_p = log_softmax(y_pred, xp)
            return -xp.sum(y * log_p) / n, (xp.exp(log_p) - y) / n
        p = y_pred
        tiny = xp.finfo(p.dtype).smallest_normal
        log_p = xp.maximum(xp.log(p), _LOG_FLOOR)
        return -xp.sum(y * log_p) / n, -y / (xp.maximum(p, tiny) * n)


LOSSES: dict[str, type[Loss]] = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "binary_crossentropy": BinaryCrossentropy,
    "logloss": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "cross_entropy": CategoricalCrossentropy,
}


def get_loss(name: str | Loss) -> Loss:
    """Look up a loss by name (or return a :class:`Loss` instance unchanged).

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    if isinstance(name, Loss):
        return name
    key = str(name).lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {list(LOSSES)}")
    return LOSSES[key]()

"""Loss functions: means over the batch, as torch.nn's defaults.

``mse`` and ``binary_crossentropy`` average over all elements;
``categorical_crossentropy`` sums over classes and averages over samples.
Cross-entropies take probabilities by default and logits with
``from_logits=True``; the logit forms are the fused, stable pairs
(sigmoid + BCE, softmax + CE) whose gradient is ``(p - y) / n``.

Every loss takes an optional ``sample_weight`` of shape ``(n,)``: the loss is
then ``sum(w_i * l_i) / sum(w_i)``, with ``l_i`` sample ``i``'s loss (its mean
over outputs for ``mse`` and ``binary_crossentropy``). Rows of weight 0 do not
count (a padded batch gives the unpadded numbers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .._names import lookup
from ..backend import device_of, namespace_of
from .activations import log_softmax, sigmoid, softmax

Array = Any
_LOG_FLOOR = -100.0  # torch.nn.BCELoss clamps log(p) here so a p of 0 gives a finite loss


def one_hot(labels: Array, num_classes: int, dtype: Any, xp: Any) -> Array:
    """Integer labels ``(n,)`` as a one-hot ``(n, num_classes)`` array of ``dtype``."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=device_of(labels))
    return xp.astype(xp.reshape(labels, (-1, 1)) == classes, dtype)


class Loss(ABC):
    """Base class: ``loss(y_pred, y_true)`` is the scalar loss, ``gradient`` its derivative.

    Subclasses set ``name``, ``output_activation`` (the final activation whose
    gradient fuses with this loss, or ``None``) and ``classification``. Every
    method takes an optional ``xp``; by default it is inferred from ``y_pred``.
    """

    name: str = ""
    output_activation: str | None = None
    classification: bool = False

    def __init__(self, *, from_logits: bool = False) -> None:
        self.from_logits = from_logits

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"

    def __call__(self, y_pred: Array, y_true: Array, *, xp: Any = None) -> Array:
        return self.value_and_gradient(y_pred, y_true, xp=xp)[0]

    def gradient(self, y_pred: Array, y_true: Array, *, xp: Any = None) -> Array:
        """Gradient of the loss with respect to ``y_pred``."""
        return self.value_and_gradient(y_pred, y_true, xp=xp)[1]

    @abstractmethod
    def value_and_gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        """Return ``(loss, d loss / d y_pred)``; ``loss`` is a 0-d array on the device.

        ``sample_weight`` (n,), optional: the weighted mean over samples.
        """

    def targets(self, y_true: Array, y_pred: Array, xp: Any) -> Array:
        """``y_true`` in ``y_pred``'s shape and dtype."""
        if y_true.ndim == 1 and y_pred.ndim == 2 and y_pred.shape[1] == 1:
            y_true = xp.reshape(y_true, (-1, 1))
        return y_true if y_true.dtype == y_pred.dtype else xp.astype(y_true, y_pred.dtype)


def _size(y: Array) -> int:
    return int(y.shape[0] * (y.shape[1] if y.ndim > 1 else 1))


def weighted(
    per: Array, grad: Array, sample_weight: Array, xp: Any, *, mean_over_outputs: bool
) -> tuple[Array, Array]:
    """``(sum(w_i * l_i) / sum(w_i), its gradient)`` from per-element losses and gradients.

    ``per`` and ``grad`` are ``(n, k)``: the unnormalized loss of each element
    and its derivative; ``l_i`` is the sum of row ``i`` (the mean with
    ``mean_over_outputs``).
    """
    w = xp.reshape(xp.astype(sample_weight, per.dtype), (-1, 1))
    outputs = per.shape[1] if (mean_over_outputs and per.ndim > 1) else 1
    scale = w / (xp.sum(w) * outputs)
    return xp.sum(per * scale), grad * scale


class MeanSquaredError(Loss):
    """Mean of ``(y_pred - y_true) ** 2`` over all elements."""

    name = "mse"

    def value_and_gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(y_pred)
        diff = y_pred - self.targets(y_true, y_pred, xp)
        if sample_weight is not None:
            return weighted(diff * diff, 2.0 * diff, sample_weight, xp, mean_over_outputs=True)
        size = _size(diff)
        return xp.sum(diff * diff) / size, diff * (2.0 / size)


class CrossEntropy(Loss):
    """Base of the cross-entropies: the fused form shared with the output activation."""

    classification = True

    @abstractmethod
    def fused(
        self, logits: Array, prob: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        """Loss from ``logits`` and its gradient with respect to them, ``(prob - y) / n``.

        ``prob`` is the output activation of ``logits``, already computed by
        the forward pass, so it is not computed twice.
        """


class BinaryCrossentropy(CrossEntropy):
    """Log-loss of 0/1 targets, averaged over all elements.

    ``y_pred`` are probabilities, or logits when ``from_logits=True``.
    """

    name = "binary_crossentropy"
    output_activation = "sigmoid"

    def fused(
        self, logits: Array, prob: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(logits)
        y = self.targets(y_true, logits, xp)
        z = logits
        per = xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
        if sample_weight is not None:
            return weighted(per, prob - y, sample_weight, xp, mean_over_outputs=True)
        size = _size(y)
        return xp.sum(per) / size, (prob - y) / size

    def value_and_gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(y_pred)
        if self.from_logits:
            return self.fused(y_pred, sigmoid(y_pred, xp), y_true, xp=xp, sample_weight=sample_weight)
        y = self.targets(y_true, y_pred, xp)
        p = y_pred
        log_p = xp.maximum(xp.log(p), _LOG_FLOOR)
        log_q = xp.maximum(xp.log1p(-p), _LOG_FLOOR)
        tiny = xp.finfo(p.dtype).smallest_normal
        if sample_weight is not None:
            per = -(y * log_p + (1.0 - y) * log_q)
            grad = (p - y) / xp.maximum(p * (1.0 - p), tiny)
            return weighted(per, grad, sample_weight, xp, mean_over_outputs=True)
        size = _size(y)
        value = -xp.sum(y * log_p + (1.0 - y) * log_q) / size
        grad = (p - y) / (xp.maximum(p * (1.0 - p), tiny) * size)
        return value, grad


class CategoricalCrossentropy(CrossEntropy):
    """Cross-entropy of class targets: integer labels ``(n,)`` or one-hot ``(n, k)``.

    Summed over classes, averaged over samples. ``y_pred`` are probabilities,
    or logits when ``from_logits=True``.
    """

    name = "categorical_crossentropy"
    output_activation = "softmax"

    def targets(self, y_true: Array, y_pred: Array, xp: Any) -> Array:
        if y_true.ndim == 1:
            return one_hot(y_true, y_pred.shape[-1], y_pred.dtype, xp)
        return super().targets(y_true, y_pred, xp)

    def fused(
        self, logits: Array, prob: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(logits)
        y = self.targets(y_true, logits, xp)
        if sample_weight is not None:
            per = -(y * log_softmax(logits, xp))
            return weighted(per, prob - y, sample_weight, xp, mean_over_outputs=False)
        n = y.shape[0]
        return -xp.sum(y * log_softmax(logits, xp)) / n, (prob - y) / n

    def value_and_gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(y_pred)
        if self.from_logits:
            return self.fused(y_pred, softmax(y_pred, xp), y_true, xp=xp, sample_weight=sample_weight)
        y = self.targets(y_true, y_pred, xp)
        p = y_pred
        tiny = xp.finfo(p.dtype).smallest_normal
        log_p = xp.maximum(xp.log(p), _LOG_FLOOR)
        if sample_weight is not None:
            return weighted(
                -(y * log_p), -y / xp.maximum(p, tiny), sample_weight, xp, mean_over_outputs=False
            )
        n = y.shape[0]
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
    return lookup("loss", LOSSES, name)()

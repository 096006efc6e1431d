"""Loss functions: means over the batch, as torch.nn's defaults, with optional sample weights.

Each loss has a per-sample value ``l_i``: the mean over outputs for the
elementwise losses (``mse``, ``mae``, ``huber``, ``binary_crossentropy``), the
sum over classes for ``categorical_crossentropy``. The loss is the mean of
``l_i`` over the batch or, given per-sample weights ``sample_weight`` (``w``)
of shape ``(n,)``, ``sum(w_i * l_i) / sum(w_i)`` (0, with 0 gradients, when
every weight is 0). Cross-entropies take probabilities by default and logits
with ``from_logits=True``; the logit forms are the fused, stable pairs
(sigmoid + BCE, softmax + CE) whose gradient is ``(p - y) / n``.
"""

from __future__ import annotations

import math
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


def element_scale(y: Array, w: Array | None, per_sample: int, xp: Any) -> Array | float:
    """The factor that turns a sum of elementwise terms of ``y``'s shape into the loss.

    Without weights it is ``1 / (n * per_sample)``; with weights ``w`` of
    shape ``(n,)`` it is ``w_i / (per_sample * sum(w))`` on row ``i``, so the
    loss is ``sum(w_i * l_i) / sum(w_i)`` with ``l_i`` the row's sum of terms
    divided by ``per_sample``. The gradient of the loss is the elementwise
    derivative times the same factor. When every weight is 0 the factor is 0.
    When the weights' sum overflows the dtype (uniform weights of 3e38 in
    float32), they are first divided by the largest, which changes nothing
    else: they weigh as weights of 1 would.
    """
    n = int(y.shape[0])
    if w is None:
        return 1.0 / (n * per_sample)
    if w.ndim != 1 or int(w.shape[0]) != n:
        raise ValueError(f"sample weights must have shape ({n},), one per sample; got {tuple(w.shape)}")
    w = w if w.dtype == y.dtype else xp.astype(w, y.dtype)
    total = xp.sum(w)
    fits = xp.isfinite(total)
    peak = xp.max(w)
    # Times 1 / sqrt(peak) twice, not / peak: XLA divides by multiplying with the reciprocal (and
    # folds two divisions into one), and 1 / 3e38 is subnormal in float32, which it flushes to 0.
    inverse = 1.0 / xp.sqrt(xp.where(peak > 0, peak, xp.ones_like(peak)))
    w = xp.where(fits, w, (w * inverse) * inverse)
    total = xp.where(fits, total, xp.sum(w))
    # Rows that all weigh 0 add nothing (a 0 loss, 0 gradients), not 0 / 0.
    total = xp.where(total > 0, total, xp.ones_like(total))
    column = xp.reshape(w, (n,) + (1,) * (y.ndim - 1))
    return column / (total * per_sample)


def _weighted_sum(terms: Array, scale: Array | float, xp: Any) -> Array:
    if isinstance(scale, float):
        return xp.sum(terms) * scale
    return xp.sum(terms * scale)


class Loss(ABC):
    """Base class: ``loss(y_pred, y_true)`` is the scalar loss, ``gradient`` its derivative.

    Subclasses set ``name``, ``output_activation`` (the final activation whose
    gradient fuses with this loss, or ``None``) and ``classification``. Every
    method takes an optional ``xp`` (by default inferred from ``y_pred``) and
    optional per-sample weights ``sample_weight`` of shape ``(n,)``, on the same device.
    """

    name: str = ""
    output_activation: str | None = None
    classification: bool = False

    def __init__(self, *, from_logits: bool = False) -> None:
        self.from_logits = from_logits

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this loss."""
        return {"from_logits": self.from_logits}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __call__(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> Array:
        return self.value_and_gradient(y_pred, y_true, xp=xp, sample_weight=sample_weight)[0]

    def gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> Array:
        """Gradient of the loss with respect to ``y_pred``."""
        return self.value_and_gradient(y_pred, y_true, xp=xp, sample_weight=sample_weight)[1]

    @abstractmethod
    def value_and_gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        """Return ``(loss, d loss / d y_pred)``; ``loss`` is a 0-d array on the device."""

    def targets(self, y_true: Array, y_pred: Array, xp: Any) -> Array:
        """``y_true`` in ``y_pred``'s shape and dtype."""
        if y_true.ndim == 1 and y_pred.ndim == 2 and y_pred.shape[1] == 1:
            y_true = xp.reshape(y_true, (-1, 1))
        return y_true if y_true.dtype == y_pred.dtype else xp.astype(y_true, y_pred.dtype)


def _outputs(y: Array) -> int:
    return int(y.shape[1]) if y.ndim > 1 else 1


class ElementwiseLoss(Loss):
    """A loss that is the mean over all elements of a term of ``y_pred - y_true``."""

    slope_factor = 1.0
    """A constant of every derivative, applied with the (small) scale instead of the whole array."""

    @abstractmethod
    def terms(self, diff: Array, xp: Any) -> tuple[Array, Array]:
        """The elementwise terms of ``diff = y_pred - y_true`` and their derivatives / ``slope_factor``."""

    def value_and_gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(y_pred)
        diff = y_pred - self.targets(y_true, y_pred, xp)
        scale = element_scale(diff, sample_weight, _outputs(diff), xp)
        terms, slope = self.terms(diff, xp)
        return _weighted_sum(terms, scale, xp), slope * (scale * self.slope_factor)


class MeanSquaredError(ElementwiseLoss):
    """Mean of ``(y_pred - y_true) ** 2`` (torch ``MSELoss``)."""

    name = "mse"
    slope_factor = 2.0

    def terms(self, diff: Array, xp: Any) -> tuple[Array, Array]:
        return diff * diff, diff


class MeanAbsoluteError(ElementwiseLoss):
    """Mean of ``|y_pred - y_true|`` (torch ``L1Loss``; the gradient at 0 is 0)."""

    name = "mae"

    def terms(self, diff: Array, xp: Any) -> tuple[Array, Array]:
        return xp.abs(diff), xp.sign(diff)


class Huber(ElementwiseLoss):
    """Huber loss (torch ``HuberLoss``): quadratic within ``delta`` of the target, linear beyond.

    Parameters
    ----------
    delta : float
        Where the loss turns from ``d ** 2 / 2`` to ``delta * (|d| - delta / 2)``;
        a positive number.
    """

    name = "huber"

    def __init__(self, delta: float = 1.0, *, from_logits: bool = False) -> None:
        super().__init__(from_logits=from_logits)
        number = isinstance(delta, (int, float)) and not isinstance(delta, bool)
        if not number or not 0 < delta < math.inf:
            raise ValueError(f"Huber delta must be a positive finite number, got {delta!r}")
        self.delta = float(delta)

    def get_config(self) -> dict[str, Any]:
        return {"delta": self.delta, **super().get_config()}

    def terms(self, diff: Array, xp: Any) -> tuple[Array, Array]:
        size = xp.abs(diff)
        inside = size < self.delta
        value = xp.where(inside, 0.5 * diff * diff, self.delta * (size - 0.5 * self.delta))
        return value, xp.clip(diff, min=-self.delta, max=self.delta)


class CrossEntropy(Loss):
    """Base of the cross-entropies: the fused form shared with the output activation."""

    classification = True

    @abstractmethod
    def fused(
        self, logits: Array, prob: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        """Loss from ``logits`` and its gradient with respect to them, ``(prob - y) / n``.

        ``prob`` is the output activation of ``logits``, already computed by
        the forward pass, so it is not computed twice. With weights ``w = sample_weight`` the
        gradient's row ``i`` is ``(prob - y) * w_i / sum(w)``.
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
        scale = element_scale(y, sample_weight, _outputs(y), xp)
        z = logits
        per = xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
        return _weighted_sum(per, scale, xp), (prob - y) * scale

    def value_and_gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(y_pred)
        if self.from_logits:
            return self.fused(y_pred, sigmoid(y_pred, xp), y_true, xp=xp, sample_weight=sample_weight)
        y = self.targets(y_true, y_pred, xp)
        scale = element_scale(y, sample_weight, _outputs(y), xp)
        p = y_pred
        log_p = xp.maximum(xp.log(p), _LOG_FLOOR)
        log_q = xp.maximum(xp.log1p(-p), _LOG_FLOOR)
        value = -_weighted_sum(y * log_p + (1.0 - y) * log_q, scale, xp)
        tiny = xp.finfo(p.dtype).smallest_normal
        grad = (p - y) / xp.maximum(p * (1.0 - p), tiny) * scale
        return value, grad


class CategoricalCrossentropy(CrossEntropy):
    """Cross-entropy of class targets: integer labels ``(n,)`` or one-hot ``(n, k)``.

    Summed over classes, averaged over samples. ``y_pred`` are probabilities,
    or logits when ``from_logits=True``.

    Parameters
    ----------
    label_smoothing : float
        In ``[0, 1)``: the targets become ``(1 - label_smoothing) * y +
        label_smoothing / k``, as torch ``CrossEntropyLoss(label_smoothing=)``.
    from_logits : bool
        Whether ``y_pred`` are logits rather than probabilities.
    """

    name = "categorical_crossentropy"
    output_activation = "softmax"

    def __init__(self, label_smoothing: float = 0.0, *, from_logits: bool = False) -> None:
        super().__init__(from_logits=from_logits)
        smoothing = label_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(smoothing)

    def get_config(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing, **super().get_config()}

    def targets(self, y_true: Array, y_pred: Array, xp: Any) -> Array:
        """Targets as (smoothed) class probabilities in ``y_pred``'s shape and dtype."""
        if y_true.ndim == 1:
            y = one_hot(y_true, y_pred.shape[-1], y_pred.dtype, xp)
        else:
            y = super().targets(y_true, y_pred, xp)
        if self.label_smoothing:
            keep = 1.0 - self.label_smoothing
            y = keep * y + self.label_smoothing / int(y_pred.shape[-1])
        return y

    def fused(
        self, logits: Array, prob: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(logits)
        y = self.targets(y_true, logits, xp)
        scale = element_scale(y, sample_weight, 1, xp)
        return -_weighted_sum(y * log_softmax(logits, xp), scale, xp), (prob - y) * scale

    def value_and_gradient(
        self, y_pred: Array, y_true: Array, *, xp: Any = None, sample_weight: Array | None = None
    ) -> tuple[Array, Array]:
        xp = xp or namespace_of(y_pred)
        if self.from_logits:
            return self.fused(y_pred, softmax(y_pred, xp), y_true, xp=xp, sample_weight=sample_weight)
        y = self.targets(y_true, y_pred, xp)
        scale = element_scale(y, sample_weight, 1, xp)
        p = y_pred
        tiny = xp.finfo(p.dtype).smallest_normal
        log_p = xp.maximum(xp.log(p), _LOG_FLOOR)
        return -_weighted_sum(y * log_p, scale, xp), -y / xp.maximum(p, tiny) * scale


LOSSES: dict[str, type[Loss]] = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "logloss": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "cross_entropy": CategoricalCrossentropy,
}


def get_loss(name: str | Loss, **config: Any) -> Loss:
    """Look up a loss by name (or return a :class:`Loss` instance unchanged).

    Keyword arguments go to the loss's constructor (e.g. ``delta`` for
    ``"huber"``, as :meth:`Loss.get_config` gives them).

    Raises
    ------
    ValueError
        For an unknown name, listing the valid ones.
    """
    if isinstance(name, Loss):
        return name
    return lookup("loss", LOSSES, name)(**config)

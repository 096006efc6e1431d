"""Metrics computed on the device: pure functions of arrays and ``xp``, and per-epoch accumulators.

An accumulator (:class:`Metric`, made by :func:`get_metric`) sees each batch's
probabilities and targets with :meth:`Metric.update`, keeping its sums on the
device, and gives the epoch's value with one read in :meth:`Metric.result`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from .._names import lookup
from ..backend import device_of, namespace_of, to_numpy
from ..backend import numpy_kernels as kernels

Array = Any


def correct_count(
    y_prob: Array, y_true: Array, xp: Any, *, binary: bool, sample_weight: Array | None = None
) -> Array:
    """Number of correct predictions, as a 0-d array on the device.

    ``binary``: each element of ``y_prob`` is thresholded at 0.5 against 0/1
    targets of the same shape. Otherwise the argmax of each row is compared
    with the integer label ``y_true`` (or the argmax of a one-hot ``y_true``).
    Rows whose ``sample_weight`` is 0 are not counted (padding).
    """
    if sample_weight is None:
        fast = kernels.count_correct(y_prob, y_true, binary=binary)
        if fast is not None:
            return fast
    if binary:
        hit = (y_prob > 0.5) == (xp.reshape(y_true, y_prob.shape) > 0.5)
    else:
        labels = y_true if y_true.ndim == 1 else xp.argmax(y_true, axis=1)
        hit = xp.argmax(y_prob, axis=1) == labels
    hit = xp.astype(hit, y_prob.dtype)
    if sample_weight is not None:
        keep = xp.astype(sample_weight != 0, y_prob.dtype)
        hit = hit * (xp.reshape(keep, (-1, 1)) if hit.ndim > 1 else keep)
    return xp.sum(hit)


def prediction_count(y_prob: Array, *, binary: bool) -> int:
    """How many predictions :func:`correct_count` judges in ``y_prob``."""
    if binary:
        return int(y_prob.shape[0] * (y_prob.shape[1] if y_prob.ndim > 1 else 1))
    return int(y_prob.shape[0])


# -- per-epoch accumulators ------------------------------------------------------------

TASKS = ("binary", "multiclass", "regression")


def _columns(y: Array, xp: Any) -> Array:
    return xp.reshape(y, (-1, 1)) if y.ndim == 1 else y


def _labels(y_true: Array, xp: Any) -> Array:
    return y_true if y_true.ndim == 1 else xp.argmax(y_true, axis=1)


def _class_mask(labels: Array, k: int, xp: Any) -> Array:
    classes = xp.arange(k, dtype=labels.dtype, device=device_of(labels))
    return xp.reshape(labels, (-1, 1)) == classes


def decisions(y_prob: Array, y_true: Array, task: str, xp: Any) -> tuple[Array, Array]:
    """Predicted and true class indicators, boolean ``(n, k)`` arrays.

    ``binary``: each output column is its own yes/no decision, ``y_prob > 0.5``
    against ``y_true > 0.5``. ``multiclass``: the argmax of each row against
    the integer label (or the argmax of a one-hot ``y_true``), one column per class.
    """
    prob = _columns(y_prob, xp)
    if task == "binary":
        return prob > 0.5, xp.reshape(y_true, prob.shape) > 0.5
    k = int(prob.shape[1])
    return _class_mask(xp.argmax(prob, axis=1), k, xp), _class_mask(_labels(y_true, xp), k, xp)


class Metric(ABC):
    """A metric accumulated over the batches of an epoch, read once at its end.

    :meth:`update` takes device arrays (probabilities and targets, as the
    loss sees them) and keeps every sum on the device, so it never waits
    for the device; :meth:`result` reads the value as a float.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
        ``binary``: sigmoid outputs with 0/1 targets, class 1 positive (one
        column per label, averaged when there are several). ``multiclass``:
        softmax outputs with integer labels ``(n,)`` or one-hot targets.
        ``regression``: any outputs with targets of their shape.
    """

    name = ""
    tasks: tuple[str, ...] = TASKS

    def __init__(self, task: str = "binary") -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        if task not in self.tasks:
            raise ValueError(
                f"the {self.name!r} metric needs a classification task ({' or '.join(self.tasks)}), "
                f"not {task!r}"
            )
        self.task = task
        self.reset()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r})"

    @abstractmethod
    def reset(self) -> None:
        """Forget every batch seen (a new epoch starts)."""

    @abstractmethod
    def update(self, y_prob: Array, y_true: Array) -> None:
        """Add a batch of probabilities (or outputs) and targets, both on the device."""

    @abstractmethod
    def result(self) -> float:
        """The metric over every batch since :meth:`reset`, read from the device."""


class Accuracy(Metric):
    """Share of correct predictions (each output element for binary tasks)."""

    name = "accuracy"
    tasks = ("binary", "multiclass")

    def reset(self) -> None:
        self.correct: Array | None = None
        self.count = 0

    def update(self, y_prob: Array, y_true: Array) -> None:
        xp = namespace_of(y_prob)
        binary = self.task == "binary"
        hits = correct_count(y_prob, y_true, xp, binary=binary)
        self.correct = hits if self.correct is None else self.correct + hits
        self.count += prediction_count(y_prob, binary=binary)

    def result(self) -> float:
        return float(self.correct) / self.count if self.correct is not None else math.nan


def _ratio(num: Array, den: Array, xp: Any) -> Array:
    """``num / den`` where ``den > 0``, else 0 (scikit-learn's ``zero_division=0``)."""
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), 0.0)


class ConfusionMetric(Metric):
    """Precision, recall or f1 from per-class true/false positive counts kept on the device.

    Binary tasks score class 1 (the macro average over label columns when
    there are several); multi-class tasks take the macro average over the
    classes present in the targets or the predictions, as scikit-learn's
    ``average="macro"``. A class never predicted (or never present) scores 0,
    as scikit-learn with ``zero_division=0``.
    """

    tasks = ("binary", "multiclass")

    def reset(self) -> None:
        self.counts: tuple[Array, Array, Array] | None = None
        self.dtype: Any = None

    def update(self, y_prob: Array, y_true: Array) -> None:
        xp = namespace_of(y_prob)
        pred, true = decisions(y_prob, y_true, self.task, xp)
        counts = (
            xp.count_nonzero(pred & true, axis=0),
            xp.count_nonzero(pred & ~true, axis=0),
            xp.count_nonzero(~pred & true, axis=0),
        )
        old = self.counts
        self.counts = counts if old is None else (old[0] + counts[0], old[1] + counts[1], old[2] + counts[2])
        self.dtype = y_prob.dtype

    @abstractmethod
    def per_class(self, tp: Array, fp: Array, fn: Array, xp: Any) -> Array:
        """The score of each class from its counts (floats)."""

    def result(self) -> float:
        if self.counts is None:
            return math.nan
        xp = namespace_of(self.counts[0])
        tp, fp, fn = (xp.astype(c, self.dtype) for c in self.counts)
        score = self.per_class(tp, fp, fn, xp)
        if self.task == "binary":
            return float(xp.mean(score))
        present = xp.astype((tp + fp + fn) > 0, self.dtype)
        return float(xp.sum(score * present) / xp.maximum(xp.sum(present), 1.0))


class Precision(ConfusionMetric):
    """``tp / (tp + fp)``: the share of predicted positives that are right."""

    name = "precision"

    def per_class(self, tp: Array, fp: Array, fn: Array, xp: Any) -> Array:
        return _ratio(tp, tp + fp, xp)


class Recall(ConfusionMetric):
    """``tp / (tp + fn)``: the share of true positives found."""

    name = "recall"

    def per_class(self, tp: Array, fp: Array, fn: Array, xp: Any) -> Array:
        return _ratio(tp, tp + fn, xp)


class F1(ConfusionMetric):
    """``2 tp / (2 tp + fp + fn)``, the harmonic mean of precision and recall (per class)."""

    name = "f1"

    def per_class(self, tp: Array, fp: Array, fn: Array, xp: Any) -> Array:
        return _ratio(2.0 * tp, 2.0 * tp + fp + fn, xp)


class _Collecting(Metric):
    """Keeps the epoch's probabilities and targets on the device until :meth:`result`."""

    def reset(self) -> None:
        self.batches: list[tuple[Array, Array]] = []

    def update(self, y_prob: Array, y_true: Array) -> None:
        self.batches.append((y_prob, y_true))

    def collected(self) -> tuple[Array, Array, Any]:
        xp = namespace_of(self.batches[0][0])
        prob = xp.concat([p for p, _ in self.batches], axis=0)
        true = xp.concat([t for _, t in self.batches], axis=0)
        return prob, true, xp


def roc_auc(scores: Array, positive: Array, xp: Any) -> Array:
    """Area under the ROC curve of 1-D ``scores`` for the boolean ``positive``, on the device.

    The share of (positive, negative) pairs ranked correctly, a tie counting
    one half (the Mann-Whitney statistic, equal to scikit-learn's
    trapezoidal area). NaN when either class is absent, as scikit-learn
    (which also warns).
    """
    dtype = scores.dtype
    negatives = xp.sort(xp.where(positive, xp.inf, scores))
    below = xp.astype(xp.searchsorted(negatives, scores, side="left"), dtype)
    not_above = xp.astype(xp.searchsorted(negatives, scores, side="right"), dtype)
    pos = xp.astype(positive, dtype)
    n_pos = xp.sum(pos)
    pairs = 2.0 * n_pos * (scores.shape[0] - n_pos)
    area = xp.sum(pos * (below + not_above)) / xp.where(pairs > 0, pairs, 1.0)
    return xp.where(pairs > 0, area, xp.nan)


class AUC(_Collecting):
    """ROC AUC: binary (class 1's probability), or one-vs-rest macro over classes (or label columns).

    Computed once per epoch on the device from the epoch's scores. When a
    class has no positive or no negative target, its AUC is undefined and
    the result is NaN, as scikit-learn's ``roc_auc_score`` (>= 1.8 warns and
    returns NaN for a binary task; for multi-class it raises ValueError).
    """

    name = "auc"
    tasks = ("binary", "multiclass")

    def result(self) -> float:
        if not self.batches:
            return math.nan
        prob, true, xp = self.collected()
        prob = _columns(prob, xp)
        k = int(prob.shape[1])
        if self.task == "binary":
            positive = xp.reshape(true, prob.shape) > 0.5
        else:
            positive = _class_mask(_labels(true, xp), k, xp)
        # A column copied whole: torch's searchsorted wants contiguous values.
        areas = [roc_auc(xp.asarray(prob[:, j], copy=True), positive[:, j], xp) for j in range(k)]
        return float(xp.mean(xp.stack(areas)))


class MeanError(Metric):
    """Mean of ``|y_prob - y_true| ** power`` over all elements (one-hot for class labels)."""

    power = 1

    def reset(self) -> None:
        self.total: Array | None = None
        self.count = 0

    def update(self, y_prob: Array, y_true: Array) -> None:
        xp = namespace_of(y_prob)
        prob = _columns(y_prob, xp)
        if self.task == "multiclass" and y_true.ndim == 1:
            true = xp.astype(_class_mask(y_true, int(prob.shape[1]), xp), prob.dtype)
        else:
            true = xp.astype(xp.reshape(y_true, prob.shape), prob.dtype)
        diff = xp.abs(prob - true)
        total = xp.sum(diff if self.power == 1 else diff * diff)
        self.total = total if self.total is None else self.total + total
        self.count += int(prob.shape[0] * prob.shape[1])

    def result(self) -> float:
        return float(self.total) / self.count if self.total is not None else math.nan


class MeanAbsoluteError(MeanError):
    """Mean absolute error (scikit-learn's ``mean_absolute_error``)."""

    name = "mae"


class MeanSquaredError(MeanError):
    """Mean squared error (scikit-learn's ``mean_squared_error``)."""

    name = "mse"
    power = 2


class CallableMetric(_Collecting):
    """A user's ``f(y_true, y_pred) -> float`` on the epoch's NumPy arrays, keyed ``f.__name__``.

    ``y_true`` are integer labels for multi-class tasks, else the targets;
    ``y_pred`` are the probabilities (or outputs); a single column is given
    flat, as scikit-learn's metrics expect.
    """

    def __init__(self, function: Callable[[Any, Any], float], task: str = "binary") -> None:
        self.function = function
        self.name = getattr(function, "__name__", type(function).__name__)
        super().__init__(task)

    def __repr__(self) -> str:
        return f"CallableMetric({self.name}, task={self.task!r})"

    def result(self) -> float:
        if not self.batches:
            return math.nan
        prob, true, xp = self.collected()
        if self.task == "multiclass":
            true = _labels(true, xp)
        y_pred, y_true = to_numpy(prob), to_numpy(true)
        if y_pred.ndim == 2 and y_pred.shape[1] == 1:
            y_pred = y_pred[:, 0]
        if y_true.ndim == 2 and y_true.shape[1] == 1:
            y_true = y_true[:, 0]
        return float(self.function(y_true, y_pred))


METRICS: dict[str, type[Metric]] = {
    "accuracy": Accuracy,
    "precision": Precision,
    "recall": Recall,
    "f1": F1,
    "auc": AUC,
    "mae": MeanAbsoluteError,
    "mse": MeanSquaredError,
}


def get_metric(metric: str | Callable[[Any, Any], float] | Metric, task: str) -> Metric:
    """A fresh accumulator for ``metric``: a name of :data:`METRICS`, a callable, or a :class:`Metric`.

    Raises
    ------
    ValueError
        For an unknown name (listing the valid ones), an unknown ``task``, or
        a classification metric asked of a regression task.
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        return lookup("metric", METRICS, metric)(task)
    if callable(metric):
        return CallableMetric(metric, task)
    raise ValueError(
        f"a metric must be a name of {list(METRICS)} or a callable f(y_true, y_pred), got {metric!r}"
    )

"""Per-epoch metric accumulators against scikit-learn on the same predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm
from xpnet.metrics import MeanSquaredError, get_metric

import xpnet as xn

RNG = np.random.default_rng(5)
N, K = 53, 4
BIN_PROB = RNG.random(N)
BIN_TRUE = (RNG.random(N) < 0.4).astype(np.float64)
LOGITS = RNG.normal(0.0, 1.5, size=(N, K))
MC_PROB = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
MC_LABELS = RNG.integers(0, K, size=N)
ML_PROB = RNG.random((N, 3))
ML_TRUE = (RNG.random((N, 3)) < 0.5).astype(np.float64)
SPLITS = (7, 20, 41)  # batches of unequal size, as the last batch of an epoch


def _accumulate(metric, task, prob, true, backend, f64):
    """The metric fed batch by batch on the backend; labels stay integers."""
    acc = get_metric(metric, task)
    for p, t in zip(np.split(prob, SPLITS), np.split(true, SPLITS), strict=True):
        acc.update(f64(p), backend.asarray(t) if t.dtype.kind == "i" else f64(t))
    return acc.result()


SKLEARN = {
    "precision": skm.precision_score,
    "recall": skm.recall_score,
    "f1": skm.f1_score,
}


@pytest.mark.parametrize("name", list(SKLEARN))
@pytest.mark.parametrize("shape", ["flat", "column"])
def test_binary_scores_match_sklearn(backend, f64, name, shape):
    prob = BIN_PROB if shape == "flat" else BIN_PROB[:, None]
    got = _accumulate(name, "binary", prob, BIN_TRUE, backend, f64)
    expected = SKLEARN[name](BIN_TRUE, BIN_PROB > 0.5, zero_division=0)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", list(SKLEARN))
@pytest.mark.parametrize("targets", ["labels", "one_hot"])
def test_multiclass_scores_are_sklearn_macro(backend, f64, name, targets):
    true = MC_LABELS if targets == "labels" else np.eye(K)[MC_LABELS]
    got = _accumulate(name, "multiclass", MC_PROB, true, backend, f64)
    expected = SKLEARN[name](MC_LABELS, MC_PROB.argmax(axis=1), average="macro", zero_division=0)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", list(SKLEARN))
def test_a_class_never_predicted_scores_zero_as_sklearn(backend, f64, name):
    prob = MC_PROB.copy()
    prob[:, 2] = 0.0  # class 2 is in the targets but never predicted
    prob /= prob.sum(axis=1, keepdims=True)
    got = _accumulate(name, "multiclass", prob, MC_LABELS, backend, f64)
    expected = SKLEARN[name](MC_LABELS, prob.argmax(axis=1), average="macro", zero_division=0)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", list(SKLEARN))
def test_a_class_absent_from_targets_and_predictions_is_left_out_as_sklearn(backend, f64, name):
    keep = MC_LABELS != 3
    prob, labels = MC_PROB[keep].copy(), MC_LABELS[keep]
    prob[:, 3] = 0.0
    got = _accumulate(name, "multiclass", prob, labels, backend, f64)
    expected = SKLEARN[name](labels, prob.argmax(axis=1), average="macro", zero_division=0)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", list(SKLEARN))
def test_binary_without_predicted_positives_scores_zero_division_zero(backend, f64, name):
    got = _accumulate(name, "binary", BIN_PROB * 0.4, BIN_TRUE, backend, f64)
    assert got == SKLEARN[name](BIN_TRUE, BIN_PROB * 0.4 > 0.5, zero_division=0) == 0.0


@pytest.mark.parametrize("name", list(SKLEARN))
def test_several_binary_labels_are_sklearn_multilabel_macro(backend, f64, name):
    got = _accumulate(name, "binary", ML_PROB, ML_TRUE, backend, f64)
    expected = SKLEARN[name](ML_TRUE, ML_PROB > 0.5, average="macro", zero_division=0)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_binary_auc_matches_sklearn(backend, f64, ties):
    prob = np.round(BIN_PROB, 1) if ties else BIN_PROB
    got = _accumulate("auc", "binary", prob[:, None], BIN_TRUE, backend, f64)
    assert got == pytest.approx(skm.roc_auc_score(BIN_TRUE, prob), rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_multiclass_auc_is_sklearn_one_vs_rest_macro(backend, f64, ties):
    # With ties: every row is one of five probability vectors, so scores repeat.
    prob = MC_PROB[RNG.integers(0, 5, size=N)] if ties else MC_PROB
    got = _accumulate("auc", "multiclass", prob, MC_LABELS, backend, f64)
    expected = skm.roc_auc_score(MC_LABELS, prob, multi_class="ovr", average="macro")
    assert got == pytest.approx(expected, rel=1e-12)


def test_multilabel_auc_is_sklearn_macro(backend, f64):
    got = _accumulate("auc", "binary", ML_PROB, ML_TRUE, backend, f64)
    assert got == pytest.approx(skm.roc_auc_score(ML_TRUE, ML_PROB, average="macro"), rel=1e-12)


def test_auc_with_one_class_present_is_nan(backend, f64):
    # As scikit-learn for a binary task (it warns); for multi-class it raises, but a
    # per-epoch log gets NaN rather than ending fit.
    assert math.isnan(_accumulate("auc", "binary", BIN_PROB, np.ones(N), backend, f64))
    with pytest.warns(skm._ranking.UndefinedMetricWarning, match="Only one class"):
        assert math.isnan(skm.roc_auc_score(np.ones(N), BIN_PROB))
    labels = np.where(MC_LABELS == 1, 0, MC_LABELS)
    assert math.isnan(_accumulate("auc", "multiclass", MC_PROB, labels, backend, f64))


def test_accuracy_matches_sklearn(backend, f64):
    got = _accumulate("accuracy", "multiclass", MC_PROB, MC_LABELS, backend, f64)
    assert got == pytest.approx(skm.accuracy_score(MC_LABELS, MC_PROB.argmax(axis=1)), rel=1e-12)
    got = _accumulate("accuracy", "binary", BIN_PROB, BIN_TRUE, backend, f64)
    assert got == pytest.approx(skm.accuracy_score(BIN_TRUE, BIN_PROB > 0.5), rel=1e-12)


@pytest.mark.parametrize(
    ("name", "reference"), [("mae", skm.mean_absolute_error), ("mse", skm.mean_squared_error)]
)
def test_regression_errors_match_sklearn(backend, f64, name, reference):
    pred, true = RNG.normal(size=(N, 2)), RNG.normal(size=(N, 2))
    got = _accumulate(name, "regression", pred, true, backend, f64)
    assert got == pytest.approx(reference(true, pred), rel=1e-12)
    got = _accumulate(name, "regression", pred[:, :1], true[:, 0], backend, f64)
    assert got == pytest.approx(reference(true[:, 0], pred[:, 0]), rel=1e-12)
    got = _accumulate(name, "multiclass", MC_PROB, MC_LABELS, backend, f64)
    assert got == pytest.approx(reference(np.eye(K)[MC_LABELS], MC_PROB), rel=1e-12)


def test_a_callable_gets_numpy_labels_and_probabilities(backend, f64):
    seen = []

    def macro_auc(y_true, y_pred):
        seen.append((type(y_true), y_true.shape, type(y_pred), y_pred.shape))
        return skm.roc_auc_score(y_true, y_pred, multi_class="ovr")

    acc = get_metric(macro_auc, "multiclass")
    assert acc.name == "macro_auc"
    for p, t in zip(np.split(MC_PROB, SPLITS), np.split(np.eye(K)[MC_LABELS], SPLITS), strict=True):
        acc.update(f64(p), f64(t))
    assert acc.result() == pytest.approx(skm.roc_auc_score(MC_LABELS, MC_PROB, multi_class="ovr"), rel=1e-14)
    assert seen == [(np.ndarray, (N,), np.ndarray, (N, K))]

    def ratio(y_true, y_pred):
        return float(np.mean(y_true) / np.mean(y_pred))

    got = _accumulate(ratio, "binary", BIN_PROB[:, None], BIN_TRUE, backend, f64)
    assert got == pytest.approx(BIN_TRUE.mean() / BIN_PROB.mean(), rel=1e-12)


def test_reset_starts_a_new_epoch(backend, f64):
    for name in ("precision", "auc", "mae", "accuracy"):
        acc = get_metric(name, "binary")
        acc.update(f64(1.0 - BIN_PROB), f64(BIN_TRUE))
        acc.reset()
        acc.update(f64(BIN_PROB), f64(BIN_TRUE))
        assert acc.result() == pytest.approx(_accumulate(name, "binary", BIN_PROB, BIN_TRUE, backend, f64))


@pytest.mark.skip_backends("numpy", "array_api_strict", "jax", reason="torch's meta tensors prove it")
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_update_never_reads_the_device(backend, task):
    # Meta tensors have shapes but no data: any read of a value raises.
    torch = pytest.importorskip("torch")
    prob = torch.empty((N, K), dtype=torch.float64, device="meta")
    true = torch.empty((N,), dtype=torch.int64, device="meta") if task == "multiclass" else prob
    for name in ("precision", "recall", "f1", "auc", "mae", "accuracy"):
        acc = get_metric(name, task)
        acc.update(prob, true)
        acc.update(prob, true)
        with pytest.raises(RuntimeError):
            acc.result()


def test_bad_metric_requests_are_refused():
    with pytest.raises(ValueError, match="unknown metric 'roc'.*precision"):
        get_metric("roc", "binary")
    with pytest.raises(ValueError, match="'auc' metric needs a classification task"):
        get_metric("auc", "regression")
    with pytest.raises(ValueError, match="task must be one of"):
        get_metric("mae", "ranking")
    with pytest.raises(ValueError, match="a metric must be a name"):
        get_metric(3, "binary")
    assert get_metric("F1", "multiclass").name == "f1"
    assert isinstance(get_metric("mse", "regression"), MeanSquaredError)
    assert xn.get_metric is get_metric

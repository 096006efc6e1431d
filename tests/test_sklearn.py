"""scikit-learn estimators: the library's own estimator checks, and use in its tools."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_breast_cancer, load_iris, make_regression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from xpnet.sklearn import XPNetClassifier, XPNetRegressor


@parametrize_with_checks(
    [
        XPNetClassifier(hidden_layer_sizes=(16,), epochs=60, learning_rate=0.01, backend="numpy"),
        XPNetRegressor(hidden_layer_sizes=(16,), epochs=60, learning_rate=0.01, backend="numpy"),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_classifier_in_a_pipeline_with_cross_validation(backend):
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(
        StandardScaler(),
        XPNetClassifier(
            hidden_layer_sizes=(16,),
            epochs=60,
            learning_rate=0.01,
            backend=backend.name,
            device=backend.device_spec,
            random_state=0,
        ),
    )
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.mean() > 0.9


def test_binary_probabilities_and_string_labels(backend):
    X, y = load_breast_cancer(return_X_y=True)
    labels = np.where(y == 1, "benign", "malignant")
    model = make_pipeline(
        StandardScaler(),
        XPNetClassifier(
            hidden_layer_sizes=(8,),
            epochs=20,
            backend=backend.name,
            device=backend.device_spec,
            random_state=0,
        ),
    )
    model.fit(X, labels)
    prob = model.predict_proba(X)
    assert prob.shape == (len(X), 2)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0)
    assert set(model.predict(X)) <= {"benign", "malignant"}
    assert model.score(X, labels) > 0.95


def test_grid_search_over_xpnet_parameters():
    X, y = load_iris(return_X_y=True)
    search = GridSearchCV(
        XPNetClassifier(epochs=30, backend="numpy", random_state=0),
        {"hidden_layer_sizes": [(4,), (16,)], "learning_rate": [0.001, 0.01]},
        cv=2,
    )
    search.fit(StandardScaler().fit_transform(X), y)
    assert set(search.best_params_) == {"hidden_layer_sizes", "learning_rate"}
    assert search.best_estimator_.get_params()["epochs"] == 30


def test_regressor_multi_output_and_pandas():
    pd = pytest.importorskip("pandas")
    X, y = make_regression(n_samples=120, n_features=4, n_targets=2, noise=0.1, random_state=0)
    y = y / y.std(axis=0)
    frame = pd.DataFrame(X, columns=list("abcd"))
    model = XPNetRegressor(
        hidden_layer_sizes=(32,), epochs=150, learning_rate=0.01, random_state=0, backend="numpy"
    )
    model.fit(frame, y)
    assert model.predict(frame).shape == (120, 2)
    assert model.score(frame, y) > 0.9
    assert list(model.feature_names_in_) == list("abcd")


def test_same_random_state_same_model():
    X, y = load_iris(return_X_y=True)
    a = XPNetClassifier(epochs=5, random_state=3, backend="numpy").fit(X, y)
    b = XPNetClassifier(epochs=5, random_state=3, backend="numpy").fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_curve_ == b.loss_curve_ and a.n_iter_ == 5


def test_alpha_class_weight_and_sample_weight_reach_the_network():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.where(X[:, 0] > 0.3, "spam", "ham")
    common = {"hidden_layer_sizes": (5,), "epochs": 3, "batch_size": 8, "backend": "numpy", "random_state": 0}
    clf = XPNetClassifier(alpha=0.4, class_weight={"spam": 3.0}, **common).fit(X, y)
    assert clf.network_.optimizer.weight_decay == pytest.approx(0.4 / 8)
    ref = XPNetClassifier(weight_decay=0.05, **common)
    ref.fit(X, y, sample_weight=np.where(y == "spam", 3.0, 1.0))
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X), rtol=1e-12)
    plain = XPNetRegressor(**common).fit(X, X[:, 0])
    ones = XPNetRegressor(**common).fit(X, X[:, 0], sample_weight=np.ones(40))
    np.testing.assert_allclose(plain.predict(X), ones.predict(X), rtol=1e-12)
    with pytest.raises(ValueError, match="not in y's classes"):
        XPNetClassifier(class_weight={"eggs": 2.0}, **common).fit(X, y)
    with pytest.raises(ValueError, match="alpha"):
        XPNetClassifier(alpha=-1, **common).fit(X, y)

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


def _iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_partial_fit_needs_classes_first_and_trains_one_epoch_per_call(backend):
    X, y = _iris()
    model = XPNetClassifier(
        hidden_layer_sizes=(16,), learning_rate=0.01, backend=backend.name, device=backend.device_spec
    )
    with pytest.raises(ValueError, match="classes must be passed"):
        model.partial_fit(X[:10], y[:10])
    model.partial_fit(X[:10], y[:10], classes=[0, 1, 2])  # the first rows hold class 0 only
    assert list(model.classes_) == [0, 1, 2] and model.n_iter_ == 1
    network = model.network_
    for _ in range(30):
        model.partial_fit(X, y)
    assert model.network_ is network and model.n_iter_ == 31 and model.score(X, y) > 0.9


def test_warm_start_continues_the_same_network():
    X, y = _iris()
    model = XPNetClassifier(epochs=3, warm_start=True, tol=0.0, random_state=0, backend="numpy")
    model.fit(X, y)
    first = model.network_
    model.fit(X, y)
    assert model.network_ is first and model.n_iter_ == 6 and len(model.loss_curve_) == 6
    cold = XPNetClassifier(epochs=3, tol=0.0, random_state=0, backend="numpy").fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 3


def test_training_loss_plateau_stops_after_n_iter_no_change():
    X, y = _iris()
    model = XPNetClassifier(epochs=100, tol=10.0, n_iter_no_change=4, random_state=0, backend="numpy")
    model.fit(X, y)  # no epoch improves the loss by 10: the fifth epoch ends training
    assert model.n_iter_ == 5
    assert XPNetClassifier(epochs=7, tol=0.0, random_state=0, backend="numpy").fit(X, y).n_iter_ == 7


def test_early_stopping_holds_back_validation_fraction(backend):
    X, y = _iris()
    model = XPNetClassifier(
        epochs=300,
        learning_rate=0.05,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        random_state=0,
        backend=backend.name,
        device=backend.device_spec,
    )
    model.fit(X, y)
    assert model.n_iter_ < 300 and len(model.validation_loss_curve_) == model.n_iter_
    assert model.best_validation_loss_ == min(model.validation_loss_curve_)
    with pytest.raises(ValueError, match="validation_fraction"):
        model.set_params(validation_fraction=1.5).fit(X, y)


def test_regressor_scales_its_target(backend):
    X, y = make_regression(n_samples=200, n_features=3, noise=1.0, random_state=0)
    y = 1e6 + 1e4 * y / y.std()  # far from the unit scale a network trains well on
    model = XPNetRegressor(
        hidden_layer_sizes=(16,),
        epochs=60,
        learning_rate=0.01,
        random_state=0,
        backend=backend.name,
        device=backend.device_spec,
    )
    model.fit(X, y)
    scaling = model.network_.metadata["target_scaling"]
    assert scaling["mean"] == [pytest.approx(y.mean())] and scaling["scale"] == [pytest.approx(y.std())]
    assert model.score(X, y) > 0.95


ARRAY_API_SCRIPT = """
import numpy as np, sklearn, torch
from sklearn.datasets import load_iris
from xpnet.sklearn import XPNetClassifier, XPNetRegressor
sklearn.set_config(array_api_dispatch=True)
X, y = load_iris(return_X_y=True)
X = (X - X.mean(axis=0)) / X.std(axis=0)
Xt, yt = torch.asarray(X), torch.asarray(y)
model = XPNetClassifier(hidden_layer_sizes=(8,), epochs=20, random_state=0, backend="numpy").fit(Xt, yt)
prob = model.predict_proba(Xt)
assert isinstance(prob, torch.Tensor) and prob.shape == (150, 3), type(prob)
assert isinstance(model.predict(Xt), torch.Tensor)
reg = XPNetRegressor(hidden_layer_sizes=(8,), epochs=5, random_state=0, backend="numpy").fit(Xt, Xt[:, 0])
assert isinstance(reg.predict(Xt), torch.Tensor)
print("ok")
"""


def test_any_backend_arrays_under_array_api_dispatch():
    pytest.importorskip("torch")
    import os
    import subprocess
    import sys

    env = {**os.environ, "SCIPY_ARRAY_API": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", ARRAY_API_SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


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


def test_partial_fit_weights_rows_like_repeating_them():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 3))
    y = 50.0 + 10.0 * X[:, 0] + rng.normal(size=30)
    common = {"hidden_layer_sizes": (4,), "batch_size": 100, "backend": "numpy", "random_state": 0}
    rows = np.sort(np.r_[np.arange(10), np.arange(30)])  # rows 0..9 twice
    weighted = XPNetRegressor(**common).partial_fit(X, y, sample_weight=np.r_[np.full(10, 2.0), np.ones(20)])
    repeated = XPNetRegressor(**common).partial_fit(X[rows], y[rows])
    # Rows 0..9 twice: equal weights give the same target scaling and the same first step.
    for key in ("mean", "scale"):
        np.testing.assert_allclose(
            weighted.network_.metadata["target_scaling"][key],
            repeated.network_.metadata["target_scaling"][key],
            rtol=1e-12,
        )
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-9)
    labels = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="balanced"):
        XPNetClassifier(class_weight="balanced", backend="numpy").partial_fit(X, labels, classes=[0, 1])
    stopped = XPNetClassifier(early_stopping=True, epochs=5, **common)
    stopped.fit(X, labels, sample_weight=np.ones(30))
    assert stopped.n_iter_ <= 5
    with pytest.raises(ValueError, match="sample_weight"):
        stopped.fit(X, labels, sample_weight=np.ones(29))


def test_estimators_encode_dataframes_with_text_columns_and_gaps():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    town = rng.choice(["north", "south"], size=200)
    frame = pd.DataFrame({"x": x, "town": town})
    frame.loc[5, "x"] = np.nan
    labels = np.where(np.nan_to_num(x) + (town == "north") > 0.5, "yes", "no")
    clf = XPNetClassifier(hidden_layer_sizes=(16,), epochs=30, learning_rate=0.01, random_state=0)
    clf.fit(frame, labels)
    assert clf.encoder_.names == ["x", "town"] and clf.score(frame, labels) > 0.85
    reg = XPNetRegressor(hidden_layer_sizes=(16,), epochs=30, learning_rate=0.01, random_state=0)
    reg.fit(frame, 3 * np.nan_to_num(x) + (town == "north"))
    assert reg.predict(frame.iloc[:3]).shape == (3,)
    with pytest.raises(ValueError, match="must be a DataFrame with the columns"):
        clf.predict(np.zeros((2, 2)))
    numeric = XPNetRegressor(epochs=1, random_state=0).fit(frame[["x"]].fillna(0.0), x)
    assert not hasattr(numeric, "encoder_")

"""scikit-learn estimators: ``XPNetClassifier`` and ``XPNetRegressor``.

They follow scikit-learn's conventions (``fit`` / ``predict`` /
``predict_proba`` / ``score``, ``get_params`` / ``set_params``, NumPy
results) so they work in ``Pipeline``, ``GridSearchCV`` and
``cross_val_score``, and they train an xpnet :class:`~xpnet.Network` on any
backend. scikit-learn itself is an optional dependency.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .backend import to_numpy
from .nn.layers import Dense
from .optim.optimizers import get_optimizer
from .train.network import Network


def _seed(random_state: Any) -> int | None:
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return None if random_state is None else int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    raise ValueError(f"random_state must be None, an int or a NumPy generator, got {random_state!r}")


class _XPNetEstimator(BaseEstimator):
    """Shared parameters and training of the two estimators."""

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (100,),
        activation: str = "relu",
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        batch_size: int = 32,
        epochs: int = 200,
        weight_decay: float = 0.0,
        alpha: float = 0.0,
        class_weight: Any = None,
        backend: str | None = None,
        device: Any = None,
        dtype: str = "float64",
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.weight_decay = weight_decay
        self.alpha = alpha
        self.class_weight = class_weight
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def _train(
        self,
        X: np.ndarray,
        y: np.ndarray,
        output: Dense,
        loss: str,
        sample_weight: Any = None,
        class_weight: Any = None,
    ) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")
        batch_size = min(int(self.batch_size), len(X))
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, (int, np.integer)) else tuple(sizes)
        layers = [Dense(int(size), self.activation) for size in sizes] + [output]
        self.network_ = Network(
            layers,
            loss=loss,
            optimizer=get_optimizer(
                self.optimizer,
                learning_rate=self.learning_rate,
                weight_decay=self.weight_decay + self.alpha / batch_size,
            ),
            backend=self.backend,
            device=self.device,
            dtype=self.dtype,
            seed=_seed(self.random_state),
        )
        history = self.network_.fit(
            X,
            y,
            epochs=self.epochs,
            batch_size=batch_size,
            sample_weight=sample_weight,
            class_weight=class_weight,
            verbose=self.verbose,
        )
        self.loss_curve_ = list(history.history.get("loss", []))
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else float("nan")
        self.n_iter_ = len(self.loss_curve_)

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return to_numpy(self.network_.predict(X)).astype(np.float64)


class XPNetClassifier(ClassifierMixin, _XPNetEstimator):
    """Multi-layer perceptron classifier trained by xpnet (cross-entropy loss).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
        Units of each hidden layer.
    activation : str
        Hidden activation (any xpnet activation name).
    optimizer : {"adam", "adamw", "sgd", "rmsprop"}
    learning_rate, batch_size, epochs, weight_decay
        Training settings (``batch_size`` is capped at the number of samples).
    alpha : float
        L2 penalty as scikit-learn's MLP: ``alpha / 2 * ||W||^2 / batch_size``
        added to each batch's loss, i.e. ``weight_decay += alpha / batch_size``
        (here on biases too, where scikit-learn spares them).
    class_weight : dict, "balanced" or None
        ``{class label: weight}`` (labels as in ``y``) or ``"balanced"``,
        multiplied into the sample weights (classifier only).
    backend, device, dtype
        Where and in what precision to train (see :class:`xpnet.Network`).
    random_state : int, RandomState or None
        Seed of initial weights and shuffling.
    verbose : int
        Passed to ``Network.fit``.

    Attributes
    ----------
    classes_ : ndarray
        The class labels seen in ``fit``.
    network_ : Network
        The trained network.
    loss_curve_ : list of float
        Training loss per epoch.
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> XPNetClassifier:
        """Train on features ``X`` and class labels ``y`` (rows weighted by ``sample_weight``)."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"XPNetClassifier needs samples of at least 2 classes; got 1 class ({self.classes_[0]!r})"
            )
        weights = self._class_weight()
        if len(self.classes_) == 2:
            output, loss, target = Dense(1, "sigmoid"), "binary_crossentropy", codes.astype(np.float64)
        else:
            output, loss = Dense(len(self.classes_), "softmax"), "categorical_crossentropy"
            target = codes.astype(np.int64)
        self._train(X, target, output, loss, sample_weight, weights)
        return self

    def _class_weight(self) -> Any:
        """``class_weight`` keyed by class position (``classes_`` order), as the network sees labels."""
        if self.class_weight is None or isinstance(self.class_weight, str):
            return self.class_weight
        if not isinstance(self.class_weight, dict):
            raise ValueError(f"class_weight must be a dict, 'balanced' or None, got {self.class_weight!r}")
        unknown = [k for k in self.class_weight if k not in set(self.classes_.tolist())]
        if unknown:
            raise ValueError(f"class_weight names labels {unknown} that are not in y's classes")
        return {int(np.flatnonzero(self.classes_ == k)[0]): w for k, w in self.class_weight.items()}

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one column per class in ``classes_`` order."""
        prob = self._outputs(X)
        return np.hstack([1.0 - prob, prob]) if prob.shape[1] == 1 else prob

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample."""
        prob = self.predict_proba(X)
        return self.classes_[np.argmax(prob, axis=1)]


class XPNetRegressor(RegressorMixin, _XPNetEstimator):
    """Multi-layer perceptron regressor trained by xpnet (mean squared error).

    Parameters are those of :class:`XPNetClassifier`. ``y`` may be
    ``(samples,)`` or ``(samples, outputs)``; predictions have the same form.
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> XPNetRegressor:
        """Train on features ``X`` and targets ``y`` (rows weighted by ``sample_weight``)."""
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        if self.class_weight is not None:
            raise ValueError("class_weight applies to XPNetClassifier, not to a regressor")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        y = np.asarray(y, dtype=np.float64)
        self._single_output = y.ndim == 1
        width = 1 if y.ndim == 1 else y.shape[1]
        self._train(X, y.reshape(len(y), width), Dense(width), "mse", sample_weight)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets."""
        out = self._outputs(X)
        return out.ravel() if self._single_output else out

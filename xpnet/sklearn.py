"""scikit-learn estimators: ``XPNetClassifier`` and ``XPNetRegressor``.

They follow scikit-learn's conventions (``fit`` / ``predict`` /
``predict_proba`` / ``score``, ``get_params`` / ``set_params``, NumPy
results) so they work in ``Pipeline``, ``GridSearchCV`` and
``cross_val_score``, and they train an xpnet :class:`~xpnet.Network` on any
backend. scikit-learn itself is an optional dependency.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .backend import to_numpy
from .data.datasets import train_test_split
from .data.encoders import default_encoder
from .data.tabular import is_dataframe, needs_encoding
from .nn.layers import Dense
from .optim.optimizers import get_optimizer
from .train.callbacks import EarlyStopping
from .train.network import Network


def _seed(random_state: Any) -> int | None:
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return None if random_state is None else int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    raise ValueError(f"random_state must be None, an int or a NumPy generator, got {random_state!r}")


def _on_host(X: Any) -> tuple[Any, Any]:
    """``X`` as NumPy if it is another library's array, and a function returning results there.

    Under ``sklearn.set_config(array_api_dispatch=True)`` results go back to the
    namespace and device of the input (numeric results only); otherwise they stay NumPy.
    """
    from sklearn import get_config

    if isinstance(X, np.ndarray) or not array_api_compat.is_array_api_obj(X):
        return X, lambda result: result
    host = to_numpy(X)
    if not get_config().get("array_api_dispatch", False):
        return host, lambda result: result
    xp, device = array_api_compat.array_namespace(X), array_api_compat.device(X)

    def back(result: np.ndarray) -> Any:
        if result.dtype.kind not in "biuf":
            return result
        return xp.asarray(np.ascontiguousarray(result), device=device)

    return host, back


def _weights(sample_weight: Any, X: np.ndarray) -> np.ndarray | None:
    """``sample_weight`` checked against ``X`` as a float64 NumPy array, or None."""
    if sample_weight is None:
        return None
    return _check_sample_weight(_on_host(sample_weight)[0], X, dtype=np.float64)


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
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        warm_start: bool = False,
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
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    def _network(self, output: Dense, loss: str, batch_size: int) -> Network:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, (int, np.integer)) else tuple(sizes)
        layers = [Dense(int(size), self.activation) for size in sizes] + [output]
        return Network(
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

    def _encode(self, X: Any, reset: bool) -> Any:
        """A DataFrame with text, categorical or boolean columns or gaps as encoded numbers.

        The first ``fit`` fits :func:`~xpnet.data.encoders.default_encoder` on
        it (above 1,000 rows robust scaling, smooth clipping, quantile bins;
        one-hot), kept as ``encoder_``; later calls encode with it. Other
        inputs pass unchanged.
        """
        if reset:
            self.__dict__.pop("encoder_", None)
            if is_dataframe(X) and (needs_encoding(X) or bool(X.isna().to_numpy().any())):
                self.encoder_ = default_encoder(len(X)).fit(X)
        encoder = getattr(self, "encoder_", None)
        if encoder is None:
            return X
        if not is_dataframe(X):
            raise ValueError(f"X must be a DataFrame with the columns {encoder.names}, as in fit")
        return encoder.transform(X)

    def _check_stopping(self) -> None:
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        if isinstance(self.n_iter_no_change, bool) or int(self.n_iter_no_change) < 1:
            raise ValueError(f"n_iter_no_change must be a positive integer, got {self.n_iter_no_change!r}")
        if self.tol < 0:
            raise ValueError(f"tol must be >= 0, got {self.tol!r}")

    def _train(
        self,
        X: np.ndarray,
        y: np.ndarray,
        output: Dense,
        loss: str,
        epochs: int,
        sample_weight: np.ndarray | None = None,
        class_weight: Any = None,
    ) -> None:
        """Train ``network_`` (a new one unless warm starting) on ``(X, y)``, rows weighted.

        Early stopping holds back rows with their weights; the held-back loss is unweighted.
        """
        if not (self.warm_start and hasattr(self, "network_")):
            self.network_ = self._network(output, loss, min(int(self.batch_size), len(X)))
            self.loss_curve_: list[float] = []
        callbacks: list[Any] = []
        validation = None
        if epochs > 1:  # partial_fit (one epoch) never stops early
            self._check_stopping()
            split = self.early_stopping and len(X) * self.validation_fraction >= 1 and len(X) >= 2
            if split:
                kept, held = self._validation_rows(y)
                validation = (X[held], y[held])
                X, y = X[kept], y[kept]
                sample_weight = None if sample_weight is None else sample_weight[kept]
            callbacks.append(
                EarlyStopping(
                    monitor="val_loss" if split else "loss",
                    patience=int(self.n_iter_no_change),
                    min_delta=float(self.tol),
                    restore_best_weights=bool(split),
                )
            )
        history = self.network_.fit(
            X,
            y,
            epochs=epochs,
            batch_size=min(int(self.batch_size), len(X)),
            validation_data=validation,
            sample_weight=sample_weight,
            class_weight=class_weight,
            callbacks=callbacks,
            verbose=self.verbose,
            preprocess="auto",
        )
        self.loss_curve_ += list(history.history.get("loss", []))
        if validation is not None:
            self.validation_loss_curve_ = list(history.history.get("val_loss", []))
            self.best_validation_loss_ = min(self.validation_loss_curve_)
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else float("nan")
        self.n_iter_ = len(self.loss_curve_)

    def _validation_rows(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows kept and held back: the last ``validation_fraction`` of a seeded (stratified) shuffle."""
        stratify = isinstance(self, ClassifierMixin)
        rows = np.arange(len(y))
        kept, held, _, _ = train_test_split(
            rows,
            np.asarray(y) if stratify else rows,
            self.validation_fraction,
            seed=_seed(self.random_state),
            stratify=stratify and len(np.unique(y)) * 2 <= len(y),
        )
        return kept, held

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "network_")
        X = validate_data(self, self._encode(X, reset=False), reset=False, dtype=np.float64)
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
    early_stopping, validation_fraction, n_iter_no_change, tol
        As scikit-learn's MLP: training stops when the loss (with
        ``early_stopping``, that of a held-back ``validation_fraction`` of the
        rows, unweighted) has not improved by ``tol`` in ``n_iter_no_change``
        epochs; early stopping keeps the best epoch's weights.
    warm_start : bool
        ``fit`` continues training the network it fitted before.
    backend, device, dtype
        Where and in what precision to train (see :class:`xpnet.Network`):
        ``dtype`` is ``"float64"`` (the default), ``"float32"``,
        ``"mixed_bfloat16"`` or ``"mixed_float16"``.
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
    encoder_ : TabularEncoder or RobustTabularEncoder
        Only after ``fit`` on a DataFrame with text, categorical or boolean
        columns or gaps: how its columns become numbers (see
        :func:`xpnet.data.encoders.default_encoder`); ``predict`` then takes
        such DataFrames too.
    loss_curve_ : list of float
        Training loss per epoch.
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> XPNetClassifier:
        """Train on ``X`` and labels ``y``, rows weighted by ``sample_weight`` (up to ``epochs`` passes)."""
        X, _ = _on_host(X)
        y, _ = _on_host(y)
        first = not (self.warm_start and hasattr(self, "network_"))
        X, y = validate_data(self, self._encode(X, first), y, dtype=np.float64, reset=first)
        sample_weight = _weights(sample_weight, X)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(y)
        self._fit_codes(X, y, int(self.epochs), sample_weight)
        return self

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None) -> XPNetClassifier:
        """One pass over ``(X, y)`` (rows weighted by ``sample_weight``); the first call needs every
        class label in ``classes``."""
        X, _ = _on_host(X)
        y, _ = _on_host(y)
        first = not hasattr(self, "network_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if isinstance(self.class_weight, str):
            raise ValueError(
                "class_weight='balanced' is computed from all of y, which partial_fit never sees; "
                "pass a dict {label: weight} instead"
            )
        X, y = validate_data(self, self._encode(X, first), y, dtype=np.float64, reset=first)
        sample_weight = _weights(sample_weight, X)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(_on_host(classes)[0])
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes {np.unique(classes)} differ from those of the first call {self.classes_}"
            )
        warm, self.warm_start = self.warm_start, True
        try:
            self._fit_codes(X, y, 1, sample_weight)
        finally:
            self.warm_start = warm
        return self

    def _fit_codes(self, X: np.ndarray, y: np.ndarray, epochs: int, sample_weight: Any) -> None:
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"y has labels {unknown.tolist()} not in classes_ {self.classes_.tolist()}")
        if len(self.classes_) < 2:
            raise ValueError(
                f"XPNetClassifier needs samples of at least 2 classes; got 1 class ({self.classes_[0]!r})"
            )
        codes = np.searchsorted(self.classes_, y)
        weights = self._class_weight()
        if len(self.classes_) == 2:
            output, loss, target = Dense(1, "sigmoid"), "binary_crossentropy", codes.astype(np.float64)
        else:
            output, loss = Dense(len(self.classes_), "softmax"), "categorical_crossentropy"
            target = codes.astype(np.int64)
        self._train(X, target, output, loss, epochs, sample_weight, weights)

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

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, one column per class in ``classes_`` order."""
        X, back = _on_host(X)
        prob = self._outputs(X)
        return back(np.hstack([1.0 - prob, prob]) if prob.shape[1] == 1 else prob)

    def predict(self, X: Any) -> Any:
        """The most probable class of each sample."""
        X, back = _on_host(X)
        prob = to_numpy(self.predict_proba(X))
        return back(self.classes_[np.argmax(prob, axis=1)])


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
        """Train on ``X`` and targets ``y``, rows weighted by ``sample_weight`` (up to ``epochs`` passes)."""
        reset = not (self.warm_start and hasattr(self, "network_"))
        self._fit(X, y, int(self.epochs), reset, sample_weight)
        return self

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> XPNetRegressor:
        """One pass over ``(X, y)`` (rows weighted by ``sample_weight``); the target scaling comes
        from the first call's ``y``."""
        warm, self.warm_start = self.warm_start, True
        try:
            self._fit(X, y, 1, not hasattr(self, "network_"), sample_weight)
        finally:
            self.warm_start = warm
        return self

    def _fit(self, X: Any, y: Any, epochs: int, reset: bool, sample_weight: Any) -> None:
        X, _ = _on_host(X)
        y, _ = _on_host(y)
        X = self._encode(X, reset)
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True, reset=reset)
        if self.class_weight is not None:
            raise ValueError("class_weight applies to XPNetClassifier, not to a regressor")
        sample_weight = _weights(sample_weight, X)
        y = np.asarray(y, dtype=np.float64)
        if reset:
            self._single_output = y.ndim == 1
        width = 1 if y.ndim == 1 else y.shape[1]
        # The network standardizes y (preprocess="auto") and answers in y's units.
        self._train(X, y.reshape(len(y), width), Dense(width), "mse", epochs, sample_weight)

    def predict(self, X: Any) -> Any:
        """Predicted targets."""
        X, back = _on_host(X)
        out = self._outputs(X)
        return back(out.ravel() if self._single_output else out)

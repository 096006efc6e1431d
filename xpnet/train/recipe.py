"""xpnet's default recipe for a table: :func:`tabular_model` trains what ``xpnet train`` trains.

Three regimes, by the number of training rows:

- at most :attr:`TabularRecipe.small_table` rows: a 5-fold ensemble of
  one-hidden-layer networks with a linear path, its weight decay chosen by
  the folds (:func:`~xpnet.kfold_ensemble`; features by
  :class:`~xpnet.data.TabularEncoder`). On a few hundred rows a held-back
  tenth is too few to stop on, and the folds judge every row.
- more rows: a small ensemble of wider networks (:class:`TabularRecipe`):
  numeric columns robustly scaled, smoothly clipped and given a
  piecewise-linear encoding, integer-coded columns (ids) also one-hot by
  their frequent values (:class:`~xpnet.data.RobustTabularEncoder`),
  AdamW with a linear warmup then a cosine decay over a fixed number of
  epochs, each member keeping its best epoch on its own held-back tenth; the
  members' outputs (logits) are averaged.
- ``fast=True``: one network of 100 ReLU units with a linear path, stopped on
  a held-back tenth (the default before this recipe).

The result is one :class:`~xpnet.Network` whose metadata holds the encoder,
the target's scaling and classes: ``predict`` takes a DataFrame with the
feature columns and answers in the target's units (regression) or with class
probabilities, before and after ``save`` / ``load``, on every backend.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.datasets import train_test_split
from ..data.encoders import LEVEL_ROWS, LEVELS, RobustTabularEncoder
from ..data.tabular import TargetEncoder, is_dataframe
from ..nn.layers import Activation, Dense, Dropout, Layer
from ..nn.losses import CategoricalCrossentropy, Huber, Loss
from ..nn.residual import Residual
from ..optim.optimizers import Adam, AdamW
from ..optim.schedules import cosine_decay, warmup
from .callbacks import Callback, EarlyStopping, LearningRateScheduler
from .ensemble import average_networks, kfold_ensemble
from .history import History
from .network import Network
from .progress import _tqdm_class


@dataclass(frozen=True)
class TabularRecipe:
    """Settings of :func:`tabular_model` (the defaults are ``xpnet train``'s).

    Attributes
    ----------
    hidden : tuple of int
        Hidden layer sizes of each ensemble member (ReLU), beside a linear
        path from the inputs to the output.
    members : int
        Networks in the ensemble, each with its own seed and held-back rows.
    epochs, warmup : int
        Each member trains ``epochs`` epochs: the learning rate rises
        linearly over the first ``warmup``, then follows half a cosine to 0;
        the epoch with the lowest held-back loss is kept.
    batch_size : int
    learning_rate, weight_decay : float
        AdamW's peak learning rate and (decoupled) weight decay.
    dropout : float
        Dropout rate after each hidden layer.
    label_smoothing : float
        For classification (softmax outputs, two classes included).
    huber : float or None
        For regression: the Huber loss with this ``delta`` on the
        standardized target (linear beyond ``delta`` standard deviations,
        closer to the absolute error); None trains on the squared error.
    bins : int
        Quantile bins of each numeric column's piecewise-linear encoding.
    clip : float
        Numeric columns are smoothly clipped into ``(-clip, clip)`` after
        robust scaling.
    levels, level_rows : int
        An integer-coded numeric column (an id written as a number) also has
        up to ``levels`` of its values one-hot encoded, each with at least
        ``level_rows`` training rows
        (:func:`~xpnet.data.encoders.integer_levels`; 0: none); a text column
        keeps up to ``levels`` categories, those beyond its 100 most frequent
        with at least ``level_rows`` rows.
    held_back : float
        Share of the training rows each member keeps back to choose its epoch.
    small_table : int
        Up to this many rows, the 5-fold ensemble of small networks instead.
    blas_threads : int or None
        Threads of NumPy's BLAS while training (through ``threadpoolctl``,
        where it is installed; None leaves the library's setting). These
        matrices are too small to share: on the 2-core machine at load 4 a
        10,000-row table trained in 38 s with one thread and in 5 min 19 s
        with two (docs/accuracy.md).
    """

    hidden: tuple[int, ...] = (256, 256)
    members: int = 3
    epochs: int = 100
    warmup: int = 5
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    dropout: float = 0.15
    label_smoothing: float = 0.1
    huber: float | None = 0.1
    bins: int = 16
    clip: float = 3.0
    levels: int = LEVELS
    level_rows: int = LEVEL_ROWS
    held_back: float = 0.1
    small_table: int = 1000
    blas_threads: int | None = 1


SMALL_HIDDEN = 100
"""Hidden ReLU units of the small networks (the k-fold ensemble's and ``fast``'s)."""
SMALL_SETTINGS: dict[str, Any] = {"epochs": 500, "batch_size": 32, "patience": 20, "lr": 1e-3}
"""Training of the small networks: Adam, stopped after 20 epochs without a lower held-back loss."""
FOLDS = 5
WEIGHT_DECAYS = (0.0, 0.01, 0.1)


def tabular_model(
    frame: Any,
    target: str,
    *,
    task: str = "auto",
    recipe: TabularRecipe | None = None,
    fast: bool = False,
    seed: int = 0,
    backend: Any = None,
    device: Any = None,
    dtype: str = "float32",
    class_weight: Any = None,
    verbose: int = 1,
    histories: list[History] | None = None,
) -> Network:
    """Train xpnet's default model for the table ``frame`` to predict its column ``target``.

    Parameters
    ----------
    frame : DataFrame
        The training rows: feature columns (numbers, text, categories,
        booleans, gaps) and the target column. Rows without a target value
        are refused (drop them first).
    target : str
        The column to predict.
    task : {"auto", "classification", "regression"}
        As :class:`~xpnet.data.TargetEncoder` decides it (``"auto"``).
    recipe : TabularRecipe, optional
        Settings of the ensemble for larger tables (default: ``TabularRecipe()``).
    fast : bool
        One small network stopped on a held-back tenth, whatever the size.
    seed : int
        Seeds the held-back rows, the folds and every network.
    backend, device, dtype
        Where the networks train (see :class:`~xpnet.Network`).
    class_weight : dict, "balanced" or None
        Keyed by class code (the position in the network's ``classes``).
    verbose : {0, 1}
        1: a progress bar on standard error (in a terminal), else a line per
        network; 0: silence.
    histories : list, optional
        Each trained network's :class:`~xpnet.History` is appended to it
        (for plotting; the returned network has a fresh one).

    Returns
    -------
    Network
        Trained; ``metadata`` holds ``feature_names``, ``encoder``,
        ``target_name``, ``task``, ``classes`` and, for regression,
        ``target_scaling``. ``predict(df)`` answers in the target's units,
        or with class probabilities.

    Examples
    --------
    >>> import pandas as pd
    >>> import xpnet as xn
    >>> frame = pd.DataFrame({"x": [0.0, 1, 2, 3, 4, 5] * 5, "town": list("abcabc") * 5})
    >>> frame["y"] = frame["x"] * 0.5 + (frame["town"] == "a")
    >>> net = xn.tabular_model(frame, "y", fast=True, verbose=0)
    >>> net.metadata["task"]
    'regression'
    """
    recipe = recipe if recipe is not None else TabularRecipe()
    if not is_dataframe(frame) or target not in frame.columns:
        columns = list(frame.columns) if is_dataframe(frame) else None
        raise ValueError(f"tabular_model needs a DataFrame with the column {target!r}; got columns {columns}")
    if frame.shape[1] < 2:
        raise ValueError(f"the table has only the target column {target!r} and no features")
    targets = TargetEncoder(task).fit(frame[target])
    if targets.task == "classification" and len(targets.classes) < 2:
        raise ValueError(f"the target {target!r} has a single class; nothing to learn")
    features = frame.drop(columns=[target])
    labels = _labels(targets, frame[target])
    options = {"backend": backend, "device": device, "dtype": dtype}
    kept = histories if histories is not None else []
    with blas_threads(recipe.blas_threads):
        if regime(len(labels), fast, recipe) == "single":
            net = _single(features, labels, targets, seed, options, class_weight, verbose, kept)
        elif regime(len(labels), fast, recipe) == "folds":
            net = _folds(features, labels, targets, seed, options, class_weight, verbose, kept)
        else:
            net = _ensemble(recipe, features, labels, targets, seed, options, class_weight, verbose, kept)
    net.metadata.update({"target_name": str(target), "task": targets.task, "classes": targets.classes})
    return net


def regime(rows: int, fast: bool = False, recipe: TabularRecipe | None = None) -> str:
    """What :func:`tabular_model` trains on ``rows`` rows: ``"single"``, ``"folds"`` or ``"ensemble"``."""
    if fast:
        return "single"
    return "folds" if rows <= (recipe or TabularRecipe()).small_table else "ensemble"


@contextmanager
def blas_threads(count: int | None) -> Iterator[None]:
    """Limit NumPy's BLAS to ``count`` threads inside the block (no-op for None or without threadpoolctl)."""
    if count is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=count, user_api="blas"):
        yield


def _labels(targets: TargetEncoder, column: Any) -> np.ndarray:
    if targets.task == "classification":
        return targets.transform(column)
    return column.to_numpy(dtype=np.float64)


def _head(targets: TargetEncoder, softmax_binary: bool = False) -> tuple[int, str | None]:
    """Output units and final activation for the target."""
    k = len(targets.classes)
    if targets.task == "regression":
        return 1, None
    if k == 2 and not softmax_binary:
        return 1, "sigmoid"
    return k, "softmax"


def _loss(activation: str | None, label_smoothing: float = 0.0, huber: float | None = None) -> str | Loss:
    if activation is None:
        return Huber(huber) if huber else "mse"
    if activation == "sigmoid":
        return "binary_crossentropy"
    return CategoricalCrossentropy(label_smoothing=label_smoothing) if label_smoothing else "cross_entropy"


def _small_network(targets: TargetEncoder, decay: float, seed: int, options: dict[str, Any]) -> Network:
    units, activation = _head(targets)
    block: list[Layer] = [Residual([Dense(SMALL_HIDDEN, "relu"), Dense(units)], shortcut="linear")]
    if activation is not None:
        block.append(Activation(activation))
    optimizer = Adam(SMALL_SETTINGS["lr"], weight_decay=decay)
    return Network(block, loss=_loss(activation), optimizer=optimizer, seed=seed, **options)


def _single(
    features: Any,
    labels: np.ndarray,
    targets: TargetEncoder,
    seed: int,
    options: dict[str, Any],
    class_weight: Any,
    verbose: int,
    histories: list[History],
) -> Network:
    classification = targets.task == "classification"
    kept, back, _, _ = train_test_split(
        np.arange(len(labels)), labels, 0.1, seed=seed + 1, stratify=classification
    )
    net = _small_network(targets, 0.0, seed, options)
    stopper = EarlyStopping(patience=SMALL_SETTINGS["patience"], restore_best_weights=True)
    bar = _Bar(verbose, 1, SMALL_SETTINGS["epochs"], targets, "one network, stopped on a held-back tenth")
    net.fit(
        features.iloc[kept],
        labels[kept],
        epochs=SMALL_SETTINGS["epochs"],
        batch_size=SMALL_SETTINGS["batch_size"],
        validation_data=(features.iloc[back], labels[back]),
        class_weight=class_weight,
        callbacks=[stopper, bar],
        verbose=0,
        preprocess="always",
    )
    bar.finish(stopper)
    histories.append(net.history)
    return net


def _folds(
    features: Any,
    labels: np.ndarray,
    targets: TargetEncoder,
    seed: int,
    options: dict[str, Any],
    class_weight: Any,
    verbose: int,
    histories: list[History],
) -> Network:
    bar = _Bar(verbose, FOLDS * len(WEIGHT_DECAYS), 1, targets, "5-fold ensembles, weight decay 0, 0.01, 0.1")
    result = kfold_ensemble(
        lambda decay, member_seed: _small_network(targets, decay, member_seed, options),
        features,
        labels,
        folds=FOLDS,
        weight_decays=WEIGHT_DECAYS,
        stratify=targets.task == "classification",
        seed=seed,
        epochs=SMALL_SETTINGS["epochs"],
        batch_size=SMALL_SETTINGS["batch_size"],
        patience=SMALL_SETTINGS["patience"],
        preprocess="always",
        class_weight=class_weight,
        report=lambda member: bar.member_done(member.loss, member.best_epoch, member.epochs),
    )
    bar.close()
    histories.extend(member.history for member in result.chosen())
    result.network.metadata["weight_decay"] = result.weight_decay
    return result.network


def _ensemble(
    recipe: TabularRecipe,
    features: Any,
    labels: np.ndarray,
    targets: TargetEncoder,
    seed: int,
    options: dict[str, Any],
    class_weight: Any,
    verbose: int,
    histories: list[History],
) -> Network:
    classification = targets.task == "classification"
    encoder = RobustTabularEncoder(
        clip=recipe.clip, bins=recipe.bins, levels=recipe.levels, level_rows=recipe.level_rows
    ).fit(features)
    x = encoder.transform(features)
    # Members train on the encoded arrays; only the average takes DataFrames (and the encoder).
    scaling: dict[str, Any] = {}
    if not classification:
        scale = float(labels.std())
        scaling["target_scaling"] = {"mean": [float(labels.mean())], "scale": [scale if scale > 0 else 1.0]}
    seeds = [int(s) for s in np.random.default_rng(seed).integers(0, 2**31 - 1, size=recipe.members)]
    shape = "x".join(str(h) for h in recipe.hidden)
    what = f"{recipe.members} networks of {shape} ReLU, {recipe.epochs} epochs each"
    bar = _Bar(verbose, recipe.members, recipe.epochs, targets, what, mse=not recipe.huber)
    members = []
    for member_seed in seeds:
        net = _member(recipe, targets, member_seed, options)
        net.metadata.update(copy.deepcopy(scaling))
        kept, back, _, _ = train_test_split(
            np.arange(len(labels)), labels, recipe.held_back, seed=member_seed, stratify=classification
        )
        stopper = EarlyStopping(patience=recipe.epochs, restore_best_weights=True)
        schedule = warmup(cosine_decay(recipe.learning_rate, recipe.epochs), epochs=recipe.warmup)
        net.fit(
            x[kept],
            labels[kept],
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            validation_data=(x[back], labels[back]),
            class_weight=class_weight,
            callbacks=[stopper, LearningRateScheduler(schedule), bar],
            verbose=0,
        )
        bar.finish(stopper)
        histories.append(net.history)
        members.append(net)
    bar.close()
    names = [str(c) for c in features.columns]
    return average_networks(members, {"feature_names": names, "encoder": encoder.get_state(), **scaling})


def _member(recipe: TabularRecipe, targets: TargetEncoder, seed: int, options: dict[str, Any]) -> Network:
    units, activation = _head(targets, softmax_binary=recipe.label_smoothing > 0)
    stack: list[Layer] = []
    for size in recipe.hidden:
        stack.append(Dense(size, "relu"))
        if recipe.dropout:
            stack.append(Dropout(recipe.dropout))
    layers: list[Layer] = [Residual([*stack, Dense(units)], shortcut="linear")]
    if activation is not None:
        layers.append(Activation(activation))
    optimizer = AdamW(recipe.learning_rate, weight_decay=recipe.weight_decay)
    return Network(
        layers,
        loss=_loss(activation, recipe.label_smoothing, recipe.huber),
        optimizer=optimizer,
        seed=seed,
        **options,
    )


class _Bar(Callback):
    """Progress over the networks of a recipe: a tqdm bar in a terminal, else one line per network.

    The bar counts epochs over all the networks and says which network trains
    and its held-back loss (an RMSE in the target's units for regression).
    """

    def __init__(
        self, verbose: int, networks: int, epochs: int, targets: TargetEncoder, what: str, mse: bool = True
    ) -> None:
        self.verbose, self.networks, self.epochs = verbose, networks, epochs
        rmse = targets.task == "regression" and mse
        self.scale = targets.scaling.get("scale", 1.0) if rmse else None
        self.done = 0
        tqdm = _tqdm_class(sys.stderr) if verbose else None
        self.bar = tqdm(total=networks * epochs, desc=what, unit="epoch", leave=False) if tqdm else None
        self._say(f"training {what}")

    def _say(self, text: str) -> None:
        if not self.verbose:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def _held_back(self, loss: float) -> str:
        if self.scale is None:
            return f"held-back loss {loss:.4g}"
        return f"held-back rmse {float(np.sqrt(loss)) * self.scale:.4g}"

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_description(f"network {self.done + 1}/{self.networks}", refresh=False)
            self.bar.set_postfix_str(self._held_back(logs.get("val_loss", float("nan"))), refresh=False)
            self.bar.update(1)

    def member_done(self, loss: float, best: int, epochs: int) -> None:
        """A network has trained: advance the bar to its end and say what it kept."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.done * self.epochs - self.bar.n)
        self._say(
            f"network {self.done}/{self.networks}: kept epoch {best} of {epochs}, {self._held_back(loss)}"
        )

    def finish(self, stopper: EarlyStopping) -> None:
        best = (stopper.best_epoch if stopper.best_epoch is not None else 0) + 1
        epochs = (stopper.stopped_epoch + 1) if stopper.stopped_epoch is not None else self.epochs
        self.member_done(float(stopper.best), best, epochs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

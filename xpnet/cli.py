"""The ``xpnet`` command: train, evaluate and predict from CSV files or built-in datasets."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import cli_stream
from .backend import MATMUL_PRECISIONS, BackendUnavailableError, describe_backends, get_backend, to_numpy
from .checkpoint import atomic_write_bytes
from .cli_paths import check_outputs
from .data import BUILTIN_DATASETS, TargetEncoder, load_dataset, read_table, train_test_split
from .data.encoders import encoder_from_state
from .data.tabular import EncodingNote
from .nn.layers import Activation, Dense, Dropout, Layer
from .nn.normalization import BatchNormalization
from .nn.residual import Residual
from .optim.optimizers import OPTIMIZERS, get_optimizer
from .train.callbacks import Callback, EarlyStopping
from .train.ensemble import KFoldEnsemble, Member, kfold_ensemble
from .train.history import plot_histories
from .train.network import Network, load
from .train.policy import POLICIES
from .train.recipe import regime, tabular_model

EXAMPLES = """examples:
  xpnet train digits                          # built-in data, held-out accuracy, model.safetensors
  xpnet train data.csv --target outcome --hidden 64,32 --epochs 40 --plot curves.png
  xpnet evaluate model.safetensors test.csv
  xpnet predict model.safetensors new.csv --out predictions.csv
  xpnet backends
"""

# Settings that suit each built-in dataset, used where the command line is silent.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "xor": {"hidden": "4", "activation": "tanh", "epochs": 400, "lr": 0.05, "batch_size": 4, "patience": 0},
}
# Like scikit-learn's MLP: stop when the held-back loss stops improving (best weights restored),
# under a generous cap on epochs.
DEFAULTS: dict[str, Any] = {
    "hidden": "100",
    "activation": "relu",
    "epochs": 500,
    "lr": 1e-3,
    "batch_size": 32,
    "patience": 20,
}
STOP_FRACTION = 0.1
"""Share of the training rows held back to decide when to stop (not the reported held-out part)."""
FOLDS = 5
"""Networks of the k-fold ensemble trained by default on small tables."""
SMALL_TABLE = 1000
"""Training rows up to which the default is the k-fold ensemble (a held-back tenth: <= 100 rows)."""
WEIGHT_DECAYS = (0.0, 0.01, 0.1)
"""Weight decays a k-fold ensemble chooses among by default (by the mean held-back loss)."""
CLI_METADATA = ("feature_names", "task", "classes", "target_name")
"""Metadata entries ``xpnet train`` writes and ``evaluate`` and ``predict`` read (checked at load)."""


class UserError(Exception):
    """A mistake in the command's input: reported as one line, exit status 2."""


def _read_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "sep": args.sep,
        "decimal": args.decimal,
        "thousands": args.thousands,
        "encoding": args.encoding,
        "header": not args.no_header,
        "na_values": args.na_values,
    }


def _table(source: str, args: argparse.Namespace, quiet: bool = False) -> tuple[Any, str | None]:
    """The data as one DataFrame, and the default target column (None: the last one)."""
    import pandas as pd

    if Path(source).is_file():
        frame, notes = read_table(source, **_read_options(args))
        for note in notes:
            print(f"note: {note}", file=sys.stderr, flush=True)
        return frame, None
    if source.lower().replace("-", "_") in BUILTIN_DATASETS:
        if getattr(args, "target", None) is not None:
            raise UserError("--target applies to CSV files, not to built-in datasets")
        data = load_dataset(source)
        frame = pd.DataFrame(data.X, columns=data.feature_names)
        frame[data.target_name] = [data.classes[i] for i in data.y]
        return frame, data.target_name
    raise UserError(
        f"DATA {source!r} is neither a file nor a built-in dataset ({', '.join(BUILTIN_DATASETS)})"
    )


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--hidden takes layer sizes separated by commas, like 64,32; got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise UserError(f"--hidden sizes must be positive, got {text!r}")
    return sizes


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    chosen = {**DEFAULTS, **DATASET_DEFAULTS.get(str(args.data).lower(), {})}
    for key in DEFAULTS:
        value = getattr(args, key)
        if value is not None:
            chosen[key] = value
    return chosen


def _say(text: str, quiet: bool = False) -> None:
    if not quiet:
        print(text, flush=True)


def _format(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}: {v:.3f}" if "accuracy" in k else f"{k}: {v:.4g}" for k, v in metrics.items())


def _split(y: np.ndarray, fraction: float, seed: int, classification: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of a seeded (stratified for classes) split: (kept, taken out)."""
    rows = np.arange(len(y))
    kept, taken, _, _ = train_test_split(rows, y, fraction, seed=seed, stratify=classification)
    return kept, taken


def _target(frame: Any, name: str | None, task: str, source: str) -> tuple[Any, str, TargetEncoder]:
    """The rows with a target value, the target's name and its fitted encoder."""
    columns = list(frame.columns)
    name = columns[-1] if name is None else name
    if name not in columns:
        raise UserError(f"{source} has no column {name!r}; its columns are {columns}")
    if len(columns) < 2:
        raise UserError(f"{source} has only the target column {name!r} and no features")
    gaps = frame[name].isna().to_numpy()
    if gaps.all():
        raise UserError(f"the target {name!r} has no values")
    if gaps.any():
        print(f"note: left out {int(gaps.sum())} rows without a {name!r} value", file=sys.stderr, flush=True)
        frame = frame[~gaps]
    encoder = TargetEncoder(task).fit(frame[name])
    if encoder.task == "classification" and len(encoder.classes) < 2:
        raise UserError(f"the target {name!r} has a single class; nothing to learn")
    return frame, name, encoder


def cmd_train(args: argparse.Namespace) -> int:
    check_outputs({"--out": args.out, "--plot": args.plot}, [args.data])
    if cli_stream.streams(args.data):  # too big to read whole
        return cli_stream.train(args, sys.modules[__name__])
    frame, default_target = _table(args.data, args)
    settings = _settings(args)
    _hidden(settings["hidden"])
    if not 0.0 <= args.val_split < 1.0:
        raise UserError(f"--val-split must be in [0, 1), got {args.val_split}")
    decays = _weight_decays(args.weight_decay)
    frame, target, encoder = _target(frame, args.target or default_target, args.task, args.data)
    classification = encoder.task == "classification"
    features = frame.drop(columns=[target])
    labels = encoder.transform(frame[target]) if classification else frame[target].to_numpy(np.float64)
    k = len(encoder.classes)
    train, test, fit, stop = _rows(labels, k, args, settings["patience"], classification)
    if args.fast and args.folds is not None:
        raise UserError("--fast trains one network; leave out --folds, or --fast")
    folds = 1 if args.fast else _folds(args.folds, len(train), k, settings["patience"])
    if decays is not None and len(decays) > 1 and folds == 1:
        raise UserError("choosing among several --weight-decay values needs --folds 2 or more")
    if decays is None:
        decays = list(WEIGHT_DECAYS) if folds > 1 else [0.0]
    what = f"{k} classes" if classification else "regression"
    split = (
        f"{len(train)} train / {len(test)} held-out"
        if test is not None
        else f"{len(labels)} rows, no held-out part"
    )
    intro = f"Training on {args.data}: {split}, {features.shape[1]} columns, {what}"
    if _recipe_applies(args, len(train)):
        net, histories, names = _recipe(args, frame.iloc[train], target, encoder, intro)
    elif folds > 1:
        result = _ensemble(args, settings, encoder, features.iloc[train], labels[train], folds, decays, intro)
        net = result.network
        histories = [m.history for m in result.chosen()]
        names = [f"(fold {m.fold + 1})" for m in result.chosen()]
    else:
        net = _network(args, settings, encoder, decays[0])
        _say(f"{intro}; backend {net.backend.name} ({net.backend.device}), {args.dtype}", args.quiet)
        _fit_one(
            net,
            args,
            settings,
            encoder,
            features,
            labels,
            fit,
            stop if stop is not None else test,
            stop is not None,
        )
        histories, names = [net.history], None
    net.metadata.update(
        {
            "target_name": target,
            "task": encoder.task,
            "classes": encoder.classes,
            "trained_on": str(args.data),
        }
    )
    rows = test if test is not None else train
    metrics = _metrics(net, features.iloc[rows], labels[rows])
    prefix = "val_" if test is not None else "train_"
    print(_format({prefix + key: v for key, v in metrics.items()}), flush=True)
    net.save(args.out)
    _say(f"saved {args.out}", args.quiet)
    if args.plot:
        plot_histories(histories, names, args.plot)
        _say(f"saved {args.plot}", args.quiet)
    return 0


CUSTOM_FLAGS = (
    "hidden", "activation", "epochs", "patience", "batch_size", "lr", "weight_decay", "folds",
)  # fmt: skip
"""Flags that shape the configurable network: given any, ``train`` trains it instead of the recipe."""


def _recipe_applies(args: argparse.Namespace, rows: int) -> bool:
    """Whether ``train`` runs the default recipe's ensemble (:func:`xpnet.tabular_model`) on ``rows`` rows."""
    custom = [name for name in CUSTOM_FLAGS if getattr(args, name) is not None]
    plain = (
        args.optimizer == "adam" and not args.batch_norm and not args.dropout and args.shortcut == "linear"
    )
    builtin = str(args.data).lower() in DATASET_DEFAULTS
    return not (args.fast or custom or not plain or builtin) and regime(rows) == "ensemble"


def _recipe(
    args: argparse.Namespace, frame: Any, target: str, encoder: TargetEncoder, intro: str
) -> tuple[Network, list[Any], list[str]]:
    """The default recipe's ensemble trained on the training rows, with its histories for ``--plot``."""
    probe = get_backend(args.backend, args.device)
    _say(f"{intro}; backend {probe.name} ({probe.device}), {args.dtype}", args.quiet)
    histories: list[Any] = []
    net = tabular_model(
        frame,
        target,
        task=encoder.task,
        seed=args.seed,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        class_weight=_class_weight(args, encoder.task == "classification"),
        verbose=0 if args.quiet else 1,
        histories=histories,
    )
    return net, histories, [f"(network {i + 1})" for i in range(len(histories))]


def _fit_one(
    net: Network,
    args: argparse.Namespace,
    settings: dict[str, Any],
    encoder: TargetEncoder,
    features: Any,
    labels: np.ndarray,
    fit: np.ndarray,
    watch: np.ndarray | None,
    early: bool,
) -> None:
    """Train one network on rows ``fit``, stopping on the held-back rows ``watch`` when ``early``."""
    callbacks: list[Any] = [_EpochLines(encoder, args.quiet, "held_back_" if early else "val_")]
    if early:
        callbacks.insert(0, EarlyStopping(patience=settings["patience"], restore_best_weights=True))
    classification = encoder.task == "classification"
    net.fit(
        features.iloc[fit],
        labels[fit],
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        validation_data=None if watch is None else (features.iloc[watch], labels[watch]),
        class_weight=_class_weight(args, classification),
        callbacks=callbacks,
        verbose=0,
        preprocess="always",
    )
    if early:
        _say(_stopped(callbacks[0], net), args.quiet)


def _ensemble(
    args: argparse.Namespace,
    settings: dict[str, Any],
    encoder: TargetEncoder,
    features: Any,
    labels: np.ndarray,
    folds: int,
    decays: list[float],
    intro: str,
) -> KFoldEnsemble:
    """The k-fold ensemble of the training rows, with a line per network and one for the choice."""
    classification = encoder.task == "classification"
    probe = _network(args, settings, encoder, decays[0])
    choice = f"; weight decay chosen among {', '.join(f'{d:g}' for d in decays)}" if len(decays) > 1 else ""
    _say(
        f"{intro}; backend {probe.backend.name} ({probe.backend.device}), {args.dtype}; "
        f"{folds} networks, one per fold of the training rows{choice}",
        args.quiet,
    )
    held_back = "held-back loss" if classification else "held-back rmse"

    def report(member: Member) -> None:
        _say(
            f"fold {member.fold + 1}/{folds}, weight decay {member.weight_decay:g}: kept epoch "
            f"{member.best_epoch} of {member.epochs}, {held_back} {_in_units(member.loss, encoder):.4g}",
            args.quiet,
        )

    result = kfold_ensemble(
        lambda decay, seed: _network(args, settings, encoder, decay, seed),
        features,
        labels,
        folds=folds,
        weight_decays=decays,
        stratify=classification,
        seed=args.seed,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        patience=settings["patience"],
        preprocess="always",
        class_weight=_class_weight(args, classification),
        report=report,
    )
    if len(decays) > 1:
        scores = ", ".join(f"{d:g}: {_in_units(v, encoder):.4g}" for d, v in result.scores().items())
        _say(
            f"chose weight decay {result.weight_decay:g} (mean {held_back} by weight decay: {scores})",
            args.quiet,
        )
    _say(f"the model averages the {folds} networks of weight decay {result.weight_decay:g}", args.quiet)
    return result


def _in_units(loss: float, encoder: TargetEncoder) -> float:
    """A training loss as shown: itself for classes, an RMSE in the target's units for regression."""
    if encoder.task == "classification":
        return loss
    return float(np.sqrt(loss)) * encoder.scaling.get("scale", 1.0)


def _weight_decays(text: str | None) -> list[float] | None:
    """``--weight-decay``: one number or several separated by commas (None: the default)."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--weight-decay takes numbers separated by commas, like 0,0.01,0.1; got {text!r}"
        ) from None
    if not values or any(not v >= 0 or not np.isfinite(v) for v in values):
        raise UserError(f"--weight-decay must be >= 0, got {text!r}")
    return values


def _folds(asked: int | None, rows: int, k: int, patience: int) -> int:
    """Networks of the ensemble: ``--folds``, else 5 on small tables with early stopping, else 1."""
    if asked is not None:
        if asked < 1:
            raise UserError(f"--folds must be at least 1, got {asked}")
        if asked > 1 and patience <= 0:
            raise UserError("--folds 2 or more stops each network on its fold: it needs --patience above 0")
        if asked > 1 and rows < asked * max(2, k):
            raise UserError(f"--folds {asked} needs at least {asked * max(2, k)} training rows, got {rows}")
        return asked
    if patience <= 0 or rows > SMALL_TABLE or rows < FOLDS * max(2, k):
        return 1
    return FOLDS


def _rows(
    labels: np.ndarray, k: int, args: argparse.Namespace, patience: int, classification: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Row numbers: training, held-out (None if too few rows), fitted on, and held back to stop on
    (None without early stopping)."""
    n = len(labels)
    train, test = np.arange(n), None
    if args.val_split > 0 and n * args.val_split >= max(2, k):
        train, test = _split(labels, args.val_split, args.seed, classification)
    if patience <= 0 or len(train) * STOP_FRACTION < max(2, k):
        return train, test, train, None
    kept, back = _split(labels[train], STOP_FRACTION, args.seed + 1, classification)
    return train, test, train[kept], train[back]


def _hidden_layers(sizes: list[int], activation: str, args: argparse.Namespace) -> list[Layer]:
    """Hidden layers: Dense (then BatchNormalization before the activation, then Dropout) per size."""
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    layers: list[Layer] = []
    for size in sizes:
        if args.batch_norm:
            layers += [Dense(size), BatchNormalization(), Activation(activation)]
        else:
            layers.append(Dense(size, activation))
        if args.dropout:
            layers.append(Dropout(args.dropout))
    return layers


def _class_weight(args: argparse.Namespace, classification: bool) -> str | None:
    if args.class_weight is not None and not classification:
        raise UserError("--class-weight applies to classification targets, not to regression")
    return args.class_weight


def _network(
    args: argparse.Namespace,
    settings: dict[str, Any],
    encoder: TargetEncoder,
    weight_decay: float,
    seed: int | None = None,
) -> Network:
    """The network the settings describe, with the output and loss the target needs.

    With ``--shortcut linear`` the hidden layers and the output layer form a
    :class:`Residual` block whose shortcut is a linear map of the inputs, so
    the network contains the linear model; a final sigmoid or softmax is its
    own layer after it.
    """
    k = len(encoder.classes)
    if encoder.task == "regression":
        units, activation, loss = 1, None, "mse"
    elif k == 2:
        units, activation, loss = 1, "sigmoid", "binary_crossentropy"
    else:
        units, activation, loss = k, "softmax", "categorical_crossentropy"
    stack = [*_hidden_layers(_hidden(settings["hidden"]), settings["activation"], args), Dense(units)]
    layers: list[Layer] = [Residual(stack, shortcut="linear")] if args.shortcut == "linear" else stack
    if activation is not None:
        layers.append(Activation(activation))
    return Network(
        layers,
        loss=loss,
        optimizer=get_optimizer(args.optimizer, learning_rate=settings["lr"], weight_decay=weight_decay),
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed if seed is None else seed,
        matmul_precision=args.matmul_precision,
    )


def _stopped(stopper: EarlyStopping, net: Network) -> str:
    best = (stopper.best_epoch or 0) + 1
    if stopper.stopped_epoch is None:
        return f"trained {net.epoch} epochs; kept the weights of epoch {best} (lowest held-back loss)"
    return (
        f"stopped after epoch {stopper.stopped_epoch + 1}: no better held-back loss in "
        f"{stopper.patience} epochs; kept the weights of epoch {best}"
    )


class _EpochLines(Callback):
    """One line per epoch (the first five, then every tenth) in the target's units.

    ``val`` names the validation part: ``"held_back_"`` (the rows that decide
    when to stop) or ``"val_"`` (the held-out rows, when nothing is held back).
    """

    def __init__(self, encoder: TargetEncoder, quiet: bool, val: str) -> None:
        self.scale = encoder.scaling.get("scale", 1.0)
        self.quiet = quiet
        self.val = val

    def on_epoch_end(self, net: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.quiet or not (epoch < 5 or (epoch + 1) % 10 == 0):
            return
        if net._classification:
            shown = dict(logs)
        else:  # the network trains on the standardized target; say it in the target's units
            shown = {key.replace("loss", "rmse"): float(np.sqrt(logs[key])) * self.scale for key in logs}
        parts = [
            f"{key.replace('val_', self.val)}: " + (f"{v:.3f}" if "accuracy" in key else f"{v:.4g}")
            for key, v in shown.items()
        ]
        print(f"Epoch {epoch + 1}: {' - '.join(parts)}", flush=True)


def _metrics(net: Network, X: Any, y: np.ndarray) -> dict[str, float]:
    """Loss and accuracy for classification; RMSE and MAE in the target's own units for regression."""
    if net._classification:
        with np.errstate(all="ignore"):
            metrics = net.evaluate(X, y)
        if not all(np.isfinite(v) for v in metrics.values()):
            _predicted(net, X, proba=True)  # names the rows whose predictions are not finite
        return metrics
    pred = _predicted(net, X, proba=False).ravel()
    error = pred - np.asarray(y, dtype=np.float64)
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def _model(path: str, args: argparse.Namespace) -> Network:
    net = load(path, backend=args.backend, device=args.device)
    missing = [key for key in CLI_METADATA if net.metadata.get(key) is None]
    if missing:
        raise UserError(f"{path} was not trained by the xpnet command (it has no {', '.join(missing)})")
    return net


def _labelled(net: Network, args: argparse.Namespace) -> tuple[Any, np.ndarray]:
    meta = net.metadata
    frame, default_target = _table(args.data, args)
    target = args.target or default_target or meta["target_name"]
    if target not in frame.columns:
        raise UserError(f"{args.data} has no target column {target!r}; name it with --target")
    gaps = frame[target].isna().to_numpy()
    if gaps.any():
        print(
            f"note: left out {int(gaps.sum())} rows without a {target!r} value", file=sys.stderr, flush=True
        )
        frame = frame[~gaps]
    encoder = TargetEncoder.from_state({"task": meta["task"], "classes": meta["classes"]})
    column = frame[target]
    if meta["task"] == "regression":
        return frame, column.to_numpy(dtype=np.float64)
    return frame, encoder.transform(column)


def cmd_evaluate(args: argparse.Namespace) -> int:
    net = _model(args.model, args)
    X, y = _labelled(net, args)
    print(_format(_metrics(net, X, y)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    check_outputs({"--out": args.out}, [args.model, args.data])
    net = _model(args.model, args)
    meta = net.metadata
    table, _ = _table(args.data, args)
    index = table.index
    if meta["task"] == "classification":
        prob = _predicted(net, table, proba=True)
        if prob.shape[1] == 1:
            prob = np.hstack([1.0 - prob, prob])
        classes = meta["classes"]
        frame = pd.DataFrame({"prediction": [classes[i] for i in prob.argmax(axis=1)]}, index=index)
        for i, label in enumerate(classes):
            frame[f"p_{label}"] = prob[:, i]
    else:
        frame = pd.DataFrame({"prediction": _predicted(net, table, proba=False).ravel()}, index=index)
    text = io.StringIO()
    frame.to_csv(text, index=not isinstance(index, pd.RangeIndex), float_format="%.6g")
    if args.out:
        atomic_write_bytes(args.out, text.getvalue().encode())
        print(f"saved {len(frame)} predictions to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text.getvalue())
    return 0


def _predicted(net: Network, table: Any, proba: bool) -> np.ndarray:
    """The network's outputs for ``table`` as float64, or a UserError naming the rows that are not
    finite and why (no numpy warnings on the way)."""
    with np.errstate(all="ignore"):
        out = to_numpy(net.predict_proba(table) if proba else net.predict(table)).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(out).reshape(len(out), -1).all(axis=1))
    if bad.size == 0:
        return out
    rows = ", ".join(str(int(i) + 1) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
    raise UserError(
        f"the predictions for {bad.size} of {len(out)} rows (data rows {rows}) are not finite: "
        f"{_overflow(net, table.iloc[bad])}"
    )


def _overflow(net: Network, rows: Any) -> str:
    """Why a finite model gives rows non-finite outputs: the encoded feature farthest from training."""
    why = f"the network's {net.dtype} arithmetic overflowed"
    state = net.metadata.get("encoder")
    if state is None:
        return why
    encoder = encoder_from_state(state)
    encoded = np.abs(encoder.transform(rows))
    column = int(np.argmax(encoded.max(axis=0)))
    return (
        f"{why} on their feature {encoder.feature_names_out[column]!r}, "
        f"{encoded[:, column].max():.3g} standard deviations from its training mean; "
        "remove or rescale such values, or train with --dtype float64"
    )


def cmd_backends(args: argparse.Namespace) -> int:
    for row in describe_backends():
        if row["available"]:
            print(f"{row['name']:<17} yes  devices: {', '.join(row['devices'])}")
        else:
            print(f"{row['name']:<17} no   {row['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``xpnet`` command."""
    parser = argparse.ArgumentParser(
        prog="xpnet",
        description="Train and use neural networks on NumPy, CuPy, PyTorch or JAX arrays.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def read_options(p: argparse.ArgumentParser) -> None:
        csv = p.add_argument_group("reading CSV files")
        csv.add_argument("--sep", help="column delimiter (default: sniffed among , ; tab |)")
        csv.add_argument("--decimal", default=".", help="decimal mark of numbers, e.g. ',' (default: '.')")
        csv.add_argument("--thousands", help="thousands separator of numbers, e.g. ' ' or '.'")
        csv.add_argument("--encoding", help="text encoding, e.g. latin-1 (default: utf-8)")
        csv.add_argument(
            "--no-header", dest="no_header", action="store_true", help="the first row is data, not names"
        )
        csv.add_argument(
            "--na-values",
            dest="na_values",
            action="append",
            metavar="TEXT",
            help="a cell text that means missing, e.g. '?' (repeatable)",
        )

    def device_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backend",
            help="numpy, cupy, torch, jax, array_api_strict or auto (default: $XPNET_BACKEND, else auto)",
        )
        p.add_argument("--device", help="backend device, e.g. cuda:0 for torch, 0 for cupy")

    train = sub.add_parser(
        "train",
        help="train a network on a CSV file or a built-in dataset",
        description="Train a network; show progress and held-out metrics; save the model.",
        epilog=(
            "examples:\n  xpnet train digits\n"
            "  xpnet train data.csv --target outcome --hidden 32 --epochs 100 --lr 0.01\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "data", metavar="DATA", help=f"CSV file or built-in dataset ({', '.join(BUILTIN_DATASETS)})"
    )
    train.add_argument("--target", help="target column of a CSV (default: the last column)")
    train.add_argument(
        "--task",
        default="auto",
        choices=["auto", "classification", "regression"],
        help="auto: text, integer and boolean targets (and whole numbers with at most 20 values) "
        "are classes, other numbers regression (default: auto)",
    )
    train.add_argument("--hidden", help="hidden layer sizes, e.g. 64,32 (default: 100)")
    train.add_argument("--activation", help="hidden activation (default: relu)")
    train.add_argument(
        "--epochs", type=int, help="most passes over the training data (default: 500, see --patience)"
    )
    train.add_argument(
        "--patience",
        type=int,
        help="stop after this many epochs without a lower loss on a held-back tenth of the training "
        "rows, keeping the best weights; 0 trains every epoch (default: 20)",
    )
    train.add_argument("--batch-size", dest="batch_size", type=int, help="samples per step (default: 32)")
    train.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS), help="(default: adam)")
    train.add_argument("--lr", type=float, help="learning rate (default: 0.001)")
    train.add_argument(
        "--seed", type=int, default=0, help="seed of weights, shuffling and split (default: 0)"
    )
    train.add_argument(
        "--val-split",
        dest="val_split",
        type=float,
        default=0.2,
        help="held-out fraction for the reported metrics, stratified (default: 0.2)",
    )
    train.add_argument(
        "--dtype",
        default="float32",
        choices=list(POLICIES),
        help="dtype policy: float32 (default), float64, or mixed_bfloat16 / mixed_float16 (float32 "
        "parameters, 16-bit matrix multiplies; numpy needs ml_dtypes for bfloat16)",
    )
    train.add_argument(
        "--matmul-precision",
        dest="matmul_precision",
        default="highest",
        choices=list(MATMUL_PRECISIONS),
        help="float32 matrix multiplies: highest (default) or tf32 (tensor cores on a GPU; float32 only)",
    )
    train.add_argument(
        "--out",
        default="model.safetensors",
        help="model file to write (default: model.safetensors)",
    )
    train.add_argument(
        "--batch-norm", dest="batch_norm", action="store_true", help="batch normalization in hidden layers"
    )
    train.add_argument("--dropout", type=float, default=0.0, help="dropout rate after hidden layers")
    train.add_argument(
        "--weight-decay",
        dest="weight_decay",
        metavar="L2[,L2...]",
        help="L2 penalty; several values separated by commas are chosen among by the mean held-back "
        "loss of the folds (default: 0,0.01,0.1 with --folds 2 or more, else 0)",
    )
    train.add_argument(
        "--folds",
        type=int,
        help="train one network per fold of the training rows, each stopped on its own fold, and "
        f"average them; 1 trains one network stopped on a held-back tenth (default: {FOLDS} for at most "
        f"{SMALL_TABLE:,} training rows, else 1)",
    )
    train.add_argument(
        "--shortcut",
        default="linear",
        choices=["linear", "none"],
        help="linear: add a linear map of the inputs to the last layer's output, so the network "
        "contains the linear model (wide and deep); none: the plain stack (default: linear)",
    )
    train.add_argument(
        "--class-weight",
        dest="class_weight",
        choices=["balanced"],
        help="weigh classes by inverse frequency (scikit-learn's 'balanced')",
    )
    train.add_argument(
        "--fast",
        action="store_true",
        help="one network of 100 ReLU units stopped on a held-back tenth, in seconds, instead of the "
        f"default: a {FOLDS}-fold ensemble of such networks on tables of at most {SMALL_TABLE:,} training "
        "rows, else an ensemble of 3 wider networks on robustly scaled, binned features "
        "(xpnet.tabular_model)",
    )
    train.add_argument("--plot", help="also save loss/metric curves to this PNG")
    train.add_argument("--quiet", action="store_true", help="print only the final metrics")
    read_options(train)
    device_options(train)
    train.set_defaults(run=cmd_train)

    def model_command(name: str, help_text: str, example: str, data_help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(
            name,
            help=help_text,
            epilog=f"example:\n  {example}\n",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_argument("model", metavar="MODEL", help="a model file written by xpnet train")
        command.add_argument("data", metavar="DATA", help=data_help)
        read_options(command)
        device_options(command)
        return command

    evaluate = model_command(
        "evaluate",
        "report a saved model's loss and accuracy on labelled data",
        "xpnet evaluate model.safetensors test.csv --target outcome",
        "CSV with the feature and target columns, or a built-in dataset",
    )
    evaluate.add_argument("--target", help="target column (default: the one the model was trained on)")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = model_command(
        "predict",
        "write a saved model's predictions as CSV",
        "xpnet predict model.safetensors new.csv --out predictions.csv",
        "CSV with the model's feature columns (a target column is ignored)",
    )
    predict.add_argument("--out", help="CSV file to write (default: standard output)")
    predict.set_defaults(run=cmd_predict)

    backends = sub.add_parser(
        "backends",
        help="list the backends usable here, with their devices",
        epilog="example:\n  xpnet backends\n  XPNET_BACKEND=torch xpnet train digits   # then pick one\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backends.set_defaults(run=cmd_backends)
    return parser


@contextlib.contextmanager
def _notes() -> Iterator[None]:
    """Show the encoder's notes (:class:`~xpnet.data.tabular.EncodingNote`) as ``note:`` lines on
    standard error, each once; other warnings as Python shows them."""
    seen: set[str] = set()
    show = warnings.showwarning

    def shown(message: Any, category: Any, *where: Any, **options: Any) -> None:
        if not issubclass(category, EncodingNote):
            show(message, category, *where, **options)
        elif str(message) not in seen:
            seen.add(str(message))
            print(f"note: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", EncodingNote)
        warnings.showwarning = shown
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _notes():
            return int(args.run(args))
    except (
        UserError,
        ValueError,
        OSError,
        BackendUnavailableError,
        ImportError,
        FloatingPointError,
    ) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"xpnet: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xpnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

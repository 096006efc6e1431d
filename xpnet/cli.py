"""The ``xpnet`` command: train, evaluate and predict from CSV files or built-in datasets."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backend import BackendUnavailableError, describe_backends, to_numpy
from .checkpoint import atomic_write_bytes
from .cli_paths import check_outputs
from .data import (
    BUILTIN_DATASETS,
    Dataset,
    load_dataset,
    read_csv,
    read_features,
    standardization,
    train_test_split,
)
from .nn.layers import Activation, Dense, Dropout, Layer
from .nn.normalization import BatchNormalization
from .optim.optimizers import OPTIMIZERS, get_optimizer
from .train.network import Network, load

EXAMPLES = """examples:
  xpnet train digits                          # built-in data, held-out accuracy, model.safetensors
  xpnet train data.csv --target outcome --hidden 64,32 --epochs 40 --plot curves.png
  xpnet evaluate model.safetensors test.csv
  xpnet predict model.safetensors new.csv --out predictions.csv
  xpnet backends
"""

# Settings that suit each built-in dataset, used where the command line is silent.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "xor": {"hidden": "4", "activation": "tanh", "epochs": 400, "lr": 0.05, "batch_size": 4},
}
DEFAULTS: dict[str, Any] = {
    "hidden": "64",
    "activation": "relu",
    "epochs": 30,
    "lr": 1e-3,
    "batch_size": 32,
}


class UserError(Exception):
    """A mistake in the command's input: reported as one line, exit status 2."""


def _dataset(source: str, target: str | None) -> Dataset:
    if Path(source).is_file():
        return read_csv(source, target)
    if source.lower().replace("-", "_") in BUILTIN_DATASETS:
        if target is not None:
            raise UserError("--target applies to CSV files, not to built-in datasets")
        return load_dataset(source)
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


def cmd_train(args: argparse.Namespace) -> int:
    check_outputs({"--out": args.out, "--plot": args.plot}, [args.data])
    data = _dataset(args.data, args.target)
    settings = _settings(args)
    sizes = _hidden(settings["hidden"])
    if not 0.0 <= args.val_split < 1.0:
        raise UserError(f"--val-split must be in [0, 1), got {args.val_split}")
    classification = data.task == "classification"
    if classification and len(data.classes) < 2:
        raise UserError(f"the target {data.target_name!r} has a single class; nothing to learn")
    n = len(data.y)
    held_out = args.val_split > 0 and n * args.val_split >= max(2, len(data.classes))
    if held_out:
        X_train, X_val, y_train, y_val = train_test_split(
            data.X, data.y, args.val_split, seed=args.seed, stratify=classification
        )
    else:
        X_train, X_val, y_train, y_val = data.X, data.X, data.y, data.y
    metadata: dict[str, Any] = {
        "feature_names": data.feature_names,
        "target_name": data.target_name,
        "task": data.task,
        "classes": data.classes,
        "trained_on": str(args.data),
    }
    if classification:
        binary = len(data.classes) == 2
        output = Dense(1, "sigmoid") if binary else Dense(len(data.classes), "softmax")
        loss = "binary_crossentropy" if binary else "categorical_crossentropy"
    else:
        output, loss = Dense(1), "mse"
        metadata["target_scaling"] = {
            "mean": float(y_train.mean()),
            "scale": float(y_train.std() or 1.0),
        }
        y_train = _scale_target(y_train, metadata)
        y_val = _scale_target(y_val, metadata)
    layers = [*_hidden_layers(sizes, settings["activation"], args), output]
    net = Network(
        layers,
        loss=loss,
        optimizer=get_optimizer(args.optimizer, learning_rate=settings["lr"], weight_decay=args.weight_decay),
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
    )
    net.input_scaling = standardization(X_train)
    net.metadata = metadata
    what = f"{len(data.classes)} classes" if classification else "regression"
    split = (
        f"{len(y_train)} train / {len(y_val)} held-out"
        if held_out
        else f"{n} samples, no held-out split (too few rows)"
    )
    _say(
        f"Training on {args.data}: {split}, {len(data.feature_names)} features, {what}; "
        f"backend {net.backend.name} ({net.backend.device}), {args.dtype}",
        args.quiet,
    )
    net.fit(
        X_train,
        y_train,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        validation_data=(X_val, y_val),
        class_weight=_class_weight(args, classification),
        verbose=0 if args.quiet else 1,
    )
    metrics = _metrics(net, X_val, y_val, metadata)
    prefix = "val_" if held_out else "train_"
    print(_format({prefix + k: v for k, v in metrics.items()}), flush=True)
    net.save(args.out)
    _say(f"saved {args.out}", args.quiet)
    if args.plot:
        net.history.plot(args.plot)
        _say(f"saved {args.plot}", args.quiet)
    return 0


def _hidden_layers(sizes: list[int], activation: str, args: argparse.Namespace) -> list[Layer]:
    """Hidden layers: Dense (then BatchNormalization before the activation, then Dropout) per size."""
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.weight_decay < 0:
        raise UserError(f"--weight-decay must be >= 0, got {args.weight_decay}")
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


def _scale_target(y: np.ndarray, metadata: dict[str, Any]) -> np.ndarray:
    scaling = metadata["target_scaling"]
    return (np.asarray(y, dtype=np.float64) - scaling["mean"]) / scaling["scale"]


def _unscale_target(y: np.ndarray, metadata: dict[str, Any]) -> np.ndarray:
    scaling = metadata["target_scaling"]
    return y * scaling["scale"] + scaling["mean"]


def _metrics(net: Network, X: np.ndarray, y: np.ndarray, metadata: dict[str, Any]) -> dict[str, float]:
    """Loss and accuracy for classification; MSE and MAE in the target's own units for regression."""
    result = net.evaluate(X, y)
    if metadata["task"] == "classification":
        return result
    pred = _unscale_target(to_numpy(net.predict(X)).ravel().astype(np.float64), metadata)
    truth = _unscale_target(np.asarray(y, dtype=np.float64), metadata)
    return {"mse": float(np.mean((pred - truth) ** 2)), "mae": float(np.mean(np.abs(pred - truth)))}


def _model(path: str, args: argparse.Namespace) -> Network:
    net = load(path, backend=args.backend, device=args.device)
    if "feature_names" not in net.metadata:
        raise UserError(f"{path} was not trained by the xpnet command (it has no feature names)")
    return net


def _labelled(net: Network, source: str, target: str | None) -> tuple[np.ndarray, np.ndarray]:
    meta = net.metadata
    if not Path(source).is_file():
        data = _dataset(source, None)
        return data.X, data.y
    target = target or meta["target_name"]
    X, frame = read_features(source, meta["feature_names"])
    if target not in frame.columns:
        raise UserError(f"{source} has no target column {target!r}; name it with --target")
    column = frame[target]
    if meta["task"] == "regression":
        return X, _scale_target(column.to_numpy(dtype=np.float64), meta)
    codes = {str(c): i for i, c in enumerate(meta["classes"])}
    unknown = sorted({str(v) for v in column} - set(codes))
    if unknown:
        raise UserError(
            f"{source}: target values {unknown[:5]} are not classes the model knows {meta['classes']}"
        )
    return X, np.array([codes[str(v)] for v in column], dtype=np.int64)


def cmd_evaluate(args: argparse.Namespace) -> int:
    net = _model(args.model, args)
    X, y = _labelled(net, args.data, args.target)
    print(_format(_metrics(net, X, y, net.metadata)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    check_outputs({"--out": args.out}, [args.model, args.data])
    net = _model(args.model, args)
    meta = net.metadata
    if Path(args.data).is_file():
        X, table = read_features(args.data, meta["feature_names"])
        index = table.index
    else:
        X, index = _dataset(args.data, None).X, None
    if meta["task"] == "classification":
        prob = to_numpy(net.predict_proba(X)).astype(np.float64)
        if prob.shape[1] == 1:
            prob = np.hstack([1.0 - prob, prob])
        classes = meta["classes"]
        frame = pd.DataFrame({"prediction": [classes[i] for i in prob.argmax(axis=1)]}, index=index)
        for i, label in enumerate(classes):
            frame[f"p_{label}"] = prob[:, i]
    else:
        values = _unscale_target(to_numpy(net.predict(X)).ravel().astype(np.float64), meta)
        frame = pd.DataFrame({"prediction": values}, index=index)
    text = io.StringIO()
    frame.to_csv(text, index=index is not None and not isinstance(index, pd.RangeIndex), float_format="%.6g")
    if args.out:
        atomic_write_bytes(args.out, text.getvalue().encode())
        print(f"saved {len(frame)} predictions to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text.getvalue())
    return 0


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
    train.add_argument("--hidden", help="hidden layer sizes, e.g. 64,32 (default: 64)")
    train.add_argument("--activation", help="hidden activation (default: relu)")
    train.add_argument("--epochs", type=int, help="passes over the training data (default: 30)")
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
        help="held-out fraction, stratified (default: 0.2)",
    )
    train.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    train.add_argument(
        "--out",
        default="model.safetensors",
        help="model file to write (default: model.safetensors)",
    )
    train.add_argument(
        "--batch-norm", dest="batch_norm", action="store_true", help="batch normalization in hidden layers"
    )
    train.add_argument("--dropout", type=float, default=0.0, help="dropout rate after hidden layers")
    train.add_argument("--weight-decay", dest="weight_decay", type=float, default=0.0, help="L2 penalty")
    train.add_argument(
        "--class-weight",
        dest="class_weight",
        choices=["balanced"],
        help="weigh classes by inverse frequency (scikit-learn's 'balanced')",
    )
    train.add_argument("--plot", help="also save loss/metric curves to this PNG")
    train.add_argument("--quiet", action="store_true", help="print only the final metrics")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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

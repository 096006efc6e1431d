"""``xpnet train`` on a CSV file too big to read whole: streamed, chunk by chunk.

Above :data:`STREAM_BYTES` the command does not read the table into memory.
One pass over the file (:func:`xpnet.data.bigcsv.survey`) learns the target's
classes or scaling from every row, and a random sample of rows to fit the
feature encoder on; then every epoch streams the training rows, encoded, and
the reported metrics stream the held-out rows. The held-out and held-back rows
are drawn at random per row (seeded), not stratified, and rows are shuffled
inside chunks of :data:`~xpnet.data.bigcsv.CHUNK_ROWS`. The output says so.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .data import bigcsv
from .data.tabular import TabularEncoder, _key

STREAM_BYTES = 200 * 2**20
"""CSV files larger than this are streamed (reading one whole takes about 4 times its size)."""


def streams(source: str) -> bool:
    """Whether ``xpnet train`` streams ``source`` (a file larger than :data:`STREAM_BYTES`)."""
    path = Path(source)
    return path.is_file() and path.stat().st_size > STREAM_BYTES


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def train(args: argparse.Namespace, cli: Any) -> int:
    """``xpnet train`` on a streamed file (options checked as for a table in memory); ``cli`` is
    :mod:`xpnet.cli`, whose settings, messages and network it shares (passed in: it imports this)."""
    settings = cli._settings(args)
    cli._hidden(settings["hidden"])
    if not 0.0 <= args.val_split < 1.0:
        raise cli.UserError(f"--val-split must be in [0, 1), got {args.val_split}")
    decays = cli._weight_decays(args.weight_decay) or [0.0]
    size = f"{os.path.getsize(args.data) / 2**20:,.0f} MB"
    if args.folds not in (None, 1) or len(decays) > 1:
        raise cli.UserError(
            f"{args.data} is {size}, so it is streamed, and ensembles (--folds, several --weight-decay "
            "values) need the table in memory; leave them out"
        )
    _note(
        f"{args.data} is {size} (over {STREAM_BYTES // 2**20} MB): it is streamed in chunks of "
        f"{bigcsv.CHUNK_ROWS:,} rows, not read whole"
    )
    found = bigcsv.survey(
        args.data,
        args.target,
        args.task,
        seed=args.seed,
        val_split=args.val_split,
        hold_back=settings["patience"] > 0,
        read_options=cli._read_options(args),
    )
    for note in found.notes:
        _note(note)
    target = found.target_encoder
    if found.without_target:
        _note(f"left out {found.without_target:,} rows without a {found.target!r} value")
    if target.task == "classification" and len(target.classes) < 2:
        raise cli.UserError(f"the target {found.target!r} has a single class; nothing to learn")
    if found.gaps:
        gaps = "; ".join(f"{name!r} {count:,}" for name, count in found.gaps.items())
        _note(f"{Path(args.data).name} has missing values (features are imputed): {gaps}")
    class_weight = _class_weight(args, found, cli)
    features = TabularEncoder().fit(found.sample)
    _note(
        f"the feature encoder was fitted on a random sample of {len(found.sample):,} of the "
        f"{found.training_rows:,} training rows (the target's {'classes' if target.classes else 'scaling'} "
        f"on all {found.rows:,} rows); held-out and held-back rows are drawn at random, not "
        f"stratified; rows are shuffled inside each chunk"
    )
    net = cli._network(args, settings, target, decays[0])
    if target.task == "regression":
        net.metadata["target_scaling"] = {
            "mean": [target.scaling["mean"]],
            "scale": [target.scaling["scale"]],
        }
    k = len(target.classes)
    what = f"{k} classes" if k else "regression"
    held_out = f"{found.held_out:,} held-out" if found.held_out else "no held-out part"
    cli._say(
        f"Training on {args.data}: {found.training_rows:,} train / {held_out}, {len(found.features)} "
        f"columns, {what}; streamed; backend {net.backend.name} ({net.backend.device}), {args.dtype}",
        args.quiet,
    )
    _fit(net, args, settings, found, features, class_weight, cli)
    net.metadata.update(
        {
            "feature_names": list(found.features),
            "encoder": features.get_state(),
            "target_name": found.target,
            "task": target.task,
            "classes": target.classes,
            "trained_on": str(args.data),
        }
    )
    part = "held_out" if found.held_out else "train"
    metrics = _metrics(net, bigcsv.Part(found, part, features), target, cli)
    prefix = "val_" if found.held_out else "train_"
    print(cli._format({prefix + key: v for key, v in metrics.items()}), flush=True)
    net.save(args.out)
    cli._say(f"saved {args.out}", args.quiet)
    if args.plot:
        cli.plot_histories([net.history], None, args.plot)
        cli._say(f"saved {args.plot}", args.quiet)
    return 0


def _fit(
    net: Any,
    args: argparse.Namespace,
    settings: dict[str, Any],
    found: Any,
    features: Any,
    class_weight: dict[int, float] | None,
    cli: Any,
) -> None:
    """Train on the streamed training rows, stopping on the held-back rows (in memory) if any."""
    target = found.target_encoder
    early = len(found.held_back) > 0
    callbacks: list[Any] = [cli._EpochLines(target, args.quiet, "held_back_")]
    validation = None
    if early:
        held = found.held_back_frame
        validation = (
            features.transform(held[found.features]),
            bigcsv.target_values(target, held[found.target]),
        )
        callbacks.insert(0, cli.EarlyStopping(patience=settings["patience"], restore_best_weights=True))
    net.fit(
        bigcsv.Part(found, "train", features),
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        validation_data=validation,
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=0,
    )
    if early:
        cli._say(cli._stopped(callbacks[0], net), args.quiet)


def _class_weight(args: argparse.Namespace, found: Any, cli: Any) -> dict[int, float] | None:
    """``--class-weight balanced`` from the training rows' class counts (the first pass counted them)."""
    if cli._class_weight(args, found.target_encoder.task == "classification") is None:
        return None
    classes = found.target_encoder.classes
    counts = np.array([found.class_counts.get(_key(c), 0) for c in classes], dtype=np.float64)
    present = counts > 0
    weights = counts.sum() / (present.sum() * np.where(present, counts, 1.0))
    return {i: float(w) for i, w in enumerate(weights) if present[i]}


def _metrics(net: Any, part: Any, target: Any, cli: Any) -> dict[str, float]:
    """As the command reports them: loss and accuracy, or RMSE and MAE in the target's units."""
    with np.errstate(all="ignore"):
        if target.task == "classification":
            metrics = net.evaluate(part)
        else:
            scores = net.evaluate(part, metrics=["mae"])
            scale = target.scaling["scale"]
            metrics = {"rmse": math.sqrt(scores["loss"]) * scale, "mae": scores["mae"] * scale}
    if not all(math.isfinite(v) for v in metrics.values()):
        raise cli.UserError(
            f"the network's predictions on the {part.part.replace('_', '-')} rows are not finite: "
            f"its {net.dtype} arithmetic overflowed; rescale such values or train with --dtype float64"
        )
    return metrics

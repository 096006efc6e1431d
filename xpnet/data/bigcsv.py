"""A CSV file too big to read whole, as the ``xpnet`` command trains on it: one pass, then streams.

:func:`survey` reads the file once, chunk by chunk, and learns what training
needs before it starts: the target's task, classes (or mean and spread) and
class counts over every row, a random sample of rows to fit the feature
encoder on, the held-back rows that decide when to stop (kept in memory,
bounded), and the count of each part. Every row gets its part from a seeded
draw made again on each later pass, so :class:`Part` can stream the same
training or held-out rows every epoch, encoded, never holding more than a
chunk (and its batches) in memory.

Nothing here holds the file: memory is bounded by the chunk, the sample and
the held-back rows, whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .csvfiles import _check_header, _check_numbers, _duplicate_names, _is_saved_index, sniff_delimiter
from .streams import Batch, _rebatch
from .tabular import CLASS_LIMIT, TabularEncoder, TargetEncoder, _json_value, _key, _sort_key, is_numeric_kind

CHUNK_ROWS = 65536
"""Rows read at a time (and the block rows are shuffled in)."""
SAMPLE_ROWS = 100_000
"""Training rows, drawn at random, that the feature encoder is fitted on."""
HELD_BACK_ROWS = 20_000
"""At most this many training rows are held back (in memory) to decide when to stop."""
MAX_CLASSES = 10_000
"""A target with more distinct values than this is refused as classes."""


@dataclass
class Survey:
    """What one pass over a big CSV file learned (see :func:`survey`)."""

    path: Path
    options: dict[str, Any]
    features: list[str]
    target: str
    seed: int
    val_split: float
    target_encoder: TargetEncoder = field(default_factory=TargetEncoder)
    rows: int = 0
    """Rows with a target value."""
    without_target: int = 0
    held_out: int = 0
    held_back: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Row numbers (in the file, from 0) of the held-back rows, sorted."""
    held_back_frame: Any = None
    sample: Any = None
    class_counts: dict[str, int] = field(default_factory=dict)
    """Training rows of each class key."""
    gaps: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def training_rows(self) -> int:
        """Rows the network trains on: every row with a target but the held-out and held-back ones."""
        return self.rows - self.held_out - len(self.held_back)

    def chunks(self) -> Iterator[tuple[Any, np.ndarray]]:
        """Each chunk's rows with a target (indexed by their row number in the file, from 0) and
        their draws: ``u`` (below ``val_split``: held out), ``v`` (held back) and ``w`` (sampled).

        The draws come from a generator seeded anew on every pass, so each pass gives every row
        the same ones."""
        import pandas as pd

        rng = np.random.default_rng([self.seed, 22])
        start = dropped = 0
        with pd.read_csv(self.path, chunksize=CHUNK_ROWS, **self.options) as reader:
            for frame in reader:
                draws = rng.random((len(frame), 3))
                frame.index = pd.RangeIndex(start, start + len(frame))
                start += len(frame)
                keep = frame[self.target].notna().to_numpy()
                if not keep.all():
                    dropped += int((~keep).sum())
                    frame, draws = frame[keep], draws[keep]
                yield frame, draws
        self.without_target = dropped


def _read_options(path: Path, options: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """pandas options for chunks of ``path``, its column names, and notes; the header checked as
    :func:`~xpnet.data.csvfiles.read_table` checks it."""
    import pandas as pd

    header = options.get("header", True)
    encoding = options.get("encoding")
    delimiter = options.get("sep") or sniff_delimiter(path, encoding, options.get("decimal", "."))
    read: dict[str, Any] = {
        "sep": delimiter,
        "decimal": options.get("decimal", "."),
        "thousands": options.get("thousands"),
        "encoding": encoding,
        "na_values": options.get("na_values"),
        "skipinitialspace": True,
        "header": 0 if header else None,
    }
    try:
        first = pd.read_csv(path, nrows=1000, **read)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, LookupError) as exc:
        raise ValueError(f"{path} is not a readable CSV file: {str(exc).strip()}") from exc
    if first.shape[0] == 0 or first.shape[1] == 0:
        raise ValueError(f"{path} has no data rows")
    notes = []
    if header:
        _check_header(first, path)
        names = [str(c) for c in first.columns]
        notes += _duplicate_names(path, delimiter, encoding, names)
    else:
        names = [f"column{i + 1}" for i in range(first.shape[1])]
    read["names"], read["header"] = names, 0 if header else None
    first.columns = names
    if _is_saved_index(first):
        notes.append(f"dropped the first column of {path.name}: a saved pandas index (0, 1, 2, ...)")
        read["usecols"] = names[1:]
        names = names[1:]
    return read, names, notes


def survey(
    path: str | Path,
    target: str | None,
    task: str,
    *,
    seed: int,
    val_split: float,
    hold_back: bool,
    read_options: dict[str, Any] | None = None,
) -> Survey:
    """One pass over ``path``: the target's encoder, the parts' sizes, the sample and the held-back rows.

    Parameters
    ----------
    target : str or None
        The target column (None: the last one).
    task : {"auto", "classification", "regression"}
        As for :class:`~xpnet.data.tabular.TargetEncoder`, decided on every row.
    seed, val_split : int, float
        Each row is held out with probability ``val_split``, by a draw seeded with ``seed``.
    hold_back : bool
        Hold back a tenth of the training rows (at most :data:`HELD_BACK_ROWS`, kept in memory).
    read_options : dict, optional
        ``sep``, ``decimal``, ``thousands``, ``encoding``, ``header``, ``na_values``.

    Raises
    ------
    ValueError
        For an unreadable file, a missing target column, a target without values, or text
        among the numbers of a column (found in the sample).
    """
    path = Path(path)
    options, names, notes = _read_options(path, dict(read_options or {}))
    target = names[-1] if target is None else target
    if target not in names:
        raise ValueError(f"{path} has no column {target!r}; its columns are {names}")
    features = [c for c in names if c != target]
    if not features:
        raise ValueError(f"{path} has only the target column {target!r} and no features")
    found = Survey(path, options, features, target, seed, val_split, notes=notes)
    learner = _TargetLearner(task, target)
    sample, back = _Smallest(SAMPLE_ROWS), _Smallest(HELD_BACK_ROWS if hold_back else 0)
    for frame, draws in found.chunks():
        found.rows += len(frame)
        learner.update(frame[target])
        for name, count in frame[features].isna().sum().items():
            if count:
                found.gaps[str(name)] = found.gaps.get(str(name), 0) + int(count)
        train = draws[:, 0] >= val_split
        found.held_out += int((~train).sum())
        sample.offer(draws[train, 2], frame[train][features])
        back.offer(draws[train, 1], frame[train])
        if len(found.class_counts) <= MAX_CLASSES:  # beyond: a regression target, or refused
            for key, count in learner.keys(frame[target][train]).items():
                found.class_counts[key] = found.class_counts.get(key, 0) + count
    if found.rows == 0:
        raise ValueError(f"the target {target!r} has no values")
    found.target_encoder = learner.encoder()
    k = len(found.target_encoder.classes)
    count = min(HELD_BACK_ROWS, (found.rows - found.held_out) // 10)
    if hold_back and count >= max(2, k):
        found.held_back_frame = back.frame(count)
        found.held_back = np.sort(found.held_back_frame.index.to_numpy())
        for key, n in learner.keys(found.held_back_frame[target]).items():
            found.class_counts[key] -= n
    chosen = sample.frame(SAMPLE_ROWS)
    if len(found.held_back):
        chosen = chosen[~np.isin(chosen.index.to_numpy(), found.held_back)]
    found.sample = chosen
    _check_numbers(chosen, path)
    return found


class _Smallest:
    """The rows of the ``limit`` smallest draws offered so far: a uniform sample without
    replacement that holds no more than ``limit`` rows at any time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.keys = np.zeros(0)
        self.rows: Any = None

    def offer(self, keys: np.ndarray, rows: Any) -> None:
        import pandas as pd

        if self.limit == 0 or len(rows) == 0:
            return
        if len(self.keys) >= self.limit:
            below = keys < self.keys.max()
            keys, rows = keys[below], rows[below]
            if len(rows) == 0:
                return
        keys = np.concatenate([self.keys, keys])
        rows = rows if self.rows is None else pd.concat([self.rows, rows])
        if len(keys) > self.limit:
            keep = np.argpartition(keys, self.limit - 1)[: self.limit]
            keys, rows = keys[keep], rows.iloc[keep]
        self.keys, self.rows = keys, rows

    def frame(self, count: int) -> Any:
        """The ``count`` rows of the smallest draws, smallest first."""
        order = np.argsort(self.keys, kind="stable")[:count]
        return self.rows.iloc[order]


class _TargetLearner:
    """A target column's task and classes (or mean and spread), learned chunk by chunk as
    :meth:`TargetEncoder.fit <xpnet.data.tabular.TargetEncoder.fit>` learns them from all of it.

    Classes are keyed as the encoder matches them (``1``, ``1.0`` and ``"1"`` are one), so a
    chunk that pandas reads as numbers and one it reads as text agree."""

    def __init__(self, task: str, name: str) -> None:
        self.task = task
        self.name = name
        self.text = False
        self.whole = True
        self.values: dict[str, Any] = {}
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def keys(self, column: Any) -> dict[str, int]:
        """How many rows of ``column`` hold each class key."""
        return {str(k): int(v) for k, v in column.map(_key).value_counts().items()}

    def update(self, column: Any) -> None:
        if not is_numeric_kind(column.dtype):
            self.text = True
        else:
            values = column.to_numpy(dtype=np.float64)
            self.whole = self.whole and bool(np.all(values == np.round(values)))
            self._moments(values)
        if len(self.values) <= MAX_CLASSES:
            for value in column.unique():
                self.values.setdefault(_key(value), _json_value(value))

    def _moments(self, values: np.ndarray) -> None:
        """Chan et al.'s update of the running mean and sum of squared deviations by a chunk's."""
        n, mean = len(values), float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    def encoder(self) -> TargetEncoder:
        task = self.task
        if task == "auto":
            few = len(self.values) <= CLASS_LIMIT
            task = "classification" if self.text or (self.whole and few) else "regression"
        encoder = TargetEncoder(task)
        if task == "classification":
            if len(self.values) > MAX_CLASSES:
                raise ValueError(
                    f"the target {self.name!r} has more than {MAX_CLASSES:,} distinct values: "
                    "too many classes"
                )
            encoder.classes = sorted(self.values.values(), key=_sort_key)
        else:
            if self.text:
                raise ValueError(f"the target {self.name!r} holds text, so it cannot be a regression target")
            scale = float(np.sqrt(self.m2 / max(self.count, 1)))
            encoder.scaling = {"mean": self.mean, "scale": scale if scale > 0 else 1.0}
        return encoder


class Part:
    """The training or held-out rows of a surveyed file as a batch source, encoded.

    Parameters
    ----------
    found : Survey
        From :func:`survey`.
    part : {"train", "held_out"}
        Training rows (neither held out nor held back), or the held-out ones.
    encoder : TabularEncoder
        Encodes each chunk's features.
    """

    def __init__(self, found: Survey, part: str, encoder: TabularEncoder) -> None:
        self.found = found
        self.part = part
        self.encoder = encoder

    @property
    def n_rows(self) -> int:
        """Rows per pass."""
        return self.found.training_rows if self.part == "train" else self.found.held_out

    def num_batches(self, batch_size: int) -> int:
        """Batches per pass at ``batch_size``."""
        return -(-self.n_rows // batch_size)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """One pass over the file: this part's rows, encoded; shuffled inside each chunk with ``rng``."""
        return _rebatch(self._chunks(rng), batch_size)

    def _chunks(self, rng: np.random.Generator | None) -> Iterator[Batch]:
        found = self.found
        for frame, draws in found.chunks():
            held_out = draws[:, 0] < found.val_split
            if self.part == "held_out":
                keep = held_out
            else:
                keep = ~held_out & ~np.isin(frame.index.to_numpy(), found.held_back)
            if not keep.any():
                continue
            rows = frame[keep]
            try:
                x = self.encoder.transform(rows[found.features])
                y = target_values(found.target_encoder, rows[found.target])
            except ValueError as exc:
                raise ValueError(
                    f"{found.path.name}, data rows from {int(rows.index[0]) + 1:,}: {exc}"
                ) from None
            if rng is not None:
                order = rng.permutation(len(x))
                x, y = x[order], y[order]
            yield Batch(x, y)


def target_values(encoder: TargetEncoder, column: Any) -> np.ndarray:
    """Targets as ``Network.fit`` takes them from the command: class codes, or the values
    themselves for regression (the network's ``target_scaling`` standardizes them)."""
    if encoder.task == "classification":
        return encoder.transform(column)
    return column.to_numpy(dtype=np.float64)

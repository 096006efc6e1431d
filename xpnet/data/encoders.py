"""The robust tabular encoder, and any encoder rebuilt from its JSON state.

:class:`RobustTabularEncoder` is the encoder of xpnet's default tabular
recipe (:func:`xpnet.tabular_model`). It differs from
:class:`~xpnet.data.tabular.TabularEncoder` only in its numeric columns:

- robust scaling: ``z = (x - median) / s`` with ``s`` the interquartile range
  over 1.349 (the standard deviation of a normal distribution that has that
  range), else the standard deviation, else 1, so a few extreme values do not
  squash the rest;
- smooth clipping: ``z / sqrt(1 + (z / clip) ** 2)``, which leaves small values
  nearly unchanged and brings any value inside ``(-clip, clip)``, so an
  outlier at predict time cannot drive the network far from what it saw;
- with ``bins``, a piecewise-linear encoding beside ``z`` (Gorishniy et al.,
  "On Embeddings for Numerical Features in Tabular Deep Learning", 2022): the
  training quantiles (observed values) cut the column into bins and bin ``t`` encodes as
  ``clip((x - b_t) / (b_{t+1} - b_t), 0, 1)``: 1 for bins below ``x``, the
  position inside ``x``'s own bin, 0 above. A network can then bend a
  column's effect at the data's quantiles, as a tree splits there.

With ``levels``, a numeric column that looks like codes (see
:func:`integer_levels`: integers only, more distinct values than the bins can
tell apart, most rows on values that repeat) also gets its frequent values
one-hot encoded beside ``z`` and its bins: a person or school id written as a
number then gets a level of its own per person, as a category would, and an
age-like column keeps its numeric encoding too. Values not kept (rare, unseen
or missing) encode as all zeros there.

Text, categorical and boolean columns are one-hot encoded as by
``TabularEncoder``; with ``levels`` a column of more than ``max_categories``
categories also keeps the next frequent ones (a school's name among 300).
The fitted state is plain JSON; :func:`encoder_from_state` rebuilds either
kind of encoder from it (a checkpoint stores it as text).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from . import labels
from .tabular import MAX_CATEGORIES, TabularEncoder

ROBUST = "robust"
"""The ``"type"`` of a :class:`RobustTabularEncoder` state."""
NORMAL_IQR = 1.349
"""The interquartile range of the standard normal distribution."""
LEVEL_ROWS = 5
"""Training rows a value of an integer-coded column needs to be one of its one-hot levels."""
LEVEL_SHARE = 0.5
"""Share of a column's training rows that its values of ``level_rows`` rows or more must hold for
it to count as codes."""
LARGEST_CODE = 2.0**53
"""Integers beyond this are not exact in float64, so no column of them counts as codes."""


class RobustTabularEncoder(TabularEncoder):
    """Mixed-type table -> robustly scaled, smoothly clipped (and binned) float features.

    Parameters
    ----------
    max_categories : int
        A text column keeps at most this many categories (the most frequent).
    clip : float or None
        Numeric values are smoothly clipped into ``(-clip, clip)`` after
        scaling; None or 0 leaves them unclipped.
    bins : int
        Quantile bins of each numeric column's piecewise-linear encoding (0:
        none). Columns with fewer distinct training values get fewer bins;
        one with two or fewer gets none.
    levels : int
        At most this many values of an integer-coded numeric column are also
        one-hot encoded (the most frequent; 0: none; see :func:`integer_levels`),
        and a text column keeps, beyond its ``max_categories`` most frequent
        categories, the next ones up to this many in all.
    level_rows : int
        Those levels and extra categories need at least this many training rows.

    Attributes
    ----------
    columns : list of dict
        As :class:`~xpnet.data.tabular.TabularEncoder`'s, numeric entries also
        holding ``"edges"``: the bin edges (empty without bins), and
        ``"levels"``: the values one-hot encoded (integers, ascending; empty
        for most columns).

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"age": [20.0, 30.0, 40.0, 95.0], "town": ["a", "b", "a", "a"]})
    >>> enc = RobustTabularEncoder(bins=2).fit(frame)
    >>> enc.feature_names_out
    ['age', 'age:bin1', 'age:bin2', 'town=a', 'town=b']
    >>> enc.transform(frame).round(2).tolist()[3]
    [2.15, 1.0, 1.0, 1.0, 0.0]
    """

    def __init__(
        self,
        max_categories: int = MAX_CATEGORIES,
        clip: float | None = 3.0,
        bins: int = 0,
        levels: int = 0,
        level_rows: int = LEVEL_ROWS,
    ) -> None:
        super().__init__(max_categories)
        if clip is not None and not (isinstance(clip, (int, float)) and np.isfinite(clip) and clip >= 0):
            raise ValueError(f"clip must be None or a finite number >= 0, got {clip!r}")
        for name, value, least in (("bins", bins, 0), ("levels", levels, 0), ("level_rows", level_rows, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self.clip = float(clip) if clip else 0.0
        self.bins = int(bins)
        self.levels = int(levels)
        self.level_rows = int(level_rows)

    def _fit_column(self, name: str, column: Any) -> dict[str, Any]:
        spec = super()._fit_column(name, column)
        if spec["kind"] != "numeric":
            return spec
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        if finite.size:
            low, high = np.quantile(finite, [0.25, 0.75])
            spread = (high - low) / NORMAL_IQR
            spec["mean"] = spec["median"]
            spec["scale"] = float(spread) if spread > 0 else spec["scale"]
        spec["edges"] = _edges(finite, self.bins)
        spec["levels"] = integer_levels(finite, self.levels, self.level_rows, self.bins)
        return spec

    def _kept(self, ranked: list[tuple[str, int]]) -> list[str]:
        """The ``max_categories`` most frequent categories and, up to ``levels`` in all, the next
        ones with at least ``level_rows`` rows (so a name column of a row each stays at
        ``max_categories``)."""
        kept = super()._kept(ranked)
        more = [key for key, rows in ranked[len(kept) : self.levels] if rows >= self.level_rows]
        return kept + more

    @property
    def category_cap(self) -> int:
        """The most categories (or integer levels) a column of this encoder can keep."""
        return max(self.max_categories, self.levels)

    @property
    def feature_names_out(self) -> list[str]:
        names: list[str] = []
        for c in self.columns:
            name = labels.shown(c["name"])
            if c["kind"] == "numeric":
                names.append(name)
                names += [f"{name}:bin{t + 1}" for t in range(_bins(c))]
                names += [f"{name}={v}" for v in c.get("levels", [])]
                names += [f"{name}_missing"] if c["indicator"] else []
            else:
                names += [f"{name}={v}" for v in c["categories"]]
        return names

    @property
    def width(self) -> int:
        """How many features :meth:`transform` makes (``len(feature_names_out)``, counted)."""
        return sum(_width(c) for c in self.columns)

    def beyond(self, encoded: np.ndarray, top: float) -> list[tuple[Any, float]]:
        """The input columns whose features in ``encoded`` are not finite or exceed ``top`` in
        magnitude, each with its largest magnitude (as :meth:`TabularEncoder.beyond`)."""
        with np.errstate(invalid="ignore"):
            worst = np.where(np.isfinite(encoded), np.abs(encoded), np.inf).max(axis=0, initial=0.0)
        found, start = [], 0
        for c in self.columns:
            stop = start + _width(c)
            big = float(worst[start:stop].max(initial=0.0))
            if big > top:
                found.append((c["name"], big))
            start = stop
        return found

    def _transform_column(self, spec: dict[str, Any], column: Any) -> np.ndarray:
        encoded = super()._transform_column(spec, column)
        if spec["kind"] != "numeric":
            return encoded
        z = encoded[:, 0]
        if self.clip:
            z = z / np.sqrt(1.0 + (z / self.clip) ** 2)
        parts = [z[:, None]]
        edges = np.asarray(spec["edges"], dtype=np.float64)
        if edges.size > 1:
            x = spec["mean"] + encoded[:, 0] * spec["scale"]  # the imputed raw values
            low, width = edges[:-1], np.diff(edges)
            parts.append(np.clip((x[:, None] - low[None, :]) / width[None, :], 0.0, 1.0))
        if spec.get("levels"):
            parts.append(_one_hot(column.to_numpy(dtype=np.float64, na_value=np.nan), spec["levels"]))
        return np.concatenate([*parts, encoded[:, 1:]], axis=1)

    def get_state(self) -> dict[str, Any]:
        """The fitted state as a JSON-able dict (see :func:`encoder_from_state`)."""
        levels = {"levels": self.levels, "level_rows": self.level_rows}
        return {"type": ROBUST, "clip": self.clip, "bins": self.bins, **levels, **super().get_state()}

    @classmethod
    def _empty(cls, state: dict[str, Any]) -> RobustTabularEncoder:
        try:  # a state saved before levels existed has none
            levels = (int(state.get("levels", 0)), int(state.get("level_rows", LEVEL_ROWS)))
            return cls(state["max_categories"], state["clip"], int(state["bins"]), *levels)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a RobustTabularEncoder state: {exc!r}") from exc

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RobustTabularEncoder:
        """An encoder rebuilt from :meth:`get_state`'s output."""
        encoder = cast(RobustTabularEncoder, super().from_state(state))
        for c in encoder.columns:
            if c["kind"] != "numeric":
                continue
            shown = labels.shown(c["name"])
            if not _increasing(c.get("edges")):
                raise ValueError(
                    f"not a RobustTabularEncoder state: column {shown!r} needs "
                    "'edges', an increasing list of finite numbers (or an empty one)"
                )
            c.setdefault("levels", [])
            if not _increasing(c["levels"], integers=True) or len(c["levels"]) > encoder.levels:
                raise ValueError(
                    f"not a RobustTabularEncoder state: column {shown!r} has 'levels' "
                    f"{str(c['levels'])[:40]}; expected an increasing list of at most "
                    f"{encoder.levels} integers"
                )
        return encoder


def _bins(spec: dict[str, Any]) -> int:
    return max(len(spec["edges"]) - 1, 0)


def _width(spec: dict[str, Any]) -> int:
    """Features a column encodes into: ``z``, its bins and its missing indicator, or its categories."""
    if spec["kind"] == "numeric":
        return 1 + _bins(spec) + len(spec.get("levels", [])) + int(spec["indicator"])
    return len(spec["categories"])


def _increasing(edges: Any, integers: bool = False) -> bool:
    kinds = (int,) if integers else (int, float)
    if not isinstance(edges, list) or any(isinstance(e, bool) or not isinstance(e, kinds) for e in edges):
        return False
    values = np.asarray(edges, dtype=np.float64)
    return bool(np.all(np.isfinite(values)) and np.all(np.diff(values) > 0))


def integer_levels(finite: np.ndarray, most: int, rows: int, bins: int = 0) -> list[int]:
    """The values of a numeric column one-hot encoded beside its numbers (ascending), or [].

    A column counts as codes when all its (finite) training values are
    integers, it has more distinct values than ``bins`` bins have edges (so
    the bins cannot give each its own step; at least 3), and the values with at
    least ``rows`` rows hold at least :data:`LEVEL_SHARE` of the rows: an id
    of persons seen several times each, not a row number or an amount. The
    ``most`` most frequent of those values are kept (ties: the smaller), so a
    column of many codes costs at most ``most`` features.
    """
    if most < 1 or finite.size == 0 or np.abs(finite).max() > LARGEST_CODE:
        return []
    if np.any(finite != np.round(finite)):
        return []
    values, counts = np.unique(finite, return_counts=True)
    if values.size <= max(bins + 1, 2):
        return []
    frequent = counts >= rows
    if counts[frequent].sum() < LEVEL_SHARE * finite.size:
        return []
    order = np.lexsort((values, -counts))[: min(most, int(frequent.sum()))]
    return [int(v) for v in np.sort(values[order])]


def _one_hot(values: np.ndarray, levels: list[int]) -> np.ndarray:
    """One column per level, 1 where ``values`` equals it (a gap or an unseen value: a row of
    zeros); by lookup, not by comparing every row with every level."""
    known = np.asarray(levels, dtype=np.float64)
    where = np.minimum(np.searchsorted(known, values), known.size - 1)  # NaN sorts past the end
    hit = known[where] == values
    out = np.zeros((values.size, known.size))
    out[np.flatnonzero(hit), where[hit]] = 1.0
    return out


def _edges(finite: np.ndarray, bins: int) -> list[float]:
    """Distinct quantile edges of ``bins`` bins, or [] when that makes fewer than two bins."""
    if bins < 2 or finite.size == 0:
        return []
    # Edges at observed values (no interpolation), so a column of few values gets a bin between each two.
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1), method="inverted_cdf"))
    return [float(e) for e in edges] if edges.size > 2 else []


BINS = 16
"""Quantile bins of the default encoder's numeric columns."""
CLIP = 3.0
"""The default encoder's smooth clipping bound, in robust standard deviations."""


LEVELS = 1000
"""Most one-hot levels of an integer-coded column (or categories of a text one) in the default encoder."""


ROBUST_ROWS = 1000
"""Rows above which :func:`default_encoder` is the robust one (below, too few rows to place 16 bins)."""


def default_encoder(rows: int) -> TabularEncoder:
    """The encoder ``Network.fit(preprocess="auto")`` fits on a table of ``rows`` rows.

    Above :data:`ROBUST_ROWS` rows a :class:`RobustTabularEncoder` (clipping at
    3, 16 bins, up to 1,000 levels of an integer-coded or text column with 5
    rows each); up to it a standardizing :class:`~xpnet.data.TabularEncoder`,
    which measured better on tables of a few hundred rows (docs/accuracy.md).
    """
    if rows <= ROBUST_ROWS:
        return TabularEncoder()
    return RobustTabularEncoder(clip=CLIP, bins=BINS, levels=LEVELS, level_rows=LEVEL_ROWS)


def encoder_from_state(state: dict[str, Any]) -> TabularEncoder:
    """The encoder a state describes: a :class:`RobustTabularEncoder` or a ``TabularEncoder``."""
    if isinstance(state, dict) and state.get("type") == ROBUST:
        return RobustTabularEncoder.from_state(state)
    return TabularEncoder.from_state(state)

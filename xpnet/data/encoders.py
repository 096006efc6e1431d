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

Text, categorical and boolean columns are one-hot encoded as by
``TabularEncoder``. The fitted state is plain JSON; :func:`encoder_from_state`
rebuilds either kind of encoder from it (a checkpoint stores it as text).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import labels
from .tabular import MAX_CATEGORIES, TabularEncoder

ROBUST = "robust"
"""The ``"type"`` of a :class:`RobustTabularEncoder` state."""
NORMAL_IQR = 1.349
"""The interquartile range of the standard normal distribution."""


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

    Attributes
    ----------
    columns : list of dict
        As :class:`~xpnet.data.tabular.TabularEncoder`'s, numeric entries also
        holding ``"edges"``: the bin edges (empty without bins).

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

    def __init__(self, max_categories: int = MAX_CATEGORIES, clip: float | None = 3.0, bins: int = 0) -> None:
        super().__init__(max_categories)
        if clip is not None and not (isinstance(clip, (int, float)) and np.isfinite(clip) and clip >= 0):
            raise ValueError(f"clip must be None or a finite number >= 0, got {clip!r}")
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 0:
            raise ValueError(f"bins must be an integer >= 0, got {bins!r}")
        self.clip = float(clip) if clip else 0.0
        self.bins = int(bins)

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
        return spec

    @property
    def feature_names_out(self) -> list[str]:
        names: list[str] = []
        for c in self.columns:
            name = labels.shown(c["name"])
            if c["kind"] == "numeric":
                names.append(name)
                names += [f"{name}:bin{t + 1}" for t in range(_bins(c))]
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
        return np.concatenate([*parts, encoded[:, 1:]], axis=1)

    def get_state(self) -> dict[str, Any]:
        """The fitted state as a JSON-able dict (see :func:`encoder_from_state`)."""
        return {"type": ROBUST, "clip": self.clip, "bins": self.bins, **super().get_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RobustTabularEncoder:
        """An encoder rebuilt from :meth:`get_state`'s output."""
        base = TabularEncoder.from_state(state)
        try:
            encoder = cls(base.max_categories, state["clip"], int(state["bins"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a RobustTabularEncoder state: {exc!r}") from exc
        for c in base.columns:
            if c["kind"] == "numeric" and not _increasing(c.get("edges")):
                raise ValueError(
                    f"not a RobustTabularEncoder state: column {labels.shown(c['name'])!r} needs "
                    "'edges', an increasing list of finite numbers (or an empty one)"
                )
        encoder.columns = base.columns
        return encoder


def _bins(spec: dict[str, Any]) -> int:
    return max(len(spec["edges"]) - 1, 0)


def _width(spec: dict[str, Any]) -> int:
    """Features a column encodes into: ``z``, its bins and its missing indicator, or its categories."""
    if spec["kind"] == "numeric":
        return 1 + _bins(spec) + int(spec["indicator"])
    return len(spec["categories"])


def _increasing(edges: Any) -> bool:
    if not isinstance(edges, list) or any(
        isinstance(e, bool) or not isinstance(e, (int, float)) for e in edges
    ):
        return False
    values = np.asarray(edges, dtype=np.float64)
    return bool(np.all(np.isfinite(values)) and np.all(np.diff(values) > 0))


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


ROBUST_ROWS = 1000
"""Rows above which :func:`default_encoder` is the robust one (below, too few rows to place 16 bins)."""


def default_encoder(rows: int) -> TabularEncoder:
    """The encoder ``Network.fit(preprocess="auto")`` fits on a table of ``rows`` rows.

    Above :data:`ROBUST_ROWS` rows a :class:`RobustTabularEncoder` (clipping at
    3, 16 bins); up to it a standardizing :class:`~xpnet.data.TabularEncoder`,
    which measured better on tables of a few hundred rows (docs/accuracy.md).
    """
    return RobustTabularEncoder(clip=CLIP, bins=BINS) if rows > ROBUST_ROWS else TabularEncoder()


def encoder_from_state(state: dict[str, Any]) -> TabularEncoder:
    """The encoder a state describes: a :class:`RobustTabularEncoder` or a ``TabularEncoder``."""
    if isinstance(state, dict) and state.get("type") == ROBUST:
        return RobustTabularEncoder.from_state(state)
    return TabularEncoder.from_state(state)

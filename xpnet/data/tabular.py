"""Tables as numbers: a feature encoder and a target encoder whose fitted state is JSON.

:class:`TabularEncoder` turns a DataFrame of mixed columns into a float
matrix: numeric columns are imputed with the training median (plus a 0/1
missing-indicator column where the training data had gaps) and standardized;
text, categorical and boolean columns are one-hot encoded (a value not seen in
training, or a missing one, encodes as all zeros). :class:`TargetEncoder`
decides classification or regression, maps class labels to codes and back, and
standardizes regression targets. Both save their fitted state as plain JSON
(:meth:`get_state` / :meth:`from_state`), which a checkpoint stores as text: no
pickle.

Everything here runs on the host in NumPy and pandas.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import labels

TASKS = ("classification", "regression")
CLASS_LIMIT = 20
"""A numeric target whose values are all integers is classes when it has at most this many."""
MAX_CATEGORIES = 100
"""A text column keeps at most this many (most frequent) categories; rarer ones encode as unseen."""


def is_dataframe(X: Any) -> bool:
    """Whether ``X`` looks like a pandas (or pandas-like) DataFrame."""
    return hasattr(X, "columns") and hasattr(X, "dtypes") and hasattr(X, "iloc")


def is_numeric_kind(dtype: Any) -> bool:
    """Whether a column of this dtype holds numbers (booleans are categories, not numbers)."""
    return getattr(dtype, "kind", "O") in "iuf"


def _key(value: Any) -> str:
    """A category as text, so that JSON round trips keep it comparable (``1`` and ``1.0`` agree)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value.item() if isinstance(value, np.generic) else value)


class TabularEncoder:
    """Mixed-type table -> standardized float features, fitted on training data.

    Parameters
    ----------
    max_categories : int
        A text column keeps at most this many categories (the most frequent).

    Attributes
    ----------
    columns : list of dict
        One entry per input column, in input order: ``{"name", "kind": "numeric",
        "median", "mean", "scale", "indicator"}`` or ``{"name", "kind":
        "categorical", "categories"}``.
    feature_names_out : list of str
        Names of the output columns (``col``, ``col_missing``, ``col=value``).

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"age": [20.0, None, 40.0], "town": ["a", "b", "a"]})
    >>> enc = TabularEncoder().fit(frame)
    >>> enc.feature_names_out
    ['age', 'age_missing', 'town=a', 'town=b']
    >>> enc.transform(frame).shape
    (3, 4)
    """

    def __init__(self, max_categories: int = MAX_CATEGORIES) -> None:
        self.max_categories = int(max_categories)
        self.columns: list[dict[str, Any]] = []

    @property
    def fitted(self) -> bool:
        return bool(self.columns)

    @property
    def names(self) -> list[Any]:
        """The input column labels (JSON form, see :mod:`xpnet.data.labels`), in fitted order."""
        return [c["name"] for c in self.columns]

    def fit(self, frame: Any) -> TabularEncoder:
        """Learn medians, scales and categories from the training DataFrame ``frame``."""
        if not is_dataframe(frame) or frame.shape[1] == 0 or frame.shape[0] == 0:
            raise ValueError("TabularEncoder.fit needs a DataFrame with at least one row and one column")
        names = labels.stored(frame.columns)
        self.columns = [self._fit_column(name, frame.iloc[:, i]) for i, name in enumerate(names)]
        return self

    def _fit_column(self, name: Any, column: Any) -> dict[str, Any]:
        if not is_numeric_kind(column.dtype):
            counts = column.dropna().map(_key).value_counts(sort=False)
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            kept = self._kept(ranked)
            _note_categories(name, column, ranked, len(kept))
            return {"name": name, "kind": "categorical", "categories": sorted(kept)}
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        _note_infinite(name, values, "taken as missing in training")
        finite = values[np.isfinite(values)]
        median = float(np.median(finite)) if finite.size else 0.0
        filled = np.where(np.isfinite(values), values, median)
        scale = float(filled.std())
        return {
            "name": name,
            "kind": "numeric",
            "median": median,
            "mean": float(filled.mean()),
            "scale": scale if scale > 0 else 1.0,
            "indicator": bool(finite.size < values.size),
        }

    def _kept(self, ranked: list[tuple[str, int]]) -> list[str]:
        """The categories a text column keeps, from its ``(category, rows)`` pairs, most rows first."""
        return [key for key, _ in ranked[: self.max_categories]]

    @property
    def category_cap(self) -> int:
        """The most categories a column of this encoder can keep."""
        return self.max_categories

    @classmethod
    def _empty(cls, state: dict[str, Any]) -> TabularEncoder:
        """An encoder with ``state``'s settings and no columns yet (see :meth:`from_state`)."""
        return cls(state["max_categories"])

    @property
    def feature_names_out(self) -> list[str]:
        names: list[str] = []
        for c in self.columns:
            name = labels.shown(c["name"])
            if c["kind"] == "numeric":
                names += [name, f"{name}_missing"] if c["indicator"] else [name]
            else:
                names += [f"{name}={v}" for v in c["categories"]]
        return names

    def transform(self, frame: Any) -> np.ndarray:
        """The encoded features of ``frame`` (matched by column name; extra columns ignored).

        Raises
        ------
        ValueError
            If a column the encoder was fitted on is missing, or a numeric
            column holds text.
        """
        if not self.fitted:
            raise ValueError("the encoder is not fitted: call fit first")
        where = labels.positions(frame, self.names)
        parts = [self._transform_column(c, frame.iloc[:, i]) for c, i in zip(self.columns, where)]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0))

    def _transform_column(self, spec: dict[str, Any], column: Any) -> np.ndarray:
        if spec["kind"] == "categorical":
            keys = column.map(_category_key(spec["categories"])).to_numpy()
            cats = np.asarray(spec["categories"], dtype=object)
            encoded = (keys[:, None] == cats[None, :]).astype(np.float64)
            if len(cats) < self.max_categories:  # a column cut to its most frequent was noted in fit
                _note_unseen(spec["name"], column, keys, encoded)
            return encoded
        try:
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            raise ValueError(
                f"column {labels.restored(spec['name'])!r} was numeric in training but holds text here"
            ) from None
        _note_infinite(spec["name"], values, "replaced by the training median")
        if not spec["indicator"]:
            _note_missing(spec["name"], values)
        gaps = ~np.isfinite(values)
        standard = (np.where(gaps, spec["median"], values) - spec["mean"]) / spec["scale"]
        if spec["indicator"]:
            return np.column_stack([standard, gaps.astype(np.float64)])
        return standard[:, None]

    def beyond(self, encoded: np.ndarray, top: float) -> list[tuple[Any, float]]:
        """The input columns whose features in ``encoded`` are not finite or exceed ``top`` in
        magnitude, each with its largest magnitude (for a dtype's range, after :meth:`transform`)."""
        with np.errstate(invalid="ignore"):
            worst = np.where(np.isfinite(encoded), np.abs(encoded), np.inf).max(axis=0, initial=0.0)
        found, start = [], 0
        for c in self.columns:
            stop = start + _WIDTHS[c["kind"]](c)
            big = float(worst[start:stop].max(initial=0.0))
            if big > top:
                found.append((c["name"], big))
            start = stop
        return found

    def fit_transform(self, frame: Any) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same DataFrame."""
        return self.fit(frame).transform(frame)

    def get_state(self) -> dict[str, Any]:
        """The fitted state as a JSON-able dict (see :meth:`from_state`)."""
        return {"max_categories": self.max_categories, "columns": self.columns}

    @property
    def width(self) -> int:
        """How many features :meth:`transform` makes (``len(feature_names_out)``, counted)."""
        return sum(_WIDTHS[c["kind"]](c) for c in self.columns)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TabularEncoder:
        """An encoder rebuilt from :meth:`get_state`'s output, every entry checked.

        Raises
        ------
        ValueError
            Naming the first entry that is missing or of the wrong type, a
            duplicated column, a scale that is not a finite number of normal
            size, or repeated categories: a state that ``transform`` could not
            use as written.
        """
        state = _entries(state, {"max_categories": int, "columns": list}, "the encoder")
        if state["max_categories"] < 1:
            raise ValueError(f"the encoder's max_categories is {state['max_categories']}; expected >= 1")
        encoder = cls._empty(state)
        encoder.columns = [_column_state(c, i) for i, c in enumerate(state["columns"])]
        if not encoder.columns:
            raise ValueError("the encoder has no columns")
        try:
            labels.stored([labels.restored(name) for name in encoder.names])
        except (ValueError, TypeError):
            raise ValueError(
                f"the encoder's column names {encoder.names[:5]} are repeated or not labels"
            ) from None
        wide = [c["name"] for c in encoder.columns if len(c.get("categories", ())) > encoder.category_cap]
        if wide:
            raise ValueError(
                f"the encoder's columns {wide[:5]} list more categories than it keeps "
                f"({encoder.category_cap})"
            )
        return encoder


_TYPES: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), bool: (bool,), list: (list,)}


def _entries(state: Any, wanted: dict[str, Any], what: str) -> dict[str, Any]:
    """``state`` when it is a JSON object holding ``wanted``'s keys with values of their types."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} is {type(state).__name__}; expected a JSON object")
    for name, kind in wanted.items():
        value = state.get(name)
        bad_bool = isinstance(value, bool) and kind is not bool
        if name not in state or bad_bool or not isinstance(value, _TYPES[kind]):
            got = "missing" if name not in state else f"{value!r}"[:40]
            raise ValueError(f"{what}'s {name!r} is {got}; expected {kind.__name__}")
    return state


def _finite(value: float, what: str, scale: bool = False) -> None:
    tiny = float(np.finfo(np.float64).tiny)
    if not np.isfinite(value) or (scale and abs(value) < tiny):
        size = "a finite number of normal size (|scale| >= 2.2e-308)" if scale else "a finite number"
        raise ValueError(f"{what} is {value!r}; expected {size}")


def _numeric_state(spec: dict[str, Any], what: str) -> None:
    _entries(spec, {"median": float, "mean": float, "scale": float, "indicator": bool}, what)
    for name in ("median", "mean", "scale"):
        _finite(spec[name], f"{what}'s {name!r}", scale=name == "scale")
    # Fitted on data, the median lies within one standard deviation of the mean (to rounding).
    slack = 1e-9 * (abs(spec["scale"]) + abs(spec["mean"]))
    if abs(spec["median"] - spec["mean"]) > abs(spec["scale"]) + slack:
        raise ValueError(
            f"{what}'s median {spec['median']!r} is more than its scale {spec['scale']!r} from its "
            f"mean {spec['mean']!r}, which no fitted column gives"
        )


def _categorical_state(spec: dict[str, Any], what: str) -> None:
    categories = _entries(spec, {"categories": list}, what)["categories"]
    if not all(isinstance(c, str) for c in categories):
        raise ValueError(f"{what}'s categories must be text")
    if len(set(categories)) != len(categories):
        raise ValueError(f"{what} lists a category more than once")


_STATE_CHECKS = {"numeric": _numeric_state, "categorical": _categorical_state}
"""Each column kind's check of its fitted state (see :meth:`TabularEncoder.from_state`)."""
_WIDTHS = {
    "numeric": lambda spec: 1 + int(spec["indicator"]),
    "categorical": lambda spec: len(spec["categories"]),
}
"""How many features each column kind encodes into."""


def _column_state(spec: Any, index: int) -> dict[str, Any]:
    what = f"the encoder's column {index}"
    spec = _entries(spec, {}, what)
    if "name" not in spec:
        raise ValueError(f"{what} has no 'name'")
    kind = spec.get("kind")
    check = _STATE_CHECKS.get(kind) if isinstance(kind, str) else None
    if check is None:
        raise ValueError(f"{what} has kind {kind!r}; expected one of {sorted(_STATE_CHECKS)}")
    check(spec, f"{what} ({labels.shown(spec['name'])!r})")
    return dict(spec)


class EncodingNote(UserWarning):
    """Something the encoder did with the data that its user should hear of, in one line: a
    column read as categories although half of it is numbers, categories cut to the most
    frequent, values not seen in training, infinite or missing values replaced."""


def _note(text: str) -> None:
    warnings.warn(text, EncodingNote, stacklevel=4)


_TRUE = {"true", "t", "yes", "y", "on", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "off", "0", "0.0"}


def _boolean(value: Any) -> bool | None:
    """``value`` as a truth value when it spells one (True, 1, "yes", "TRUE", ...), else None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return bool(value) if value in (0, 1) else None
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _category_key(categories: list[str]) -> Any:
    """A value's category key; for a column of truth values (``True``/``False``, ``yes``/``no``),
    any spelling of one maps to the category that spells it in training."""
    truths = {_boolean(c): c for c in categories}
    boolean = None not in truths and len(truths) == len(categories)
    known = set(categories)

    def key(value: Any) -> str | None:
        if _missing(value):
            return None
        k = _key(value)
        if boolean and k not in known:
            return truths.get(_boolean(value), k)
        return k

    return key


def _note_categories(name: Any, column: Any, ranked: list[tuple[str, int]], limit: int) -> None:
    """Notes for a text column: all but its ``limit`` most frequent categories dropped; numbers read
    as categories."""
    shown = repr(labels.restored(name))
    if len(ranked) > limit:
        dropped = sum(count for _, count in ranked[limit:])
        _note(
            f"column {shown} has {len(ranked):,} distinct values: the {limit} most frequent are its "
            f"categories, the other {len(ranked) - limit:,} ({dropped:,} rows) encode as unseen (all zeros)"
        )
    present = column.dropna()
    texts = present[present.map(lambda v: isinstance(v, str))]
    if len(texts) < len(present) or not len(texts):
        return
    import pandas as pd

    numbers = int(pd.to_numeric(texts, errors="coerce").notna().sum())
    if numbers >= 0.2 * len(texts):
        _note(
            f"column {shown} holds numbers in {numbers:,} of {len(texts):,} rows and text in the others: "
            "it is encoded as categories, each number its own; if the text means missing, say so "
            "(na_values, --na-values)"
        )


def _note_infinite(name: Any, values: np.ndarray, what: str) -> None:
    count = int(np.isinf(values).sum())
    if count:
        _note(f"column {labels.restored(name)!r} holds {count:,} infinite value(s), {what}")


def _note_missing(name: Any, values: np.ndarray) -> None:
    count = int(np.isnan(values).sum())
    if count:
        _note(
            f"column {labels.restored(name)!r} has {count:,} missing value(s), which it had none of in "
            "training: replaced by the training median"
        )


def _note_unseen(name: Any, column: Any, keys: np.ndarray, encoded: np.ndarray) -> None:
    present = keys != None  # noqa: E711 (elementwise on an object array)
    unseen = present & ~encoded.any(axis=1)
    count, total = int(unseen.sum()), int(present.sum())
    if total and count > total / 2:
        examples = sorted({str(v) for v in column[unseen].head(1000)})[:3]
        _note(
            f"column {labels.restored(name)!r}: {count:,} of {total:,} values were not seen in training "
            f"(e.g. {examples}) and encode as unseen (all zeros)"
        )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value))


def check_columns(frame: Any, names: list[Any], what: str = "the model") -> None:
    """ValueError naming every column of ``names`` that ``frame`` lacks (or has twice)."""
    labels.positions(frame, names, what)


def needs_encoding(frame: Any) -> bool:
    """Whether a DataFrame has non-numeric columns (text, categorical, boolean)."""
    return any(not is_numeric_kind(t) for t in frame.dtypes)


class TargetEncoder:
    """One target column as training targets: class codes, or standardized values.

    Parameters
    ----------
    task : {"auto", "classification", "regression"}
        ``"auto"``: integer, text and boolean columns, and float columns whose
        values are all integers with at most :data:`CLASS_LIMIT` distinct
        values, are classes; other numeric columns are regression targets
        (integer columns with more distinct values than that too).

    Attributes
    ----------
    task : str
        ``"classification"`` or ``"regression"`` once fitted.
    classes : list
        Class labels by code (sorted), JSON values; empty for regression.
    scaling : dict
        ``{"mean", "scale"}`` of a regression target; empty for classification.
    """

    def __init__(self, task: str = "auto") -> None:
        if task not in ("auto", *TASKS):
            raise ValueError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
        self.task = task
        self.classes: list[Any] = []
        self.scaling: dict[str, float] = {}

    def fit(self, column: Any) -> TargetEncoder:
        """Choose the task (if ``"auto"``) and learn classes or scaling from a Series."""
        if column.isna().any():
            rows = [int(i) + 1 for i in np.flatnonzero(column.isna().to_numpy())[:5]]
            raise ValueError(f"the target {column.name!r} has missing values (data rows {rows})")
        if self.task == "auto":
            self.task = infer_task(column)
        if self.task == "classification":
            self.classes = sorted({_json_value(v) for v in column}, key=_sort_key)
        else:
            values = _numbers(column)
            scale = float(values.std())
            self.scaling = {"mean": float(values.mean()), "scale": scale if scale > 0 else 1.0}
        return self

    def transform(self, column: Any) -> np.ndarray:
        """Class codes (int64) or standardized values (float64) of a Series."""
        if self.task == "regression":
            return (_numbers(column) - self.scaling["mean"]) / self.scaling["scale"]
        codes = {_key(c): i for i, c in enumerate(self.classes)}
        keys = [_key(v) for v in column]
        unknown = sorted(set(keys) - set(codes))
        if unknown:
            raise ValueError(f"target values {unknown[:5]} are not classes the model knows {self.classes}")
        return np.array([codes[k] for k in keys], dtype=np.int64)

    def get_state(self) -> dict[str, Any]:
        """The fitted state as a JSON-able dict."""
        return {"task": self.task, "classes": self.classes, "scaling": self.scaling}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TargetEncoder:
        encoder = cls(state["task"])
        encoder.classes = list(state.get("classes", []))
        encoder.scaling = dict(state.get("scaling", {}))
        return encoder


def infer_task(column: Any) -> str:
    """``"classification"`` or ``"regression"`` for a target column (see :class:`TargetEncoder`)."""
    if not is_numeric_kind(column.dtype):
        return "classification"
    values = column.to_numpy(dtype=np.float64)
    if not np.all(values == np.round(values)):
        return "regression"
    return "classification" if len(np.unique(values)) <= CLASS_LIMIT else "regression"


def _numbers(column: Any) -> np.ndarray:
    try:
        return column.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"the target {column.name!r} holds text, so it cannot be a regression target"
        ) from None


def _json_value(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, (bool, int, float)) else str(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))

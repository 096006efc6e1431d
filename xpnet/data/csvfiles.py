"""CSV files as DataFrames, read the way people write them.

:func:`read_table` sniffs the delimiter (``,`` ``;`` tab ``|``), takes the
decimal and thousands separators and the encoding it is told, drops a saved
pandas index column (with a note), refuses a header row made only of numbers
(the file probably has no header: ``header=False``), and reports every column
holding text among numbers with the first rows involved. Missing values are
kept (as NaN) and described in a note: the tabular encoder imputes them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import Dataset
from .tabular import TargetEncoder

DELIMITERS = ",;\t|"
SHOWN_ROWS = 5


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("reading CSV files needs pandas: pip install pandas") from exc
    return pd


def sniff_delimiter(path: Path, encoding: str | None = None, decimal: str = ".") -> str:
    """The delimiter among ``,`` ``;`` tab ``|`` that splits the first lines of ``path`` evenly."""
    with path.open(encoding=encoding or "utf-8", errors="replace", newline="") as handle:
        sample = handle.read(64 * 1024)
    lines = [line for line in sample.splitlines()[:50] if line.strip()]
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the last line of the sample may be cut short
    candidates = [d for d in DELIMITERS if not (d == "," and decimal == ",")]
    best, best_score = ",", 0
    for delimiter in candidates:
        widths = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        if widths and min(widths) == max(widths) > 1:
            score = widths[0]
            if score > best_score:
                best, best_score = delimiter, score
    return best


def read_table(
    path: str | Path,
    *,
    sep: str | None = None,
    decimal: str = ".",
    thousands: str | None = None,
    encoding: str | None = None,
    header: bool = True,
    na_values: list[str] | None = None,
) -> tuple[Any, list[str]]:
    """Read a CSV file into a DataFrame; return it and notes for the user.

    Parameters
    ----------
    path : str or Path
        The file.
    sep : str, optional
        The delimiter; sniffed among ``,`` ``;`` tab ``|`` when not given.
    decimal, thousands : str
        Decimal mark (``","`` for many European spreadsheets) and thousands
        separator of numbers.
    encoding : str, optional
        Text encoding (default UTF-8).
    header : bool
        Whether the first row names the columns. Without one, columns are
        named ``column1``, ``column2``, ...
    na_values : list of str, optional
        Extra strings that mean a missing value (``"?"``, ``"n/a"``, ...).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        For an unreadable file, a numeric-looking header, or columns of numbers
        holding text (every such column is named, with its first rows).
    """
    pd = _pandas()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    delimiter = sep or sniff_delimiter(path, encoding, decimal)
    try:
        frame = pd.read_csv(
            path,
            sep=delimiter,
            decimal=decimal,
            thousands=thousands,
            encoding=encoding,
            header=0 if header else None,
            na_values=na_values,
            skipinitialspace=True,
            **exact_floats(),
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, LookupError) as exc:
        raise ValueError(f"{path} is not a readable CSV file: {str(exc).strip()}") from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{path} has no data rows")
    notes = []
    if header:
        _check_header(frame, path)
        notes += _duplicate_names(path, delimiter, encoding, [str(c) for c in frame.columns])
    else:
        frame.columns = [f"column{i + 1}" for i in range(frame.shape[1])]
    frame.columns = [str(c) for c in frame.columns]
    if _is_saved_index(frame):
        notes.append(f"dropped the first column of {path.name}: a saved pandas index (0, 1, 2, ...)")
        frame = frame.iloc[:, 1:]
    _check_numbers(frame, path)
    gaps = missing_values(frame)
    if gaps:
        notes.append(f"{path.name} has missing values (features are imputed): {gaps}")
    return frame, notes


def _check_header(frame: Any, path: Path) -> None:
    def number(name: Any) -> bool:
        try:
            float(str(name).replace(",", "."))
        except ValueError:
            return False
        return True

    if all(number(c) for c in frame.columns):
        raise ValueError(
            f"{path}: the header row {[str(c) for c in frame.columns][:6]} is all numbers; "
            "if the file has no header row, pass --no-header (header=False)"
        )


def _duplicate_names(path: Path, delimiter: str, encoding: str | None, read: list[str]) -> list[str]:
    """A note for each name the header row gives several columns (pandas reads them as a, a.1, ...)."""
    with path.open(encoding=encoding or "utf-8", errors="replace", newline="") as handle:
        header = [name.strip() for name in next(csv.reader(handle, delimiter=delimiter), [])]
    if len(header) != len(read):
        return []
    notes = []
    for name in dict.fromkeys(header):
        copies = [got for given, got in zip(header, read) if given == name]
        if len(copies) > 1:
            notes.append(
                f"the header of {path.name} names {len(copies)} columns {name!r}: they are read as "
                f"{', '.join(map(repr, copies))}"
            )
    return notes


def _is_saved_index(frame: Any) -> bool:
    name = str(frame.columns[0])
    if not (name == "" or name.startswith("Unnamed: 0")) or frame.shape[1] < 2:
        return False
    first = frame.iloc[:, 0]
    if getattr(first.dtype, "kind", "O") not in "iu":
        return False
    values = first.to_numpy()
    return bool(np.array_equal(values, np.arange(len(values))) or np.all(np.diff(values) == 1))


def _check_numbers(frame: Any, path: Path) -> None:
    """ValueError naming every mostly-numeric column that holds text, with its first rows."""
    pd = _pandas()
    problems = []
    for name in frame.columns:
        column = frame[name]
        if getattr(column.dtype, "kind", "O") != "O":
            continue
        present = column.dropna()
        parsed = pd.to_numeric(present, errors="coerce")
        bad = present[parsed.isna()]
        if len(present) and 0 < len(bad) and parsed.notna().sum() >= 0.8 * len(present):
            where = [int(frame.index.get_loc(i)) + 1 for i in bad.index[:SHOWN_ROWS]]
            values = sorted({str(v) for v in bad})[:SHOWN_ROWS]
            problems.append(f"{name!r} (data rows {where}: {values})")
    if problems:
        raise ValueError(
            f"{path}: text in column(s) of numbers: {'; '.join(problems)}; leave such cells empty, "
            "name them with --na-values, or check --decimal/--thousands"
        )


def missing_values(frame: Any) -> str:
    """Where ``frame`` has gaps: every column, its count, and its first data rows (1-based)."""
    parts = []
    for name in frame.columns:
        gaps = np.flatnonzero(frame[name].isna().to_numpy())
        if gaps.size:
            rows = ", ".join(str(i + 1) for i in gaps[:SHOWN_ROWS])
            more = ", ..." if gaps.size > SHOWN_ROWS else ""
            parts.append(f"{name!r} {gaps.size} (data rows {rows}{more})")
    return "; ".join(parts)


def _numeric_features(frame: Any, columns: list[str], path: Path) -> np.ndarray:
    bad = [c for c in columns if frame[c].dtype.kind not in "biuf"]
    if bad:
        raise ValueError(
            f"{path}: feature column(s) {bad} are not numeric; encode them as numbers or drop them"
        )
    X = frame[columns].to_numpy(dtype=np.float64)
    missing = ~np.isfinite(X)
    if missing.any():
        row, col = np.argwhere(missing)[0]
        raise ValueError(
            f"{path}: column {columns[col]!r} has a missing or non-finite value in data row {row + 1}"
        )
    return X


def exact_floats() -> dict[str, Any]:
    """``read_csv`` options that parse every float exactly as written (round trip).

    pandas before 3.0 parses with a fast converter that can be off by up to
    1e-12 relative (seen: 648,708 of 2 million values written by ``to_csv``);
    pandas 3 parses exactly and deprecates the option.
    """
    pd = _pandas()
    major = int(str(pd.__version__).split(".")[0])
    return {} if major >= 3 else {"float_precision": "round_trip"}


def read_csv(path: str | Path, target: str | None = None, **options: Any) -> Dataset:
    """Read a CSV table of numeric features and one target column, without gaps.

    For tables with text columns or missing values, use :func:`read_table` and
    :class:`xpnet.data.tabular.TabularEncoder` (as the ``xpnet`` command does).

    Parameters
    ----------
    path : str or Path
        The CSV file.
    target : str, optional
        The target column; the last column by default. Classes or regression
        as :func:`xpnet.data.tabular.infer_task` decides.
    **options
        Passed to :func:`read_table` (``sep``, ``decimal``, ``header``, ...).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        For a missing target column, non-numeric features or missing values.
    """
    frame, _ = read_table(path, **options)
    columns = list(frame.columns)
    target = columns[-1] if target is None else target
    if target not in columns:
        raise ValueError(f"{path} has no column {target!r}; its columns are {columns}")
    features = [c for c in columns if c != target]
    if not features:
        raise ValueError(f"{path} has only the target column {target!r} and no features")
    X = _numeric_features(frame, features, Path(path))
    encoder = TargetEncoder().fit(frame[target])
    y = encoder.transform(frame[target])
    if encoder.task == "regression":
        return Dataset(X, frame[target].to_numpy(dtype=np.float64), features, target, "regression")
    return Dataset(X, y, features, target, "classification", encoder.classes)


def read_features(path: str | Path, feature_names: list[str], **options: Any) -> tuple[np.ndarray, Any]:
    """Read the named numeric feature columns of a CSV (other columns, like the target, are ignored).

    Returns the features and the whole pandas DataFrame.
    """
    frame, _ = read_table(path, **options)
    missing = [c for c in feature_names if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the model's feature column(s) {missing}")
    return _numeric_features(frame, feature_names, Path(path)), frame

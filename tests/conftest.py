"""One fixture runs every test on every backend importable here.

``pytest --backend NAME`` (repeatable) narrows the set; ``--device`` or
``$XPNET_TEST_DEVICE`` picks the device. Tests that take no backend run only
when numpy is among the selected backends. array_api_strict runs on its
non-default ``device1`` so that a creation call without ``device=`` fails.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import xpnet as xn

DEFAULT_TEST_DEVICES = {"array_api_strict": "device1"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=None,
        help="run on this backend only (repeatable); default: every importable backend",
    )
    parser.addoption("--device", default=None, help="device for the backend(s) (also $XPNET_TEST_DEVICE)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "skip_backends(*names, reason): the test cannot run on these backends")


def _selected(config: pytest.Config) -> list[str]:
    asked = config.getoption("--backend")
    if not asked:
        return xn.available_backends()
    names = []
    for entry in asked:
        names += [name.strip() for name in entry.split(",") if name.strip()]
    unknown = sorted(set(names) - set(xn.BACKEND_NAMES))
    if unknown:
        raise pytest.UsageError(f"unknown --backend {unknown}; valid: {list(xn.BACKEND_NAMES)}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        names = _selected(metafunc.config)
        marker = metafunc.definition.get_closest_marker("skip_backends")
        params = []
        for name in names:
            marks = []
            if marker is not None and name in marker.args:
                marks.append(pytest.mark.skip(reason=marker.kwargs.get("reason", "unsupported")))
            params.append(pytest.param(name, id=name, marks=marks))
        metafunc.parametrize("backend_name", params, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that takes no backend is the same on every one: it runs where numpy is selected,
    # so a per-backend session (nox's tests-torch, ...) does not repeat it.
    if "numpy" in _selected(config):
        return
    once = pytest.mark.skip(reason="backend-independent: runs with --backend numpy")
    for item in items:
        if "backend_name" not in getattr(item, "fixturenames", ()):
            item.add_marker(once)


@pytest.fixture(scope="session")
def backend(backend_name: str, pytestconfig: pytest.Config) -> xn.Backend:
    """The backend under test, on the test device."""
    device = (
        pytestconfig.getoption("--device")
        or os.environ.get("XPNET_TEST_DEVICE")
        or DEFAULT_TEST_DEVICES.get(backend_name)
    )
    try:
        return xn.get_backend(backend_name, device)
    except xn.BackendUnavailableError as exc:
        pytest.skip(f"{backend_name} is not usable here: {exc}")


@pytest.fixture
def xp(backend: xn.Backend):
    """The Array API namespace of the backend under test."""
    return backend.xp


@pytest.fixture
def f64(backend: xn.Backend):
    """Convert a NumPy array to the backend in float64 (enables JAX's x64 mode)."""

    def convert(a):
        return backend.asarray(np.asarray(a, dtype=np.float64), "float64")

    return convert


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar function ``f`` at ``x`` (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + eps
        up = f(x.copy())
        x[index] = old - eps
        down = f(x.copy())
        x[index] = old
        grad[index] = (up - down) / (2 * eps)
    return grad

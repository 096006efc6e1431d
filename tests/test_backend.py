"""Backend selection, devices, conversion and the errors users see."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import xpnet as xn


def test_numpy_is_always_available():
    assert "numpy" in xn.available_backends()
    assert set(xn.available_backends()) <= set(xn.BACKEND_NAMES)


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'.*numpy.*cupy.*torch"):
        xn.get_backend("tensorflow")


def test_environment_variable_picks_the_backend(monkeypatch):
    monkeypatch.setenv("XPNET_BACKEND", "numpy")
    assert xn.get_backend().name == "numpy"
    monkeypatch.setenv("XPNET_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="valid names"):
        xn.get_backend()


def test_auto_falls_back_to_numpy_without_a_gpu(monkeypatch):
    monkeypatch.delenv("XPNET_BACKEND", raising=False)
    chosen = xn.get_backend("auto")
    expected = "cupy" if "cupy" in xn.available_backends() else "numpy"
    assert chosen.name == expected
    assert xn.get_backend().name == expected


@pytest.mark.skipif("cupy" in xn.available_backends(), reason="this machine has a working GPU")
def test_cupy_without_gpu_says_why_and_what_to_do():
    with pytest.raises(xn.BackendUnavailableError) as info:
        xn.get_backend("cupy")
    message = str(info.value)
    assert "cupy" in message
    assert ("not installed" in message and "pip install" in message) or "CUDA" in message
    assert isinstance(info.value, RuntimeError)


def test_numpy_rejects_a_gpu_device():
    with pytest.raises(ValueError, match="only the device 'cpu'"):
        xn.get_backend("numpy", "cuda:0")


@pytest.mark.skipif(importlib.util.find_spec("array_api_strict") is None, reason="needs array-api-strict")
def test_strict_devices():
    assert str(xn.get_backend("array_api_strict", "device1").device).endswith("'device1')")
    with pytest.raises(ValueError, match="no device 'gpu7'"):
        xn.get_backend("array_api_strict", "gpu7")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_torch_cuda_without_cuda_is_unavailable():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(xn.BackendUnavailableError, match="device='cpu'"):
        xn.get_backend("torch", "cuda:0")


def test_backend_equality_and_repr(backend):
    again = xn.get_backend(backend.name, backend.device)
    assert again == backend and hash(again) == hash(backend)
    assert backend.name in repr(backend)


def test_asarray_puts_data_on_the_device(backend, xp):
    a = backend.asarray([[1.0, 2.0], [3.0, 4.0]], "float32")
    assert a.dtype == xp.float32
    assert str(xn.backend.device_of(a)) == str(backend.device)
    np.testing.assert_array_equal(xn.to_numpy(a), [[1, 2], [3, 4]])


def test_asarray_keeps_integer_labels(backend, xp):
    a = backend.asarray(np.array([0, 2, 1]))
    assert xp.isdtype(a.dtype, "integral")


def test_asarray_copy_never_aliases_the_source(backend):
    source = backend.asarray(np.ones(3), "float64")
    copy = backend.asarray(source, copy=True)
    assert copy is not source
    np.testing.assert_array_equal(xn.to_numpy(copy), np.ones(3))


def test_arrays_move_between_backends(backend):
    host = np.arange(6, dtype=np.float64).reshape(2, 3)
    there = backend.asarray(host, "float64")
    numpy_backend = xn.get_backend("numpy")
    back = numpy_backend.asarray(there)
    np.testing.assert_array_equal(back, host)
    np.testing.assert_array_equal(xn.to_numpy(backend.asarray(back)), host)


def test_to_numpy_of_lists_and_pandas():
    pd = pytest.importorskip("pandas")
    np.testing.assert_array_equal(xn.to_numpy([1, 2]), [1, 2])
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    np.testing.assert_array_equal(xn.to_numpy(frame), [[1, 3], [2, 4]])


def test_dtype_names(backend, xp):
    assert backend.dtype("float32") == xp.float32
    with pytest.raises(ValueError, match="float32"):
        backend.dtype("int8")


def test_describe_backends_lists_every_known_backend():
    rows = {row["name"]: row for row in xn.backend.describe_backends()}
    assert set(rows) == set(xn.BACKEND_NAMES)
    assert rows["numpy"]["available"] and rows["numpy"]["devices"] == ["cpu"]
    for row in rows.values():
        assert row["available"] or row["reason"]


def test_backend_pickles_by_name_and_device(backend):
    import pickle

    again = pickle.loads(pickle.dumps(backend))
    assert again == backend and again.xp is backend.xp
    assert xn.get_backend(backend.name, backend.device_spec) == backend

"""Finding cuBLAS for xpnet's own handle (engine/cublas.py): the parts that need no GPU."""

from __future__ import annotations

import pytest

from xpnet.engine import cublas

pytestmark = pytest.mark.skip_backends("torch", "jax", "array_api_strict", "cupy", reason="host-only code")

MAPS = """\
7f0a00000000-7f0a00100000 r-xp 00000000 08:01 1234   /site/nvidia/cu13/lib/libcublasLt.so.13
7f0a00200000-7f0a00300000 r-xp 00000000 08:01 1235   /site/nvidia/cu13/lib/libcublas.so.13
7f0a00300000-7f0a00310000 r--p 00100000 08:01 1235   /site/nvidia/cu13/lib/libcublas.so.13
7f0a00400000-7f0a00500000 rw-p 00000000 00:00 0
7f0a00600000-7f0a00700000 r-xp 00000000 08:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
"""


def test_the_library_cupy_mapped_is_found_by_its_path(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(MAPS)
    assert cublas.mapped("libcublas.so", str(maps)) == ["/site/nvidia/cu13/lib/libcublas.so.13"]
    assert cublas.mapped("libcublasLt.so", str(maps)) == ["/site/nvidia/cu13/lib/libcublasLt.so.13"]
    assert cublas.mapped("libnothing.so", str(maps)) == []


def test_no_maps_file_means_no_mapped_library(tmp_path):
    assert cublas.mapped("libcublas.so", str(tmp_path / "absent")) == []


def test_without_cublas_the_error_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(cublas, "_LIBRARY", None)
    monkeypatch.setattr(cublas, "_candidates", lambda: ["/nowhere/libcublas.so.99"])
    with pytest.raises(cublas.CublasError, match="libcublas"):
        cublas.library()

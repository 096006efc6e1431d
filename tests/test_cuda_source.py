"""The fused GPU kernels' CUDA source compiles, without a GPU: nvcc (when installed) builds every module
text xpnet can make (each dtype, each optimizer's update) to PTX for sm_90, warnings as errors, and
every kernel the CuPy kernels launch is in it. A syntax error is caught here, not on a lent GPU."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_fused import OPTIMIZERS, _net

from xpnet.engine import fused_cupy
from xpnet.engine.fused_cuda import ACTIVATIONS, DERIVATIVES, source
from xpnet.engine.plan import plan_of

NVCC = shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None)
MODULES = [("float32", name) for name in sorted(OPTIMIZERS)] + [("float64", "adam"), ("float64", "rmsprop")]


def _launched() -> set[str]:
    """The kernel names :mod:`xpnet.engine.fused_cupy` launches, read off its code."""
    code = Path(fused_cupy.__file__).read_text()
    names = set(re.findall(r'(?:_launch|_grid|_f)\(\s*"(\w+)"', code))
    names |= {f"act_{name}" for name in ACTIVATIONS} | {f"grad_{name}" for name in DERIVATIVES}
    return names


def test_every_launched_kernel_is_in_the_source():
    text = source("float32", plan_of(_net(optimizer="adam")._model()).optimizer)
    defined = set(re.findall(r'extern "C" __global__ void (\w+)\(', text))
    launched = _launched()
    assert {"batch_norm", "batch_norm_grad", "layer_norm", "layer_norm_grad", "layer_norm_params"} <= launched
    assert launched <= defined, sorted(launched - defined)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_every_module_compiles_for_sm_90(tmp_path):
    files = []
    for dtype, name in MODULES:
        path = tmp_path / f"{name}_{dtype}.cu"
        path.write_text(source(dtype, plan_of(_net(optimizer=name)._model()).optimizer))
        files.append(str(path))
    command = [NVCC, "-arch=sm_90", "--ptx", "-std=c++14", "-Werror", "all-warnings", "-odir", str(tmp_path)]
    done = subprocess.run([*command, *files], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    launched = _launched()
    for path in files:
        ptx = Path(path).with_suffix(".ptx").read_text()
        entries = set(re.findall(r"\.entry (\w+)\(", ptx))
        assert launched <= entries, (path, sorted(launched - entries))

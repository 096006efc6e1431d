"""The fused GPU kernels' CUDA source compiles, without a GPU: nvcc (when installed) builds every module
text xpnet can make (each dtype, each optimizer's update) to PTX for sm_90, warnings as errors, and
every kernel the CuPy kernels launch is in it, with the arguments it declares. A syntax error or a
launch that would read garbage is caught here, not on a lent GPU."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cuda_emulator import check_launch, signatures
from test_fused import OPTIMIZERS, _net

from xpnet.engine import fused_cupy, fused_updates
from xpnet.engine.flat import Packing
from xpnet.engine.fused_cuda import ACTIVATIONS, DERIVATIVES, source
from xpnet.engine.plan import NormSpec, plan_of

NVCC = shutil.which("nvcc") or next((p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None)
MODULES = [("float32", name) for name in sorted(OPTIMIZERS)] + [("float64", "adam"), ("float64", "rmsprop")]


def _launched() -> set[str]:
    """The kernel names :mod:`xpnet.engine.fused_cupy` launches, read off its code."""
    code = Path(fused_cupy.__file__).read_text()
    names = set(re.findall(r'(?:_launch|_grid|_f)\(\s*"(\w+)"', code))
    names |= {f"act_{name}" for name in ACTIVATIONS} | {f"grad_{name}" for name in ["linear", *DERIVATIVES]}
    return names | {"softmax_xent", "sigmoid_xent", "squared_error"}


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


class Recorder(fused_cupy.CupyKernels):
    """CupyKernels whose launches are recorded instead of run (no CuPy, no GPU)."""

    def __init__(self, dtype: str) -> None:
        self.xp, self.dtype, self.stream = np, np.dtype(dtype), None
        self.launches: list[tuple[str, tuple, tuple, tuple]] = []

    def _f(self, name):
        def launch(grid, block, args, stream=None):
            self.launches.append((name, grid, block, args))

        return launch


def _every_launch(k: Recorder, spec, dtype: str) -> None:
    """Each CupyKernels method, in each of its forms, on NumPy stand-ins."""
    f = np.dtype(dtype)
    z, y, bias = np.zeros((8, 5), f), np.zeros((8, 5), f), np.zeros(5, f)
    for activation in ACTIVATIONS:
        k.bias_act(z, bias, activation)
        k.bias_act(z, None, activation)
        k.activate(y, z, activation)
        k.act_grad(z, y, activation, bias)
        k.act_grad(z, y, activation, None)
    index, sums = np.zeros(8, np.int32), np.zeros(3, np.float64)
    k.gather(np.zeros((20, 5), f), index, z)
    k.gather(np.zeros(20, np.int32), index, np.zeros(8, np.int32))
    k.gather(np.zeros(20, f), index, np.zeros(8, f))
    k.multiply(z, y, z)
    k.row_scale(np.zeros((3, 8), f), 2, np.zeros((3, 8, 1), f))
    for kind, t in (
        ("categorical_crossentropy", np.zeros(8, np.int32)),
        ("categorical_crossentropy", np.zeros((8, 5), f)),
        ("binary_crossentropy", np.zeros((8, 5), f)),
        ("mse", np.zeros((8, 5), f)),
    ):
        k.loss(kind, z, t, np.zeros((8, 1), f), 0.1, z, 8, sums)
    for norm in (NormSpec("batch", 1e-3, 0.1), NormSpec("layer", 1e-5)):
        stats = (np.zeros(8, f), np.zeros(8, f))
        state = {"running_mean": np.zeros(5, f), "running_var": np.ones(5, f)}
        k.normalize(norm, y, 6, bias, bias, stats, state if norm.kind == "batch" else None, z)
        for dx in (z, None):
            k.normalize_grad(norm, y, y, 6, bias, stats, bias, bias, dx)
    params = [{"weight": np.zeros((4, 5), f), "bias": np.zeros(5, f)}]
    packing = Packing(params, {}, fused_updates.state_keys(spec))
    k.update(packing, spec, np.zeros(1, f), np.zeros(1, f), 3)
    k.check(packing.param, sums)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_launch_passes_what_its_kernel_declares(dtype, optimizer):
    spec = plan_of(_net(optimizer=optimizer)._model()).optimizer
    kinds = signatures(source(dtype, spec), dtype)
    k = Recorder(dtype)
    _every_launch(k, spec, dtype)
    launched = {name for name, *_ in k.launches}
    assert launched == set(kinds), f"kernels never launched: {sorted(set(kinds) - launched)}"
    for launch in k.launches:
        check_launch(*launch, kinds)

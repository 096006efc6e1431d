"""The fused CuPy kernels' host side without a GPU: every launch passes what its kernel declares, and
the whole module compiles with nvcc where one is installed.

A kernel launched with one argument too few, or an ``int`` where it declares ``long long``, reads
garbage on the GPU without an error; these tests parse each kernel's signature from the module
source and hold every :class:`~xpnet.engine.fused_cupy.CupyKernels` launch to it.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import xpnet as xn
from xpnet.engine import fused_updates
from xpnet.engine.flat import Packing
from xpnet.engine.fused_cupy import ACTIVATIONS, CupyKernels, source
from xpnet.engine.plan import _update_spec

pytestmark = pytest.mark.skip_backends("torch", "jax", "array_api_strict", "cupy", reason="host-only code")

OPTIMIZERS = {
    "sgd": xn.SGD(0.1),
    "momentum": xn.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": xn.Adam(0.01, weight_decay=0.001),
    "adamw": xn.AdamW(0.01),
    "rmsprop": xn.RMSprop(0.01, momentum=0.5, centered=True),
}
SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64}
"""The NumPy scalar a launch passes for each C parameter type (``T`` spelled out)."""


def signatures(code: str, dtype: str) -> dict[str, list[str]]:
    """Each kernel's parameter types, ``T`` spelled out (``"ptr"`` for any pointer)."""
    t = "float" if dtype == "float32" else "double"
    found = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', code):
        kinds = []
        for param in params.split(","):
            declared = " ".join(param.split()[:-1]).replace("const ", "")
            kinds.append("ptr" if "*" in param else t if declared == "T" else declared)
        found[name] = kinds
    return found


class Recorder(CupyKernels):
    """CupyKernels whose launches are recorded instead of run (no CuPy needed)."""

    def __init__(self, dtype: str) -> None:
        self.xp, self.dtype, self.stream = np, np.dtype(dtype), None
        self.launches: list[tuple[str, tuple, tuple, tuple]] = []

    def _f(self, name):
        def launch(grid, block, args, stream=None):
            self.launches.append((name, grid, block, args))

        return launch


def _check(launches, kinds: dict[str, list[str]]) -> None:
    for name, grid, block, args in launches:
        assert name in kinds, f"{name} is launched but not in the module"
        declared = kinds[name]
        assert len(args) == len(declared), f"{name}: {len(args)} arguments for {len(declared)} parameters"
        for i, (arg, kind) in enumerate(zip(args, declared)):
            if kind == "ptr":
                assert isinstance(arg, np.ndarray), f"{name} argument {i}: an array for a pointer"
            else:
                assert type(arg) is SCALARS[kind], f"{name} argument {i}: {type(arg).__name__} for {kind}"
        assert int(np.prod(block)) <= 1024 and all(g >= 1 for g in grid), f"{name}: launch {grid} x {block}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_launch_passes_what_its_kernel_declares(dtype, optimizer):
    spec = _update_spec(OPTIMIZERS[optimizer])
    kinds = signatures(source(dtype, spec), dtype)
    k = Recorder(dtype)
    f = np.dtype(dtype)
    z, y, bias = np.zeros((8, 5), f), np.zeros((8, 5), f), np.zeros(5, f)
    for activation in ACTIVATIONS:
        k.bias_act(z, bias, activation)
        k.bias_act(z, None, activation)
        k.act_grad(z, y, activation, bias)
        k.act_grad(z, y, activation, None)
    index, sums = np.zeros(8, np.int32), np.zeros(3, np.float64)
    k.gather(np.zeros((20, 5), f), index, z)
    k.gather(np.zeros(20, np.int32), index, np.zeros(8, np.int32))
    k.gather(np.zeros(20, f), index, np.zeros(8, f))
    k.multiply(z, y, z)
    k.row_scale(np.zeros((3, 8), f), 2, np.zeros((3, 8, 1), f))
    scale = np.zeros((8, 1), f)
    for kind, t in (
        ("categorical_crossentropy", np.zeros(8, np.int32)),
        ("categorical_crossentropy", np.zeros((8, 5), f)),
        ("binary_crossentropy", np.zeros((8, 5), f)),
        ("mse", np.zeros((8, 5), f)),
    ):
        k.loss(kind, z, t, scale, 0.1, z, 8, sums)
    params = [{"weight": np.zeros((4, 5), f), "bias": np.zeros(5, f)}]
    packing = Packing(params, {}, fused_updates.state_keys(spec))
    k.update(packing, spec, np.zeros(1, f), np.zeros(1, f), 3)
    k.check(packing.param, sums)
    launched = {name for name, *_ in k.launches}
    assert launched == set(kinds), f"kernels never launched: {set(kinds) - launched}"
    _check(k.launches, kinds)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_module_compiles_for_every_optimizer(tmp_path, dtype):
    for name, optimizer in OPTIMIZERS.items():
        path = tmp_path / f"{name}.cu"
        path.write_text(source(dtype, _update_spec(optimizer)))
        done = subprocess.run(
            ["nvcc", "-arch=sm_90", "--ptx", "-std=c++14", "-o", str(tmp_path / f"{name}.ptx"), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{name}, {dtype}:\n{done.stderr}"

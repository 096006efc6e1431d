"""The fused runner's CUDA kernels run on the CPU, so their logic is tested where no GPU is lent.

:func:`emulated_kernels` compiles :func:`xpnet.engine.fused_cuda.source` as C++ with a small CUDA
prelude: each kernel launch runs its blocks one after the other, and a block's threads as fibers
(``ucontext``) on one OS thread, switching at every ``__syncthreads()``, so block reductions
through shared memory run as the GPU runs them (every thread reaches a barrier before any passes
it). :class:`EmulatedKernels` is :class:`~xpnet.engine.fused_cupy.CupyKernels` with that module in
place of CuPy's, NumPy arrays in place of device arrays and NumPy's matmul in place of cuBLAS: the
launch code and the CUDA code are the ones a GPU runs, and every launch's arguments are held to
its kernel's declared parameters (:func:`check_launch`). What the emulation cannot show: timing,
races between blocks, NVRTC's dialect (the nvcc test compiles for that) and the GPU's rounding of
``exp`` and friends.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from xpnet.engine.fused_cuda import source
from xpnet.engine.fused_cupy import CupyKernels

CXX = shutil.which("g++")
PRELUDE = r"""
#include <cmath>
#include <functional>
#include <ucontext.h>
#include <vector>
using namespace std;

struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
static emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
static ucontext_t emu_scheduler;
static vector<ucontext_t> emu_fibers;
static vector<char> emu_done;
static vector<vector<char>> emu_stacks;
static int emu_current = 0;
static function<void()> emu_body;

#define __global__
#define __device__
#define __shared__ static

static void __syncthreads() { swapcontext(&emu_fibers[emu_current], &emu_scheduler); }

static void emu_start() {
    emu_body();
    emu_done[emu_current] = 1;
}

static void emu_launch(int grid, int block) {
    gridDim.x = grid;
    blockDim.x = block;
    emu_fibers.resize(block);
    emu_stacks.resize(block, vector<char>(1 << 16));
    for (int b = 0; b < grid; ++b) {
        blockIdx.x = b;
        emu_done.assign(block, 0);
        for (int t = 0; t < block; ++t) {
            getcontext(&emu_fibers[t]);
            emu_fibers[t].uc_stack.ss_sp = emu_stacks[t].data();
            emu_fibers[t].uc_stack.ss_size = emu_stacks[t].size();
            emu_fibers[t].uc_link = &emu_scheduler;
            makecontext(&emu_fibers[t], emu_start, 0);
        }
        for (bool running = true; running;) {  // one round: every thread to its next barrier or its end
            running = false;
            for (int t = 0; t < block; ++t) {
                if (emu_done[t]) continue;
                emu_current = t;
                threadIdx.x = t;
                swapcontext(&emu_scheduler, &emu_fibers[t]);
                running = running || !emu_done[t];
            }
        }
    }
}
"""
KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)\s*\{')


def _wrapped(text: str) -> str:
    """``text`` with each kernel renamed ``<name>_body`` and a host ``<name>(grid, block, ...)``
    launching it added at the end."""
    launchers = []

    def rename(match: re.Match[str]) -> str:
        name, params = match.group(1), " ".join(match.group(2).split())
        names = [re.findall(r"\w+", p)[-1] for p in params.split(",")]
        launchers.append(
            f'extern "C" void {name}(int grid, int block, {params}) {{\n'
            f"    emu_body = [=]() {{ {name}_body({', '.join(names)}); }};\n"
            "    emu_launch(grid, block);\n}"
        )
        return f"static void {name}_body({params}) {{"

    body = KERNEL.sub(rename, text)
    return "\n".join([PRELUDE, body, *launchers])


def compiled(dtype: str, optimizer: Any) -> ctypes.CDLL:
    """The emulated module for ``dtype`` and ``optimizer``, built once per source text."""
    text = _wrapped(source(dtype, optimizer))
    folder = Path(tempfile.gettempdir()) / "xpnet-cuda-emulator"
    folder.mkdir(exist_ok=True)
    library = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.so"
    if not library.exists():  # each process writes its own files (xdist workers), then one wins the rename
        code = library.with_suffix(f".{os.getpid()}.cpp")
        code.write_text(text)
        partial = library.with_suffix(f".{os.getpid()}.so")
        command = [str(CXX), "-O1", "-std=c++17", "-ffp-contract=off", "-shared", "-fPIC", str(code)]
        subprocess.run([*command, "-o", str(partial)], check=True, capture_output=True, timeout=300)
        partial.replace(library)
    return ctypes.CDLL(str(library))


def _argument(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        assert value.flags.c_contiguous, "a kernel argument that is not contiguous"
        return ctypes.c_void_p(value.ctypes.data)
    types = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float32: ctypes.c_float}
    kind = types.get(type(value), ctypes.c_double)
    assert type(value) in (*types, np.float64), f"an untyped kernel argument {value!r}"
    return kind(value)


SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64}
"""The NumPy scalar a launch passes for each C parameter type (``T`` spelled out)."""


def signatures(text: str, dtype: str) -> dict[str, list[str]]:
    """Each kernel's parameter types in the module ``text``, ``T`` spelled out (``"ptr"`` for any
    pointer)."""
    t = "float" if dtype == "float32" else "double"
    found = {}
    for name, params in KERNEL.findall(text):
        kinds = []
        for param in params.split(","):
            declared = " ".join(param.split()[:-1]).replace("const ", "")
            kinds.append("ptr" if "*" in param else t if declared == "T" else declared)
        found[name] = kinds
    return found


def check_launch(name: str, grid: tuple, block: tuple, args: tuple, kinds: dict[str, list[str]]) -> None:
    """AssertionError unless ``args`` are what kernel ``name`` declares, in number and C type (on a
    GPU a launch with one argument too few, or an ``int`` for a ``long long``, reads garbage), and
    the launch's shape is one CUDA takes."""
    assert name in kinds, f"{name} is launched but not in the module"
    declared = kinds[name]
    assert len(args) == len(declared), f"{name}: {len(args)} arguments for {len(declared)} parameters"
    for i, (arg, kind) in enumerate(zip(args, declared)):
        if kind == "ptr":
            assert isinstance(arg, np.ndarray), f"{name} argument {i}: an array for a pointer"
        else:
            assert type(arg) is SCALARS[kind], f"{name} argument {i}: {type(arg).__name__} for {kind}"
    assert len(block) == 1 and 1 <= block[0] <= 1024, f"{name}: a block of {block} (the kernels are 1-D)"
    assert len(grid) == 1 and grid[0] >= 1, f"{name}: a grid of {grid}"


class _Function:
    def __init__(self, name: str, function: Any, kinds: dict[str, list[str]]) -> None:
        self.name, self.function, self.kinds = name, function, kinds

    def __call__(
        self, grid: tuple[int], block: tuple[int], args: tuple[Any, ...], stream: Any = None
    ) -> None:
        check_launch(self.name, grid, block, args, self.kinds)
        self.function(ctypes.c_int(grid[0]), ctypes.c_int(block[0]), *(_argument(a) for a in args))


class _Module:
    def __init__(self, library: ctypes.CDLL, kinds: dict[str, list[str]]) -> None:
        self.library, self.kinds = library, kinds

    def get_function(self, name: str) -> _Function:
        return _Function(name, getattr(self.library, name), self.kinds)


class _Blas:
    def gemm(self, a: Any, b: Any, out: Any, *, ta: bool = False, tb: bool = False) -> None:
        np.matmul(a.T if ta else a, b.T if tb else b, out=out)


class EmulatedKernels(CupyKernels):
    """:class:`CupyKernels` launching the emulated module on NumPy arrays (module docstring)."""

    def __init__(self, dtype: Any, optimizer: Any) -> None:
        self.xp = np
        self.dtype = np.dtype(dtype)
        self.stream = None
        self.blas = _Blas()
        kinds = signatures(source(str(self.dtype), optimizer), str(self.dtype))
        self.module = _Module(compiled(str(self.dtype), optimizer), kinds)
        self._functions = {}

    def capture(self, run: Any) -> Any:
        run()
        return run

    def scope(self) -> Any:
        return contextlib.nullcontext()

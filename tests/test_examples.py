"""Every script in examples/ runs and learns, on each backend under test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, backend, *extra):
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / name),
            "--backend",
            backend.name,
            "--device",
            str(backend.device_spec),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert f"backend: {backend.name}" in result.stdout
    return result.stdout


def test_every_example_is_covered():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {
        "perceptron.py",
        "xor.py",
        "by_hand.py",
        "diabetes.py",
        "digits.py",
        "gpu.py",
        "deep.py",
    }


def test_perceptron(backend):
    out = run_example("perceptron.py", backend)
    assert "training accuracy 1.000" in out and "[1, 0, 0] -> 0.0" in out


def test_xor(backend):
    out = run_example("xor.py", backend)
    for line in [line for line in out.splitlines() if "predictions" in line]:
        values = [float(v) for v in re.findall(r"->(\d\.\d+)", line)]
        assert values[0] < 0.1 and values[1] > 0.9 and values[2] > 0.9 and values[3] < 0.1


def test_by_hand(backend):
    out = run_example("by_hand.py", backend)
    final = float(re.findall(r"epoch  2000: loss (\d\.\d+)", out)[0])
    assert final < 0.01


def test_diabetes(backend):
    pytest.importorskip("pandas")
    out = run_example("diabetes.py", backend)
    accuracy = float(re.findall(r"held-out accuracy (\d\.\d+)", out)[0])
    assert accuracy > 0.72


def test_digits(backend):
    pytest.importorskip("sklearn")
    out = run_example("digits.py", backend)
    assert float(re.findall(r"held-out accuracy: (\d\.\d+)", out)[0]) >= 0.95
    assert "confusion matrix" in out


def test_gpu_script_runs_anywhere(backend):
    out = run_example("gpu.py", backend, "--samples", "2000", "--epochs", "1")
    assert "samples/s" in out


def test_deep_network_trains_faster_with_batch_norm_and_residual_blocks(backend):
    pytest.importorskip("sklearn")
    out = run_example("deep.py", backend)
    final = {k: float(v) for k, v in re.findall(r"(.+): final training loss (\d\.\d+)", out)}
    first = {k: int(v) for k, v in re.findall(r"(.+): first epoch with training loss below 0.4: (\d+)", out)}
    assert final["batch norm + residual"] < final["plain"]
    assert first["batch norm + residual"] < first["plain"]

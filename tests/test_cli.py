"""The xpnet command, run as a user would: a subprocess with files on disk."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pandas")
pytest.importorskip("safetensors")


def run(*args, cwd, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "xpnet", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"XPNET_BACKEND": "numpy", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}")
    return result


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    labels = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "yes", "no")
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["glucose", "pressure", "age", "diabetic"])
        writer.writerows([[*map(float, row), label] for row, label in zip(X, labels)])
    return path


def test_train_evaluate_predict_on_a_csv(tmp_path, table):
    out = run(
        "train",
        table,
        "--hidden",
        "16",
        "--epochs",
        "40",
        "--lr",
        "0.01",
        "--plot",
        "curves.png",
        cwd=tmp_path,
    )
    assert "160 train / 40 held-out" in out.stdout
    final = next(line for line in out.stdout.splitlines() if line.startswith("val_loss"))
    assert float(final.split("val_accuracy: ")[1]) >= 0.9
    assert (tmp_path / "model.safetensors").stat().st_size > 0
    assert (tmp_path / "curves.png").stat().st_size > 10_000

    evaluated = run("evaluate", "model.safetensors", table, cwd=tmp_path)
    assert float(evaluated.stdout.split("accuracy: ")[1]) >= 0.9

    predicted = run("predict", "model.safetensors", table, cwd=tmp_path)
    rows = list(csv.reader(predicted.stdout.splitlines()))
    assert rows[0] == ["prediction", "p_no", "p_yes"] and len(rows) == 201
    assert {r[0] for r in rows[1:]} <= {"yes", "no"}
    np.testing.assert_allclose([float(r[1]) + float(r[2]) for r in rows[1:]], 1.0, rtol=1e-5)

    run("predict", "model.safetensors", table, "--out", "pred.csv", cwd=tmp_path)
    assert (tmp_path / "pred.csv").read_text() == predicted.stdout


def test_regression_on_a_float_target(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 2))
    y = 100 + 30 * X[:, 0] - 10 * X[:, 1]
    path = tmp_path / "reg.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,price", comments="")
    out = run("train", path, "--epochs", "60", "--lr", "0.01", "--quiet", cwd=tmp_path)
    mae = float(out.stdout.split("val_mae: ")[1])
    assert mae < 5.0
    predicted = run("predict", "model.safetensors", path, cwd=tmp_path)
    values = np.array([float(line) for line in predicted.stdout.splitlines()[1:]])
    assert abs(values.mean() - y.mean()) < 10


def test_builtin_datasets(tmp_path):
    out = run("train", "xor", "--quiet", cwd=tmp_path)
    assert "train_accuracy: 1.000" in out.stdout
    out = run("train", "iris", "--epochs", "40", "--lr", "0.01", "--quiet", cwd=tmp_path)
    assert float(out.stdout.split("val_accuracy: ")[1]) >= 0.85


def test_backends_lists_every_known_backend(tmp_path):
    out = run("backends", cwd=tmp_path)
    for name in ("numpy", "cupy", "torch", "jax", "array_api_strict"):
        assert name in out.stdout
    assert "numpy             yes  devices: cpu" in out.stdout


def test_help_shows_examples(tmp_path):
    assert "examples:" in run("--help", cwd=tmp_path).stdout
    for command in ("train", "evaluate", "predict", "backends"):
        assert "example" in run(command, "--help", cwd=tmp_path).stdout


def test_network_options_reach_the_model(tmp_path, table):
    import xpnet as xn

    options = ["--batch-norm", "--dropout", "0.25", "--weight-decay", "0.01", "--class-weight", "balanced"]
    run("train", table, "--hidden", "8,8", *options, "--epochs", "3", "--out", "m.safetensors", cwd=tmp_path)
    net = xn.load(tmp_path / "m.safetensors", backend="numpy")
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Dense", "BatchNormalization", "Activation", "Dropout"] * 2 + ["Dense"]
    assert net.layers[-2].rate == 0.25 and net.optimizer.weight_decay == 0.01
    assert float(net.layers[1].state["running_var"].sum()) != 8.0  # statistics were learned and saved
    rows = np.random.default_rng(1).normal(size=(30, 2))
    np.savetxt(tmp_path / "reg.csv", rows, delimiter=",", header="a,price", comments="")
    result = run("train", "reg.csv", "--class-weight", "balanced", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--class-weight applies to classification" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "missing.csv"), "neither a file nor a built-in dataset"),
        (("train", "{table}", "--target", "weight"), "has no column 'weight'"),
        (("train", "{table}", "--hidden", "a,b"), "--hidden takes layer sizes"),
        (("train", "{table}", "--backend", "cupy"), "cupy"),
        (("train", "{table}", "--backend", "tensorflow"), "unknown backend"),
        (("evaluate", "{table}", "{table}"), "not an xpnet model"),
        (("predict", "nothing.safetensors", "{table}"), "no model file"),
    ],
)
def test_user_errors_are_one_line_with_status_2(tmp_path, table, args, message):
    if args[-1] == "cupy":
        import xpnet as xn

        if "cupy" in xn.available_backends():
            pytest.skip("this machine has a GPU")
    result = run(*[a.format(table=table) for a in args], cwd=tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnet: error:") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_non_numeric_feature_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("city,size,label\nparis,1.0,0\nrome,2.0,1\n")
    result = run("train", path, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "['city'] are not numeric" in result.stderr


def test_predict_ignores_the_target_and_needs_the_features(tmp_path, table):
    run("train", table, "--epochs", "2", "--quiet", cwd=tmp_path)
    features_only = tmp_path / "new.csv"
    features_only.write_text("age,pressure,glucose\n1.0,0.0,2.0\n")
    out = run("predict", "model.safetensors", features_only, cwd=tmp_path)
    assert len(out.stdout.splitlines()) == 2
    missing = tmp_path / "missing.csv"
    missing.write_text("age,pressure\n1.0,0.0\n")
    result = run("predict", "model.safetensors", missing, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "lacks the model's feature column(s) ['glucose']" in result.stderr

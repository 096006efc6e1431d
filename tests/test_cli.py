"""The xpnet command, run as a user would: a subprocess with files on disk."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("safetensors")

import xpnet as xn  # noqa: E402


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
        "--folds",
        "1",
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
    out = run("train", path, "--epochs", "60", "--lr", "0.01", "--folds", "1", "--quiet", cwd=tmp_path)
    mae = float(out.stdout.split("val_mae: ")[1])
    assert mae < 5.0
    predicted = run("predict", "model.safetensors", path, cwd=tmp_path)
    values = np.array([float(line) for line in predicted.stdout.splitlines()[1:]])
    assert abs(values.mean() - y.mean()) < 10


def test_builtin_datasets(tmp_path):
    out = run("train", "xor", "--quiet", cwd=tmp_path)
    assert "train_accuracy: 1.000" in out.stdout
    out = run("train", "iris", "--epochs", "40", "--lr", "0.01", "--folds", "1", "--quiet", cwd=tmp_path)
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
    run("train", table, "--hidden", "8,8", *options, "--epochs", "3", "--folds", "1", cwd=tmp_path)
    net = xn.load(tmp_path / "model.safetensors", backend="numpy")
    assert [type(layer).__name__ for layer in net.layers] == ["Residual", "Activation"]
    block = net.layers[0]
    kinds = [type(layer).__name__ for layer in block.layers]
    assert kinds == ["Dense", "BatchNormalization", "Activation", "Dropout"] * 2 + ["Dense"]
    assert block.shortcut == "linear" and block.layers[-2].rate == 0.25 and net.optimizer.weight_decay == 0.01
    assert float(block.state["1.running_var"].sum()) != 8.0  # statistics were learned and saved
    run("train", table, "--hidden", "8", "--epochs", "1", "--folds", "1", "--shortcut", "none", cwd=tmp_path)
    net = xn.load(tmp_path / "model.safetensors", backend="numpy")
    assert [type(layer).__name__ for layer in net.layers] == ["Dense", "Dense", "Activation"]
    rows = np.random.default_rng(1).normal(size=(30, 2))
    np.savetxt(tmp_path / "reg.csv", rows, delimiter=",", header="a,price", comments="")
    result = run("train", "reg.csv", "--class-weight", "balanced", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--class-weight applies to classification" in result.stderr


def test_a_small_table_trains_a_five_fold_ensemble_by_default(tmp_path, table):
    out = run("train", table, "--epochs", "4", "--plot", "folds.png", cwd=tmp_path)
    assert (
        "5 networks, one per fold of the training rows; weight decay chosen among 0, 0.01, 0.1" in out.stdout
    )
    assert out.stdout.count("fold ") >= 15 and "chose weight decay" in out.stdout
    net = xn.load(tmp_path / "model.safetensors", backend="numpy")
    assert [type(layer).__name__ for layer in net.layers] == ["Parallel", "Activation"]
    assert len(net.layers[0].branches) == 5 and net.optimizer.weight_decay in (0.0, 0.01, 0.1)
    assert (tmp_path / "folds.png").stat().st_size > 10_000
    final = float(out.stdout.split("val_accuracy: ")[1].split()[0])
    assert (
        float(run("evaluate", "model.safetensors", table, cwd=tmp_path).stdout.split("accuracy: ")[1]) > 0.5
    )
    assert final > 0.5
    out = run("train", table, "--epochs", "2", "--folds", "3", "--weight-decay", "0.5", cwd=tmp_path)
    assert "3 networks" in out.stdout and "chose" not in out.stdout
    assert xn.load(tmp_path / "model.safetensors", backend="numpy").optimizer.weight_decay == 0.5


def _big_table(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1300, 2))
    np.savetxt(tmp_path / "big.csv", np.column_stack([X, X[:, 0] - X[:, 1]]), delimiter=",",
               header="a,b,y", comments="")  # fmt: skip


def test_a_large_table_trains_the_recipe_ensemble_by_default(tmp_path):
    _big_table(tmp_path)
    out = run("train", "big.csv", cwd=tmp_path)
    assert "1040 train / 260 held-out" in out.stdout and "val_mae" in out.stdout
    assert "training 3 networks of 256x256 ReLU, 100 epochs each" in out.stderr
    assert "network 3/3: kept epoch" in out.stderr
    net = xn.load(tmp_path / "model.safetensors", backend="numpy")
    assert len(net.layers[0].branches) == 3 and net.metadata["encoder"]["type"] == "robust"
    predicted = run("predict", "model.safetensors", "big.csv", cwd=tmp_path)
    assert len(predicted.stdout.splitlines()) == 1301


def test_fast_trains_one_small_network_on_a_large_table(tmp_path):
    _big_table(tmp_path)
    out = run("train", "big.csv", "--fast", "--quiet", cwd=tmp_path)
    net = xn.load(tmp_path / "model.safetensors", backend="numpy")
    assert [type(layer).__name__ for layer in net.layers] == ["Residual"] and "val_mae" in out.stdout


def test_a_large_table_with_network_flags_trains_one_network(tmp_path):
    _big_table(tmp_path)
    out = run("train", "big.csv", "--epochs", "2", cwd=tmp_path)
    assert "1040 train / 260 held-out" in out.stdout and "networks" not in out.stdout
    assert "kept the weights of epoch" in out.stdout
    net = xn.load(tmp_path / "model.safetensors", backend="numpy")
    assert [type(layer).__name__ for layer in net.layers] == [
        "Residual"
    ] and net.optimizer.weight_decay == 0.0


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
        (("train", "{table}", "--weight-decay", "0,0.1", "--folds", "1"), "needs --folds 2 or more"),
        (("train", "{table}", "--weight-decay", "-1"), "--weight-decay must be >= 0"),
        (("train", "{table}", "--weight-decay", "a"), "--weight-decay takes numbers"),
        (("train", "{table}", "--folds", "0"), "--folds must be at least 1"),
        (("train", "{table}", "--folds", "3", "--patience", "0"), "needs --patience above 0"),
        (("train", "{table}", "--folds", "100"), "--folds 100 needs at least 200 training rows"),
        (("train", "{table}", "--fast", "--folds", "3"), "--fast trains one network"),
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


PENGUINS = Path(__file__).parent / "data" / "penguins.csv"
QUICK = ("--hidden", "16", "--lr", "0.01", "--epochs", "60", "--quiet")


def test_text_columns_and_gaps_are_encoded_not_refused(tmp_path):
    out = run("train", PENGUINS, "--target", "species", *QUICK, cwd=tmp_path)
    assert "missing values" in out.stderr and float(out.stdout.split("val_accuracy: ")[1]) > 0.9
    out = run("train", PENGUINS, "--target", "sex", *QUICK, cwd=tmp_path)
    assert "left out 11 rows without a 'sex' value" in out.stderr
    assert float(out.stdout.split("val_accuracy: ")[1]) > 0.6  # the majority class is about 0.5
    predicted = run("predict", "model.safetensors", PENGUINS, cwd=tmp_path)
    assert predicted.stdout.splitlines()[0] == "prediction,p_female,p_male"


def test_python_and_cli_agree_on_regression_in_target_units(tmp_path):
    out = run("train", PENGUINS, "--target", "body_mass_g", *QUICK, cwd=tmp_path)
    mae = float(out.stdout.split("val_mae: ")[1])
    assert mae < 400  # grams; predicting the mean is off by about 680
    cli = np.array(
        [float(v) for v in run("predict", "model.safetensors", PENGUINS, cwd=tmp_path).stdout.split()[1:]]
    )
    frame = pd.read_csv(PENGUINS)
    net = xn.load(tmp_path / "model.safetensors", backend="numpy")
    python = xn.to_numpy(net.predict(frame[list(reversed(frame.columns))])).ravel()
    np.testing.assert_allclose(python, cli, rtol=1e-5)
    assert 2500 < python.mean() < 6500
    known = frame.dropna(subset=["body_mass_g"])
    evaluated = run("evaluate", "model.safetensors", PENGUINS, cwd=tmp_path)
    ours = np.mean(np.abs(xn.to_numpy(net.predict(known)).ravel() - known["body_mass_g"]))
    assert float(evaluated.stdout.split("mae: ")[1]) == pytest.approx(ours, rel=1e-3)


def test_semicolon_decimal_comma_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": np.where(X[:, 0] > 0, "hi", "lo")})
    frame.to_csv(tmp_path / "eu.csv", sep=";", decimal=",", index=False)
    out = run("train", "eu.csv", "--decimal", ",", *QUICK, cwd=tmp_path)
    assert float(out.stdout.split("val_accuracy: ")[1]) >= 0.9


def test_pandas_index_is_not_a_feature(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=60)})
    frame["y"] = np.where(frame["x"] > 0, "pos", "neg")
    frame.to_csv(tmp_path / "indexed.csv")
    out = run("train", "indexed.csv", "--epochs", "2", cwd=tmp_path)
    assert "saved pandas index" in out.stderr and "1 columns" in out.stdout
    assert xn.load(tmp_path / "model.safetensors", backend="numpy").metadata["feature_names"] == ["x"]


def test_headerless_file_is_refused_with_a_hint_and_read_with_no_header(tmp_path):
    (tmp_path / "bare.csv").write_text("".join(f"{i / 10},{i % 2}\n" for i in range(40)))
    result = run("train", "bare.csv", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--no-header" in result.stderr
    out = run("train", "bare.csv", "--no-header", "--epochs", "2", cwd=tmp_path)
    assert "40 rows" in out.stdout or "32 train / 8 held-out" in out.stdout


def test_float_zero_one_target_with_a_gap_is_classification(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    y = (x > 0).astype(float)
    y[5] = np.nan  # pandas writes the whole column as floats: 0.0, 1.0, and an empty cell
    pd.DataFrame({"x": x, "sick": y}).to_csv(tmp_path / "gap.csv", index=False)
    out = run("train", "gap.csv", *QUICK, cwd=tmp_path)
    assert float(out.stdout.split("val_accuracy: ")[1]) >= 0.85
    assert xn.load(tmp_path / "model.safetensors", backend="numpy").metadata["classes"] == [0, 1]
    assert run("predict", "model.safetensors", "gap.csv", cwd=tmp_path).stdout.startswith(
        "prediction,p_0,p_1"
    )
    out = run("train", "gap.csv", "--task", "regression", "--epochs", "2", cwd=tmp_path)
    assert "regression" in out.stdout and "val_mae" in out.stdout


def test_a_device_the_default_backend_lacks_is_refused(tmp_path, table):
    if "cupy" in xn.available_backends():
        pytest.skip("this machine has a GPU")
    result = run("train", table, "--device", "cuda:0", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "cuda:0" in result.stderr


def test_predict_ignores_the_target_and_needs_the_features(tmp_path, table):
    run("train", table, "--epochs", "2", "--quiet", cwd=tmp_path)
    features_only = tmp_path / "new.csv"
    features_only.write_text("age,pressure,glucose\n1.0,0.0,2.0\n")
    out = run("predict", "model.safetensors", features_only, cwd=tmp_path)
    assert len(out.stdout.splitlines()) == 2
    missing = tmp_path / "missing.csv"
    missing.write_text("age,pressure\n1.0,0.0\n")
    result = run("predict", "model.safetensors", missing, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "feature column(s) ['glucose']" in result.stderr

"""What ``xpnet predict`` and ``xpnet evaluate`` write is checked (issue 22, defect 3).

Predictions that are not finite (features far beyond the training data, which
overflow the network's float32 arithmetic) end the command with one line
naming the rows and why, exit status 2, nothing written, and no numpy warning.
"""

from __future__ import annotations

import csv
import re
import warnings

import numpy as np
import pytest

from xpnet.cli import main

pd = pytest.importorskip("pandas")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regressor")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    data = folder / "data.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "amount"])
        writer.writerows([[*row, 3 * row[0] - row[1]] for row in x])
    model = folder / "model.safetensors"
    argv = ["train", str(data), "--epochs", "3", "--hidden", "8", "--folds", "1", "--quiet"]
    assert main([*argv, "--backend", "numpy", "--out", str(model)]) == 0
    far = pd.read_csv(data)
    far.loc[[3, 7], ["a", "b"]] = [3e38, -3e38]  # finite, but beyond what float32 arithmetic holds
    far_path = folder / "far.csv"
    far.to_csv(far_path, index=False)
    return model, data, far_path


def _args(backend):
    device = re.sub(r"^.*Device\('(.*)'\)$", r"\1", str(backend.device))
    return ["--backend", backend.name, "--device", device]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_non_finite_predictions_end_in_one_line_naming_the_rows(
    regressor, backend, capsys, tmp_path, command
):
    model, data, far = regressor
    out = tmp_path / "p.csv"
    extra = ["--out", str(out)] if command == "predict" else []
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning fails the test
        status = main([command, str(model), str(far), *extra, *_args(backend)])
    written, err = capsys.readouterr()
    assert status == 2 and written == "" and not out.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "xpnet: error: the predictions for 2 of 120 rows (data rows 4, 8) are not finite: "
        "the network's float32 arithmetic overflowed on their feature "
    )
    assert re.search(r"feature '[ab]', [0-9.]+e\+38 standard deviations from its training mean", err)
    assert "--dtype float64" in err
    assert main([command, str(model), str(data), *_args(backend)]) == 0  # the same model on sane data


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A model trained by ``xpnet train`` on a table with a TRUE/FALSE column, a text column and a
    header naming one column twice."""
    folder = tmp_path_factory.mktemp("classifier")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(150):
        x, flag, town = rng.normal(), bool(rng.random() > 0.5), "abc"[i % 3]
        rows.append(
            [f"{x:.4f}", "TRUE" if flag else "FALSE", town, f"{rng.normal():.3f}", int(x + 2 * flag > 1)]
        )
    data = folder / "data.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "flag", "town", "x", "label"])
        writer.writerows(rows)
    model = folder / "model.safetensors"
    return model, data


def test_train_and_predict_say_what_they_reinterpret(classifier, backend, capsys, tmp_path):
    model, data = classifier
    capsys.readouterr()
    argv = [
        "train",
        str(data),
        "--epochs",
        "30",
        "--hidden",
        "8",
        "--folds",
        "1",
        "--quiet",
        "--out",
        str(model),
    ]
    assert main([*argv, *_args(backend)]) == 0
    err = capsys.readouterr().err
    assert "note: the header of data.csv names 2 columns 'x': they are read as 'x', 'x.1'" in err
    capsys.readouterr()
    assert main(["predict", str(model), str(data), *_args(backend)]) == 0
    expected = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    frame = pd.read_csv(data)
    for spelling in ({True: 1, False: 0}, {True: "yes", False: "no"}):
        frame.assign(flag=frame["flag"].map(spelling)).to_csv(tmp_path / "respelled.csv", index=False)
        assert main(["predict", str(model), str(tmp_path / "respelled.csv"), *_args(backend)]) == 0
        out, err = capsys.readouterr()
        pd.testing.assert_frame_equal(pd.read_csv(pd.io.common.StringIO(out)), expected)
        assert "note:" not in err
    frame.assign(town="nowhere", x=np.inf).to_csv(tmp_path / "odd.csv", index=False)
    assert main(["predict", str(model), str(tmp_path / "odd.csv"), *_args(backend)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: column 'x' holds 150 infinite value(s), replaced by the training median",
        "note: column 'town': 150 of 150 values were not seen in training (e.g. ['nowhere']) and encode "
        "as unseen (all zeros)",
    ]

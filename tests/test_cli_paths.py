"""The xpnet command never overwrites its inputs and checks every output path before working (issue 11)."""

from __future__ import annotations

import csv
import errno
import os

import numpy as np
import pytest

from xpnet.cli import main

pytest.importorskip("pandas")
pytest.importorskip("safetensors")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder with data.csv and a trained model.safetensors, as the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XPNET_BACKEND", "numpy")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    with open("data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "label"])
        writer.writerows([[*row, int(row[0] > 0)] for row in X])
    assert main(["train", "data.csv", "--epochs", "1", "--hidden", "2", "--quiet"]) == 0
    return tmp_path


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _refused(argv, capsys, folder, *needles):
    before = _snapshot(folder)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("xpnet: error: ")
    for needle in needles:
        assert needle in err
    assert _snapshot(folder) == before, "a refused command changed a file"
    return err


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["predict", "model.safetensors", "data.csv", "--out", "data.csv"], ["is the input data.csv"]),
        (
            ["predict", "model.safetensors", "data.csv", "--out", "model.safetensors"],
            ["is the input model.safetensors"],
        ),
        (["train", "data.csv", "--out", "data.csv"], ["is the input data.csv"]),
        (["train", "data.csv", "--plot", "data.csv"], ["--plot data.csv is the input"]),
        (["train", "data.csv", "--out", "same.x", "--plot", "same.x"], ["also --out"]),
        (["train", "data.csv", "--out", "sub"], ["is a directory"]),
        (["predict", "model.safetensors", "data.csv", "--out", "sub"], ["is a directory"]),
        (["train", "data.csv", "--out", "data.csv/m.safetensors"], ["is a file, not a folder"]),
        (["predict", "model.safetensors", "data.csv", "--out", "data.csv/x/p.csv"], ["not a folder"]),
        (["train", "data.csv", "--out", "/proc/m.safetensors"], ["cannot be written"]),
        (["train", "data.csv", "--out", "link.csv"], ["is the input data.csv"]),
        (["train", "data.csv", "--out", "hard.csv"], ["is the input data.csv"]),
    ],
)
def test_unsafe_outputs_are_refused_before_any_work(folder, capsys, argv, needles):
    (folder / "sub").mkdir()
    os.symlink("data.csv", folder / "link.csv")
    os.link(folder / "data.csv", folder / "hard.csv")
    _refused(argv, capsys, folder, *needles)


def test_read_only_output_is_refused(folder, capsys):
    if os.geteuid() == 0:
        pytest.skip("root may write read-only files")
    (folder / "ro.csv").write_text("keep")
    os.chmod(folder / "ro.csv", 0o444)
    _refused(["predict", "model.safetensors", "data.csv", "--out", "ro.csv"], capsys, folder, "read-only")


def test_a_network_too_large_for_memory_is_refused_with_one_line(folder, capsys):
    err = _refused(["train", "data.csv", "--hidden", "100000000000", "--epochs", "1"], capsys, folder)
    assert "parameters" in err and "GiB" in err


def test_safe_outputs_are_written_and_nothing_else_changes(folder, capsys):
    before = _snapshot(folder)
    assert main(["predict", "model.safetensors", "data.csv", "--out", "new/p.csv"]) == 0
    assert (folder / "new" / "p.csv").read_text().startswith("prediction")
    assert _snapshot(folder) == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX special files")
@pytest.mark.parametrize("command", ["train", "predict"])
def test_devices_and_fifos_as_outputs_are_refused_before_any_work(folder, capsys, command):
    os.mkfifo(folder / "pipe")
    start = ["train", "data.csv"] if command == "train" else ["predict", "model.safetensors", "data.csv"]
    for out, kind in (("/dev/null", "a character device"), ("pipe", "a named pipe (FIFO)")):
        err = _refused(
            [*start, "--out", out, "--epochs", "1"] if command == "train" else [*start, "--out", out],
            capsys,
            folder,
            f"--out {out} is {kind}",
        )
        assert "regular file" in err


def test_a_full_disk_is_found_before_training(folder, capsys, monkeypatch):
    import tempfile

    real = tempfile.TemporaryFile

    class Full:
        def __init__(self, **options):
            self.file = real(**options)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(tempfile, "TemporaryFile", Full)
    err = _refused(
        ["train", "data.csv", "--out", "new.safetensors"], capsys, folder, "No space left on device"
    )
    assert "--out new.safetensors cannot be written" in err


def test_a_disk_that_fills_during_training_is_named_in_the_error(folder, capsys, monkeypatch):
    import xpnet.checkpoint as xio

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(xio.os, "replace", full)
    capsys.readouterr()
    assert (
        main(["train", "data.csv", "--epochs", "1", "--hidden", "2", "--quiet", "--out", "new.safetensors"])
        == 2
    )
    out, err = capsys.readouterr()
    assert out.startswith("val_")  # trained, then the save failed
    assert err.strip() == (
        "xpnet: error: could not write new.safetensors: No space left on device "
        "(any file there before is unchanged)"
    )
    assert not (folder / "new.safetensors").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

"""The kseg command line: it parses arguments and calls kseg.training / kseg.export."""

import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kseg import cli, data


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "camvid"
    return data.write_synthetic_dataset(root, {"train": 4, "val": 2, "test": 2}, height=36, width=48, ignore_label=11)


def test_train_evaluate_predict_export_through_main(tiny_root, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(
        ["train", "--model", "segnet_basic", "--data", str(tiny_root), "--epochs", "1", "--steps-per-epoch", "2",
         "--batch-size", "2", "--crop", "32", "48", "--scale", "1", "1", "--lr", "0.01", "--model-arg", "width=4",
         "--out", str(out), "--quiet", "--loss", "focal"]
    )
    assert rc == 0
    model_path = out / "model.keras"
    assert model_path.is_file() and (out / "best.keras").is_file() and (out / "log.csv").is_file()
    assert json.loads((out / "train_config.json").read_text())["learning_rate"] == 0.01
    assert json.loads((out / "train_config.json").read_text())["loss"] == "focal"

    results = tmp_path / "eval.json"
    rc = cli.main(["evaluate", "--model-path", str(model_path), "--data", str(tiny_root), "--split", "test",
                   "--json", str(results), "--save-overlays", str(tmp_path / "cmp"), "--max-overlays", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "global accuracy" in printed and "class-average accuracy" in printed and "mean IoU" in printed
    assert "Bicyclist" in printed  # the per-class table
    scores = json.loads(results.read_text())
    assert scores["num_images"] == 2 and 0 <= scores["mean_iou"] <= 1
    assert (tmp_path / "iou_per_class.png").is_file() and (tmp_path / "confusion_matrix.png").is_file()
    panels = sorted((tmp_path / "cmp").glob("*_comparison.png"))  # image | prediction | truth | errors
    assert len(panels) == 1 and Image.open(panels[0]).size[0] == 4 * 48 + 3 * 4
    assert (tmp_path / "cmp" / "iou_per_class.png").is_file()

    images = sorted(str(p) for p in (tiny_root / "test").glob("*.png"))
    rc = cli.main(["predict", "--model-path", str(model_path), *images, "--out", str(tmp_path / "pred")])
    assert rc == 0
    labels = np.asarray(Image.open(tmp_path / "pred" / (os.path.basename(images[0])[:-4] + "_labels.png")))
    assert labels.shape == (36, 48) and labels.max() < 11
    assert (tmp_path / "pred" / (os.path.basename(images[1])[:-4] + "_overlay.png")).is_file()

    rc = cli.main(["export", str(model_path), "--format", "keras", "--out", str(tmp_path / "copy.keras")])
    assert rc == 0 and (tmp_path / "copy.keras").is_file()


def test_bad_model_name_is_a_clear_error(tiny_root, tmp_path, capsys):
    rc = cli.main(["train", "--model", "segnot", "--data", str(tiny_root), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown model 'segnot'" in err and "segnet_basic" in err


def test_missing_data_and_bad_arguments(tmp_path, capsys):
    rc = cli.main(["train", "--model", "segnet_basic", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "segnet_basic"])  # --data is required
    with pytest.raises(SystemExit):
        cli.main(["export", "m.keras", "--format", "onnx", "--out", "x"])
    rc = cli.main(["evaluate", "--model-path", str(tmp_path / "none.keras"), "--data", str(tmp_path)])
    assert rc == 2 and "no .keras file at" in capsys.readouterr().err


def test_list_prints_the_registry(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "segnet_basic" in out and "1,416,587" in out


def test_console_script_entry_point():
    # `kseg = kseg.cli:main` (setup.cfg); run the module the same way in a fresh interpreter.
    proc = subprocess.run([sys.executable, "-m", "kseg.cli", "demo", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0
    assert "--budget-seconds" in proc.stdout and "--data" in proc.stdout


def test_export_and_convert_use_the_system_allocator_unless_told_otherwise(tmp_path, monkeypatch):
    """TensorFlow reads TF_ONEDNN_USE_SYSTEM_ALLOCATOR once: kseg export / convert set it before importing
    it (less peak memory in the TFLite conversion); training keeps oneDNN's pool; a user's value wins."""
    missing = str(tmp_path / "missing.keras")
    for command, expected in (("list", None), ("export", "1"), ("convert", "1")):
        monkeypatch.delenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", raising=False)
        with contextlib.suppress(SystemExit):  # the arguments are wrong: the variable is set before parsing
            cli.main([command] if command == "list" else [command, missing, "--out", str(tmp_path / "x")])
        assert os.environ.get("TF_ONEDNN_USE_SYSTEM_ALLOCATOR") == expected, command
    monkeypatch.setenv("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "0")
    cli.main(["export", missing, "--out", str(tmp_path / "x.keras")])
    assert os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] == "0"

"""`kseg train|evaluate|predict` for proposal and detection models (kseg.inference.cli.dispatch)."""

import json

import pytest

from kseg.inference.cli import dispatch, instance_task

TINY_DM = ["--model-arg", "input_size=32", "--model-arg", "context=16", "--model-arg", "width_multiplier=0.125",
           "--model-arg", "depths=[1,1,1]", "--model-arg", "mask_size=8", "--model-arg", "output_size=16",
           "--model-arg", "feature_dim=16", "--model-arg", "score_hidden=[8]"]


def test_routing():
    assert instance_task(model="deepmask") == "proposals"
    assert instance_task(model="multipathnet") == "detection"
    assert instance_task(model="segnet") is None
    assert dispatch(["train", "--model", "segnet", "--data", "x"]) is None  # the semantic CLI's job
    assert dispatch(["list"]) is None


@pytest.mark.slow  # the instance CLI end to end (~40 s); tests/models/test_deepmask.py trains and exports in the default run
def test_deepmask_train_evaluate_predict(coco_tiny_dir, tmp_path, capsys):
    out = tmp_path / "dm"
    assert dispatch(["train", "--model", "deepmask_resnet50", "--data", str(coco_tiny_dir), "--steps", "2",
                     "--batch-size", "2", "--out", str(out), *TINY_DM]) == 0
    model = out / "model.keras"
    assert model.is_file() and instance_task(model_path=model) == "proposals"
    res = tmp_path / "ar.json"
    assert dispatch(["evaluate", "--model-path", str(model), "--data", str(coco_tiny_dir), "--limit", "1",
                     "--max-proposals", "10", "--json", str(res)]) == 0
    ar = json.loads(res.read_text())
    assert 0.0 <= ar["mask AR@10"] <= 1.0 and "box AR@10" in ar
    img = sorted((coco_tiny_dir / "val2017").glob("*.jpg"))[0]
    assert dispatch(["predict", "--model-path", str(model), str(img), "--out", str(tmp_path / "pred"),
                     "--top", "3"]) == 0
    assert (tmp_path / "pred" / f"{img.stem}_proposals.png").is_file()
    assert dispatch(["export", str(model), "--out", str(tmp_path / "saved"), "--max-proposals", "5"]) == 0
    assert (tmp_path / "saved" / "saved_model.pb").is_file()
    assert dispatch(["evaluate", "--model-path", str(model), "--data", str(tmp_path)]) == 2  # no annotations


@pytest.mark.slow
def test_detector_train_evaluate(coco_tiny_dir, tmp_path):
    dm = tmp_path / "dm"
    assert dispatch(["train", "--model", "deepmask_resnet50", "--data", str(coco_tiny_dir), "--steps", "1",
                     "--batch-size", "2", "--out", str(dm), *TINY_DM]) == 0
    det = tmp_path / "det"
    assert dispatch(["train", "--model", "multipathnet", "--data", str(coco_tiny_dir), "--steps", "2",
                     "--num-rois", "8", "--short-side", "128", "--out", str(det), "--model-arg", "fc_units=16",
                     "--model-arg", "width_multiplier=0.0625", "--model-arg", "pool_size=2"]) == 0
    assert instance_task(model_path=det / "model.keras") == "detection"
    assert dispatch(["evaluate", "--model-path", str(det / "model.keras"), "--data", str(coco_tiny_dir),
                     "--proposal-model", str(dm / "model.keras"), "--limit", "1", "--short-side", "128"]) == 0


def test_kseg_cli_routes_instance_tasks(tmp_path, capsys):
    from kseg.cli import main

    assert main(["train", "--model", "deepmask", "--data", str(tmp_path)]) == 2
    assert "instances_train2017.json" in capsys.readouterr().err  # the COCO reader's error, not the semantic CLI's

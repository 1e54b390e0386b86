"""kseg.training end to end on a tiny synthetic CamVid-layout folder, the resume path, the demo."""

import csv
import pathlib
import json

import keras
import numpy as np
import pytest
from PIL import Image

from kseg import data, training, viz
from kseg.datasets import camvid

TINY = dict(crop=(32, 48), scale_range=(1.0, 1.0), batch_size=2, model_kwargs={"width": 4}, jit_compile=False,
            verbose=0)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "camvid"
    return data.write_synthetic_dataset(root, {"train": 6, "val": 2, "test": 3}, height=36, width=48, ignore_label=11)


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    model, history = training.train("segnet_basic", tiny_root, out_dir=out, epochs=2, steps_per_epoch=2, **TINY)
    return model, history, out


def test_train_writes_checkpoints_logs_and_model(trained):
    model, history, out = trained
    assert history.epoch == [0, 1]
    assert {"loss", "global_accuracy", "class_average_accuracy", "mean_iou", "val_mean_iou"} <= set(history.history)
    for name in ("model.keras", "best.keras", "last.keras", "log.csv", "train_config.json"):
        assert (out / name).is_file(), name
    assert not (out / "backup").exists()  # deleted after a finished run
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    with open(out / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]
    config = json.loads((out / "train_config.json").read_text())
    assert config["crop"] == [32, 48] and len(config["class_weights"]) == 11
    assert model.optimizer.iterations.numpy() == 4
    loaded = training.load_model(out / "model.keras")  # safe_mode=True
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 48, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)


def test_evaluate_matches_numpy_confusion(trained, tiny_root):
    model, _, _ = trained
    result = training.evaluate(model, tiny_root, "test", batch_size=2, verbose=0)
    assert result["num_images"] == 3 and result["input_size"] == [32, 48]
    # Reference: resize the image to the model's size, predict, resize the logits back, argmax.
    import tensorflow as tf

    cm = np.zeros((11, 11), np.int64)
    for image_path, mask_path in data.find_pairs(tiny_root, "test"):
        image = np.asarray(Image.open(image_path), np.float32)[None]
        mask = np.asarray(Image.open(mask_path))
        logits = model.predict_on_batch(tf.image.resize(image, (32, 48)))
        pred = np.asarray(tf.image.resize(logits, mask.shape)).argmax(-1)[0]
        keep = mask != 11
        np.add.at(cm, (mask[keep], pred[keep]), 1)
    np.testing.assert_array_equal(np.asarray(result["confusion_matrix"]), cm)
    tp = np.diag(cm)
    assert result["global_accuracy"] == pytest.approx(tp.sum() / cm.sum(), abs=1e-6)
    union = cm.sum(0) + cm.sum(1) - tp
    assert result["mean_iou"] == pytest.approx(np.mean(tp[union > 0] / union[union > 0]), abs=1e-6)
    assert [r["name"] for r in result["per_class"]] == list(camvid.CLASSES)


def test_predict_writes_label_and_overlay_pngs(trained, tiny_root, tmp_path):
    model, _, _ = trained
    images = sorted((tiny_root / "test").glob("*.png"))[:2]
    results = training.predict(model, images, tmp_path / "pred", alpha=0.5)
    assert len(results) == 2
    for r, image_path in zip(results, images):
        labels_img, overlay_img = Image.open(r["labels"]), Image.open(r["overlay"])
        assert labels_img.mode == "P" and overlay_img.mode == "RGB"  # palette PNG: the ids, coloured
        labels, overlay = np.asarray(labels_img), np.asarray(overlay_img)
        image = np.asarray(Image.open(image_path).convert("RGB"))
        assert labels.shape == image.shape[:2] and labels.max() < 11
        np.testing.assert_array_equal(np.asarray(labels_img.convert("RGB")), np.asarray(camvid.PALETTE, np.uint8)[labels])
        colours = np.asarray(camvid.PALETTE, np.float32)[labels]
        h = image.shape[0]  # the overlay, then the legend of the classes present below it
        np.testing.assert_allclose(overlay[:h], np.round(0.5 * image + 0.5 * colours), atol=1)
        assert overlay.shape[0] > h and (overlay[h:] == 255).mean() > 0.5


def test_viz_palette_and_overlay():
    pal = viz.palette(11)
    np.testing.assert_array_equal(pal, np.asarray(camvid.PALETTE, np.uint8)[:11])
    assert viz.generic_palette(3).tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 11], [3, 3]])
    out = viz.overlay(image, labels, pal, alpha=1.0, ignore_label=11)
    assert out[0, 1].tolist() == [100, 100, 100]  # void keeps the image
    assert out[1, 0].tolist() == pal[3].tolist()
    with pytest.raises(ValueError, match="differ in size"):
        viz.overlay(image, labels[:1], pal)


class _Interrupt(keras.callbacks.Callback):
    """Raise after step `batch` of epoch `epoch`, remembering the weights at that moment."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.current, self.weights = (epoch, batch), None, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == self.at:
            self.weights = [w.copy() for w in self.model.get_weights()]
            raise RuntimeError("simulated interruption")


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.start_iterations, self.start_weights = [], None, None

    def on_train_begin(self, logs=None):  # runs after RunKeeper restored the state
        if self.start_iterations is not None:
            return  # a resumed half epoch and the rest are two fit calls
        self.start_iterations = int(self.model.optimizer.iterations.numpy())
        self.start_weights = [w.copy() for w in self.model.get_weights()]

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_resume_after_interruption(tiny_root, tmp_path):
    kw = dict(TINY, epochs=3, steps_per_epoch=4, val_split=None, backup_every=1)
    stop = _Interrupt(epoch=1, batch=1)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        training.train("segnet_basic", tiny_root, out_dir=tmp_path, callbacks=[stop], **kw)
    meta = json.loads((tmp_path / "backup" / "state.json").read_text())
    # saved after step 2 of epoch 2 (the interrupting callback runs after the backup)
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (1, 2, 6)

    with pytest.raises(ValueError, match="--resume"):
        training.train("segnet_basic", tiny_root, out_dir=tmp_path, **kw)

    record = _Record()
    model, history = training.train("segnet_basic", tiny_root, out_dir=tmp_path, resume=True, callbacks=[record], **kw)
    assert record.epochs == [1, 2]  # resumed in the interrupted epoch, finished the 3 epochs
    assert record.start_iterations == 4 + 2  # optimizer state restored at the saved step
    for a, b in zip(record.start_weights, stop.weights):
        np.testing.assert_array_equal(a, b)  # weights are those of the interrupted step
    assert int(model.optimizer.iterations.numpy()) == 3 * 4  # the exact steps of an uninterrupted run
    assert history.epoch == [1, 2]
    with open(tmp_path / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    assert not (tmp_path / "backup").exists()


def test_bad_model_name_and_arguments(tiny_root, tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        training.train("nope", tiny_root, out_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        training.train("segnet_basic", tiny_root, out_dir=tmp_path, epochs=0, **TINY)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        training.compile_model(keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1)]), optimizer="rmsprop")
    with pytest.raises(data.DataError):
        training.train("segnet_basic", tmp_path / "missing", out_dir=tmp_path, **TINY)


def test_demo_on_synthetic_data_labels_every_line(tmp_path):
    lines = []
    result = training.demo(
        out_dir=tmp_path, synthetic=True, budget_seconds=1, steps_per_epoch=2, batch_size=2, crop=(48, 64),
        model_kwargs={"width": 4}, eval_steps=1, num_overlays=1, print_fn=lines.append, verbose=1,
    )
    assert result["synthetic"] is True
    assert lines and all(line.startswith(training.SYNTHETIC_LABEL) for text in lines for line in text.splitlines())
    assert (tmp_path / "model.keras").is_file() and len(result["overlays"]) == 1
    saved = json.loads((tmp_path / "demo_results.json").read_text())
    assert saved["synthetic"] is True
    # planned vs done, said honestly: a 1 s budget stops this run early, and the report says so
    assert saved["planned_steps"] == 10 * 2 and 1 <= saved["train_steps"] <= 20
    assert saved["stopped_by_budget"] == (saved["train_steps"] < 20)
    assert any(f"of {saved['planned_steps']} planned steps" in line for line in lines)


def test_demo_pipeline_on_camvid(camvid_dir, tmp_path):
    """The real demo path on CamVid, for a couple of steps at a small size."""
    lines = []
    result = training.demo(
        data=camvid_dir, out_dir=tmp_path, budget_seconds=1, steps_per_epoch=2, batch_size=2, crop=(48, 64),
        model_kwargs={"width": 4}, eval_steps=1, num_overlays=1, print_fn=lines.append, verbose=0,
    )
    assert result["synthetic"] is False and "CamVid found" in lines[0]
    assert result["num_images"] == 2 and result["input_size"] == [48, 64]
    assert all(0.0 <= result[k] <= 1.0 for k in ("global_accuracy", "class_average_accuracy", "mean_iou"))
    labelled = sum(map(sum, result["confusion_matrix"]))  # scored at full resolution, void left out
    assert 0.8 * 2 * 360 * 480 < labelled < 2 * 360 * 480
    overlay = Image.open(result["overlays"][0]["overlay"])
    assert overlay.size[0] == 480 and overlay.size[1] > 360  # the image, then its legend
    labels = Image.open(result["overlays"][0]["labels"])
    assert labels.mode == "P" and labels.size == (480, 360)  # a palette PNG: ids kept, colours visible
    assert np.asarray(labels).max() < 11
    assert labels.getpalette()[:3] == [int(v) for v in viz.palette(11)[0]]
    for key in ("iou_chart", "confusion_matrix"):
        assert Image.open(result["charts"][key]).size[0] > 300
    assert pathlib.Path(result["charts"]["iou_chart"]).parent == tmp_path  # beside demo_results.json
    panel = Image.open(result["comparisons"][0])  # image | prediction | ground truth | errors
    assert panel.size[0] == 4 * 480 + 3 * 4 and panel.size[1] > 360


def test_demo_pretrained_evaluates_the_shipped_weights_without_training(tmp_path, monkeypatch):
    """`kseg demo --pretrained`: SegNet-Basic from weights='camvid' (here a stand-in file in the package
    folder), evaluated at 360x480 (its training size) on the test split against the labels; no step trained."""
    from kseg.models import weights

    import kseg

    root = data.write_synthetic_dataset(tmp_path / "camvid", {"test": 2}, height=72, width=96, ignore_class=11)
    monkeypatch.delenv("KSEG_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.keras/datasets/camvid to fall back on
    monkeypatch.delenv("KERAS_HOME", raising=False)
    with pytest.raises(ValueError, match="--pretrained.*not found"):
        training.demo(data=tmp_path / "none", out_dir=tmp_path / "o", pretrained=True, print_fn=lambda *_: None)
    monkeypatch.setattr(weights, "PACKAGED_DIR", tmp_path / "pkg")
    (tmp_path / "pkg").mkdir()
    shipped = kseg.SegNetBasic()
    shipped.save_weights(tmp_path / "pkg" / "segnet_basic_camvid.weights.h5")
    lines = []
    result = training.demo(data=root, out_dir=tmp_path / "demo", pretrained=True, eval_steps=1, num_overlays=1,
                           batch_size=2, print_fn=lines.append, verbose=0)
    assert result["pretrained"] is True and result["train_steps"] == 0 and result["input_size"] == [360, 480]
    assert any("weights='camvid'" in line and "no training" in line for line in lines)
    assert sum(map(sum, result["confusion_matrix"])) > 0.8 * 2 * 72 * 96  # scored at the labels' size
    back = keras.models.load_model(tmp_path / "demo" / "model.keras", safe_mode=True)
    for a, b in zip(back.get_weights(), shipped.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(result["overlays"]) == 1 and (tmp_path / "demo" / "demo_results.json").is_file()


def test_compute_bn_statistics_is_the_average_over_batches():
    import tensorflow as tf

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.99)(inputs))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, scale=1 + i, size=(2, 4, 4, 3)).astype("float32") for i in range(3)]
    ds = tf.data.Dataset.from_tensor_slices((np.stack(batches), np.zeros((3, 2, 4, 4), "int32")))
    assert training.compute_bn_statistics(model, ds, steps=5) == 3
    bn = model.layers[-1]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([b.mean((0, 1, 2)) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([b.var((0, 1, 2)) for b in batches], 0), rtol=1e-4)
    assert bn.momentum == 0.99  # restored


def test_class_weighting_options(tiny_root):
    pairs = data.find_pairs(tiny_root, "train")
    full = training._class_weights(pairs, 11, 11, "median_frequency")
    np.testing.assert_allclose(full, data.median_frequency_weights(pairs, 11, 11))
    np.testing.assert_allclose(training._class_weights(pairs, 11, 11, "median_frequency_sqrt"), np.sqrt(full), rtol=1e-6)
    assert training._class_weights(pairs, 11, 11, None) is None
    with pytest.raises(ValueError, match="class_weighting must be one of"):
        training._class_weights(pairs, 11, 11, "inverse")
    with pytest.raises(ValueError, match="class_weighting must have 11 values"):
        training._class_weights(pairs, 11, 11, [1.0, 2.0])

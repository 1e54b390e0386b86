"""The instance models under ``model.fit`` (kseg.inference.fit): the task's loss, kseg's callbacks,
resume, precision, and SharpMask taking its DeepMask's trunk settings."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.inference.detection import detection_loss, heads_of
from kseg.inference.fit import InstanceTrainer, fit_instance_model
from kseg.models.deepmask import deepmask_loss, trunk_settings
from kseg.models.multipathnet import MultiPathNet

TINY_DM = dict(input_size=32, context=16, width_multiplier=0.125, depths=(1, 1, 1), mask_size=8, output_size=8,
               feature_dim=16, score_hidden=(8,))
TINY_MPN = dict(num_classes=5, num_rois=4, fc_units=16, width_multiplier=1 / 16, pool_size=2)


def _dm_data(n=4):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (n, 64, 64, 3)).astype("float32")
    targets = {"masks": np.where(rng.uniform(size=(n, 8, 8)) > 0.5, 1.0, -1.0).astype("float32"),
               "scores": np.array([[1], [1], [-1], [1]], "float32"),
               "mask_weight": np.array([[1], [0], [0], [1]], "float32")}
    return images, targets


def _det_data():
    rng = np.random.default_rng(1)
    inputs = {"image": rng.uniform(0, 255, (1, 64, 64, 3)).astype("float32"),
              "rois": np.array([[[0, 0, 32, 32], [10, 10, 60, 50], [20, 5, 40, 30], [0, 30, 64, 64]]], "float32")}
    targets = {"labels": np.array([[1, 0, 3, 2]], np.int32), "ious": np.array([[0.8, 0.2, 0.55, 0.72]], np.float32),
               "box_targets": rng.normal(size=(1, 4, 4)).astype(np.float32)}
    return inputs, targets


def test_trainer_loss_is_the_task_loss():
    keras.utils.set_random_seed(0)
    dm = kseg.DeepMaskResNet50(**TINY_DM)
    images, targets = _dm_data()
    trainer = InstanceTrainer(dm)
    trainer.compile(optimizer="sgd")
    got = trainer.evaluate(images, targets, batch_size=4, verbose=0, return_dict=True)
    want = deepmask_loss(targets, dm(images, training=False))
    np.testing.assert_allclose([got["loss"], got["mask_loss"], got["score_loss"]], [float(w) for w in want],
                               rtol=1e-5)
    mpn = MultiPathNet(**TINY_MPN)
    inputs, t = _det_data()
    trainer = InstanceTrainer(mpn)
    trainer.compile(optimizer="sgd")
    got = trainer.evaluate(inputs, t, batch_size=1, verbose=0, return_dict=True)
    want = detection_loss(t, mpn(inputs, training=False), heads_of(mpn))
    np.testing.assert_allclose([got["loss"], got["cls_loss"], got["box_loss"]], [float(w) for w in want], rtol=1e-5)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


def test_fit_callbacks_resume_and_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    ds = tf.data.Dataset.from_tensors(_dm_data()).repeat()
    out = tmp_path / "run"

    def build():
        return kseg.DeepMaskResNet50(**TINY_DM)

    with pytest.raises(KeyboardInterrupt):
        fit_instance_model(build, ds, out, epochs=2, steps_per_epoch=2, verbose=0, callbacks=[_Interrupt()])
    assert (out / "backup").is_dir() and (out / "last.keras").is_file()
    with pytest.raises(ValueError, match="resume"):
        fit_instance_model(build, ds, out, epochs=2, steps_per_epoch=2, verbose=0)
    model, history = fit_instance_model(build, ds, out, epochs=2, steps_per_epoch=2, verbose=0, resume=True)
    assert history.epoch == [1]  # epoch 0 restored from the backup, not re-run
    assert not (out / "backup").exists()
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"] and {"loss", "mask_loss", "score_loss"} <= set(rows[0])
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # TensorBoard
    back = keras.models.load_model(out / "model.keras", safe_mode=True)
    x = _dm_data()[0]
    np.testing.assert_allclose(back(x)["scores"], model(x)["scores"], rtol=1e-5, atol=1e-6)
    import json

    record = json.loads((out / "train_config.json").read_text())
    assert record["planned_steps"] == 4 and record["steps_done"] == 4


@pytest.mark.slow
def test_fit_detector_mirrored_mixed_precision_and_budget(tmp_path):
    keras.utils.set_random_seed(0)
    ds = tf.data.Dataset.from_tensors(_det_data()).repeat()
    model, history = fit_instance_model(lambda: MultiPathNet(**TINY_MPN), ds, tmp_path / "det", epochs=3,
                                        steps_per_epoch=2, precision="mixed_bfloat16", clipnorm=10.0, verbose=0,
                                        strategy="mirrored", budget_seconds=1e-6)
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert np.isfinite(history.history["loss"]).all() and {"cls_loss", "box_loss"} <= set(history.history)
    import json

    record = json.loads((tmp_path / "det" / "train_config.json").read_text())
    assert record["stopped_by_budget"] and record["steps_done"] == 1 < record["planned_steps"] == 6


def test_sharpmask_takes_its_deepmask_trunk(tmp_path):
    dm = kseg.DeepMaskResNet50(**TINY_DM)
    path = tmp_path / "dm.keras"
    dm.save(path)
    for source in (dm, keras.models.load_model(path, safe_mode=True)):  # also after loading
        sharp = kseg.SharpMask(deepmask=source, km=16, ks=16)
        want = trunk_settings(dm)
        assert trunk_settings(sharp) == want and want["width_multiplier"] == 0.125 and want["depths"] == (1, 1, 1)
        np.testing.assert_array_equal(sharp.get_layer("conv1").get_weights()[0], dm.get_layer("conv1").get_weights()[0])
    with pytest.raises(ValueError, match="trunk"):
        kseg.SharpMask(deepmask=dm, trunk="vgg")


@pytest.mark.slow
def test_train_detector_runs_fit_one_row_per_step():
    from kseg.inference.detection import train_detector

    keras.utils.set_random_seed(0)
    model = MultiPathNet(**TINY_MPN)
    before = [w.copy() for w in model.get_weights()]
    hist = train_detector(model, tf.data.Dataset.from_tensors(_det_data()).repeat(), steps=3)
    assert len(hist) == 3 and all(set(h) == {"loss", "cls_loss", "box_loss", "seconds"} for h in hist)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # it trained

"""Issue 13: crash-safe writes, exact resume, refusing a finished run's folder, and clean CLI errors."""

import csv
import errno
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from kseg import io as kio
from kseg import runs

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# kseg.io


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with kio.atomic_path(target) as tmp:
            pathlib.Path(tmp).write_bytes(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]  # no temporary left
    with kio.atomic_path(target) as tmp:
        assert pathlib.Path(tmp).parent == tmp_path and tmp.endswith("model.bin")
        pathlib.Path(tmp).write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_full_disk_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "log.csv"
    kio.atomic_write_text(target, "epoch\n0\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        kio.atomic_write_text(target, "epoch\n0\n1\n")
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "epoch\n0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]


def test_atomic_dir_swaps_whole_folders(tmp_path):
    target = tmp_path / "saved"
    with kio.atomic_dir(target) as tmp:
        (pathlib.Path(tmp) / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with kio.atomic_dir(target) as tmp:
            (pathlib.Path(tmp) / "b").write_text("2")
            raise RuntimeError("converter died")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with kio.atomic_dir(target) as tmp:
        (pathlib.Path(tmp) / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_atomic_path_errors_name_the_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        with kio.atomic_path(blocker / "out.keras"):
            pass
    assert info.value.filename == str(blocker)


def test_check_keras_file_names_every_bad_archive(tmp_path):
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.keras: empty file"):
        kio.check_keras_file(empty)
    good = tmp_path / "good.keras"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("model.weights.h5", b"\x00" * 4000)
        z.writestr("config.json", "{}")
    data = good.read_bytes()
    truncated = tmp_path / "trunc.keras"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.keras: not a .keras model"):
        kio.check_keras_file(truncated)
    flipped = bytearray(data)
    flipped[100] ^= 0xFF  # inside the weights member: its CRC fails
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt.keras: corrupt .keras archive"):
        kio.check_keras_file(corrupt)
    with pytest.raises(ValueError, match="is a folder"):
        kio.check_keras_file(tmp_path)
    assert kio.check_keras_file(good) == good


# ---------------------------------------------------------------------------------------------
# run folders


def test_finished_run_is_refused_without_resume_or_overwrite(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"x")
    (tmp_path / "log.csv").write_text("epoch\n0\n")
    with pytest.raises(ValueError, match="finished run.*--resume.*--overwrite"):
        runs.check_out_dir(tmp_path)
    assert runs.check_out_dir(tmp_path, resume=True) == "finished"
    assert runs.check_out_dir(tmp_path, overwrite=True) == "fresh"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "backup").mkdir()
    with pytest.raises(ValueError, match="interrupted run.*--resume.*--overwrite"):
        runs.check_out_dir(tmp_path)


def test_log_rows_round_trip(tmp_path):
    rows = [{"epoch": 0, "loss": 1.5, "val_mean_iou": 0.25}, {"epoch": 1, "loss": 1.25, "val_mean_iou": 0.5}]
    runs.write_log(tmp_path / "log.csv", rows)
    assert runs.read_log(tmp_path / "log.csv") == rows


# ---------------------------------------------------------------------------------------------
# the CLI


def _cli(argv, capsys):
    from kseg import cli

    status = cli.main(argv)
    return status, capsys.readouterr().err


def test_cli_environment_errors_are_two_lines_at_most(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    image = tmp_path / "a.png"
    image.write_bytes(b"not a png")
    status, err = _cli(["predict", "--model-path", str(tmp_path / "none.keras"), str(image), "--out", "o"], capsys)
    assert status == 2 and "none.keras" in err and "Traceback" not in err
    (tmp_path / "empty.keras").write_bytes(b"")
    status, err = _cli(["export", str(tmp_path / "empty.keras"), "--format", "keras", "--out", "x.keras"], capsys)
    assert status == 2 and "empty.keras: empty file" in err
    status, err = _cli(["train", "--model", "segnet_basic", "--data", str(tmp_path / "nodata"),
                        "--out", str(blocker / "run")], capsys)
    assert status != 0 and "Traceback" not in err and len(err.strip().splitlines()) <= 2

    from kseg import training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    status, err = _cli(["train", "--model", "segnet_basic", "--data", str(tmp_path)], capsys)
    assert status == 130 and err.strip() == "kseg train: error: interrupted: continue with --resume"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "model.keras"))

    monkeypatch.setattr(training, "train", disk_full)
    status, err = _cli(["train", "--model", "segnet_basic", "--data", str(tmp_path)], capsys)
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 2 and "model.keras: No space left on device" in lines[0]
    assert "disk is full" in lines[1]
    with pytest.raises(OSError):  # --debug: the traceback
        _cli(["--debug", "train", "--model", "segnet_basic", "--data", str(tmp_path)], capsys)


def test_convert_full_disk_keeps_the_previous_weights(tmp_path, capsys, monkeypatch):
    """`kseg convert` writes through kseg.io: a full disk mid-write leaves the old .weights.h5 as it
    was, and the error is one line naming --out, even with h5py's objects of the failed file around."""
    import h5py
    import keras

    sys.path.insert(0, str(ROOT / "tests" / "convert"))
    import inverse

    import kseg
    from kseg.convert.caffe import write_caffemodel

    model = kseg.SegNetBasic(width_multiplier=0.25)
    inverse.randomize(model)
    src = write_caffemodel(tmp_path / "sb.caffemodel", inverse.caffe_layers(model), v1=True)
    out = tmp_path / "sb.weights.h5"
    argv = ["convert", "--model", "segnet_basic", str(src), "--out", str(out), "--model-arg", "width_multiplier=0.25"]
    assert _cli(argv, capsys)[0] == 0
    before = out.read_bytes()
    real = keras.Model.save_weights

    def full(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        with open(path, "r+b") as f:  # half written, then the disk is full
            f.truncate(len(before) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save_weights", full)
    status, err = _cli(argv, capsys)
    lines = err.strip().splitlines()
    assert status == 1 and str(out) in lines[0] and "No space left on device" in lines[0] and len(lines) <= 2
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(["sb.caffemodel", out.name])
    with h5py.File(out, "r"):
        pass


def test_predict_checks_inputs_before_creating_out(tmp_path, capsys, monkeypatch):
    from kseg import training

    monkeypatch.setattr(training, "load_model", lambda path: _TinyModel())
    status, err = _cli(["predict", "--model-path", "m.keras", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "is a folder" in err
    assert not (tmp_path / "o").exists()


class _TinyModel:
    outputs = [type("T", (), {"shape": (None, 4, 4, 3)})()]
    inputs = [type("T", (), {"shape": (None, 4, 4, 3)})()]


def test_num_classes_must_be_a_whole_number():
    from kseg import training

    for bad in (2.5, "11", 0, True):
        with pytest.raises(ValueError, match="num_classes must be a whole number"):
            training.build_model("segnet_basic", num_classes=bad, input_shape=(32, 48, 3))


# ---------------------------------------------------------------------------------------------
# late data errors


def _corrupt_png_keep_crcs(path):
    """Scramble a PNG's compressed pixels but recompute the chunk CRCs (passes the header checks)."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    pos = 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = bytes(data[pos + 4:pos + 8])
        if kind == b"IDAT":
            body = pos + 8
            for i in range(body + 2, body + length - 4):
                data[i] ^= 0x5A
            crc = zlib.crc32(bytes(data[pos + 4:body + length])) & 0xFFFFFFFF
            data[body + length:body + length + 4] = struct.pack(">I", crc)
        pos += 12 + length
    path.write_bytes(bytes(data))


def test_corrupt_png_behind_valid_crcs_is_named(tmp_path):
    from kseg import data, training

    root = data.write_synthetic_dataset(tmp_path / "d", {"test": 3}, height=32, width=48)
    bad = sorted((root / "test").glob("*.png"))[1]
    _corrupt_png_keep_crcs(bad)
    data.read_image_info(bad)  # the header check cannot see it
    assert data.find_corrupt_file(root, "test")[0] == str(bad)
    import keras

    model = keras.Sequential([keras.Input((32, 48, 3)), keras.layers.Conv2D(11, 1)])
    with pytest.raises(data.DataError, match=bad.name + ": corrupt image data"):
        training.evaluate(model, root, "test", batch_size=1, verbose=0)


# ---------------------------------------------------------------------------------------------
# kill tests: SIGKILL at chosen points of the writes, resume, compare with an uninterrupted run

CHILD = r"""
import os, sys
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
import keras
keras.utils.set_random_seed(0)
from kseg import training
resume = sys.argv[3] == "resume"
training.train("segnet_basic", sys.argv[1], out_dir=sys.argv[2], epochs=3, steps_per_epoch=3, batch_size=2,
               crop=(32, 48), scale_range=(0.8, 1.2), model_kwargs={"width": 4}, jit_compile=False, verbose=0,
               backup_every=2, resume=resume)
"""


def _run_child(root, out, mode, kill=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop(kio.KILL_ENV, None)
    if kill:
        env[kio.KILL_ENV] = kill
    return subprocess.run([sys.executable, "-c", CHILD, str(root), str(out), mode], env=env,
                          capture_output=True, text=True, timeout=600)


def _rows(out):
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


def _weights(path):
    from kseg import training

    return training.load_model(path).get_weights()


def _assert_same_run(out, ref, kill, models):
    """A resumed run equals the uninterrupted one: the log (epochs 0-2, every value) and the weights."""
    got, want = _rows(out), _rows(ref)
    assert [r["epoch"] for r in got] == ["0", "1", "2"]
    for a, b in zip(got, want):
        for key in b:
            np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-4, atol=1e-6, err_msg=f"{kill} {key}")
    for name in models:
        for a, b in zip(_weights(out / name), _weights(ref / name)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"{kill} {name}")
    assert not (out / "backup").exists()


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory):
    from kseg import data

    root = tmp_path_factory.mktemp("kill") / "camvid"
    data.write_synthetic_dataset(root, {"train": 6, "val": 2}, height=36, width=48, ignore_label=11)
    ref = tmp_path_factory.mktemp("ref")
    result = _run_child(root, ref, "fresh")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, ref


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    "written:state.json",            # first mid-epoch backup half done: nothing committed yet
    "renamed:best.keras",            # epoch 1 saved best.keras, its backup not yet committed
    "written:log.csv:2",             # epoch 2 committed, its log row not yet written
    "written:ckpt-000000004.weights.h5",  # mid-epoch backup of epoch 2 half written
    "renamed:state.json:3",          # the mid-epoch backup at step 4 committed: resumes inside epoch 2
    "renamed:state.json:4",          # the end of epoch 2 committed, its log row not yet written
    "written:model.keras",           # the final save
])
def test_kill_and_resume_matches_an_uninterrupted_run(kill_data, tmp_path, kill):
    root, ref = kill_data
    killed = _run_child(root, tmp_path, "fresh", kill=kill)
    assert killed.returncode == -9, killed.stderr[-3000:]
    if (tmp_path / "backup" / "state.json").exists():
        json.loads((tmp_path / "backup" / "state.json").read_text())  # never a half file
    for name in ("best.keras", "last.keras", "model.keras"):
        if (tmp_path / name).exists():
            kio.check_keras_file(tmp_path / name)  # whatever exists is complete
    refused = _run_child(root, tmp_path, "fresh")
    assert refused.returncode != 0 and "--resume" in refused.stderr
    resumed = _run_child(root, tmp_path, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(tmp_path, ref, kill, ("model.keras", "best.keras"))
    again = _run_child(root, tmp_path, "resume")  # a finished run: nothing to do
    assert again.returncode == 0 and [r["epoch"] for r in _rows(tmp_path)] == ["0", "1", "2"]


INSTANCE_CHILD = r"""
import os, sys
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
import keras, numpy as np, tensorflow as tf
keras.utils.set_random_seed(0)
import kseg
from kseg.inference.fit import fit_instance_model

def element(i):  # a different batch at every step: a resumed run must skip to the same one
    g = tf.cast(i, tf.float32)
    images = tf.sin(tf.reshape(tf.range(4 * 64 * 64 * 3, dtype=tf.float32), (4, 64, 64, 3)) * 0.01 + g) * 127 + 128
    masks = tf.where(tf.cos(tf.reshape(tf.range(4 * 8 * 8, dtype=tf.float32), (4, 8, 8)) + g) > 0, 1.0, -1.0)
    scores = tf.where(tf.sin(tf.range(4, dtype=tf.float32) + 3 * g) > 0, 1.0, -1.0)[:, None]
    return images, {"masks": masks, "scores": scores, "mask_weight": tf.ones((4, 1))}

ds = tf.data.Dataset.range(1000).map(element)
build = lambda: kseg.DeepMaskResNet50(input_size=32, context=16, width_multiplier=0.125, depths=(1, 1, 1),
                                      mask_size=8, output_size=8, feature_dim=16, score_hidden=(8,))
fit_instance_model(build, ds, sys.argv[1], epochs=3, steps_per_epoch=3, backup_every=2, verbose=0,
                   resume=sys.argv[2] == "resume")
"""


def _run_instance_child(out, mode, kill=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop(kio.KILL_ENV, None)
    if kill:
        env[kio.KILL_ENV] = kill
    return subprocess.run([sys.executable, "-c", INSTANCE_CHILD, str(out), mode], env=env,
                          capture_output=True, text=True, timeout=600)


def test_instance_samplers_start_over_for_every_iterator(tmp_path):
    """A resumed instance run skips the sampler to the same batches: every iterator over a seeded
    DeepMask or detection sampler draws the same sequence (a fit of the rest of an epoch, then the
    next epochs, iterate the dataset twice in one process)."""
    from kseg.data.coco import load_coco
    from kseg.data.instances import PatchConfig, deepmask_dataset
    from kseg.inference.detection import detection_dataset

    ann = tmp_path / "annotations" / "instances_s.json"
    dataset = _coco(tmp_path, n=3, h=64, w=64)
    ann.write_text(json.dumps(dataset))
    inst = load_coco(ann, tmp_path / "s")
    cfg = PatchConfig(input_size=32, context=16, object_size=20, label_size=8)
    for ds in (deepmask_dataset(inst, cfg, batch_size=2, seed=3),
               detection_dataset(inst, {}, num_rois=4, short_side=64, max_side=100, seed=3)):
        first = [b for _, b in zip(range(3), ds)]
        again = [b for _, b in zip(range(3), ds)]
        for a, b in zip(first, again):
            for x, y in zip(_leaves(a), _leaves(b)):
                np.testing.assert_array_equal(x, y)
        assert not all(np.array_equal(x, y) for x, y in zip(_leaves(first[0]), _leaves(first[1])))


def _leaves(batch):
    import tensorflow as tf

    return [np.asarray(t) for t in tf.nest.flatten(batch)]


@pytest.fixture(scope="module")
def instance_ref(tmp_path_factory):
    ref = tmp_path_factory.mktemp("instance_ref")
    result = _run_instance_child(ref, "fresh")
    assert result.returncode == 0, result.stderr[-3000:]
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    "written:last.keras",                # epoch 0 done, its checkpoint half written
    "renamed:state.json:2",              # the mid-epoch backup at step 4 committed: resumes inside epoch 1
    "written:ckpt-000000006.weights.h5",  # the end-of-epoch backup of epoch 1 half written
    "written:model.keras",               # the final save
])
def test_instance_training_kill_and_resume_matches_an_uninterrupted_run(instance_ref, tmp_path, kill):
    """`kseg train` of the proposal / detection models writes through RunKeeper too: a kill at any
    write leaves readable files, and --resume gives the uninterrupted run's log and weights."""
    killed = _run_instance_child(tmp_path, "fresh", kill=kill)
    assert killed.returncode == -9, killed.stderr[-3000:]
    for name in ("last.keras", "model.keras"):
        if (tmp_path / name).exists():
            kio.check_keras_file(tmp_path / name)
    refused = _run_instance_child(tmp_path, "fresh")
    assert refused.returncode != 0 and "--resume" in refused.stderr
    resumed = _run_instance_child(tmp_path, "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(tmp_path, instance_ref, kill, ("model.keras",))


# ---------------------------------------------------------------------------------------------
# COCO splits are checked before training


def _coco(root, n=2, h=40, w=50):
    from kseg.data.synthetic import tiny_coco

    return tiny_coco(root, n, h, w)


def _write(root, dataset):
    (root / "annotations" / "instances_s.json").write_text(json.dumps(dataset))
    return root / "annotations" / "instances_s.json", root / "s"


@pytest.mark.parametrize("case, expect", [
    ("missing_image", "2.png: missing image file"),
    ("truncated_jpeg", "2.jpg: truncated JPEG"),
    ("garbage_rle", "RLE segmentation does not decode|RLE counts"),
    ("image_without_id", r"images\[1\] \(id=None\) lacks \['id'\]"),
    ("polygon_outside", "polygon lies entirely outside its 50x40 image"),
    ("wrong_size", "2.png: image is 50x40, its record"),
])
def test_coco_split_is_checked_before_training(tmp_path, case, expect):
    from PIL import Image

    from kseg.data import DataError
    from kseg.data.coco_check import load_checked_coco

    dataset = _coco(tmp_path)
    if case == "missing_image":
        (tmp_path / "s" / "2.png").unlink()
    elif case == "truncated_jpeg":
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "s" / "2.jpg", quality=90)
        data = (tmp_path / "s" / "2.jpg").read_bytes()
        (tmp_path / "s" / "2.jpg").write_bytes(data[: len(data) // 2])
        dataset["images"][1]["file_name"] = "2.jpg"
    elif case == "garbage_rle":
        dataset["annotations"][1]["segmentation"] = {"counts": "\x7f\x00garbage!!", "size": [40, 50]}
    elif case == "image_without_id":
        del dataset["images"][1]["id"]
    elif case == "polygon_outside":
        dataset["annotations"][1]["segmentation"] = [[60, 50, 70, 50, 70, 60]]
    elif case == "wrong_size":
        dataset["images"][1].update(height=41)
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "s" / "2.png")
    ann, img = _write(tmp_path, dataset)
    with pytest.raises(DataError, match=expect):
        load_checked_coco(ann, img)


def test_coco_errors_stop_kseg_train_in_one_line(tmp_path, capsys):
    dataset = _coco(tmp_path)
    (tmp_path / "s" / "1.png").unlink()
    _write(tmp_path, dataset)
    status, err = _cli(["train", "--model", "deepmask_resnet50", "--data", str(tmp_path), "--split", "s",
                        "--out", str(tmp_path / "run")], capsys)
    assert status == 2 and "1.png: missing image file" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    from kseg.data.coco_check import load_checked_coco

    ok = tmp_path / "ok"
    assert len(load_checked_coco(*_write(ok, _coco(ok)))) == 2  # an intact split passes


def test_compressed_rle_counts_agree_with_pycocotools():
    from pycocotools import mask as coco_mask

    from kseg.data.coco_check import _compressed_counts

    rng = np.random.default_rng(0)
    for _ in range(20):
        m = np.asfortranarray((rng.random((37, 53)) > rng.random()).astype(np.uint8))
        counts = _compressed_counts(coco_mask.encode(m)["counts"].decode(), "x")
        flat, runs, current, n = m.flatten(order="F"), [], 0, 0
        for v in flat:  # run lengths, starting with zeros (column-major, as COCO)
            if v != current:
                runs.append(n)
                n, current = 0, v
            n += 1
        assert counts == runs + [n]


def test_nan_pools_to_nan_and_inf_unpools_to_its_position_only():
    from kseg.layers.pooling import MaxPoolingWithArgmax2D, MaxUnpooling2D

    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    x[0, 0, 1, 0] = np.nan
    pooled, mask = MaxPoolingWithArgmax2D(2)(x)
    pooled, mask = np.asarray(pooled), np.asarray(mask)
    assert np.isnan(pooled[0, 0, 0, 0]) and np.all(np.isfinite(pooled.ravel()[1:]))
    np.testing.assert_array_equal(pooled[0, :, :, 0].ravel()[1:], [7, 13, 15])
    values = np.array([[[[np.inf], [1.0]], [[2.0], [3.0]]]], "float32")
    up = np.asarray(MaxUnpooling2D(2)([values, mask]))
    assert not np.isnan(up).any()
    assert np.isinf(up[0, :2, :2, 0]).sum() == mask[0, :2, :2, 0].sum()

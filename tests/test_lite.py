"""Quantised TFLite (float16 / dynamic / int8, builtins only) and kseg.lite.Segmenter."""

import pathlib

import numpy as np
import pytest

import kseg
from kseg import export
from kseg.lite import Segmenter

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
Image = pytest.importorskip("PIL.Image")

IGNORE = 11


def load_camvid(root, split, n, size):
    """`n` (image, label) pairs of a CamVid split, evenly spaced over its sequences, resized."""
    h, w = size
    files = sorted((pathlib.Path(root) / split).glob("*.png"))
    files = files[:: max(1, len(files) // n)][:n]
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR)) for f in files])
    y = np.stack([np.asarray(Image.open(f.parent.parent / f"{split}annot" / f.name).resize((w, h), Image.NEAREST))
                  for f in files])
    return x.astype("float32"), y.astype("int32")


def train_segnet_basic(root, size, width, epochs, n_train=64, seed=0):
    """A SegNet-Basic trained briefly on CamVid: int8 is only meaningful on a model with structure
    (an untrained net's near-tied random logits flip under any perturbation)."""
    keras.utils.set_random_seed(seed)
    x, y = load_camvid(root, "train", n_train, size)
    model = kseg.SegNetBasic(num_classes=11, input_shape=(*size, 3), width=width)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE))
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
    # SegNet's test-time BN statistics: averages over training batches (the moving averages lag).
    from kseg.training import compute_bn_statistics

    compute_bn_statistics(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), len(x) // 8)
    return model, x


# ------------------------------------------------------------------------------------------------
# Conversion modes (no data needed)


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return kseg.SegNetBasic(num_classes=4, input_shape=(24, 40, 3), width=8)  # 24x40 -> odd 3x5 maps


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).uniform(0, 255, (8, 24, 40, 3)).astype("float32")


@pytest.mark.parametrize("quantize,io_type,dtype", [
    ("none", None, np.float32),
    ("float16", None, np.float32),
    ("dynamic", None, np.float32),
    ("int8", None, np.uint8),
    pytest.param("int8", "int8", np.int8, marks=pytest.mark.slow),  # the io_type variants: slow
    pytest.param("int8", "float32", np.float32, marks=pytest.mark.slow),
])
def test_quantize_modes_builtins_only(tiny, calibration, tmp_path, quantize, io_type, dtype):
    path = export.export_tflite(tiny, tmp_path / f"{quantize}.tflite", quantize=quantize,
                                representative_images=calibration, io_type=io_type)
    ops = export.tflite_operators(path)
    assert all(builtin for _, builtin in ops), ops
    interp = Segmenter(path)
    assert interp.input_dtype == dtype and interp.input_size == (24, 40) and interp.num_classes == 4
    scores = export.run_tflite(path, calibration[:2], num_threads=1)
    assert scores.shape == (2, 24, 40, 4) and np.isfinite(scores).all()
    if quantize == "int8":
        names = {n for n, _ in ops}
        assert "CONV_2D" in names and "MAX_POOL_2D" in names
        details = interp._in
        if io_type is None:  # uint8 images in, scale 1 / zero point 0 when calibrated on [0, 255]
            scale, zero = details["quantization"]
            assert abs(scale - 1.0) < 0.02 and abs(zero) <= 1


@pytest.mark.slow
def test_quantized_files_are_smaller(tiny, calibration, tmp_path):
    sizes = {q: pathlib.Path(export.export_tflite(tiny, tmp_path / f"{q}.tflite", quantize=q,
                                                  representative_images=calibration)).stat().st_size
             for q in ("none", "float16", "int8")}
    # 4-byte -> 2-byte -> 1-byte weights (the graph itself is a fixed overhead at this width).
    assert sizes["int8"] < sizes["float16"] < sizes["none"]


@pytest.mark.slow
def test_int8_io_types_give_the_same_labels(tiny, calibration, tmp_path):
    """uint8 and int8 I/O are the same quantised graph shifted by 128: identical labels."""
    labels = [Segmenter(export.export_tflite(tiny, tmp_path / f"{io}.tflite", quantize="int8",
                                             representative_images=calibration, io_type=io)).segment(calibration[0])
              for io in ("uint8", "int8")]
    np.testing.assert_array_equal(labels[0], labels[1])


@pytest.mark.slow
def test_representative_images_from_a_folder(tiny, calibration, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, im in enumerate(calibration[:4]):
        Image.fromarray(im.astype("uint8")).resize((80, 48)).save(folder / f"{i}.png")  # resized on the way
    path = export.export_tflite(tiny, tmp_path / "m.tflite", quantize="int8", representative_images=folder)
    assert Segmenter(path).input_dtype == np.uint8
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png/.jpg images"):
        export.export_tflite(tiny, tmp_path / "m.tflite", quantize="int8", representative_images=tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a folder of images"):
        export.export_tflite(tiny, tmp_path / "m.tflite", quantize="int8", representative_images=tmp_path / "nope")


# ------------------------------------------------------------------------------------------------
# Segmenter


def test_segmenter_resizes_and_matches_run_tflite(tiny, tmp_path):
    path = export.export_tflite(tiny, tmp_path / "float.tflite")
    seg = Segmenter(path, num_threads=1)
    rng = np.random.default_rng(3)
    same_size = rng.integers(0, 256, (24, 40, 3)).astype("uint8")
    expected = export.run_tflite(path, same_size[None].astype("float32"))[0].argmax(-1)
    np.testing.assert_array_equal(seg.segment(same_size), expected)
    np.testing.assert_array_equal(seg.segment(same_size.astype("float32")), expected)
    big = rng.integers(0, 256, (48, 80, 3)).astype("uint8")
    labels = seg.segment(big)
    assert labels.shape == (48, 80) and labels.dtype == np.int32
    small = seg.segment(big, resize_back=False)
    assert small.shape == (24, 40)
    np.testing.assert_array_equal(labels[::2, ::2], small)  # nearest upsampling by exactly 2
    with pytest.raises(ValueError, match="image must be"):
        seg.segment(np.zeros((24, 40)))
    with pytest.raises(ValueError, match="no TFLite file at"):
        Segmenter(tmp_path / "missing.tflite")


# ------------------------------------------------------------------------------------------------
# int8 against float on real CamVid


def _agreement(model, path, images):
    float_labels = model.predict(images, verbose=0).argmax(-1)
    seg = Segmenter(path, num_threads=2)
    int8_labels = np.stack([seg.segment(im.astype("uint8")) for im in images])
    return float((float_labels == int8_labels).mean())


@pytest.mark.slow
def test_int8_agrees_with_float_on_camvid(camvid_dir, tmp_path):
    size = (90, 120)  # odd maps inside (45x60 -> 23x30 -> 12x15 -> 6x8): mirror padding is exercised
    model, train_images = train_segnet_basic(camvid_dir, size, width=16, epochs=10)
    path = export.export_tflite(model, tmp_path / "int8.tflite", quantize="int8",
                                representative_images=train_images[:32])
    assert all(b for _, b in export.tflite_operators(path))
    test_images, _ = load_camvid(camvid_dir, "test", 12, size)
    agree = _agreement(model, path, test_images)
    assert agree > 0.85, f"int8 labels agree with float on only {agree:.1%} of CamVid test pixels"


@pytest.mark.slow
def test_int8_agrees_with_float_on_camvid_full_width(camvid_dir, tmp_path):
    size = (180, 240)  # the demo's crop scale; ~3 min of training on 2 cores
    model, _ = train_segnet_basic(camvid_dir, size, width=32, epochs=10, n_train=64)
    path = export.export_tflite(model, tmp_path / "int8.tflite", quantize="int8",
                                representative_images=pathlib.Path(camvid_dir) / "train", num_calibration=64)
    test_images, labels = load_camvid(camvid_dir, "test", 24, size)
    agree = _agreement(model, path, test_images)
    assert agree > 0.9, f"int8 labels agree with float on only {agree:.1%} of CamVid test pixels"


def test_cli_export_int8(tiny, calibration, tmp_path, capsys):
    """`kseg export M.keras --format tflite --quantize int8 --representative DIR --input-size H W`."""
    from kseg import cli

    folder = tmp_path / "train"
    folder.mkdir()
    for i, im in enumerate(calibration[:4]):
        Image.fromarray(im.astype("uint8")).save(folder / f"{i}.png")
    model = kseg.SegNetBasic(num_classes=3, input_shape=(None, None, 3), width=4)
    keras_path = export.save_keras(model, tmp_path / "m.keras")
    out = tmp_path / "m_int8.tflite"
    assert cli.main(["export", keras_path, "--format", "tflite", "--quantize", "int8", "--representative",
                     str(folder), "--input-size", "24", "40", "--out", str(out)]) in (0, None)
    seg = Segmenter(out)
    assert seg.input_dtype == np.uint8 and seg.input_size == (24, 40)
    assert seg.segment(calibration[0]).shape == (24, 40)
    capsys.readouterr()
    assert cli.main(["export", keras_path, "--format", "saved_model", "--representative", str(folder),
                     "--out", str(tmp_path / "sm")]) == 2
    assert "--representative applies to --format tflite only" in capsys.readouterr().err

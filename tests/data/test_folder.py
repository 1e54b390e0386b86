"""kseg.data folder reader: layouts, validation errors naming the file, the tf.data pipeline."""

import numpy as np
import pytest
from PIL import Image

from kseg.data import DataError, find_pairs, read_image_info, segmentation_dataset, validate_pairs


def _write(path, array, mode=None, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array), mode).save(path, format=fmt)
    return path


def _camvid(root, n=3, h=12, w=16, split="train", seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        _write(root / split / f"f{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _write(root / f"{split}annot" / f"f{i}.png", rng.integers(0, 12, (h, w), dtype=np.uint8))
    return root


# ------------------------------------------------------------------------------------ layouts


def test_find_pairs_camvid_layout(tmp_path):
    _camvid(tmp_path, n=3)
    _camvid(tmp_path, n=2, split="val")
    pairs = find_pairs(tmp_path, "train")
    assert [(i.name, m.name) for i, m in pairs] == [("f0.png", "f0.png"), ("f1.png", "f1.png"), ("f2.png", "f2.png")]
    assert all(i.parent.name == "train" and m.parent.name == "trainannot" for i, m in pairs)
    assert len(find_pairs(tmp_path, "val")) == 2


def test_find_pairs_generic_layout_by_stem(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    _write(tmp_path / "images" / "train" / "a.jpg", img)
    _write(tmp_path / "images" / "train" / "b.png", img)
    _write(tmp_path / "masks" / "train" / "a.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "masks" / "train" / "b.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "masks" / "train" / "extra.png", np.zeros((8, 8), np.uint8))
    with pytest.warns(UserWarning, match="extra.png has no image"):
        pairs = find_pairs(tmp_path, "train")
    assert [(i.name, m.name) for i, m in pairs] == [("a.jpg", "a.png"), ("b.png", "b.png")]
    with pytest.raises(DataError, match=r"split 'val' not found .*\['train'\]"):
        find_pairs(tmp_path, "val")


def test_find_pairs_generic_flat_layout(tmp_path):
    _write(tmp_path / "images" / "x.jpeg", np.zeros((8, 8, 3), np.uint8))
    _write(tmp_path / "masks" / "x.png", np.zeros((8, 8), np.uint8))
    assert [p[0].name for p in find_pairs(tmp_path, None)] == ["x.jpeg"]
    with pytest.raises(DataError, match="pass split=None"):
        find_pairs(tmp_path, "train")


def test_find_pairs_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_pairs(tmp_path / "nope")
    with pytest.raises(DataError, match=f"no segmentation data found in {tmp_path}"):
        find_pairs(tmp_path, "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="its mask folder .*trainannot does not"):
        find_pairs(tmp_path, "train")
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(DataError, match="no images"):
        find_pairs(tmp_path, "train")
    _write(tmp_path / "train" / "lonely.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"image .*lonely\.png has no mask \(expected .*trainannot/lonely\.png\)"):
        find_pairs(tmp_path, "train")


# ------------------------------------------------------------------------------------ headers


def test_read_image_info_png_and_jpeg(tmp_path):
    png = _write(tmp_path / "a.png", np.zeros((5, 7, 3), np.uint8))
    jpg = _write(tmp_path / "b.jpg", np.zeros((9, 11, 3), np.uint8))
    gray = _write(tmp_path / "c.png", np.zeros((3, 4), np.uint8))
    assert {k: read_image_info(png)[k] for k in ("format", "height", "width", "channels")} == {
        "format": "png", "height": 5, "width": 7, "channels": 3}
    assert {k: read_image_info(jpg)[k] for k in ("format", "height", "width", "channels")} == {
        "format": "jpeg", "height": 9, "width": 11, "channels": 3}
    assert read_image_info(gray)["channels"] == 1


# ------------------------------------------------------------------------------------ validation


def _one_pair(tmp_path, image=None, mask=None, h=12, w=16):
    ip = _write(tmp_path / "train" / "x.png", np.zeros((h, w, 3), np.uint8) if image is None else image)
    mp = _write(tmp_path / "trainannot" / "x.png", np.zeros((h, w), np.uint8) if mask is None else mask)
    return [(ip, mp)]


def test_truncated_image_is_named(tmp_path):
    pairs = _one_pair(tmp_path, image=np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8))
    data = pairs[0][0].read_bytes()
    pairs[0][0].write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"train/x\.png: truncated PNG"):
        segmentation_dataset(pairs)


def test_corrupt_image_byte_is_named(tmp_path):
    pairs = _one_pair(tmp_path, image=np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8))
    data = bytearray(pairs[0][0].read_bytes())
    data[60] ^= 0xFF  # inside the IDAT data
    pairs[0][0].write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train/x\.png: corrupt PNG \(CRC mismatch"):
        segmentation_dataset(pairs)


def test_not_an_image_and_missing_file(tmp_path):
    pairs = _one_pair(tmp_path)
    pairs[0][0].write_bytes(b"hello, not a picture")
    with pytest.raises(DataError, match=r"train/x\.png: not a PNG or JPEG"):
        segmentation_dataset(pairs)
    pairs[0][0].unlink()
    with pytest.raises(DataError, match=r"train/x\.png: cannot read file"):
        segmentation_dataset(pairs)


def test_truncated_jpeg_is_named(tmp_path):
    rng = np.random.default_rng(0)
    jpg = _write(tmp_path / "images" / "a.jpg", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = _write(tmp_path / "masks" / "a.png", np.zeros((32, 32), np.uint8))
    jpg.write_bytes(jpg.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"a\.jpg: truncated JPEG"):
        segmentation_dataset([(jpg, mask)])


def test_mask_size_mismatch_is_named(tmp_path):
    pairs = _one_pair(tmp_path, mask=np.zeros((12, 15), np.uint8))
    with pytest.raises(DataError, match=r"trainannot/x\.png: mask size 15x12 .* differs from its image .*\(16x12\)"):
        segmentation_dataset(pairs)


def test_label_out_of_range_is_named(tmp_path):
    mask = np.zeros((12, 16), np.uint8)
    mask[0, :3] = 11  # the ignore label: fine
    mask[5, 5] = 12
    mask[6, 6:8] = 200
    pairs = _one_pair(tmp_path, mask=mask)
    with pytest.raises(DataError, match=r"trainannot/x\.png: label values \[12, 200\] \(in 3 pixels\)"):
        segmentation_dataset(pairs, num_classes=11, ignore_label=11)
    # the same mask is fine with more classes, or with 200 as the ignore label and 13 classes
    segmentation_dataset(pairs, num_classes=201, ignore_label=255)
    segmentation_dataset(pairs, num_classes=13, ignore_label=200)
    assert validate_pairs(pairs, num_classes=13, ignore_label=200) == [(12, 16)]


def test_rgb_masks_are_rejected_and_palette_masks_give_their_indices(tmp_path):
    pairs = _one_pair(tmp_path, mask=np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DataError, match=r"trainannot/x\.png: mask has 3 channels, expected a single-channel"):
        segmentation_dataset(pairs)
    # PASCAL VOC's masks: palette PNGs whose indices are the ids (255 = void), colours unrelated to ids
    ids = np.random.default_rng(0).integers(0, 5, (12, 16)).astype(np.uint8)
    ids[0, :4] = 255
    pal = Image.fromarray(ids, "P")
    pal.putpalette([v for c in range(256) for v in ((c * 37) % 256, (c * 91) % 256, (c * 13) % 256)])
    pal.save(pairs[0][1])
    assert Image.open(pairs[0][1]).mode == "P"
    (_, mask), = segmentation_dataset(pairs, num_classes=5, ignore_class=255, batch_size=1).take(1)
    np.testing.assert_array_equal(mask.numpy().reshape(12, 16), ids)
    small = Image.fromarray(np.minimum(ids, 3), "P")  # a 2-bit palette file
    small.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0])
    small.save(pairs[0][1], bits=2)
    want = np.asarray(Image.open(pairs[0][1]))
    assert open(pairs[0][1], "rb").read()[24:26] == b"\x02\x03"  # bit depth 2, colour type 3
    np.testing.assert_array_equal(want, np.minimum(ids, 3))
    (_, mask), = segmentation_dataset(pairs, num_classes=5, ignore_class=255, batch_size=1).take(1)
    np.testing.assert_array_equal(mask.numpy().reshape(12, 16), want)


def test_different_sizes_need_crop_size(tmp_path):
    _write(tmp_path / "train" / "a.png", np.zeros((10, 12, 3), np.uint8))
    _write(tmp_path / "trainannot" / "a.png", np.zeros((10, 12), np.uint8))
    _write(tmp_path / "train" / "b.png", np.full((6, 8, 3), 50, np.uint8))
    _write(tmp_path / "trainannot" / "b.png", np.full((6, 8), 3, np.uint8))
    pairs = find_pairs(tmp_path)
    with pytest.raises(DataError, match=r"differ in size .*b\.png is 8x6.*crop_size"):
        segmentation_dataset(pairs, batch_size=2)
    images, masks = next(iter(segmentation_dataset(pairs, batch_size=2, crop_size=(8, 10))))
    assert images.shape == (2, 8, 10, 3) and masks.shape == (2, 8, 10)
    m = masks.numpy()[1]  # 6x8 centre-padded to 8x10: one row/col of padding each side
    assert (m[1:7, 1:9] == 3).all() and (m[0] == 11).all() and (m[:, 0] == 11).all()
    assert (images.numpy()[1][0] == 0).all() and (images.numpy()[1][1:7, 1:9] == 50).all()


def test_pipeline_asserts_name_the_file_when_files_change(tmp_path):
    """validate=True also guards at decode time (files that change after the up-front check)."""
    import tensorflow as tf

    pairs = _one_pair(tmp_path)
    ds = segmentation_dataset(pairs, batch_size=1)
    bad = np.zeros((12, 16), np.uint8)
    bad[0, 0] = 40
    _write(pairs[0][1], bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"DataError: label values .*trainannot/x\.png"):
        next(iter(ds))


# ------------------------------------------------------------------------------------ pipeline


def test_dataset_values_dtypes_and_pixel_weights(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    mask = rng.integers(0, 12, (12, 16), dtype=np.uint8)
    pairs = _one_pair(tmp_path, image=image, mask=mask)
    jpg = _write(tmp_path / "images" / "y.jpg", image, fmt="JPEG")
    pairs.append((jpg, pairs[0][1]))
    cw = np.arange(1, 12, dtype=np.float32) / 10
    x, y, w = next(iter(segmentation_dataset(pairs, batch_size=2, class_weights=cw)))
    assert x.dtype.name == "float32" and y.dtype.name == "int32" and w.dtype.name == "float32"
    assert x.shape == (2, 12, 16, 3) and y.shape == (2, 12, 16) and w.shape == (2, 12, 16)
    np.testing.assert_array_equal(x.numpy()[0], image.astype(np.float32))
    decoded_by_pil = np.asarray(Image.open(jpg), dtype=np.float32)
    diff = np.abs(x.numpy()[1] - decoded_by_pil)  # same JPEG; decoders differ in chroma upsampling
    assert diff.mean() < 2 and diff.max() <= 8
    np.testing.assert_array_equal(y.numpy()[0], mask)
    expected = np.where(mask == 11, 0.0, cw[np.minimum(mask, 10)])
    np.testing.assert_allclose(w.numpy()[0], expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="class_weights must have num_classes=11 entries, got 3"):
        segmentation_dataset(pairs, class_weights=[1, 2, 3])


def test_shuffle_repeat_and_order(tmp_path):
    root = tmp_path
    for i in range(5):
        _write(root / "train" / f"f{i}.png", np.full((4, 4, 3), i, np.uint8))
        _write(root / "trainannot" / f"f{i}.png", np.full((4, 4), i, np.uint8))
    pairs = find_pairs(root)
    plain = [int(y[0, 0, 0]) for _, y in segmentation_dataset(pairs, batch_size=1)]
    assert plain == [0, 1, 2, 3, 4]
    shuffled = [int(y[0, 0, 0]) for _, y in segmentation_dataset(pairs, batch_size=1, shuffle=True, seed=3)]
    assert sorted(shuffled) == plain
    rep = segmentation_dataset(pairs, batch_size=2, repeat=True)
    batches = [y.numpy()[:, 0, 0].tolist() for _, y in rep.take(4)]
    assert batches == [[0, 1], [2, 3], [4, 0], [1, 2]]


def test_keras_sample_weight_with_ignore_class(tmp_path):
    """The (images, masks, pixel_weights) triple trains with SparseCategoricalCrossentropy(ignore_class)."""
    import keras

    rng = np.random.default_rng(2)
    pairs = _one_pair(tmp_path, image=rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
                      mask=rng.integers(0, 12, (12, 16), dtype=np.uint8))
    ds = segmentation_dataset(pairs, batch_size=1, class_weights=np.ones(11), repeat=True)
    model = keras.Sequential([keras.Input((12, 16, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(11, 1)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=11))
    history = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


# ------------------------------------------------------------------------------------ real CamVid


def test_real_camvid_train_batches(camvid_dir):
    pairs = find_pairs(camvid_dir, "train")
    assert len(pairs) == 367 and pairs[0][0].name == "0001TP_006690.png"
    assert len(find_pairs(camvid_dir, "val")) == 101
    weights = np.linspace(0.5, 1.5, 11).astype("float32")
    ds = segmentation_dataset(pairs, batch_size=2, class_weights=weights)
    assert ds.element_spec[0].shape.as_list() == [None, 360, 480, 3]
    seen = set()
    for images, masks, pw in ds.take(2):
        assert images.shape == (2, 360, 480, 3) and images.dtype.name == "float32"
        assert masks.shape == (2, 360, 480) and masks.dtype.name == "int32"
        x, y, w = images.numpy(), masks.numpy(), pw.numpy()
        assert 0 <= x.min() and x.max() <= 255 and x.max() > 200
        assert set(np.unique(y)) <= set(range(12))
        seen |= set(np.unique(y).tolist())
        assert (w[y == 11] == 0).all()
        np.testing.assert_array_equal(w[y != 11], weights[y[y != 11]])
    first = np.asarray(Image.open(pairs[0][1]))
    np.testing.assert_array_equal(next(iter(segmentation_dataset(pairs[:1], batch_size=1)))[1].numpy()[0], first)
    assert {3, 11} <= seen  # road and void occur in the first frames


def test_validate_false_skips_the_checks(tmp_path):
    pairs = _one_pair(tmp_path, mask=np.full((12, 16), 40, np.uint8))
    ds = segmentation_dataset(pairs, batch_size=1, validate=False)
    assert ds.element_spec[0].shape.as_list() == [None, None, None, 3]  # sizes not read up front
    x, y = next(iter(ds))
    assert x.shape == (1, 12, 16, 3) and int(y.numpy().max()) == 40


def test_truncated_mask_is_named(tmp_path):
    pairs = _one_pair(tmp_path, mask=np.random.default_rng(0).integers(0, 11, (12, 16), dtype=np.uint8))
    data = pairs[0][1].read_bytes()
    pairs[0][1].write_bytes(data[:-30])
    with pytest.raises(DataError, match=r"trainannot/x\.png: truncated PNG"):
        segmentation_dataset(pairs)


def test_gray_and_rgba_images_read_as_rgb(tmp_path):
    gray = _write(tmp_path / "images" / "g.png", np.full((6, 8), 77, np.uint8))
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 128
    rgba_path = _write(tmp_path / "images" / "a.png", rgba, "RGBA")
    mask = _write(tmp_path / "masks" / "m.png", np.zeros((6, 8), np.uint8))
    x, _ = next(iter(segmentation_dataset([(gray, mask), (rgba_path, mask)], batch_size=2)))
    assert x.shape == (2, 6, 8, 3)
    assert (x.numpy()[0] == 77).all()
    assert (x.numpy()[1] == [10, 20, 30]).all()

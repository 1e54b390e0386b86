"""Joint augmentation keeps image and mask aligned and the mask's labels valid."""

import numpy as np
import pytest
from PIL import Image

from kseg.data import JointAugmentation, joint_augmentation, segmentation_dataset

LABELS = 6


def _blocks(h=48, w=64, block=8, seed=0):
    """A mask of constant 8x8 blocks and an image whose every channel is 20 * label + 10."""
    rng = np.random.default_rng(seed)
    mask = np.kron(rng.integers(0, LABELS, (h // block, w // block)), np.ones((block, block), int)).astype(np.int32)
    image = np.repeat((20.0 * mask + 10.0)[..., None], 3, axis=-1).astype(np.float32)
    return image, mask


def _interior(mask):
    """Pixels whose 3x3 neighbourhood holds one label (where interpolation cannot blend).

    The crop's border is excluded: what lay beyond it is unknown.
    """
    pad = np.pad(mask, 1, constant_values=-1)
    same = np.ones(mask.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= pad[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] == mask
    return same


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_image_and_mask_stay_aligned(seed):
    image, mask = _blocks(seed=seed)
    aug = joint_augmentation(crop_size=(40, 56), scale_range=(0.6, 1.6), seed=seed, ignore_label=99)
    for _ in range(4):
        out = aug({"images": image, "segmentation_masks": mask[..., None]})
        x, y = out["images"].numpy(), out["segmentation_masks"].numpy()[..., 0]
        assert x.shape == (40, 56, 3) and y.shape == (40, 56) and y.dtype == np.int32
        # labels stay in the input's set plus the padding label: nearest neighbour, never blended
        assert set(np.unique(y)) <= set(range(LABELS)) | {99}
        labelled = y != 99
        # padding: image 0 where the mask is padding
        assert (x[~labelled] == 0).all()
        inner = _interior(y) & labelled
        assert inner.sum() > 0.3 * labelled.sum()
        np.testing.assert_allclose(x[inner][:, 0], 20.0 * y[inner] + 10.0, atol=1e-3)
        # everywhere else the image is within one label step of the mask (a boundary blend)
        assert (np.abs(x[labelled][:, 0] - (20.0 * y[labelled] + 10.0)) <= 20.0 * (LABELS - 1) + 1e-3).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_is_sampled_where_the_image_is(seed):
    """Image channels hold each pixel's source row / column; the mask holds row * 100 + column.

    Bilinear resampling of a linear ramp is exact, so the image at an output pixel says which source
    point was sampled there; the nearest-neighbour mask must name a source pixel within half a pixel
    of it. A one-pixel misalignment between image and mask breaks this.
    """
    h, w = 48, 64
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.float32)
    mask = (rows * 100 + cols).astype(np.int32)
    aug = joint_augmentation(crop_size=(40, 56), scale_range=(0.6, 1.6), seed=seed)
    for _ in range(5):
        out = aug({"images": image, "segmentation_masks": mask[..., None]})
        x, y = out["images"].numpy(), out["segmentation_masks"].numpy()[..., 0]
        valid = y >= 0
        assert valid.mean() > 0.3
        assert (x[~valid] == 0).all()
        np.testing.assert_array_less(np.abs(x[..., 0][valid] - y[valid] // 100), 0.5 + 1e-4)
        np.testing.assert_array_less(np.abs(x[..., 1][valid] - y[valid] % 100), 0.5 + 1e-4)


def test_identity_scale_is_a_crop_or_mirror_of_the_input():
    image, mask = _blocks(h=24, w=32, block=4)
    image = image + np.arange(32, dtype=np.float32)[None, :, None] / 100  # break left-right symmetry
    aug = JointAugmentation(crop_size=(24, 32), scale_range=(1.0, 1.0), flip=True, seed=5)
    flips = set()
    for _ in range(12):
        out = aug({"images": image, "segmentation_masks": mask})
        x, y = out["images"].numpy(), out["segmentation_masks"].numpy()
        if np.array_equal(y, mask):
            np.testing.assert_array_equal(x, image)
            flips.add(False)
        else:
            np.testing.assert_array_equal(y, mask[:, ::-1])
            np.testing.assert_array_equal(x, image[:, ::-1])
            flips.add(True)
    assert flips == {False, True}  # both outcomes occur in 12 draws (p of failure 2 * 0.5**12)


def test_crop_windows_cover_the_image_and_shrinking_pads():
    """Random crops land all over the image (not only its centre); scale < 1 pads with the fill label."""
    h, w = 30, 40
    image = np.zeros((h, w, 3), np.float32)
    mask = np.arange(h)[:, None] * 100 + np.arange(w)[None, :]  # unique: the crop tells its window
    aug = JointAugmentation(crop_size=(10, 10), scale_range=(1.0, 1.0), flip=False, seed=0)
    corners = set()
    for _ in range(40):
        y = aug({"images": image, "segmentation_masks": mask[..., None]})["segmentation_masks"].numpy()[..., 0]
        # locate the window: the crop is an exact sub-array of the mask
        r, c = divmod(int(y[0, 0]), 100)
        np.testing.assert_array_equal(mask[r : r + 10, c : c + 10], y)
        corners.add((r, c))
    rows, cols = {r for r, _ in corners}, {c for _, c in corners}
    assert max(rows) - min(rows) >= 10 and max(cols) - min(cols) >= 15

    small = JointAugmentation(crop_size=(30, 40), scale_range=(0.5, 0.5), flip=False, seed=0)
    out = small({"images": image + 100, "segmentation_masks": np.full((h, w), 3)})
    y, x = out["segmentation_masks"].numpy(), out["images"].numpy()
    assert (y == 3).sum() == 15 * 20 and (y == -1).sum() == 30 * 40 - 15 * 20  # -1: "use the ignore label"
    assert (x[y == 3] == 100).all() and (x[y == -1] == 0).all()


def test_in_dataset_padding_becomes_the_ignore_label(tmp_path):
    for split in ("train", "trainannot"):
        (tmp_path / split).mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "train" / f"{i}.png")
        Image.fromarray(rng.integers(0, 11, (24, 32), dtype=np.uint8)).save(tmp_path / "trainannot" / f"{i}.png")
    from kseg.data import find_pairs

    pairs = find_pairs(tmp_path)
    aug = joint_augmentation(crop_size=(32, 40), scale_range=(0.75, 1.0), seed=1)
    ds = segmentation_dataset(pairs, batch_size=3, augment=aug, ignore_label=11, class_weights=np.ones(11))
    assert ds.element_spec[0].shape.as_list() == [None, 32, 40, 3]
    x, y, w = next(iter(ds))
    y, w = y.numpy(), w.numpy()
    assert set(np.unique(y)) <= set(range(12)) and (y == 11).any()  # crop larger than image: padded
    assert (w[y == 11] == 0).all() and (w[y != 11] == 1).all()


def test_keras_layer_as_augment(tmp_path):
    """A stock Keras augmentation layer plugs in as ``augment``: flips image and mask together."""
    import keras

    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    mask = np.tile(np.arange(8, dtype=np.uint8), (4, 1))
    image = np.repeat((mask * 10)[..., None], 3, -1).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "train" / "a.png")
    Image.fromarray(mask).save(tmp_path / "trainannot" / "a.png")
    from kseg.data import find_pairs

    ds = segmentation_dataset(find_pairs(tmp_path), batch_size=1, augment=keras.layers.RandomFlip("horizontal", seed=0))
    for _ in range(3):
        x, y = next(iter(ds))
        np.testing.assert_array_equal(x.numpy()[0, ..., 0], y.numpy()[0] * 10)
        assert y.numpy()[0, 0].tolist() in (list(range(8)), list(range(7, -1, -1)))


def test_argument_errors():
    with pytest.raises(ValueError, match=r"scale_range must be \(low, high\) with 0 < low <= high, got \(2, 1\)"):
        joint_augmentation(crop_size=(8, 8), scale_range=(2, 1))
    with pytest.raises(ValueError, match=r"crop_size must be \(height, width\) with positive sizes, got \(0, 8\)"):
        joint_augmentation(crop_size=(0, 8))


def test_seeded_pipeline_is_reproducible(tmp_path):
    from kseg.data import write_synthetic_dataset, find_pairs

    pairs = find_pairs(write_synthetic_dataset(tmp_path, {"train": 6}, height=24, width=32), "train")

    def batches(aug_seed):
        aug = joint_augmentation(crop_size=(20, 28), seed=aug_seed)
        ds = segmentation_dataset(pairs, batch_size=3, shuffle=True, seed=0, augment=aug)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    first, second, other = batches(1), batches(1), batches(2)
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))

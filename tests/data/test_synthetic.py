"""Synthetic street scenes: deterministic, CamVid-like labels, learnable from colour, writable as a folder."""

import numpy as np
import pytest

from kseg.data import find_pairs, segmentation_dataset, synthetic_scenes, write_synthetic_dataset


def test_shapes_dtypes_and_determinism():
    images, masks = synthetic_scenes(3, height=60, width=80, seed=7)
    assert images.shape == (3, 60, 80, 3) and images.dtype == np.uint8
    assert masks.shape == (3, 60, 80) and masks.dtype == np.uint8
    again, again_masks = synthetic_scenes(3, height=60, width=80, seed=7)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(masks, again_masks)
    other, _ = synthetic_scenes(3, height=60, width=80, seed=8)
    assert not np.array_equal(images, other)
    # sky on top, road at the bottom, as in a street scene
    assert (masks[:, 0] == 0).mean() > 0.8 and (masks[:, -1] == 3).mean() > 0.4


def test_all_classes_occur_and_ignore_seams():
    _, masks = synthetic_scenes(16, height=90, width=120, seed=0)
    assert set(np.unique(masks)) == set(range(11))
    _, void = synthetic_scenes(4, height=90, width=120, seed=0, ignore_label=11)
    assert set(np.unique(void)) == set(np.unique(masks[:4])) | {11}
    assert 0 < (void == 11).mean() < 0.1
    _, few = synthetic_scenes(4, height=45, width=60, num_classes=3)
    assert set(np.unique(few)) <= {0, 1, 2} and (few == 2).any()
    _, many = synthetic_scenes(4, height=45, width=60, num_classes=14)
    assert {11, 12, 13} <= set(np.unique(many))
    with pytest.raises(ValueError, match="num_classes must be in 2..255, got 1"):
        synthetic_scenes(1, num_classes=1)


def test_labels_are_learnable_from_colour():
    """A nearest-mean-colour classifier fit on 8 scenes labels most pixels of 8 others right."""
    images, masks = synthetic_scenes(16, height=90, width=120, seed=1)
    x = images.reshape(-1, 3).astype(np.float32)
    y = masks.ravel()
    half = x.shape[0] // 2
    means = np.stack([x[:half][y[:half] == c].mean(0) for c in range(11)])
    pred = np.argmin(((x[half:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = (pred == y[half:]).mean()
    assert accuracy > 0.8, accuracy


def test_write_as_camvid_folder_and_read_back(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", {"train": 3, "val": 1}, height=36, width=48, seed=2)
    train = find_pairs(root, "train")
    assert len(train) == 3 and len(find_pairs(root, "val")) == 1
    images, masks = next(iter(segmentation_dataset(train, batch_size=3)))
    expected_images, expected_masks = synthetic_scenes(3, 36, 48, seed=[2, 0], ignore_label=11)
    np.testing.assert_array_equal(images.numpy(), expected_images.astype(np.float32))
    np.testing.assert_array_equal(masks.numpy(), expected_masks)

"""Median frequency balancing (SegNet) against hand arithmetic and the CamVid README's numbers."""

import json

import numpy as np
import pytest
from PIL import Image

from kseg.data import DataError, class_pixel_counts, find_pairs, median_frequency_weights


def test_hand_computed_example():
    # image A (2x3): labels 0 0 0 / 1 1 11 ; image B (2x3): 0 2 2 / 2 2 2
    a = np.array([[0, 0, 0], [1, 1, 11]], np.uint8)
    b = np.array([[0, 2, 2], [2, 2, 2]], np.uint8)
    # freq(0) = 4 / 12 (both images contain 0); freq(1) = 2 / 6; freq(2) = 5 / 6 (void pixels count
    # in the totals of the images that hold the class)
    freq = np.array([4 / 12, 2 / 6, 5 / 6])
    expected = np.median(freq) / freq
    np.testing.assert_allclose(median_frequency_weights([a, b], num_classes=3, ignore_label=11), expected, rtol=1e-6)
    np.testing.assert_allclose(median_frequency_weights(np.stack([a, b]), num_classes=3, ignore_label=11), expected, rtol=1e-6)
    # with void in the median: freq(11) = 1 / 6; median of (1/3, 1/3, 5/6, 1/6) = 1/3
    with_void = median_frequency_weights([a, b], num_classes=3, ignore_label=11, include_ignore_in_median=True)
    np.testing.assert_allclose(with_void, (1 / 3) / freq, rtol=1e-6)
    pixels, present = class_pixel_counts([a, b], num_classes=3, ignore_label=11)
    assert pixels.tolist()[:3] == [4, 2, 5] and pixels[11] == 1
    assert present.tolist()[:3] == [12, 6, 6] and present[11] == 6


def test_absent_class_gets_zero_weight_and_median_over_present():
    masks = np.array([[[0, 0, 1, 1]]], np.uint8)
    w = median_frequency_weights(masks, num_classes=3, ignore_label=None)
    np.testing.assert_allclose(w, [1.0, 1.0, 0.0])


def test_paths_and_pairs_and_errors(tmp_path):
    m = np.array([[0, 1], [1, 1]], np.uint8)
    Image.fromarray(m).save(tmp_path / "m.png")
    w_path = median_frequency_weights([tmp_path / "m.png"], num_classes=2, ignore_label=None)
    w_pair = median_frequency_weights([(tmp_path / "img.png", tmp_path / "m.png")], num_classes=2, ignore_label=None)
    np.testing.assert_allclose(w_path, w_pair)
    # freq(0) = 1/4, freq(1) = 3/4, median = 1/2
    np.testing.assert_allclose(w_path, [0.5 / 0.25, 0.5 / 0.75], rtol=1e-6)
    Image.fromarray(np.array([[0, 7]], np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad\.png: label values \[7\]"):
        median_frequency_weights([tmp_path / "bad.png"], num_classes=3, ignore_label=5)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode mask"):
        median_frequency_weights([tmp_path / "broken.png"], num_classes=3)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png: mask has mode 'RGB'"):
        median_frequency_weights([tmp_path / "rgb.png"], num_classes=3)


def test_real_camvid_train_weights_match_readme(camvid_dir):
    stats = json.loads((camvid_dir / "camvid_stats.json").read_text())
    readme = stats["class_weights"]
    pairs = find_pairs(camvid_dir, "train")
    weights = median_frequency_weights(pairs, num_classes=11, ignore_label=11)
    np.testing.assert_allclose(weights, readme["median_frequency_train_367"], atol=5e-5)
    with_void = median_frequency_weights(pairs, num_classes=11, ignore_label=11, include_ignore_in_median=True)
    np.testing.assert_allclose(with_void, readme["median_frequency_train_367_median_over_12_incl_void"], atol=5e-5)
    pixels, present = class_pixel_counts(pairs, 11, 11)
    assert pixels.tolist() == stats["splits_in_this_folder"]["train"]["class_pixels"]
    assert present.tolist() == stats["splits_in_this_folder"]["train"]["pixels_of_images_containing_class"]

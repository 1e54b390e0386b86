import gc

import keras
import numpy as np
import pytest

from kseg.backbones import vgg
from kseg.backbones.vgg import VGG16FCNBackbone, load_vgg16_weights, vgg16_fcn_trunk, vgg16_layer_names


def test_layer_name_map_is_unchanged():
    names = vgg16_layer_names()
    assert len(names) == 15
    assert names["conv1_1"] == "block1_conv1" and names["conv5_3"] == "block5_conv3"
    assert names["fc6"] == "fc1" and names["fc7"] == "fc2"


def test_fcn_trunk_reproduces_caffe_shapes_at_500():
    # PAPERS.md: with pad 100 and ceil pooling, 500 -> 698 -> 349 -> 175 -> 88 -> 44 -> 22, fc6 16x16
    inp = keras.Input((500, 500, 3))
    ends = vgg16_fcn_trunk(inp, width=1 / 64)
    assert ends["conv1_2"].shape[1:3] == (698, 698)
    assert [ends[f"pool{b}"].shape[1] for b in range(1, 6)] == [349, 175, 88, 44, 22]
    assert ends["fc6"].shape[1:3] == (16, 16) and ends["fc7"].shape[1:3] == (16, 16)
    unpadded = vgg16_fcn_trunk(keras.Input((224, 224, 3)), width=1 / 64, pad100=False, dropout=0)
    assert unpadded["fc7"].shape[1:3] == (1, 1)


def test_trunk_variants_name_layers_like_the_authors():
    inp = keras.Input((224, 224, 3))
    model = keras.Model(inp, vgg16_fcn_trunk(inp, width=1 / 64, pad100=False, dropout=0, batch_norm=True,
                                             return_masks=True)["fc7"])
    names = {layer.name for layer in model.layers}
    assert {"conv1_1", "bn1_1", "relu1_1", "pool5", "fc6", "bnfc6", "relu6", "bnfc7"} <= names
    assert "drop6" not in names and "conv1_1_pad" not in names
    with pytest.raises(ValueError, match="width must be > 0"):
        vgg16_fcn_trunk(inp, width=0)
    with pytest.raises(ValueError, match="fc_padding"):
        vgg16_fcn_trunk(inp, fc_padding="full")


@pytest.mark.slow  # three 138M-parameter VGG16s (~4 GB, ~20-30 s on 2 cores): run with -m slow under the heavy lock
def test_convolutionalised_trunk_equals_vgg16_classifier(tmp_path):
    """FCN Sec. 3.1: fc6 (Dense 25088x4096) reshaped into a 7x7 conv, fc7 into 1x1, computes the same function."""
    keras.utils.set_random_seed(0)
    ref = keras.applications.VGG16(include_top=True, weights=None)
    path = tmp_path / "vgg16.weights.h5"
    ref.save_weights(path)
    rgb = np.random.default_rng(2).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    fc2 = keras.Model(ref.input, ref.get_layer("fc2").output).predict(
        keras.applications.vgg16.preprocess_input(rgb.copy()), verbose=0)
    del ref
    gc.collect()
    assert fc2.std() > 0.1  # informative activations, not all zeros

    model = VGG16FCNBackbone(input_shape=(224, 224, 3), weights=str(path))  # RGB in, ImageNormalization("caffe")
    fc7 = model.predict(rgb, verbose=0)
    assert fc7.shape == (2, 1, 1, 4096)
    np.testing.assert_allclose(fc7[:, 0, 0], fc2, rtol=1e-4, atol=1e-4 * np.abs(fc2).max())
    kernel = model.get_layer("fc6").kernel
    assert tuple(kernel.shape) == (7, 7, 512, 4096)


def test_loading_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        vgg.vgg16_imagenet_weights(str(tmp_path / "missing.weights.h5"))
    inp = keras.Input((8, 8, 3))
    with pytest.raises(ValueError, match="no VGG16 layer"):
        load_vgg16_weights(keras.Model(inp, keras.layers.Conv2D(1, 1, name="other")(inp)),
                           weights=_tiny_file(tmp_path))


def _tiny_file(tmp_path):
    ref = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "notop.weights.h5"
    ref.save_weights(path)
    return str(path)

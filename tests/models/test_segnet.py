import numpy as np
import pytest

import kseg


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def bn(c):  # gamma + beta; moving statistics are not parameters
    return 2 * c


def segnet_params_from_prototxt(num_classes=11):
    """Models/segnet_train.prototxt: 13 encoder convs + BN, 12 decoder convs + BN, 3x3 classifier."""
    enc = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    dec = [(512, 512), (512, 512), (512, 512),          # conv5_3_D .. conv5_1_D
           (512, 512), (512, 512), (512, 256),          # conv4_3_D .. conv4_1_D
           (256, 256), (256, 256), (256, 128),          # conv3_3_D .. conv3_1_D
           (128, 128), (128, 64),                       # conv2_2_D, conv2_1_D
           (64, 64)]                                    # conv1_2_D
    total = sum(conv(3, i, o) + bn(o) for i, o in enc + dec)
    return total + conv(3, 64, num_classes)  # conv1_1_D: no BN


def segnet_basic_params_from_prototxt(num_classes=11):
    """Models/segnet_basic_train.prototxt: LRN, 4 + 4 7x7 convs of 64 with BN, 1x1 classifier."""
    enc = conv(7, 3, 64) + bn(64) + 3 * (conv(7, 64, 64) + bn(64))
    dec = 4 * (conv(7, 64, 64) + bn(64))
    return enc + dec + conv(1, 64, num_classes)


def test_segnet_parameter_count_matches_prototxt():
    model = kseg.SegNet(num_classes=11, input_shape=(360, 480, 3))
    assert segnet_params_from_prototxt(11) == 29_449_355
    assert kseg.count_params(model) == segnet_params_from_prototxt(11)
    assert kseg.models.get("segnet").num_params == segnet_params_from_prototxt(11)
    assert model.output_shape == (None, 360, 480, 11)


def test_segnet_basic_parameter_count_matches_prototxt():
    model = kseg.SegNetBasic(num_classes=11, input_shape=(360, 480, 3))
    assert segnet_basic_params_from_prototxt(11) == 1_416_587
    assert kseg.count_params(model) == segnet_basic_params_from_prototxt(11)
    assert kseg.models.get("segnet_basic").num_params == 1_416_587


def test_segnet_layer_names_follow_prototxt():
    model = kseg.SegNet(num_classes=11, input_shape=(64, 64, 3))
    names = {layer.name for layer in model.layers}
    for expected in ["conv1_1", "conv1_1_bn", "pool1", "pool5", "upsample5", "conv5_3_D",
                     "conv5_3_D_bn", "conv4_1_D", "conv1_2_D", "conv1_1_D"]:
        assert expected in names
    assert "conv1_1_D_bn" not in names


def test_segnet_basic_odd_input_size_is_restored():
    # 45 -> 23 -> 12 -> 6 -> 3 and back: every unpooling restores its encoder's size
    model = kseg.SegNetBasic(num_classes=5, input_shape=(45, 37, 3), width=4)
    out = model.predict(np.random.rand(2, 45, 37, 3).astype("float32") * 255, verbose=0)
    assert out.shape == (2, 45, 37, 5)
    assert np.isfinite(out).all()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        kseg.SegNet(num_classes=1)
    with pytest.raises(ValueError, match="input_shape"):
        kseg.SegNetBasic(input_shape=(32, 32))


def test_registry_lists_and_builds():
    assert {"segnet", "segnet_basic"} <= set(kseg.models.list())
    card = kseg.models.get("SegNet-Basic")
    assert card.name == "segnet_basic" and card.year == 2017 and card.output_stride == 1
    model = card.build(num_classes=3, input_shape=(16, 16, 3), width=2)
    assert model.output_shape == (None, 16, 16, 3)
    with pytest.raises(ValueError, match="unknown model"):
        kseg.models.get("nope")

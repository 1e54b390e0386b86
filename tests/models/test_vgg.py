"""The VGG configurations of Simonyan & Zisserman (ICLR 2015), Table 1, and the backbone= option."""

import keras
import numpy as np
import pytest

import kseg
from kseg.backbones.vgg import VGG_CONFIGS
from kseg.convert.caffe import write_caffemodel


def conv(k, cin, cout):
    return k * k * cin * cout + cout


# Table 1, written out: (kernel, in, out) of every conv of each configuration.
A = [(3, 3, 64), (3, 64, 128), (3, 128, 256), (3, 256, 256), (3, 256, 512), (3, 512, 512), (3, 512, 512),
     (3, 512, 512)]
B = [(3, 3, 64), (3, 64, 64), (3, 64, 128), (3, 128, 128), (3, 128, 256), (3, 256, 256), (3, 256, 512),
     (3, 512, 512), (3, 512, 512), (3, 512, 512)]
C = B[:6] + [(1, 256, 256)] + B[6:8] + [(1, 512, 512)] + B[8:] + [(1, 512, 512)]
D = B[:6] + [(3, 256, 256)] + B[6:8] + [(3, 512, 512)] + B[8:] + [(3, 512, 512)]
E = D[:7] + [(3, 256, 256)] + D[7:10] + [(3, 512, 512)] + D[10:] + [(3, 512, 512)]
# fc6 over pool5's 7x7x512, fc7, fc8 to the 1000 ImageNet classes
FC = 7 * 7 * 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000


CONFIGS = [("vgg_a", A, 11, 133), ("vgg_a_lrn", A, 11, 133), ("vgg_b", B, 13, 133), ("vgg_c", C, 16, 134),
           ("vgg_d", D, 16, 138), ("vgg_e", E, 19, 144)]


def scaled_params(convs, m):
    w = lambda c: max(1, round(c * m))  # noqa: E731
    total = sum(conv(k, 3 if cin == 3 else w(cin), w(cout)) for k, cin, cout in convs)
    fc = w(4096)
    return total + 7 * 7 * w(512) * fc + fc + fc * fc + fc + fc * 1000 + 1000


@pytest.mark.parametrize("config, convs, weight_layers, table2", CONFIGS)
def test_parameters_are_the_papers(config, convs, weight_layers, table2):
    expected = sum(conv(*c) for c in convs) + FC
    assert scaled_params(convs, 1.0) == expected
    assert len(convs) + 3 == weight_layers
    assert round(expected / 1e6) == table2  # Table 2 (millions)
    assert kseg.models.get(config).num_params == expected
    model = kseg.models.get(config).build(width_multiplier=1 / 16)  # the builder, at 1/16 of the widths
    assert kseg.count_params(model) == scaled_params(convs, 1 / 16)
    kernels = [(layer.kernel_size[0], layer.kernel.shape[2], layer.filters) for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D) and layer.name.startswith("conv")]
    assert kernels == [(k, 3 if cin == 3 else max(1, round(cin / 16)), max(1, round(cout / 16)))
                       for k, cin, cout in convs]
    assert ("norm1" in [layer.name for layer in model.layers]) == (config == "vgg_a_lrn")


@pytest.mark.slow
@pytest.mark.parametrize("config, convs, weight_layers, table2", CONFIGS)
def test_full_size_parameter_counts(config, convs, weight_layers, table2):
    model = kseg.models.get(config).build(input_shape=(224, 224, 3))
    assert kseg.count_params(model) == sum(conv(*c) for c in convs) + FC
    assert model.output_shape == (None, 1000)


def test_lrn_is_krizhevskys():
    layer = kseg.VGGALRN(input_shape=(224, 224, 3), width_multiplier=1 / 16).get_layer("norm1")
    # Krizhevsky et al.: k = 2, n = 5, alpha = 1e-4 per element, beta = 0.75 (Caffe's alpha is n times it)
    assert (layer.k, layer.local_size, layer.beta) == (2.0, 5, 0.75)
    assert layer.alpha / layer.local_size == pytest.approx(1e-4)


def test_dense_evaluation_at_larger_sizes():
    """fc6-fc8 are convolutions averaged over the score map (Sec. 3.2): 224 gives one score vector,
    a 256x288 image the mean of the 2x3 map."""
    model = kseg.VGGB(num_classes=5, width_multiplier=1 / 16, dropout=0)
    scores = keras.Model(model.input, model.get_layer("fc8").output)
    x = np.random.default_rng(0).uniform(0, 255, (1, 256, 288, 3)).astype("float32")
    s = np.asarray(scores(x))
    assert s.shape == (1, 2, 3, 5)
    np.testing.assert_allclose(np.asarray(model(x)), s.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_caffe_model_zoo_names_and_file(tmp_path):
    """The authors' VGG_ILSVRC_*_layers.caffemodel layout: conv kernels OIHW, fc6-fc8 InnerProduct (out, in)
    over Caffe's (C, H, W) flattening; loaded by name into the convolutional classifier."""
    model = kseg.VGGD(num_classes=10, width_multiplier=1 / 16)
    rng = np.random.default_rng(1)
    blobs = []
    for layer in model.layers:
        if not layer.weights:
            continue
        for v in layer.weights:
            v.assign(rng.normal(0, 0.05, v.shape).astype("float32"))
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        oihw = kernel.transpose(3, 2, 0, 1)
        if layer.name.startswith("fc"):
            blobs.append((layer.name, "InnerProduct", [oihw.reshape(oihw.shape[0], -1), bias]))
        else:
            blobs.append((layer.name, "Convolution", [oihw, bias]))
    assert [b[0] for b in blobs] == [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1)
                                     for i in range(1, n + 1)] + ["fc6", "fc7", "fc8"]
    path = tmp_path / "VGG_ILSVRC_16_layers.caffemodel"
    write_caffemodel(path, blobs)
    fresh = kseg.VGGD(num_classes=10, width_multiplier=1 / 16, weights=str(path))
    x = rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(fresh(x)), np.asarray(model(x)), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("config, application", [("vgg_d", "VGG16"), ("vgg_e", "VGG19")])
def test_imagenet_weights_from_a_keras_applications_file(config, application, tmp_path):
    """encoder_weights=<keras.applications file> (what weights='imagenet' downloads): the same logits."""
    ref = getattr(keras.applications, application)(weights=None, classifier_activation=None)
    rng = np.random.default_rng(2)
    for v in ref.weights:
        v.assign(rng.normal(0, 0.01, v.shape).astype("float32"))
    path = tmp_path / f"{application}.weights.h5"
    ref.save_weights(path)
    model = kseg.models.get(config).build(input_shape=(224, 224, 3), encoder_weights=str(path))
    x = rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    want = ref(keras.applications.vgg16.preprocess_input(x.copy()))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(want), rtol=1e-3, atol=1e-4)


def test_imagenet_errors():
    with pytest.raises(ValueError, match="configurations D and E"):
        kseg.VGGB(weights="imagenet")
    with pytest.raises(ValueError, match="num_classes=10"):
        kseg.VGGD(num_classes=10, weights="imagenet")


@pytest.mark.parametrize("builder, kwargs", [
    (kseg.FCN8s, {}), (kseg.SegNet, {}), (kseg.DeconvNet, {"input_shape": (193, 201, 3)}), (kseg.DeepLabV1, {}),
    (kseg.DeepLabV2VGG16, {}),
])
@pytest.mark.parametrize("backbone", ["vgg_a", "vgg_c", "vgg_e"])
def test_backbone_option(builder, kwargs, backbone):
    model = builder(num_classes=3, width_multiplier=1 / 16, backbone=backbone, **kwargs)
    convs = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras.layers.Conv2D) and layer.name.startswith("conv")
             and not layer.name.endswith("_D")]
    assert len(convs) == sum(len(b) for b in VGG_CONFIGS[backbone])
    assert {layer.kernel_size[0] for layer in convs} == ({1, 3} if backbone == "vgg_c" else {3})
    x = np.random.default_rng(3).uniform(0, 255, (1, 193, 201, 3)).astype("float32")
    assert np.asarray(model(x)).shape == (1, 193, 201, 3)


def test_backbone_errors():
    with pytest.raises(ValueError, match="backbone must be one of"):
        kseg.FCN8s(backbone="resnet50")
    with pytest.raises(ValueError, match="configurations D"):
        kseg.FCN8s(backbone="vgg_b", width_multiplier=1.0, encoder_weights="imagenet")

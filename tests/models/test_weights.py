"""kseg.models.weights: the authors' Caffe files by layer name, presets (download, convert, cache), errors.

The caffemodels are written in the real format (kseg.convert.caffe.write_caffemodel) from a kseg
model's own weights put back into Caffe's layouts here, independently of the converter: a fresh
model loaded from the file must compute what the original computes.
"""

import dataclasses

import keras
import numpy as np
import pytest

import kseg
from kseg.convert import ConversionError
from kseg.convert.caffe import write_caffemodel
from kseg.models import presets as kpresets
from kseg.models import weights as kweights


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                               rng.uniform(0.5, 2.0, c)][: len(layer.weights)][-len(layer.weights):])
    for v in model.trainable_weights + [w for w in model.non_trainable_weights if "moving" not in w.path]:
        v.assign(rng.normal(0, 0.05, v.shape).astype("float32"))


def caffe_blobs(model, bn="BatchNorm", fc_as_inner_product=("fc6", "fc7"), rename=None):
    """[(name, type, blobs)] in Caffe's layouts, written by hand (the converter's inverse)."""
    rename = rename or {}
    out = []
    for layer in kweights.weighted_layers(model):
        name = rename.get(layer.name, layer.name)
        w = [np.asarray(v) for v in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = w
            if bn == "BatchNorm":  # Caffe eps 1e-5; running sums with a scale factor of 2
                var_c = var + layer.epsilon - 1e-5
                out.append((name, "BatchNorm", [mean * 2, var_c * 2, np.array([2.0], np.float32)]))
                out.append((name.replace("bn", "scale", 1) if name.startswith("bn") else name + "_scale", "Scale",
                            [gamma, beta]))
            else:  # caffe-segnet BN: scale, shift, mean, var (eps 1e-9)
                shape = (1, -1, 1, 1)
                out.append((name, "BN", [gamma.reshape(shape), beta.reshape(shape), mean.reshape(shape),
                                         (var + layer.epsilon - 1e-9).reshape(shape)]))
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            out.append((name, "Deconvolution", [w[0].transpose(3, 2, 0, 1)] + w[1:]))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            out.append((name, "Scale", [w[0].reshape(-1)]))
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = w[0].transpose(3, 2, 0, 1)  # HWIO -> OIHW
            if layer.name in fc_as_inner_product:
                out.append((name, "InnerProduct", [kernel.reshape(kernel.shape[0], -1)] + w[1:]))
            else:
                out.append((name, "Convolution", [kernel] + w[1:]))
        else:
            out.append((name, "Custom", w))
    return out


def _same(a, b, x):
    np.testing.assert_allclose(np.asarray(a(x, training=False)), np.asarray(b(x, training=False)),
                               rtol=1e-4, atol=1e-4)


def test_fcn8s_from_a_caffemodel_fc6_fc7_as_inner_products(tmp_path):
    kw = dict(num_classes=3, width_multiplier=1 / 16)
    model = kseg.FCN8s(**kw)
    _randomise(model)
    path = tmp_path / "fcn8s.caffemodel"
    write_caffemodel(path, caffe_blobs(model))
    fresh = kseg.FCN8s(**kw, weights=str(path))
    x = np.random.default_rng(1).uniform(0, 255, (1, 37, 45, 3)).astype("float32")
    _same(model, fresh, x)


def test_resnet_batchnorm_and_scale_layers(tmp_path):
    kw = dict(num_classes=3, width_multiplier=1 / 16, depths=(1, 1, 1, 1))
    model = kseg.DeepLabV2ResNet101(**kw)
    _randomise(model, 2)
    path = tmp_path / "resnet.caffemodel"
    write_caffemodel(path, caffe_blobs(model))
    fresh = kseg.DeepLabV2ResNet101(**kw, weights=str(path))
    x = np.random.default_rng(3).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    _same(model, fresh, x)


def test_segnet_bn_layers_and_the_cards_rename(tmp_path):
    kw = dict(num_classes=11, width_multiplier=1 / 8)
    model = kseg.SegNetBasic(**kw)
    _randomise(model, 4)
    path = tmp_path / "segnet_basic.caffemodel"
    write_caffemodel(path, caffe_blobs(model, bn="BN", rename={"conv_classifier": "dense_softmax_inner_prod"}))
    fresh = kseg.SegNetBasic(**kw, weights=str(path))
    x = np.random.default_rng(5).uniform(0, 255, (1, 24, 40, 3)).astype("float32")
    _same(model, fresh, x)


def test_every_missing_and_mismatched_layer_is_listed(tmp_path):
    model = kseg.FCN32s(num_classes=3, width_multiplier=1 / 16)
    layers = [entry for entry in caffe_blobs(model) if entry[0] not in ("conv2_1", "conv4_3")]
    layers = [(n, t, [b[:1] if n == "score_fr" and b.ndim == 4 else b for b in blobs]) for n, t, blobs in layers]
    path = tmp_path / "broken.caffemodel"
    write_caffemodel(path, layers)
    before = model.get_layer("conv1_1").get_weights()[0].copy()
    with pytest.raises(ConversionError) as err:
        kweights.load_weights(model, str(path), card=kseg.models.get("fcn32s"))
    text = str(err.value)
    assert "broken.caffemodel" in text and "missing layers (2): conv2_1, conv4_3" in text
    assert "mismatched layers (1): score_fr" in text
    np.testing.assert_array_equal(model.get_layer("conv1_1").get_weights()[0], before)  # nothing set


URL = "https://example.org/segnet/segnet_basic_test.caffemodel"


def _preset(url=URL, **kw):
    return kpresets.Preset(name="test", url=url, file_name="segnet_basic_test.caffemodel", format="caffemodel",
                           dataset="synthetic", num_classes=3, preprocessing="none", source="this test",
                           builder_kwargs={"num_classes": 3, "width_multiplier": 0.125}, **kw)


@pytest.fixture
def published(monkeypatch, tmp_path):
    """keras.utils.get_file over a fake internet: {url: local file}; other URLs fail as offline ones do."""
    import shutil

    files, calls = {}, []

    def get_file(fname, origin, file_hash=None, cache_subdir="datasets", cache_dir=None, **_):
        calls.append({"fname": fname, "origin": origin, "file_hash": file_hash})
        target = tmp_path / "keras_home" / cache_subdir / fname
        if target.is_file():
            return str(target)
        if origin not in files:
            raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[origin], target)
        return str(target)

    monkeypatch.setattr(kweights.keras.utils, "get_file", get_file)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return files, calls, tmp_path / "keras_home" / "kseg"


def test_preset_downloads_converts_caches_and_loads(tmp_path, monkeypatch, published):
    files, calls, cache = published
    model = kseg.SegNetBasic(num_classes=3, width_multiplier=0.125)
    _randomise(model, 6)
    src = tmp_path / "published.caffemodel"
    write_caffemodel(src, caffe_blobs(model, bn="BN", rename={"conv_classifier": "dense_softmax_inner_prod"}))
    files[URL] = src
    preset = _preset(sha256="ab" * 32, mean=(1.0, 2.0, 3.0))
    monkeypatch.setitem(kpresets.PRESETS, "segnet_basic", (preset,))
    loaded = kseg.SegNetBasic(num_classes=3, width_multiplier=0.125, weights="test")
    assert calls == [{"fname": "segnet_basic_test.caffemodel", "origin": URL, "file_hash": "ab" * 32}]
    # weights=<preset> also sets the preset's input transform (BGR, minus its mean) on `preprocess`
    layer = loaded.get_layer("preprocess")
    assert (layer.mode, layer.channel_order, layer.mean) == ("custom", "bgr", (1.0, 2.0, 3.0))
    kweights.set_preprocessing(model, preset)
    x = np.random.default_rng(7).uniform(0, 255, (1, 24, 32, 3)).astype("float32")
    _same(model, loaded, x)
    assert (cache / "segnet_basic_test.weights.h5").is_file() and (cache / "segnet_basic_test.caffemodel").is_file()
    # second time: the converted cache alone (no download, the authors' file gone)
    (cache / "segnet_basic_test.caffemodel").unlink()
    del files[URL]
    again = kseg.SegNetBasic(num_classes=3, width_multiplier=0.125, weights="test")
    _same(model, again, x)
    assert len(calls) == 1


def test_offline_preset_says_what_to_download_and_where(monkeypatch, published):
    _, _, cache = published
    monkeypatch.setitem(kpresets.PRESETS, "segnet_basic", (_preset(),))
    with pytest.raises(kweights.PresetUnavailableError) as err:
        kseg.SegNetBasic(num_classes=3, width_multiplier=0.125, weights="test")
    text = str(err.value)
    assert URL in text and str(cache / "segnet_basic_test.caffemodel") in text and "name resolution" in text


def test_zip_preset_member(tmp_path, monkeypatch, published):
    import zipfile

    files, _, _ = published
    model = kseg.SegNetBasic(num_classes=3, width_multiplier=0.125)
    _randomise(model, 8)
    inner = tmp_path / "w.caffemodel"
    write_caffemodel(inner, caffe_blobs(model, bn="BN", rename={"conv_classifier": "dense_softmax_inner_prod"}))
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(inner, "model/init.caffemodel")
        zf.write(inner, "model/train_iter_1000.caffemodel")
    url = "https://example.org/release.zip"
    files[url] = archive
    preset = dataclasses.replace(_preset(url), file_name="release.zip", format="zip")
    monkeypatch.setitem(kpresets.PRESETS, "segnet_basic", (preset,))
    loaded = kseg.SegNetBasic(num_classes=3, width_multiplier=0.125, weights="test")
    kweights.set_preprocessing(model, preset)  # the preset's transform, as weights="test" set it
    x = np.random.default_rng(9).uniform(0, 255, (1, 16, 24, 3)).astype("float32")
    _same(model, loaded, x)


def test_convert_writes_a_weights_file_that_loads_safely(tmp_path):
    model = kseg.FCN32s(num_classes=3, width_multiplier=1 / 16)
    _randomise(model, 10)
    src = tmp_path / "fcn32s.caffemodel"
    write_caffemodel(src, caffe_blobs(model))
    out = kweights.convert("fcn32s", str(src), str(tmp_path / "out" / "fcn32s.weights.h5"), num_classes=3,
                           width_multiplier=1 / 16)
    fresh = kseg.FCN32s(num_classes=3, width_multiplier=1 / 16, weights=out)
    x = np.random.default_rng(11).uniform(0, 255, (1, 40, 36, 3)).astype("float32")
    _same(model, fresh, x)
    with pytest.raises(ValueError, match=".weights.h5"):
        kweights.convert("fcn32s", str(src), str(tmp_path / "x.h5"))


def test_assign_caffe_consume_frees_each_layer_once_set_and_sets_the_same_values(tmp_path, monkeypatch):
    """consume=True (what load_weights / kseg convert use: they read the file only for this) drops each
    Caffe layer, BatchNorm's Scale included, once its values are in the model: the same model, and
    every layer the model used is gone from the dict; consume=False leaves the caller's dict whole.
    Large arrays go in slices (here every array over 1 KB): the same values."""
    from kseg.convert.caffe import read_caffemodel

    kw = dict(num_classes=3, width_multiplier=1 / 16, depths=(1, 1, 1, 1))
    model = kseg.DeepLabV2ResNet101(**kw)
    _randomise(model, 7)
    path = tmp_path / "resnet.caffemodel"
    write_caffemodel(path, caffe_blobs(model))
    card = kseg.models.get("deeplab_v2_resnet101")
    kept, consumed = kseg.DeepLabV2ResNet101(**kw), kseg.DeepLabV2ResNet101(**kw)
    whole = read_caffemodel(str(path))
    n = len(whole)
    set_names = kweights.assign_caffe(kept, whole, rename=getattr(card, "caffe_rename", None))
    assert len(whole) == n
    layers = read_caffemodel(str(path))
    monkeypatch.setattr(kweights, "ASSIGN_CHUNK_BYTES", 1024)
    assert kweights.assign_caffe(consumed, layers, rename=getattr(card, "caffe_rename", None), consume=True) == set_names
    assert not any(layer.blobs for layer in layers.values()), sorted(layers)  # only blob-less layers remain
    assert any(name.startswith("scale") for name in whole) and not any(name.startswith("scale") for name in layers)
    x = np.random.default_rng(3).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    _same(kept, consumed, x)
    _same(model, consumed, x)
    for want, got in zip(kept.weights, consumed.weights):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)
    assert max(int(np.prod(w.shape)) * 4 for w in consumed.weights) > 16 * 1024  # slices were taken

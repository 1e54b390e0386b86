"""benchmarks/torch_peer.py: its torch.nn SegNet / FCN-8s are kseg's networks (only where torch is installed).

The peer of issue 15 must time the same networks: equal parameter counts (trainable and all), and
(slow) with kseg's weights copied in, the same logits at inference.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kseg  # noqa: E402
from benchmarks import torch_peer  # noqa: E402


def _keras_to_torch(kmodel, tmodel, names):
    """Copy kseg's weights into the torch model: Conv2D / Conv2DTranspose / BatchNormalization,
    paired in order with `names` (the kseg layer of each torch conv / BN, in module order)."""
    mods = [m for m in tmodel.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d,
                                                          torch.nn.BatchNorm2d))]
    assert len(mods) == len(names)
    with torch.no_grad():
        for m, name in zip(mods, names):
            w = [np.asarray(v) for v in kmodel.get_layer(name).weights]
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, v in zip((m.weight, m.bias, m.running_mean, m.running_var), w):
                    t.copy_(torch.from_numpy(v))
            elif isinstance(m, torch.nn.ConvTranspose2d):  # Keras (k, k, out, in) -> torch (in, out, k, k)
                m.weight.copy_(torch.from_numpy(w[0].transpose(3, 2, 0, 1).copy()))
            else:  # Keras (k, k, in, out) -> torch (out, in, k, k)
                m.weight.copy_(torch.from_numpy(w[0].transpose(3, 2, 0, 1).copy()))
                m.bias.copy_(torch.from_numpy(w[1]))


def _counts(kmodel):
    return sum(int(np.prod(v.shape)) for v in kmodel.trainable_weights), kseg.count_params(kmodel)


@pytest.mark.parametrize("name", ["segnet", "fcn8s"])
def test_same_parameter_counts(name):
    card = kseg.models.get(name)
    kmodel = card.build(num_classes=torch_peer.NUM_CLASSES[name])
    tmodel = torch_peer.torch_model(name)
    assert torch_peer.torch_param_counts(tmodel) == _counts(kmodel)
    assert _counts(kmodel)[1] == card.num_params


@pytest.mark.slow
def test_segnet_same_network(rng=np.random.default_rng(0)):
    kmodel = kseg.SegNet(num_classes=11)
    tmodel = torch_peer.torch_model("segnet").eval()
    convs = [layer.name for layer in kmodel.layers if type(layer).__name__ == "Conv2D"]
    names = [n for c in convs for n in ((c, f"{c}_bn") if c != "conv1_1_D" else (c,))]
    for layer in kmodel.layers:  # non-trivial BN statistics, so that copying them is checked too
        if layer.name.endswith("_bn"):
            layer.moving_mean.assign(rng.normal(0, 1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape))
    _keras_to_torch(kmodel, tmodel, names)
    x = rng.uniform(0, 255, (1, 45, 61, 3)).astype("float32")  # odd: ceil pooling, exact unpooling sizes
    want = np.asarray(kmodel(x, training=False))
    with torch.no_grad():
        got = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert got.shape == want.shape == (1, 45, 61, 11)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.slow
def test_fcn8s_same_network(rng=np.random.default_rng(1)):
    kmodel = kseg.FCN8s(num_classes=21)
    tmodel = torch_peer.torch_model("fcn8s").eval()
    for name in ("score_fr", "score_pool4", "score_pool3"):  # zero-initialised: give them values to compare
        layer = kmodel.get_layer(name)
        layer.kernel.assign(rng.normal(0, 0.01, layer.kernel.shape))
        layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))
    convs = [f"conv{b}_{i}" for b, block in enumerate(torch_peer.VGG16, 1) for i in range(1, len(block) + 1)]
    names = convs + ["fc6", "fc7", "score_fr", "score_pool4", "score_pool3"]
    # the torch upscores keep their own bilinear init: it must equal kseg's BilinearUpsampling
    tmp = torch_peer.torch_model("fcn8s")
    for name in ("upscore2", "upscore_pool4", "upscore8"):
        want = np.asarray(kmodel.get_layer(name).kernel).transpose(3, 2, 0, 1)
        np.testing.assert_array_equal(getattr(tmp, name).weight.detach().numpy(), want)
        assert not getattr(tmp, name).weight.requires_grad
    _keras_to_torch(kmodel, tmodel, names + ["upscore2", "upscore_pool4", "upscore8"])
    x = rng.uniform(0, 255, (1, 37, 50, 3)).astype("float32")
    want = np.asarray(kmodel(x, training=False))
    with torch.no_grad():
        got = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert got.shape == want.shape == (1, 37, 50, 21)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())

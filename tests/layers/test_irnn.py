"""IRNN2D against a numpy loop reference; serialisation; identity initialisation."""

import keras
import numpy as np
import pytest

from kseg.layers.irnn import IRNN2D


def _reference(x, kernel, bias, rec):
    z = x @ kernel + bias  # (B, H, W, U)
    b, h, w, u = z.shape
    outs = []
    for d, (axis, reverse) in enumerate(((2, False), (2, True), (1, False), (1, True))):
        out = np.zeros_like(z)
        length = w if axis == 2 else h
        order = range(length - 1, -1, -1) if reverse else range(length)
        hcur = np.zeros((b, h if axis == 2 else w, u))
        for t in order:
            xt = z[:, :, t] if axis == 2 else z[:, t]
            hcur = np.maximum(0, hcur @ rec[d] + xt)
            if axis == 2:
                out[:, :, t] = hcur
            else:
                out[:, t] = hcur
        outs.append(out)
    return np.concatenate(outs, -1)


@pytest.mark.parametrize("learn", [True, False])
def test_irnn2d_matches_numpy(learn):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 4)).astype("float32")
    layer = IRNN2D(3, learn_recurrent=learn)
    y = layer(x)
    kernel, bias = layer.kernel.numpy(), rng.normal(size=3).astype("float32")
    layer.bias.assign(bias)
    if learn:
        np.testing.assert_array_equal(layer.recurrent.numpy(), np.tile(np.eye(3), (4, 1, 1)))  # identity init
        rec = rng.normal(scale=0.5, size=(4, 3, 3)).astype("float32")
        layer.recurrent.assign(rec)
    else:
        rec = np.tile(np.eye(3, dtype="float32"), (4, 1, 1))
        assert len(layer.weights) == 2
    y = layer(x)
    np.testing.assert_allclose(y, _reference(x, kernel, bias, rec), rtol=1e-5, atol=1e-5)
    assert y.shape == (2, 3, 5, 12)


def test_irnn2d_serialises_and_handles_any_size():
    inp = keras.Input((None, None, 4))
    model = keras.Model(inp, IRNN2D(2, name="irnn")(inp))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(1).normal(size=(1, 6, 7, 4)).astype("float32")
    np.testing.assert_allclose(clone(x), model(x), rtol=1e-6)
    assert model(x[:, :3, :2]).shape == (1, 3, 2, 8)
    with pytest.raises(ValueError, match="units must be >= 1"):
        IRNN2D(0)

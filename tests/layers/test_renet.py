import numpy as np
import pytest

import keras

from kseg.layers import ReNet2D


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def simple_rnn(seq, cell):
    k, r, b = (np.asarray(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    h = np.zeros((seq.shape[0], k.shape[1]))
    out = []
    for t in range(seq.shape[1]):
        h = np.tanh(seq[:, t] @ k + h @ r + b)
        out.append(h)
    return np.stack(out, 1)


def gru(seq, cell):
    """Keras' GRU with reset_after=True (the cuDNN form): gates z, r, h in that order."""
    k, r, b = (np.asarray(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    u = r.shape[0]
    h = np.zeros((seq.shape[0], u))
    out = []
    for t in range(seq.shape[1]):
        xz = seq[:, t] @ k + b[0]
        hz = h @ r + b[1]
        z = sigmoid(xz[:, :u] + hz[:, :u])
        rr = sigmoid(xz[:, u:2 * u] + hz[:, u:2 * u])
        hh = np.tanh(xz[:, 2 * u:] + rr * hz[:, 2 * u:])
        h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out, 1)


def bidirectional(seq, layer, step):
    fwd = step(seq, layer.forward_layer.cell)
    bwd = step(seq[:, ::-1], layer.backward_layer.cell)[:, ::-1]
    return np.concatenate([fwd, bwd], -1)


def reference(x, layer, step):
    b, h, w, c = x.shape
    ph, pw = layer.patch_size
    gh, gw = h // ph, w // pw
    patches = np.zeros((b, gh, gw, ph * pw * c))
    for i in range(gh):
        for j in range(gw):
            patches[:, i, j] = x[:, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].reshape(b, -1)
    v = np.zeros((b, gh, gw, 2 * layer.units))
    for j in range(gw):  # every column, swept over its rows
        v[:, :, j] = bidirectional(patches[:, :, j], layer.vertical, step)
    out = np.zeros_like(v)
    for i in range(gh):  # every row of the vertical result, swept over its columns
        out[:, i] = bidirectional(v[:, i], layer.horizontal, step)
    return out


@pytest.mark.parametrize("cell,step", [("rnn", simple_rnn), ("gru", gru)])
def test_matches_numpy_sweeps(cell, step):
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype("float32")
    layer = ReNet2D((3, 2), 5, cell=cell)
    y = np.asarray(layer(x))
    assert y.shape == (2, 2, 2, 10)
    np.testing.assert_allclose(y, reference(x.astype("float64"), layer, step), rtol=1e-4, atol=1e-5)


def test_every_output_sees_the_whole_image():
    x = np.zeros((1, 4, 4, 1), "float32")
    layer = ReNet2D(1, 3, cell="rnn")
    base = np.asarray(layer(x))
    x[0, 0, 0, 0] = 1.0  # one corner pixel changes every output position
    changed = np.abs(np.asarray(layer(x)) - base).max(-1)
    assert (changed > 0).all()


def test_parameter_count_of_gru_and_lstm():
    d, u = 2 * 2 * 3, 7
    gru_layer = ReNet2D(2, u, cell="gru")
    gru_layer.build((None, 8, 8, 3))
    # four GRUs; Keras' cuDNN-form GRU has two bias vectors of 3u: 3(d u + u u) + 6u
    per = lambda din: 3 * (din * u + u * u) + 6 * u  # noqa: E731
    assert gru_layer.count_params() == 2 * per(d) + 2 * per(2 * u)
    lstm_layer = ReNet2D(2, u, cell="lstm")
    lstm_layer.build((None, 8, 8, 3))
    per = lambda din: 4 * (din * u + u * u + u)  # noqa: E731
    assert lstm_layer.count_params() == 2 * per(d) + 2 * per(2 * u)


def test_serialization_round_trip_and_errors():
    inputs = keras.Input((4, 6, 2))
    model = keras.Model(inputs, ReNet2D((2, 3), 4, cell="lstm", name="renet1")(inputs))
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(1).normal(size=(1, 4, 6, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-6)
    with pytest.raises(ValueError, match="not divisible by the patch size 2x2"):
        ReNet2D(2, 4)(np.zeros((1, 5, 4, 1), "float32"))
    with pytest.raises(ValueError, match="cell must be one of"):
        ReNet2D(2, 4, cell="transformer")

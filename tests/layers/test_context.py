import numpy as np
import pytest

import keras

from kseg.layers import ContextGroupIdentity, ContextIdentity, ContextModule, ReflectionPadding2D
from kseg.layers.context import _receptive_field, context_widths


def test_table1_widths_dilations_and_receptive_field():
    module = ContextModule(5, variant="large")
    module.build((None, 16, 16, 5))
    assert [c.filters for c in module.convs] == [10, 10, 20, 40, 80, 160, 160, 5]
    assert [c.dilation_rate[0] for c in module.convs] == [1, 1, 2, 4, 8, 16, 1, 1]
    assert [c.kernel_size[0] for c in module.convs] == [3] * 7 + [1]
    assert [c.name for c in module.convs] == ["ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1",
                                             "ctx_conv4_1", "ctx_conv5_1", "ctx_fc1", "ctx_final"]
    assert _receptive_field() == [3, 5, 9, 17, 33, 65, 67, 67]
    assert context_widths(11) == [11] * 8


def test_basic_module_parameter_count():
    c = 11
    module = ContextModule(c)
    module.build((None, 8, 8, c))
    # 7 3x3 CxC convs with bias + a 1x1 CxC conv with bias
    assert sum(int(np.prod(w.shape)) for w in module.weights) == 7 * (9 * c * c + c) + (c * c + c) == 7832


def test_large_module_parameter_count():
    c = 3
    module = ContextModule(c, variant="large")
    module.build((None, 8, 8, c))
    w = [c, 2 * c, 2 * c, 4 * c, 8 * c, 16 * c, 32 * c, 32 * c, c]
    expected = sum(9 * w[i] * w[i + 1] + w[i + 1] for i in range(7)) + w[7] * w[8] + w[8]
    assert sum(int(np.prod(v.shape)) for v in module.weights) == expected


def test_untrained_basic_module_is_identity_up_to_relu():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 20, 24, 4)).astype("float32")
    y = np.asarray(ContextModule(4)(x))
    np.testing.assert_allclose(y, np.maximum(x, 0), atol=1e-6)
    pos = np.abs(x)
    np.testing.assert_allclose(np.asarray(ContextModule(4)(pos)), pos, atol=1e-6)


def test_untrained_large_module_is_identity_without_noise_and_close_with_it():
    x = np.random.default_rng(1).uniform(0, 5, size=(1, 16, 16, 3)).astype("float32")
    exact = ContextModule(3, variant="large", relative_stddev=0.0)
    np.testing.assert_allclose(np.asarray(exact(x)), x, rtol=1e-5, atol=1e-5)
    noisy = ContextModule(3, variant="large", seed=0)
    y = np.asarray(noisy(x))
    assert not np.allclose(y, x, atol=1e-7)  # the noise is really there
    np.testing.assert_allclose(y, x, atol=0.1 * x.max())


def test_initializers_match_paper_formulas():
    k = np.asarray(ContextIdentity()((3, 3, 4, 4)))
    assert k[1, 1].tolist() == np.eye(4).tolist() and np.count_nonzero(k) == 4
    c, cin, cout = 2, 4, 8
    g = np.asarray(ContextGroupIdentity(c, relative_stddev=0.0)((3, 3, cin, cout)))
    for a in range(cin):
        for b in range(cout):
            expected = c / cout if (a * c) // cin == (b * c) // cout else 0.0
            assert g[1, 1, a, b] == pytest.approx(expected)
    assert np.count_nonzero(g[0]) == 0
    noisy = np.asarray(ContextGroupIdentity(c, relative_stddev=1e-3, seed=0)((3, 3, cin, cout)))
    assert 0 < np.abs(noisy[0]).max() < 1e-2 * (c / cout)
    with pytest.raises(ValueError, match="multiples of 2"):
        ContextGroupIdentity(2)((3, 3, 3, 4))


def test_reflection_padding_matches_numpy_reflect():
    x = np.random.default_rng(2).normal(size=(1, 9, 10, 2)).astype("float32")
    layer = ReflectionPadding2D(((3, 2), (4, 1)), multiple=4)
    y = np.asarray(layer(x))
    # 9 -> needs 3 more rows to be a multiple of 4, 10 -> 2 more columns
    ref = np.pad(x, [(0, 0), (3, 2 + 3), (4, 1 + 2), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(y, ref)
    assert layer.compute_output_shape((None, 9, 10, 2)) == (None, 17, 17, 2)
    # the front end's 186-pixel margin on an image smaller than the margin: numpy's repeated reflection
    small = x[:, :5, :6]
    big = np.asarray(ReflectionPadding2D(186)(small))
    np.testing.assert_array_equal(big, np.pad(small, [(0, 0), (186, 186), (186, 186), (0, 0)], mode="reflect"))


def test_context_module_serialization_round_trip():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, ContextModule(3, variant="large", seed=1, name="context")(inputs))
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-6)
    assert clone.get_layer("context").variant == "large"


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant must be one of"):
        ContextModule(3, variant="huge")
    with pytest.raises(ValueError, match="expects 3 input channels, got 4"):
        ContextModule(3)(np.zeros((1, 4, 4, 4), "float32"))

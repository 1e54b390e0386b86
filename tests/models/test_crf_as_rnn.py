import numpy as np
import pytest
import keras

import kseg

tf = pytest.importorskip("tensorflow")
if keras.backend.backend() != "tensorflow":
    pytest.skip("CRF-as-RNN is TF-only", allow_module_level=True)

from kseg.models.crf_as_rnn import CRFasRNN  # noqa: E402


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def crfasrnn_params_from_prototxt(c=21):
    """TVG_CRFRNN_new_deploy.prototxt, layer by layer."""
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    total = sum(conv(3, i, o) for i, o in vgg)
    total += conv(7, 512, 4096) + conv(1, 4096, 4096)      # fc6, fc7
    total += conv(1, 4096, c)                              # score-fr
    total += conv(4, c, c, bias=True)                      # score2: Deconvolution, bias_term default true
    total += conv(1, 512, c)                               # score-pool4
    total += conv(4, c, c, bias=False)                     # score4: bias_term false
    total += conv(1, 256, c)                               # score-pool3
    total += conv(16, c, c, bias=False)                    # upsample: bias_term false, lr_mult 0
    total += 3 * c * c                                     # inference1: W_spatial, W_bilateral, compatibility
    return total


@pytest.fixture(scope="module")
def full_model():
    return CRFasRNN(num_classes=21, input_shape=(500, 500, 3))


def test_parameter_count_matches_prototxt(full_model):
    assert crfasrnn_params_from_prototxt(21) == 134_491_103
    model = full_model
    assert kseg.count_params(model) == crfasrnn_params_from_prototxt(21)
    card = kseg.models.get("crf_as_rnn")
    assert card.num_params == 134_491_103 and card.backends == ("tensorflow",) and not card.tflite_builtins


def test_layers_follow_the_model_zoo_names(full_model):
    model = full_model
    shapes = {n: model.get_layer(n).output.shape[1] for n in
              ("fc6", "score-fr", "score2", "score-pool4c", "score4", "score-pool3c", "upsample", "coarse")}
    # the FCN-8s arithmetic at 500: fc6 16, 34, 70, (70 - 1) * 8 + 16 = 568 -> crop 31 -> 500
    assert shapes == {"fc6": 16, "score-fr": 16, "score2": 34, "score-pool4c": 34, "score4": 70,
                      "score-pool3c": 70, "upsample": 568, "coarse": 500}
    score2, score4, up = (model.get_layer(n) for n in ("score2", "score4", "upsample"))
    assert score2.use_bias and score2.trainable and score2.kernel_size == (4, 4) and score2.strides == (2, 2)
    assert not score4.use_bias and score4.trainable
    assert not up.use_bias and not up.trainable and up.kernel_size == (16, 16) and up.strides == (8, 8)
    assert [model.get_layer(n).offset for n in ("score-pool4c", "score-pool3c", "coarse")] in ([5, 9, 31], [(5, 5), (9, 9), (31, 31)])
    crf = model.get_layer("inference1")
    assert (crf.num_iterations, crf.num_iterations_inference) == (5, 10)
    assert (crf.theta_alpha, crf.theta_beta, crf.theta_gamma) == (160.0, 3.0, 3.0)
    assert len(crf.weights) == 3
    np.testing.assert_allclose(np.asarray(crf.compatibility), -np.eye(21))
    np.testing.assert_allclose(np.asarray(crf.bilateral_kernel_weights), 5 * np.eye(21))


def _small(**kw):
    return CRFasRNN(num_classes=3, input_shape=(40, 48, 3), width=1 / 16, num_iterations=2,
                    num_iterations_inference=3, **kw)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((2, 40, 48, 3)).astype("float32") * 255
    labels = (np.arange(48)[None, None, :] // 16 + np.zeros((2, 40, 1), int)).astype("int32")
    return images, labels


def test_one_training_step_gives_the_crf_weights_gradients():
    model = _small()
    # a non-trivial unary: random score convs (the zero init of FCN would make the first step degenerate)
    for name in ("score-fr", "score-pool4", "score-pool3"):
        layer = model.get_layer(name)
        layer.set_weights([np.random.default_rng(1).normal(0, 0.05, w.shape).astype("float32")
                           for w in layer.get_weights()])
    images, labels = _data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(images, training=True))
    crf = model.get_layer("inference1")
    grads = tape.gradient(loss, crf.trainable_weights + model.get_layer("score-fr").trainable_weights)
    norms = [float(tf.norm(g)) for g in grads]
    assert all(np.isfinite(n) and n > 0 for n in norms), norms
    # and a compiled fit step runs and changes the CRF weights
    model.compile(optimizer=keras.optimizers.SGD(1e-2), loss=loss_fn)
    before = [np.asarray(w).copy() for w in crf.weights]
    history = model.fit(images, labels, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.allclose(b, np.asarray(w)) for b, w in zip(before, crf.weights))


def test_predict_shapes_and_save_load(tmp_path):
    model = _small()
    images, _ = _data(2)
    y = model.predict(images, verbose=0)
    assert y.shape == (2, 40, 48, 3) and np.isfinite(y).all()
    path = tmp_path / "crfasrnn.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(again.predict(images, verbose=0), y, rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        CRFasRNN(num_classes=1)
    with pytest.raises(ValueError, match="input_shape"):
        CRFasRNN(input_shape=(64, 64))


@pytest.mark.slow  # ~20 s: tracing the mean-field loop for the serving signature
def test_saved_model_with_the_crf_rnn_inside(tmp_path):
    from kseg.export import export_saved_model

    model = _small()
    images, _ = _data(3)
    path = export_saved_model(model, tmp_path / "crfasrnn")
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images.astype("uint8")))
    expected = model.predict(images.astype("uint8").astype("float32"), verbose=0).argmax(-1)
    assert (served["labels"].numpy() == expected).mean() > 0.999

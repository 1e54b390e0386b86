import numpy as np
import pytest
import tensorflow as tf

import keras

import kseg
from kseg import export
from kseg.layers import DomainTransform

TINY = dict(num_classes=4, input_shape=(33, 41, 3), width_multiplier=1 / 16, fc_width=32, edge_channels=8)


def conv(k, cin, cout):
    return k * k * cin * cout + cout


def deeplab_largefov_params(c):
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
           (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    return sum(conv(3, i, o) for i, o in vgg) + conv(3, 512, 1024) + conv(1, 1024, 1024) + conv(1, 1024, c)


def edgenet_params(channels=128):
    """3x3 convs of 128 on pool1 (64 ch), pool2 (128), pool3 (256); 1x1 on the 3 x 128 concat -> 1."""
    return conv(3, 64, channels) + conv(3, 128, channels) + conv(3, 256, channels) + conv(1, 3 * channels, 1)


def test_parameter_counts():
    assert deeplab_largefov_params(21) == 20_505_429
    assert edgenet_params() == 516_865
    model = kseg.DTEdgeNet(input_shape=(65, 65, 3))
    # the domain transform itself has no parameters (sigma_s, sigma_r fixed)
    assert kseg.count_params(model) == deeplab_largefov_params(21) + edgenet_params() == 21_022_294
    assert kseg.models.get("dt_edgenet").num_params == 21_022_294
    base = kseg.DTEdgeNet(input_shape=(65, 65, 3), domain_transform=False)
    assert kseg.count_params(base) == deeplab_largefov_params(21)


def test_structure_resolutions_and_paper_defaults():
    model = kseg.DTEdgeNet(**TINY)
    assert model.output_shape == (None, 33, 41, 4)
    dt = model.get_layer("domain_transform")
    # "auto": the sequential loops on TensorFlow (the faster training step, benchmarks/domain_transform.py)
    assert (dt.num_iterations, dt.sigma_s, dt.sigma_r, dt.method) == (3, 130.0, 0.1, "sequential")
    pool2 = model.get_layer("pool2").output.shape[1:3]
    assert model.get_layer("edge_relu").output.shape[1:] == pool2 + (1,)
    assert model.get_layer("fc8_up").output.shape[1:] == pool2 + (4,)
    assert model.get_layer("fc8").output.shape[1:3] == model.get_layer("pool3").output.shape[1:3]


def test_filter_equals_layer_applied_to_the_models_own_maps():
    model = kseg.DTEdgeNet(**TINY)
    probe = keras.Model(model.input, [model.get_layer("fc8_up").output, model.get_layer("edge_relu").output,
                                      model.get_layer("domain_transform").output])
    x = np.random.default_rng(0).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    up, edges, filtered = (np.asarray(t) for t in probe(x))
    assert (edges >= 0).all()
    expected = DomainTransform(method="doubling")([up, edges])  # the model runs "sequential"
    np.testing.assert_allclose(filtered, np.asarray(expected), rtol=1e-4, atol=1e-5)


def test_joint_training_reaches_edgenet_through_the_domain_transform():
    # Seeded: at this tiny width some initialisations leave the whole edge map at the ReLU's zero,
    # where no gradient can pass (that would test the init, not the wiring).
    keras.utils.set_random_seed(0)
    model = kseg.DTEdgeNet(**TINY)
    x = np.random.default_rng(1).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    edge = model.get_layer("edge_score")
    kernel, bias = edge.get_weights()
    edge.set_weights([kernel, bias + 0.01])  # keep the edge map positive: the ReLU passes gradients
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(x, training=False)))
    grads = tape.gradient(loss, [edge.kernel, model.get_layer("edge_conv1").kernel, model.get_layer("fc8").kernel])
    for g in grads:
        assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0


def test_keras_round_trip_safe_mode(tmp_path):
    model = kseg.DTEdgeNet(**TINY)
    path = str(tmp_path / "dt_edgenet.keras")
    model.save(path)
    clone = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(2).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-5)


def test_saved_model_and_tflite_builtins(tmp_path):
    model = kseg.DTEdgeNet(**TINY)
    assert model.get_layer("domain_transform").method == "sequential"
    export.export_saved_model(model, tmp_path / "sm")
    # stock TF ops only: TF Serving refuses jit_compile functions unless --xla_cpu_compilation_enabled
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((tmp_path / "sm" / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library.function
    assert library and not [f.signature.name for f in library if f.attr["_XlaMustCompile"].b or any(
        n.attr["_XlaMustCompile"].b for n in f.node_def)]
    xs = np.random.default_rng(4).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    served = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](images=tf.constant(xs.astype("uint8")))
    keras_probs = keras.ops.convert_to_numpy(keras.ops.softmax(model(xs.astype("uint8").astype("float32")), axis=-1))
    np.testing.assert_allclose(served["probabilities"].numpy(), keras_probs, atol=1e-4)
    path = export.export_tflite(model, tmp_path / "dt_edgenet.tflite")  # written as the doubling scan
    ops = {name for name, _ in export.tflite_operators(path)}
    assert "WHILE" not in ops, ops
    x = np.random.default_rng(3).uniform(0, 255, (1, 33, 41, 3)).astype("float32")
    assert export.verify_tflite(model, path, x) < 1e-3
    # the swap leaves the exported model itself as it was
    assert model.get_layer("domain_transform").method == "sequential"


def test_auto_method_is_sequential_where_it_runs_at_that_size(monkeypatch):
    from kseg.models import dt_edgenet

    assert dt_edgenet._resolve_dt_method("scan", (None, None, 3), None) == "scan"
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    assert dt_edgenet._resolve_dt_method("auto", (None, None, 3), None) == "sequential"
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")  # keras.ops.scan needs the length
    assert dt_edgenet._resolve_dt_method("auto", (None, None, 3), None) == "doubling"
    assert dt_edgenet._resolve_dt_method("auto", (33, 41, 3), None) == "sequential"
    assert dt_edgenet._resolve_dt_method("auto", None, keras.KerasTensor((None, 33, None, 3))) == "doubling"


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        kseg.DTEdgeNet(num_classes=1)
    with pytest.raises(ValueError, match="static"):
        kseg.DTEdgeNet(input_shape=(None, None, 3), dt_method="scan")
    with pytest.raises(ValueError, match="dt_method must be 'auto' or one of"):
        kseg.DTEdgeNet(**TINY, dt_method="fast")


@pytest.mark.slow
@pytest.mark.parametrize("dt_method", ["auto", "doubling"])
def test_any_size_is_the_static_models_function(dt_method):
    """(None, None, 3) (the default): the sequential loops run to the size at run time, the doubling
    scan's extra steps compose identities, so the any-size model computes exactly what a model
    built at each size computes."""
    kw = dict(num_classes=3, width_multiplier=1 / 16, fc_width=8, edge_channels=4, dt_method=dt_method)
    anysize = kseg.DTEdgeNet(**kw)
    assert anysize.input_shape == (None, None, None, 3)
    for hw in ((33, 41), (50, 29)):
        fixed = kseg.DTEdgeNet(input_shape=(*hw, 3), **kw)
        fixed.set_weights(anysize.get_weights())
        fixed.get_layer("fc8").bias.assign([5.0, -5.0, 0.0])  # scores with structure for the filter
        anysize.get_layer("fc8").bias.assign([5.0, -5.0, 0.0])
        x = np.random.default_rng(0).uniform(0, 255, (2, *hw, 3)).astype("float32")
        y = anysize.predict(x, verbose=0)
        assert y.shape == (2, *hw, 3)
        np.testing.assert_allclose(y, np.asarray(fixed(x)), rtol=1e-5, atol=1e-5)

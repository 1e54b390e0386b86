"""kseg.export: SavedModel signature, builtins-only TFLite in LiteRT, `.keras` round trips."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import kseg
from kseg import export

tf = pytest.importorskip("tensorflow")

H, W = 32, 48  # divisible by 16 (four poolings) and small


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _set_bn_statistics(model, seed=0):
    """Non-trivial BN moving statistics, so export must carry them (not just the conv weights)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not hasattr(layer, "moving_mean"):
            continue
        c = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, 0.5, c).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
    return model


def _build(name):
    if name == "segnet_basic":
        model = kseg.SegNetBasic(num_classes=5, input_shape=(H, W, 3), width=8)
    else:
        model = kseg.SegNet(num_classes=5, input_shape=(H, W, 3))
    return _set_bn_statistics(model)


_MODELS = {}
_SAVED = {}


def _model(name):
    if name not in _MODELS:
        _MODELS[name] = _build(name)
    return _MODELS[name]


def _saved_model(name, tmp_path_factory):
    if name not in _SAVED:
        _SAVED[name] = export.export_saved_model(_model(name), tmp_path_factory.mktemp(name) / "saved_model")
    return _SAVED[name]


# Full SegNet keeps its 29.4 M parameters at any input size: freezing + converting them takes ~20 s,
# so its TFLite / saved_model_cli / .keras checks run in the slow set (SegNet-Basic covers the same
# layers by default; tests/test_registry_models.py round-trips SegNet's .keras by default).
BOTH = ["segnet_basic", "segnet"]
BASIC_THEN_SLOW_SEGNET = ["segnet_basic", pytest.param("segnet", marks=pytest.mark.slow)]


@pytest.fixture
def model(name):
    return _model(name)


@pytest.fixture
def saved_model_dir(name, tmp_path_factory):
    return _saved_model(name, tmp_path_factory)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (3, H, W, 3)).astype("uint8")


@pytest.mark.parametrize("name", BOTH)
def test_saved_model_signature_batch_1_and_3(model, saved_model_dir, images):
    serve = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, H, W, 3]
    outputs = serve.structured_outputs
    assert outputs["labels"].dtype == tf.int32 and outputs["probabilities"].dtype == tf.float32
    for batch in (images[:1], images):
        got = serve(images=tf.constant(batch))
        logits = model.predict(batch.astype("float32"), verbose=0)
        assert got["labels"].shape == (len(batch), H, W)
        assert got["probabilities"].shape == (len(batch), H, W, 5)
        np.testing.assert_array_equal(got["labels"].numpy(), logits.argmax(-1))
        np.testing.assert_allclose(got["probabilities"].numpy(), _softmax(logits), atol=1e-5)


@pytest.mark.parametrize("name", BASIC_THEN_SLOW_SEGNET)
def test_saved_model_cli_run(model, saved_model_dir, images, tmp_path):
    np.save(tmp_path / "images.npy", images[:2])
    out = tmp_path / "out"
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "run", "--dir", saved_model_dir, "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", f"images={tmp_path / 'images.npy'}", "--outdir", str(out), "--overwrite"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logits = model.predict(images[:2].astype("float32"), verbose=0)
    labels = np.load(out / "labels.npy")
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, logits.argmax(-1))
    np.testing.assert_allclose(np.load(out / "probabilities.npy"), _softmax(logits), atol=1e-5)


@pytest.mark.parametrize("name", BASIC_THEN_SLOW_SEGNET)
def test_tflite_builtins_only_matches_keras(model, images, tmp_path):
    path = export.export_tflite(model, tmp_path / "model.tflite")
    ops = export.tflite_operators(path)
    assert ops and all(builtin for _, builtin in ops), ops
    assert not any(name.startswith("Flex") for name, _ in ops)
    x = images.astype("float32")
    logits = model.predict(x, verbose=0)
    got = export.run_tflite(path, x, num_threads=2)
    assert got.shape == logits.shape
    # Logits within 1e-4 of Keras. SegNet-Basic has no input normalisation, so its logits reach
    # ~100 and float32 rounding alone is ~1e-7 relative: scale the bound to the logits above 1.
    scale = max(1.0, float(np.abs(logits).max()) / 10.0)
    np.testing.assert_allclose(got, logits, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(_softmax(got), _softmax(logits), atol=1e-4)
    np.testing.assert_array_equal(got.argmax(-1), logits.argmax(-1))
    assert export.verify_tflite(model, path, x[:1]) <= 1e-4 * scale


@pytest.mark.parametrize("name", BASIC_THEN_SLOW_SEGNET)
def test_keras_round_trip_safe_mode(model, images, tmp_path):
    path = export.save_keras(model, tmp_path / "model.keras")
    loaded = export.load_keras(path)
    x = images.astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# ------------------------------------------------------------------------------------------------
# Failures are reported clearly


@pytest.fixture(scope="module")
def tiny():
    return kseg.SegNetBasic(num_classes=3, input_shape=(16, 16, 3), width=4)


def test_errors_name_the_bad_value(tiny, tmp_path):
    with pytest.raises(ValueError, match="format must be one of .*'onnx'"):
        export.export(tiny, tmp_path / "m", format="onnx")
    with pytest.raises(ValueError, match="quantize must be one of .*'int4'"):
        export.export_tflite(tiny, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(ValueError, match=r"must end with '\.tflite'"):
        export.export_tflite(tiny, tmp_path / "m.bin")
    with pytest.raises(ValueError, match="io_type must be one of .*'uint16'"):
        export.export_tflite(tiny, tmp_path / "m.tflite", quantize="int8", io_type="uint16")
    with pytest.raises(ValueError, match="needs quantize=\"int8\""):
        export.export_tflite(tiny, tmp_path / "m.tflite", io_type="uint8")
    with pytest.raises(ValueError, match="representative_images"):
        export.export_tflite(tiny, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(ValueError, match="no TFLite file at"):
        export.run_tflite(tmp_path / "missing.tflite", np.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="no .keras file at"):
        export.load_keras(tmp_path / "missing.keras")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        export.export_saved_model(tiny, tmp_path / "file" / "saved_model")
    with pytest.raises(ValueError, match="input_shape must be"):
        export.export_saved_model(tiny, tmp_path / "sm", input_shape=(16, 16, 1))


def test_variable_size_model_needs_input_shape_for_tflite(tmp_path):
    model = kseg.SegNetBasic(num_classes=3, input_shape=(None, None, 3), width=4)
    with pytest.raises(ValueError, match="fixed input size"):
        export.export_tflite(model, tmp_path / "m.tflite")
    path = export.export_tflite(model, tmp_path / "m.tflite", input_shape=(16, 32, 3))
    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 32, 3)).astype("float32")
    assert export.run_tflite(path, x).shape == (1, 16, 32, 3)
    with pytest.raises(ValueError, match=r"images must be \(N, 16, 32, 3\)"):
        export.run_tflite(path, np.zeros((1, 16, 16, 3)))


def test_non_builtin_ops_are_refused(tmp_path):
    """The index form (tf.nn.max_pool_with_argmax) has no builtin TFLite kernel: export must refuse
    it instead of falling back to Flex, and tflite_operators must flag a Flex file."""

    class ArgmaxPool(kseg.layers.MaxPoolingWithArgmax2D):
        def call(self, x):
            return kseg.layers.pooling.max_pool_with_argmax_indices(x)[0]

        def compute_output_shape(self, s):
            return (s[0], s[1] // 2, s[2] // 2, s[3])

    import keras

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, ArgmaxPool()(inputs))
    with pytest.raises(ValueError, match="builtin"):
        export.export_tflite(model, tmp_path / "m.tflite", input_shape=None)

    # A file that does use Flex ops is recognised as such.
    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 2], tf.float32)])
    def f(x):
        return tf.nn.max_pool_with_argmax(x, 2, 2, "SAME")[1]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    names = [(n, b) for n, b in export.tflite_operators(converter.convert())]
    assert ("FlexMaxPoolWithArgmax", False) in names


def test_tflite_odd_sizes_match_keras(tmp_path):
    """45x60 pools to 23x30, 12x15, 6x8 and unpools back: the TFLite pooling form (MAX_POOL_2D,
    mirror padding) gives Keras' masks, ties on flat regions included."""
    model = _set_bn_statistics(kseg.SegNetBasic(num_classes=4, input_shape=(45, 60, 3), width=8), seed=2)
    path = export.export_tflite(model, tmp_path / "odd.tflite")
    assert "MAX_POOL_2D" in {name for name, _ in export.tflite_operators(path)}
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 255, (2, 45, 60, 3)).astype("float32")
    x[1, :20] = 128.0  # a flat band: exact ties inside pooling windows
    logits = model.predict(x, verbose=0)
    got = export.run_tflite(path, x)
    assert got.shape == (2, 45, 60, 4)
    np.testing.assert_array_equal(got.argmax(-1)[0], logits.argmax(-1)[0])
    scale = max(1.0, float(np.abs(logits).max()) / 10.0)
    np.testing.assert_allclose(got[0], logits[0], rtol=0, atol=1e-4 * scale)
    # On the flat band a 1-ulp convolution difference may move a tied maximum: labels still agree.
    assert (got.argmax(-1)[1] == logits.argmax(-1)[1]).mean() > 0.99


def test_converter_loads_skip_the_weights_and_write_the_same_file(tiny, tmp_path, monkeypatch):
    """The converter's two Python loads of the SavedModel skip its checkpoint (memory: FCN-8s'
    conversion peaks lower) and the file is byte for byte the one the unpatched converter writes."""
    import contextlib

    from tensorflow.lite.python import lite
    from tensorflow.python.saved_model import load as saved_model_load

    seen = []
    original = saved_model_load.load

    def spy(export_dir, tags=None, options=None):
        seen.append(bool(options is not None and options.experimental_skip_checkpoint))
        return original(export_dir, tags, options)

    monkeypatch.setattr(lite, "_load", spy)
    monkeypatch.setattr(saved_model_load, "load", spy)  # the hook only replaces the stock loader
    patched = pathlib.Path(export.export_tflite(tiny, tmp_path / "patched.tflite")).read_bytes()
    assert seen and all(seen), seen  # every load the converter made skipped the weights
    assert lite._load is spy  # restored afterwards
    monkeypatch.setattr(export, "_converter_loads_skip_weights", contextlib.nullcontext)
    seen.clear()
    plain = pathlib.Path(export.export_tflite(tiny, tmp_path / "plain.tflite")).read_bytes()
    assert seen and not any(seen)
    assert patched == plain


@pytest.mark.parametrize("io_type", [None, pytest.param("float32", marks=pytest.mark.slow)])
def test_lean_calibration_writes_the_converters_own_int8_file(tiny, tmp_path, monkeypatch, io_type):
    """int8 export frees the calibrator before the MLIR quantiser runs (memory); the file is byte for
    byte what the converter's own _quantize writes, and the converter's own method is not used."""
    from tensorflow.lite.python import lite

    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    kwargs = dict(quantize="int8", representative_images=images, io_type=io_type)
    handed = []
    optimize = lite.TFLiteConverterBaseV2._optimize_tflite_model

    def spy(self, model, *args, **kw):
        out = optimize(self, model, *args, **kw)
        handed.append((type(model), len(model)))  # what the converter's frames held through quantising
        return out

    with monkeypatch.context() as patch:
        def refuse(*args, **kw):
            raise AssertionError("the converter's own _quantize ran")

        patch.setattr(lite.TFLiteConverterBaseV2, "_quantize", refuse)
        patch.setattr(lite.TFLiteConverterBaseV2, "_optimize_tflite_model", spy)
        lean = pathlib.Path(export.export_tflite(tiny, tmp_path / "lean.tflite", **kwargs)).read_bytes()
    assert handed == [(bytearray, 0)]  # the float model handed over to the quantiser and freed there
    assert lite._convert_saved_model.__name__ != "handed_over"  # restored after the export
    monkeypatch.setattr(export, "_lean_calibration", lambda converter: None)
    own = pathlib.Path(export.export_tflite(tiny, tmp_path / "own.tflite", **kwargs)).read_bytes()
    assert lean == own


def _float_flatbuffer(model, tmp_path, images):
    """The float model the int8 export hands to its calibration (the converter's C++ output)."""
    seen = []
    real = export._calibrate

    def spy(box, input_gen):
        seen.append(bytes(box[0]))
        return real(box, input_gen)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "_calibrate", spy)
        export.export_tflite(model, tmp_path / "spy.tflite", quantize="int8", representative_images=images)
    return seen[0]


def test_kseg_calibration_writes_tensorflows_statistics(tiny, tmp_path, monkeypatch):
    """int8 export calibrates with kseg's own pass (one interpreter, the statistics written into the
    flatbuffer without unpacking it), never TensorFlow's Calibrator; the min / max of every tensor
    are the ones TensorFlow's calibrator writes, and the file is byte for byte the one its path makes."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.optimize import calibrator

    images = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    float_model = _float_flatbuffer(tiny, tmp_path, images)
    tensors, buffers = export._calibration_plan(float_model)
    assert tensors and buffers  # the activations to log; the weights' buffers, handed on by offset
    gen = export._representative(images, 16, 16)
    box = [float_model]
    ours = export._calibrate(box, gen)
    assert box == []  # the float model released to the caller's quantiser
    theirs = calibrator.Calibrator(calibrator.add_intermediate_tensors(float_model), [], []).calibrate(gen)

    def stats(content):
        graph = schema.Model.GetRootAsModel(content, 0).Subgraphs(0)
        out = {}
        for i in range(graph.TensorsLength()):
            q = graph.Tensors(i).Quantization()
            if q is not None and q.MinLength():
                out[i] = (q.Min(0), q.Max(0))
        return out

    expected = stats(theirs)
    assert set(expected) == set(tensors) and stats(ours) == expected
    assert any(hi > lo for lo, hi in expected.values())
    model = schema.Model.GetRootAsModel(ours, 0)
    for j, (_, data, size) in buffers.items():  # by offset: the same bytes, where they were
        buffer = model.Buffers(j)
        assert buffer.DataLength() == 0 and buffer.Size() == size
        assert ours[buffer.Offset():buffer.Offset() + size] == float_model[data:data + size]

    def refuse(*args, **kw):
        raise AssertionError("TensorFlow's calibrator ran")

    with monkeypatch.context() as patch:
        patch.setattr(calibrator, "Calibrator", refuse)
        patch.setattr(calibrator, "add_intermediate_tensors", refuse)
        kseg_file = pathlib.Path(export.export_tflite(tiny, tmp_path / "kseg.tflite", quantize="int8",
                                                      representative_images=images)).read_bytes()
    monkeypatch.setattr(export, "_calibrate", lambda box, input_gen: None)  # TensorFlow's calibrator instead
    tf_file = pathlib.Path(export.export_tflite(tiny, tmp_path / "tf.tflite", quantize="int8",
                                                representative_images=images)).read_bytes()
    assert kseg_file == tf_file


def test_kseg_calibration_follows_tensorflows_in_place_operators(tmp_path, monkeypatch):
    """TFLite runs some operators in place (SegNet's: the preprocessing, its pooling masks), and
    TensorFlow's calibrator logging an input after its operator ran sees the output there; kseg's
    calibration, whose interpreter keeps every tensor apart, adds the output's range to such inputs,
    and the int8 file is byte for byte TensorFlow's (without that, not)."""
    model = kseg.SegNet(num_classes=3, input_shape=(16, 16, 3), width_multiplier=0.0625)
    images = np.random.default_rng(4).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    float_model = _float_flatbuffer(model, tmp_path, images)
    tensors, _ = export._calibration_plan(float_model)
    pairs = export._in_place_pairs(float_model, tensors, [(1, 16, 16, 3)])
    assert pairs and all(i in tensors and o in tensors for i, o in pairs)
    kwargs = dict(quantize="int8", representative_images=images)
    kseg_file = pathlib.Path(export.export_tflite(model, tmp_path / "kseg.tflite", **kwargs)).read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(export, "_in_place_pairs", lambda *args: [])
        apart = pathlib.Path(export.export_tflite(model, tmp_path / "apart.tflite", **kwargs)).read_bytes()
    monkeypatch.setattr(export, "_calibrate", lambda box, input_gen: None)
    tf_file = pathlib.Path(export.export_tflite(model, tmp_path / "tf.tflite", **kwargs)).read_bytes()
    assert kseg_file == tf_file
    assert apart != tf_file


def test_kseg_calibration_leaves_other_models_to_tensorflow(tiny, tmp_path):
    """Signature-keyed samples and recurrent (LSTM) operators go to TensorFlow's calibrator: `_calibrate`
    answers None and leaves the model where it was."""
    images = np.random.default_rng(3).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    float_model = _float_flatbuffer(tiny, tmp_path, images)
    box = [float_model]
    assert export._calibrate(box, lambda: iter([{"images": images[:1]}])) is None
    assert box == [float_model]
    gen = export._representative(images, 16, 16)
    from tensorflow.lite.python import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(float_model, 0)  # the activations counted another way
    expected = sum(int(np.prod(t.shape)) * (4 if t.type in (0, 2) else 8 if t.type == 4 else 1)
                   for t in tree.subgraphs[0].tensors if tree.buffers[t.buffer].data is None)
    assert export._activation_bytes(float_model) == expected > 0
    with pytest.MonkeyPatch.context() as patch:  # activations over the limit: TensorFlow's calibrator
        patch.setattr(export, "KSEG_CALIBRATION_MAX_ACTIVATIONS", expected / len(float_model) * 0.99)
        assert export._calibrate(box, gen) is None and box == [float_model]
    assert export._calibrate(box, gen) is not None and box == []

    import keras

    inputs = keras.Input((5, 3), batch_size=1)
    lstm = keras.Model(inputs, keras.layers.LSTM(4)(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(lstm)
    content = converter.convert()
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    codes = {max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())}
    if schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM in codes:
        assert export._calibration_plan(content) is None
    else:  # converted to a loop: more than one subgraph
        assert model.SubgraphsLength() > 1 and export._calibration_plan(content) is None


def test_tflite_from_a_keras_file_frees_the_model_before_converting(tiny, tmp_path, monkeypatch):
    """``export_tflite(path_to_.keras)`` (what ``kseg export`` runs) loads the model itself and frees
    it once the SavedModel is written: no Keras model is alive while TensorFlow's converter runs
    (its peak memory), and the file is byte for byte the one exported from the model in memory."""
    import gc
    import weakref

    keras_path = export.save_keras(tiny, tmp_path / "tiny.keras")
    loaded = []
    load = export.load_keras

    def spy_load(path, compile=False):
        model = load(path, compile=compile)
        loaded.extend(weakref.ref(v) for v in model.weights)  # the memory: the weights, wherever shared
        return model

    alive = []
    convert = export._convert

    def spy_convert(*args):
        gc.collect()
        alive.append([ref() is not None for ref in loaded])
        return convert(*args)

    monkeypatch.setattr(export, "load_keras", spy_load)
    monkeypatch.setattr(export, "_convert", spy_convert)
    from_file = pathlib.Path(export.export_tflite(keras_path, tmp_path / "file.tflite")).read_bytes()
    assert len(alive) == 1 and len(alive[0]) == len(tiny.weights) and not any(alive[0])  # all freed by then
    from_memory = pathlib.Path(export.export_tflite(tiny, tmp_path / "memory.tflite")).read_bytes()
    assert len(alive) == 2
    assert from_file == from_memory
    with pytest.raises(Exception, match="missing.keras"):  # a missing file names itself
        export.export_tflite(str(tmp_path / "missing.keras"), tmp_path / "x.tflite")
    saved = export.export(keras_path, tmp_path / "saved", format="saved_model")  # export() takes the path too
    assert (pathlib.Path(saved) / "saved_model.pb").is_file()

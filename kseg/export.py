"""Export a kseg model for serving: SavedModel, TFLite (LiteRT) and ``.keras``.

Every kseg model maps float RGB images in [0, 255] to per-pixel logits ``(B, H, W, C)``
(docs/DEVELOPING.md). Export adds what a deployment needs around that contract:

* :func:`export_saved_model`: a plain ``tf.Module`` SavedModel (no Keras needed to load it) whose
  ``serving_default`` signature takes ``images`` uint8 ``(None, H, W, 3)`` (any batch size) and
  returns ``labels`` int32 ``(B, H, W)`` and ``probabilities`` float32 ``(B, H, W, C)``.
* :func:`export_tflite`: a ``.tflite`` file converted from a SavedModel traced at a fixed input size,
  with **builtin TFLite ops only** (``model.export(format="litert")`` may silently enable Flex ops,
  which no plain LiteRT interpreter can run, so the converter is driven directly and the result is
  checked for Flex/custom operators). Optional post-training quantisation:
  ``"float16"``, ``"dynamic"`` (int8 weights) or ``"int8"`` (full-integer, calibrated on
  representative images, with uint8 / int8 / float32 input and output).
* :func:`run_tflite` / :func:`verify_tflite`: run the file in the LiteRT interpreter (XNNPACK,
  ``num_threads``) and compare it with the Keras model.
* :func:`save_keras` / :func:`load_keras`: ``.keras`` files loaded with ``safe_mode=True``.

Example:
    >>> import numpy as np, kseg
    >>> from kseg import export
    >>> model = kseg.SegNetBasic(num_classes=4, input_shape=(32, 32, 3), width_multiplier=0.125)
    >>> path = export.export_tflite(model, "/tmp/segnet_basic.tflite")
    >>> all(builtin for _, builtin in export.tflite_operators(path))
    True
    >>> images = np.random.randint(0, 256, (2, 32, 32, 3)).astype("float32")
    >>> export.run_tflite(path, images).shape
    (2, 32, 32, 4)
    >>> diff = export.verify_tflite(model, path, images)   # max |logit difference| vs Keras
"""

import contextlib
import copy
import functools
import math
import pathlib
import warnings

import numpy as np

__all__ = [
    "at_input_size",
    "FORMATS",
    "QUANTIZE_MODES",
    "export",
    "export_saved_model",
    "export_tflite",
    "load_keras",
    "run_tflite",
    "save_keras",
    "tflite_operators",
    "verify_tflite",
]

FORMATS = ("saved_model", "tflite", "keras")
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
_IO_TYPES = ("float32", "uint8", "int8")


# ----------------------------------------------------------------------------------------------
# helpers


def _spatial_shape(model, input_shape):
    """(H, W) to export at: `input_shape` when given, else the model's static input size."""
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) == 2:
            shape = shape + (3,)
        if len(shape) != 3 or shape[-1] != 3 or any(d is not None and int(d) < 1 for d in shape[:2]):
            raise ValueError(f"input_shape must be (height, width, 3) or (height, width), got {input_shape}")
        return shape[0], shape[1]
    model_shape = model.input_shape
    if isinstance(model_shape, list):
        if len(model_shape) != 1:
            raise ValueError(f"export supports single-input models, got inputs {model_shape}")
        model_shape = model_shape[0]
    if len(model_shape) != 4 or model_shape[-1] != 3:
        raise ValueError(f"expected a model taking (batch, H, W, 3) images, got input shape {model_shape}")
    return model_shape[1], model_shape[2]


def at_input_size(model, height, width):
    """`model` for ``(height, width)`` inputs: itself when its input takes that size, else the same
    architecture rebuilt from its config at that size with its weights copied.

    A model trained on crops (``kseg train --crop 96 128``) has a fixed input size; its layers
    (crops and interpolations computed from the tensors' shapes) take any size, so the rebuilt
    graph computes the same function at the requested size. A model whose layers cannot (fully
    connected heads over a fixed map) raises a ``ValueError`` that names the model and the size.
    """
    shape = model.input_shape
    if isinstance(shape, list) or isinstance(shape, dict) or len(shape) != 4:
        return model
    if all(s is None or s == t for s, t in zip(shape[1:3], (height, width))):
        return model
    import keras

    import kseg.layers  # noqa: F401  (registers the custom layers)

    config = model.get_config()
    inputs = [layer for layer in config.get("layers", []) if layer.get("class_name") == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError(f"cannot rebuild model {model.name!r} at {height}x{width}: expected one image input")
    batch_shape = list(inputs[0]["config"]["batch_shape"])
    inputs[0]["config"]["batch_shape"] = [batch_shape[0], height, width, batch_shape[-1]]
    try:
        clone = model.__class__.from_config(config)
        clone.set_weights(model.get_weights())
    except Exception as err:  # a layer that bakes its input size in
        raise ValueError(
            f"model {model.name!r} was built for {tuple(shape[1:3])} inputs and cannot be rebuilt at "
            f"{height}x{width} ({type(err).__name__}: {err})"
        ) from err
    return clone


def _check_path(path, suffix=None):
    if path is None or str(path) == "":
        raise ValueError(f"path must be a file or directory name, got {path!r}")
    path = pathlib.Path(path)
    parent = path.parent if str(path.parent) else pathlib.Path(".")
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is not a directory")
    if suffix is not None and path.suffix != suffix:
        raise ValueError(f"path must end with {suffix!r}, got {str(path)!r}")
    parent.mkdir(parents=True, exist_ok=True)
    return path


def _tf():
    import tensorflow as tf

    return tf


# ----------------------------------------------------------------------------------------------
# SavedModel


class _SegmentationServing:
    """Builds the tf.Module whose `serving_default` wraps the Keras model."""

    @staticmethod
    def build(model, height, width):
        tf = _tf()

        class SegmentationModule(tf.Module):
            def __init__(self, keras_model):
                super().__init__(name="kseg_serving")
                # Track the backend tf.Variables themselves (as keras.export does): tracking only the
                # Keras model leaves TF1-style loaders (saved_model_cli, TF Serving) unable to find them.
                # The model itself is kept out of the object graph, or every weight is written twice
                # (once for the Keras variable, once for its tf.Variable): `serve` reaches it by closure.
                self.variables_ = [getattr(v, "value", v) for v in keras_model.variables]

            @tf.function(
                input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="images")]
            )
            def serve(self, images):
                logits = model(tf.cast(images, tf.float32), training=False)  # closure, untracked
                logits = tf.cast(logits, tf.float32)
                return {
                    "labels": tf.argmax(logits, axis=-1, output_type=tf.int32),
                    "probabilities": tf.nn.softmax(logits, axis=-1),
                }

        return SegmentationModule(model)


def export_saved_model(model, path, input_shape=None):
    """Write a SavedModel with a uint8-in, labels/probabilities-out ``serving_default`` signature.

    The SavedModel is a plain ``tf.Module``: load it with ``tf.saved_model.load(path)`` (no Keras,
    no kseg import needed), TF Serving, or ``saved_model_cli run``. Its graph has stock TensorFlow
    ops only: a domain transform is written as its doubling scan (the same function; the sequential
    method is an XLA cluster, which TF Serving runs only with ``--xla_cpu_compilation_enabled``).

    Signature ``serving_default``:
        inputs: ``images`` uint8 ``(None, H, W, 3)``, RGB in [0, 255], any batch size.
        outputs: ``labels`` int32 ``(B, H, W)`` (argmax of the logits) and ``probabilities``
        float32 ``(B, H, W, C)`` (softmax of the logits).

    Args:
        model: a kseg (Keras) model taking float RGB in [0, 255] and returning logits.
        path: output directory.
        input_shape: ``(H, W, 3)`` to fix the signature's size; default: the model's input size
            (``None`` dimensions stay variable).

    Returns:
        The path, as a string.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            f"kseg.export.export_saved_model traces the model with TensorFlow and needs KERAS_BACKEND=tensorflow "
            f"(this is {keras.backend.backend()!r}). On {keras.backend.backend()}, use Keras' own "
            "model.export(path, format='tf_saved_model') (its 'serve' endpoint returns the logits: add the "
            "softmax / argmax yourself), or save the model (.keras) and run "
            "`KERAS_BACKEND=tensorflow kseg export MODEL.keras --out DIR` for kseg's uint8 labels/probabilities "
            "signature.")
    tf = _tf()
    path = _check_path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"SavedModel path {str(path)!r} exists and is not a directory")
    height, width = _spatial_shape(model, input_shape)
    if height is not None and width is not None:
        model = at_input_size(model, height, width)
    module = _SegmentationServing.build(_for_serving(model), height, width)
    serve = module.serve.get_concrete_function()
    from kseg.io import atomic_dir

    with atomic_dir(path) as tmp:  # written aside, then swapped in: no half SavedModel
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
    return str(path)


# ----------------------------------------------------------------------------------------------
# TFLite


def tflite_operators(path_or_bytes):
    """Operator codes of a ``.tflite`` flatbuffer: a list of ``(name, is_builtin)``.

    Custom operators (Flex ops are custom operators named ``Flex...``) come back with their
    custom code and ``is_builtin=False``.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    if isinstance(path_or_bytes, (bytes, bytearray)):
        buf = bytes(path_or_bytes)
    else:
        buf = pathlib.Path(path_or_bytes).read_bytes()
    tfl = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for i in range(tfl.OperatorCodesLength()):
        oc = tfl.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        if code == schema.BuiltinOperator.CUSTOM:
            custom = oc.CustomCode()
            ops.append((custom.decode() if custom else "CUSTOM", False))
        else:
            ops.append((names.get(code, str(code)), True))
    return ops


def _representative(images, height, width, limit=200):
    """A representative_dataset generator over float32 (1, H, W, 3) images in [0, 255]."""
    tf = _tf()
    if images is None:
        raise ValueError(
            'quantize="int8" needs representative_images: a few dozen training images '
            "(array (N, H, W, 3), an iterable of images, a tf.data.Dataset or an image folder)"
        )
    if isinstance(images, (str, pathlib.Path)):
        images = _image_files(images, limit)
        for _ in _iterate_images(images):  # a bad file is named here, not blamed on the converter
            pass

    def gen():
        count = 0
        for item in _iterate_images(images):
            x = np.asarray(item, dtype=np.float32)
            if x.ndim == 3:
                x = x[None]
            for one in x:
                if one.shape[:2] != (height, width):
                    one = tf.image.resize(one, (height, width)).numpy()
                yield [one[None].astype(np.float32)]
                count += 1
                if count >= limit:
                    return

    return gen


def _image_files(folder, limit):
    """Up to `limit` image files of `folder`, evenly spaced over its sorted listing (a video
    dataset's first files are all one sequence)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ValueError(f"representative_images: {str(folder)!r} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise ValueError(f"representative_images: no .png/.jpg images in {str(folder)!r}")
    return files[:: max(1, len(files) // limit)][:limit]


def _iterate_images(images):
    tf = _tf()
    if isinstance(images, list) and images and isinstance(images[0], pathlib.Path):
        from PIL import Image

        for f in images:
            try:
                with Image.open(f) as im:
                    pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
            except (OSError, ValueError, SyntaxError) as err:  # PIL: UnidentifiedImageError, truncated data
                raise ValueError(f"representative image {f}: cannot read it ({err})") from None
            yield pixels
    elif isinstance(images, tf.data.Dataset):
        for item in images.as_numpy_iterator():
            yield item[0] if isinstance(item, (tuple, list)) else item
    elif isinstance(images, np.ndarray):
        yield from (images if images.ndim == 4 else images[None])
    else:
        for item in images:
            yield item[0] if isinstance(item, (tuple, list)) else item


def export_tflite(
    model,
    path,
    quantize="none",
    representative_images=None,
    input_shape=None,
    io_type=None,
    num_calibration=100,
):
    """Convert a model to a builtins-only ``.tflite`` file (never Flex ops).

    The model is traced at batch 1 and a fixed ``(H, W)``. The file's input is the model's:
    RGB images in [0, 255] ``(1, H, W, 3)``; its output the logits ``(1, H, W, C)``.

    Args:
        model: a kseg (Keras) model, or the path of a ``.keras`` file: then it is loaded here and
            released as soon as the SavedModel the converter reads is written, so the conversion's
            peak memory does not hold the Keras model too (``kseg export`` passes its path:
            FCN-8s' float conversion peaks at 3.39 GB instead of 3.85, ``benchmarks/peak_memory.py
            --from-file``; int8: 3.95 GB, with kseg's own calibration, :func:`_calibrate`).
        path: output file, ending in ``.tflite``.
        quantize: ``"none"`` (float32), ``"float16"`` (float16 weights), ``"dynamic"``
            (int8 weights, float activations) or ``"int8"`` (full-integer weights and
            activations, calibrated on `representative_images`).
        representative_images: for ``"int8"``: images in [0, 255] drawn from the training data
            (array ``(N, H, W, 3)``, an iterable of images / ``(image, mask)`` pairs, a
            ``tf.data.Dataset``, or a folder of .png/.jpg such as CamVid's ``train/``); resized
            to the export size when needed; the first `num_calibration` are used.
        input_shape: ``(H, W, 3)`` to export at; required when the model's size is variable.
        io_type: input/output tensor type for ``"int8"``: ``"uint8"`` (default: images go in
            as they come from a camera), ``"int8"`` or ``"float32"``. Other modes keep float32.
        num_calibration: at most this many representative images are used.

    Returns:
        The path, as a string.

    Raises:
        ValueError: unknown `quantize` / `io_type`, a bad path, a variable input size, or a file
            that came out with non-builtin (Flex / custom) operators.
    """
    tf = _tf()
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if io_type is None:
        io_type = "uint8" if quantize == "int8" else "float32"
    if io_type not in _IO_TYPES:
        raise ValueError(f"io_type must be one of {_IO_TYPES}, got {io_type!r}")
    if io_type != "float32" and quantize != "int8":
        raise ValueError(f'io_type={io_type!r} needs quantize="int8", got quantize={quantize!r}')
    path = _check_path(path, suffix=".tflite")
    release = isinstance(model, (str, pathlib.PurePath))
    if release:
        model = load_keras(model)
    height, width = _spatial_shape(model, input_shape)
    if height is None or width is None:
        raise ValueError(
            f"TFLite export needs a fixed input size; the model's is {(height, width)}: pass input_shape=(H, W, 3)"
        )
    model = at_input_size(model, height, width)

    converted = _for_tflite(model)
    # Convert from a SavedModel written beside the output, not from a concrete function frozen in
    # Python: convert_variables_to_constants_v2 copies every weight several times over (numpy,
    # TensorProto, GraphDef, the re-imported graph; the converter then freezes it once more), which
    # took FCN-8s (0.5 GB of weights, 360x480) past 10 GB in the float conversion alone and to 21 GB
    # in benchmarks/matrix.py's export process. The SavedModel importer freezes the (read-only)
    # variables into constants in C++ from the checkpoint: builtin ops only, no VAR_HANDLE left,
    # FCN-8s' conversion peaks at ~5 GB (benchmarks/peak_memory.py).
    import shutil
    import tempfile

    module = _TFLiteServing.build(converted, height, width)
    from kseg.io import TMP_PREFIX

    # on the output's disk, not a tmpfs; named as kseg.io's temporaries, so a killed export's folder is
    # removed by the next successful write of `path`
    workdir = tempfile.mkdtemp(prefix=TMP_PREFIX, suffix=f"-{path.name}", dir=path.parent)
    try:
        tf.saved_model.save(module, workdir, signatures={"serving_default": module.serve.get_concrete_function()})
        del module
        model_name, crfs = model.name, _crfs_without_builtins(model)  # all _convert needs of it
        del model
        if release:  # the converter reads the SavedModel only: free the Keras model (and its clones)
            del converted
            import gc

            gc.collect()
        with _converter_loads_skip_weights():
            converter = tf.lite.TFLiteConverter.from_saved_model(workdir)
            _configure_converter(converter, quantize, representative_images, height, width, num_calibration,
                                 io_type)
            lean = _lean_calibration(converter)
            with _float_model_handed_over(quantize == "int8" and lean):
                content = _convert(converter, model_name, crfs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    bad = [name for name, builtin in tflite_operators(content) if not builtin]
    if bad:
        raise ValueError(f"TFLite conversion produced non-builtin operators {bad}; kseg exports builtins only")
    from kseg.io import atomic_write_bytes

    atomic_write_bytes(path, content)
    return str(path)


class _TFLiteServing:
    """The tf.Module a ``.tflite`` file is converted from: float images ``(1, H, W, 3)`` in,
    ``logits`` float32 out; the model's backend variables tracked, the model reached by closure
    (as in :class:`_SegmentationServing`, so each weight is saved once)."""

    @staticmethod
    def build(model, height, width):
        tf = _tf()

        class TFLiteModule(tf.Module):
            def __init__(self, keras_model):
                super().__init__(name="kseg_tflite")
                self.variables_ = [getattr(v, "value", v) for v in keras_model.variables]

            @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="images")])
            def serve(self, images):
                return {"logits": tf.cast(model(images, training=False), tf.float32)}

        return TFLiteModule(model)


def _configure_converter(converter, quantize, representative_images, height, width, num_calibration, io_type):
    tf = _tf()
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(
            representative_images, height, width, limit=num_calibration
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)


@contextlib.contextmanager
def _wrapped(module, name, wrap):
    """``module.name`` replaced by ``wrap(original)`` for the length of the block, then restored: how
    kseg hooks a private function of TensorFlow's converter (also ``benchmarks/peak_memory.py``).
    Yields the original; where the module has no such function (another TensorFlow), nothing is
    replaced and it yields None. Module globals: two conversions in two threads of one process at
    once would see each other's hooks."""
    original = getattr(module, name, None)
    if original is None:
        yield None
        return
    setattr(module, name, wrap(original))
    try:
        yield original
    finally:
        setattr(module, name, original)


def _converter_loads_skip_weights():
    """TensorFlow 2.21's converter loads the SavedModel in Python twice, for its signatures
    (``from_saved_model``) and for debug info (``convert``), restoring every variable each time,
    before its C++ importer reads the checkpoint and freezes it (the only copy the file is made
    from). Those two Python copies go to TensorFlow's allocator pool, which keeps them, out of
    reach of the MLIR conversion that follows. This makes the two loads skip the checkpoint
    (``LoadOptions(experimental_skip_checkpoint=True)``): same file, byte for byte (tested); FCN-8s
    at 360x480 converts in less memory (``benchmarks/peak_memory.py``). Without the private hook
    (another TensorFlow), or where someone else patched it, the converter runs as it is."""
    try:
        from tensorflow.lite.python import lite
        from tensorflow.python.saved_model import load as saved_model_load
    except ImportError:
        return contextlib.nullcontext()
    if getattr(lite, "_load", None) is not saved_model_load.load:
        return contextlib.nullcontext()

    def wrap(original):
        def load_without_weights(export_dir, tags=None, options=None):
            options = copy.copy(options) if options is not None else saved_model_load.load_options.LoadOptions()
            options.experimental_skip_checkpoint = True  # on a copy: a caller's options stay as they were
            return original(export_dir, tags, options)

        return load_without_weights

    return _wrapped(lite, "_load", wrap)


def _float_model_handed_over(active):
    """While ``active`` (a full-integer export), the converter's float flatbuffer comes back from its
    C++ conversion in a ``bytearray``, which :func:`_lean_calibration`'s quantiser empties once it
    has its own copy: TensorFlow 2.21's callers (``_convert_from_saved_model``,
    ``_optimize_tflite_model``) otherwise keep that model (FCN-8s: 0.5 GB) referenced through the
    calibration and the quantiser, the peak of the export (``benchmarks/peak_memory.py --phases``).
    Without the private function (another TensorFlow) nothing changes."""
    try:
        from tensorflow.lite.python import lite
    except ImportError:
        active = False
    if not active:
        return contextlib.nullcontext()

    def wrap(original):
        def handed_over(*args, **kwargs):
            result = original(*args, **kwargs)
            return bytearray(result) if isinstance(result, bytes) else result

        return handed_over

    return _wrapped(lite, "_convert_saved_model", wrap)


def _lean_calibration(converter):
    """Full-integer conversion calibrates with kseg's own pass and frees it before quantising.

    TensorFlow 2.21's ``_quantize`` keeps the float model with its added intermediate tensors and
    the calibrator (its own copy of that model and an interpreter with every activation) alive
    while the MLIR quantiser runs. This makes the same quantiser call with the same arguments,
    the statistics from :func:`_calibrate` (TensorFlow's calibrator where that does not apply),
    dropping each object once the next has what it needs, so the file is byte for byte the
    same (tested) and FCN-8s' int8 export peaks lower (``benchmarks/peak_memory.py``). Any case
    it does not cover (calibrate-only, 16-bit activations, the old quantiser, custom ops, another
    TensorFlow) runs the converter's own method. Returns True when it is installed (then
    :func:`_float_model_handed_over` may hand it the float model)."""
    original = getattr(converter, "_quantize", None)
    try:
        from tensorflow.lite.python import lite
        from tensorflow.lite.python.optimize import calibrator
    except ImportError:
        return False
    if original is None or not hasattr(lite, "_mlir_quantize") or not hasattr(lite, "RepresentativeDataset"):
        return False
    tf = _tf()

    def quantize(result, input_type, output_type, activations_type, bias_type, allow_float,
                 enable_variable_quantization, debug_options):
        if isinstance(result, bytearray):  # handed over (_float_model_handed_over): the only copy left is ours
            float_model = bytes(result)
            result.clear()
            result = float_model
            del float_model
        if (getattr(converter, "_experimental_calibrate_only", True) or not converter.experimental_new_quantizer
                or activations_type == tf.int16 or converter.target_spec._experimental_custom_op_registerers):
            return original(result, input_type, output_type, activations_type, bias_type, allow_float,
                            enable_variable_quantization, debug_options)
        if not isinstance(converter.representative_dataset, lite.RepresentativeDataset):
            converter.representative_dataset = lite.RepresentativeDataset(converter.representative_dataset)
        box = [result]
        del result  # handed over: no frame but `box` holds the float model any more
        calibrated = _calibrate(box, converter.representative_dataset.input_gen)
        if calibrated is None:  # a model kseg's calibration does not cover: TensorFlow's calibrator
            model = calibrator.add_intermediate_tensors(box.pop())
            calibrate = calibrator.Calibrator(model, [], [])
            del model
            calibrated = calibrate.calibrate(converter.representative_dataset.input_gen)
            del calibrate  # its model copy and interpreter, before the quantiser starts
        _return_freed_memory()
        return lite._mlir_quantize(  # noqa: SLF001
            calibrated,
            converter._experimental_disable_per_channel,  # noqa: SLF001
            input_data_type=input_type,
            output_data_type=output_type,
            enable_variable_quantization=enable_variable_quantization,
            disable_per_channel_for_dense_layers=(
                converter._experimental_disable_per_channel_quantization_for_dense_layers),  # noqa: SLF001
            debug_options_str=debug_options.SerializeToString(),
        )

    converter._quantize = quantize  # noqa: SLF001
    return True


#: Operators for which TensorFlow's calibrator adds intermediate tensors or logs inside the kernel
#: (the LSTM and RNN family): models with them are calibrated by TensorFlow's calibrator.
_RECURRENT_OPS = ("LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "RNN",
                  "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF")
#: kseg's calibration keeps every activation of the model at once, TensorFlow's calibrator four to five
#: copies of the model (and the activations live at one time): kseg's is used while the activations
#: come to at most this many times the model's bytes (FCN-8s: weights dominate; SegNet: activations do).
KSEG_CALIBRATION_MAX_ACTIVATIONS = 4
#: vtable slots (byte offsets) of ``Tensor.quantization``, ``Model.buffers`` and ``Buffer.data`` in
#: the TFLite schema (fields 4, 4 and 0).
_TENSOR_QUANTIZATION_SLOT, _MODEL_BUFFERS_SLOT, _BUFFER_DATA_SLOT = 12, 12, 4


def _calibration_plan(content):
    """Where kseg's calibration writes into the float model `content`: ``(tensors, buffers)``, the
    float32 activations TensorFlow's calibrator would log, each with the position of its
    ``quantization`` field, and the buffers with data, each ``(position of its entry in
    Model.buffers, position of its data, size)``; None where kseg's calibration does not apply
    (more than one subgraph, recurrent or custom operators, variable tensors, buffers already stored
    by offset, a tensor without a quantization table to point elsewhere)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    if model.SubgraphsLength() != 1:
        return None
    if any(not builtin or name in _RECURRENT_OPS for name, builtin in tflite_operators(content)):
        return None
    entries = model._tab.Vector(model._tab.Offset(_MODEL_BUFFERS_SLOT))  # noqa: SLF001
    buffers = {}
    for j in range(model.BuffersLength()):
        buffer = model.Buffers(j)
        if buffer.Offset() > 1:
            return None
        if buffer.DataLength():
            data = buffer._tab.Vector(buffer._tab.Offset(_BUFFER_DATA_SLOT))  # noqa: SLF001
            buffers[j] = (entries + 4 * j, data, buffer.DataLength())
    graph = model.Subgraphs(0)
    if any(graph.Operators(k).IntermediatesLength() for k in range(graph.OperatorsLength())):
        return None
    indices = {i for ins, outs in _operator_tensors(graph) for i in ins + outs}
    tensors = {}
    for i in sorted(indices - {-1}):  # as TensorFlow's GetLoggableTensorIndices: float32, no constant data
        tensor = graph.Tensors(i)
        if tensor.IsVariable():
            return None
        if tensor.Type() != schema.TensorType.FLOAT32 or tensor.Buffer() in buffers:
            continue
        slot = tensor._tab.Offset(_TENSOR_QUANTIZATION_SLOT)  # noqa: SLF001
        if not slot:
            return None
        tensors[i] = tensor._tab.Pos + slot  # noqa: SLF001
    return (tensors, buffers) if tensors else None


def _calibrate(box, input_gen):
    """kseg's calibration of a float TFLite model (``box = [content]``, emptied here) on the samples of
    `input_gen`; the calibrated model (bytes), or None (`box` left full) where it does not apply.

    TensorFlow 2.21's ``Calibrator`` copies the model twice over (``add_intermediate_tensors``, its
    ``ModelT`` object tree) and packs a third copy to write the statistics in: FCN-8s' full-integer
    export (0.5 GB of weights) peaked at 5.06 GB, 1.25x its memory budget, most of it in that C++. This
    does what it does with an interpreter on the model as it is: the interpreter of TensorFlow's own
    TFLite runtime, its kernels without delegates (the calibrator's, so the same values), every
    tensor kept (``experimental_preserve_all_tensors``); the same tensors logged (those TensorFlow's
    calibrator logs: the operators' float32 inputs and outputs without constant data); the running
    min / max over every sample, NaNs skipped, and an input that TFLite overwrites in place given its
    output's range too, as the calibrator logs it (:func:`_in_place_pairs`). Keeping every tensor
    costs the model's activations at once: kseg's way is taken while they come to at most
    :data:`KSEG_CALIBRATION_MAX_ACTIVATIONS` times the model's bytes. The statistics go into the
    flatbuffer without unpacking it: a ``QuantizationParameters`` table per tensor appended after the model and the
    tensor's ``quantization`` field pointed at it (flatbuffer offsets are relative; the empty tables
    the converter wrote stay behind unreferenced). The same way each buffer's table is replaced by
    one that gives its data by ``offset`` and ``size`` (the schema's form for models past 2 GB,
    here pointing at the data where it is): TensorFlow's quantiser unpacks the whole model into an
    object tree it does not use, and buffers given by offset are not copied into it (FCN-8s: 0.5 GB
    less). The quantiser writes the same file either way (tests/test_export.py compares them).
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    tf = _tf()
    content = box[0]
    plan = _calibration_plan(content) if hasattr(tf.lite, "Interpreter") else None
    if plan is None or _activation_bytes(content) > KSEG_CALIBRATION_MAX_ACTIVATIONS * len(content):
        return None
    tensors, buffers = plan
    interpreter = _calibrator_interpreter(content, experimental_preserve_all_tensors=True)
    inputs = [d["index"] for d in interpreter.get_input_details()]
    # TensorFlow's MinMax starts from FLT_MAX and numeric_limits<float>::min() (FLT_MIN, the smallest
    # positive float): a tensor never above 0 gets max 1.2e-38, as there
    low = dict.fromkeys(tensors, float(np.finfo(np.float32).max))
    high = dict.fromkeys(tensors, float(np.finfo(np.float32).tiny))
    seen = set()
    shapes = None
    for sample in input_gen():
        if not isinstance(sample, list) or len(sample) != len(inputs):
            return None  # signature-keyed samples: TensorFlow's calibrator
        sample = [np.asarray(x) for x in sample]
        if shapes != [x.shape for x in sample]:  # as the calibrator: the inputs sized to the samples
            shapes = [x.shape for x in sample]
            for index, shape in zip(inputs, shapes):
                interpreter.resize_tensor_input(index, shape)
            interpreter.allocate_tensors()
        for index, x in zip(inputs, sample):
            interpreter.set_tensor(index, x)
        interpreter.invoke()
        for i in tensors:
            values = interpreter.tensor(i)()  # a view: no copy of the activation
            lo = float(np.fmin.reduce(values, axis=None)) if values.size else math.nan  # NaNs skipped
            if not math.isnan(lo):
                low[i], high[i] = min(low[i], lo), max(high[i], float(np.fmax.reduce(values, axis=None)))
                seen.add(i)
            del values
    del interpreter
    if len(seen) != len(tensors):  # no sample, or a tensor empty or all NaN: TensorFlow's calibrator says what
        return None
    own = dict(low), dict(high)  # each tensor's own values, before any in-place range is added
    for i, o in _in_place_pairs(content, tensors, shapes):
        # TensorFlow's calibrator logs an operator's inputs again after it ran: an input the operator
        # overwrote in place (TFLite shares its memory with the output) gets the output's range too
        low[i], high[i] = min(low[i], own[0][o]), max(high[i], own[1][o])

    builder = flatbuffers.Builder(48 * len(tensors) + 24 * len(buffers))
    patches = []  # (position of a uoffset field in `content`, the builder's offset of the table it gets)
    for i, field in tensors.items():
        vectors = []
        for value in (low[i], high[i]):
            schema.QuantizationParametersStartMinVector(builder, 1)
            builder.PrependFloat32(value)
            vectors.append(builder.EndVector())
        schema.QuantizationParametersStart(builder)
        schema.QuantizationParametersAddMin(builder, vectors[0])
        schema.QuantizationParametersAddMax(builder, vectors[1])
        patches.append((field, schema.QuantizationParametersEnd(builder)))
    for entry, data, size in buffers.values():
        schema.BufferStart(builder)
        schema.BufferAddOffset(builder, data)  # from the start of the file
        schema.BufferAddSize(builder, size)
        patches.append((entry, schema.BufferEnd(builder)))
    calibrated = _with_tables_appended(content, bytes(builder.Bytes[builder.Head():]), patches)
    del content
    box.clear()
    check = schema.Model.GetRootAsModel(calibrated, 0)
    for i in tensors:
        q = check.Subgraphs(0).Tensors(i).Quantization()
        if (q.Min(0), q.Max(0)) != (np.float32(low[i]), np.float32(high[i])):
            raise AssertionError(f"kseg's calibration wrote tensor {i}'s statistics wrongly")  # a bug of kseg's
    for j, (_, data, size) in buffers.items():
        if (check.Buffers(j).Offset(), check.Buffers(j).Size(), check.Buffers(j).DataLength()) != (data, size, 0):
            raise AssertionError(f"kseg's calibration wrote buffer {j} wrongly")
    return calibrated


def _activation_bytes(content):
    """Bytes of every tensor of the TFLite model `content` without constant data, at its static shapes:
    what an interpreter that keeps every tensor holds besides the model."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    sizes = {getattr(schema.TensorType, name): np.dtype(name.lower()).itemsize
             for name in ("FLOAT32", "FLOAT16", "INT32", "INT64", "INT16", "INT8", "UINT8", "BOOL", "FLOAT64")}
    total = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            if model.Buffers(tensor.Buffer()).DataLength() == 0:
                shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else np.ones(0, np.int64)
                total += int(np.prod(np.maximum(shape, 1), dtype=np.int64)) * sizes.get(tensor.Type(), 4)
    return total


def _in_place_pairs(content, tensors, shapes):
    """``(input, output)`` pairs of the logged `tensors` that an operator of the model `content` runs in
    place: TFLite's memory planner gives the output the input's memory (in an interpreter that does
    not keep every tensor, as TensorFlow's calibrator's), so both have the same address there; inputs
    sized to `shapes`."""
    from tensorflow.lite.python import schema_py_generated as schema

    interpreter = _calibrator_interpreter(content)
    for detail, shape in zip(interpreter.get_input_details(), shapes):
        interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    address = {}
    for i in tensors:
        values = interpreter.tensor(i)()
        address[i] = values.__array_interface__["data"][0] if values.size else None
        del values
    del interpreter
    graph = schema.Model.GetRootAsModel(content, 0).Subgraphs(0)
    return [(i, o) for ins, outs in _operator_tensors(graph) for i in ins if i in tensors
            for o in outs if o in tensors and o != i and address[i] is not None and address[i] == address[o]]


def _operator_tensors(graph):
    """``(inputs, outputs)`` tensor index lists of each operator of a TFLite subgraph, in execution order."""
    ops = (graph.Operators(k) for k in range(graph.OperatorsLength()))
    return [(op.InputsAsNumpy().tolist() if op.InputsLength() else [],
             op.OutputsAsNumpy().tolist() if op.OutputsLength() else []) for op in ops]


def _calibrator_interpreter(content, **options):
    """A ``tf.lite.Interpreter`` as TensorFlow's calibrator runs the model: TensorFlow's own TFLite
    kernels, no delegates, and 4 threads (the calibrator leaves the count unset, which TFLite's Eigen
    kernels take as 4, eigen_support.cc; their sums depend on the split)."""
    tf = _tf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation: TensorFlow's kernels are the point
        return tf.lite.Interpreter(
            model_content=content, num_threads=4, **options,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def _with_tables_appended(content, tail, patches):
    """`content` with `tail` (a flatbuffers builder's tables, no root: every offset in it relative)
    appended, and each ``(field, table)`` of `patches` done: the uoffset at position `field` pointed at
    the table the builder placed at `table` (counted from its end). One copy of `content`."""
    import struct

    # the builder aligns relative to its end: the tail ends on an 8-byte boundary of the new file
    pad = -(len(content) + len(tail)) % 8
    end = len(content) + pad + len(tail)
    view, parts, done = memoryview(content), [], 0
    for field, table in sorted(patches):
        parts += [view[done:field], struct.pack("<I", end - table - field)]
        done = field + 4
    parts += [view[done:], bytes(pad), tail]
    joined = b"".join(parts)
    del parts
    view.release()
    return joined


def _return_freed_memory():
    """Hand the heap the calibration freed back to the system (glibc's ``malloc_trim``) before the
    quantiser's peak: FCN-8s' int8 export ~0.2 GB lower. Elsewhere (no glibc) nothing."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _crfs_without_builtins(model):
    """Names of `model`'s CRF layers built with ``tflite_builtins=False`` (ops TFLite has no builtin for)."""
    return [layer.name for layer in getattr(model, "layers", [])
            if type(layer).__name__ in ("DenseCRF", "CRFRNN") and not getattr(layer, "tflite_builtins", True)]


def _convert(converter, name, crfs):
    """``converter.convert()``, its failures named in kseg's terms (`name`: the model's; `crfs`:
    :func:`_crfs_without_builtins` of it)."""
    try:
        with warnings.catch_warnings():
            # int8 I/O: the converter asks for input statistics it then takes from calibration.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            content = converter.convert()
    except Exception as err:  # ConverterError: an op without a builtin kernel, most often
        if crfs:
            raise ValueError(
                f"TFLite conversion of {name!r} failed: its CRF layer(s) {crfs} were built "
                "with tflite_builtins=False, whose permutohedral lattice uses ops TFLite has no builtin kernel for. "
                "Build the model with tflite_builtins=True (e.g. kseg.CRFasRNN(..., tflite_builtins=True), "
                "DeepLabV1(crf=True, crf_params={'tflite_builtins': True}); same weights, "
                "kseg.utils.transfer_weights copies them) and export that, or export a SavedModel instead. "
                f"Converter's message (start): {str(err).strip()[:300]}"
            ) from err
        raise ValueError(
            f"TFLite conversion of {name!r} with builtin ops only failed "
            f"(kseg never falls back to Flex ops): {str(err).strip()[:2000]}"
        ) from err
    return content


@functools.cache
def _max_pool_mask_for_tflite():
    """The mask form of max pooling, written for TFLite: the pooled map is a builtin MAX_POOL_2D
    and the mask compares each window position with it (first maximum wins, as in the layer).

    Same values as :class:`kseg.layers.MaxPoolingWithArgmax2D` (a max is a max; the tie-break is
    the same), but the comparison is between tensors of one quantisation scale (MAX_POOL_2D and
    STRIDED_SLICE keep their input's scale), so full-integer ("int8") files keep exact masks. The
    training form builds the pooled map from ``where`` sums instead, to route gradients to the
    first maximum; in int8 those sums are requantised and the masks break.
    """
    from keras import ops

    from kseg.layers.pooling import MaxPoolingWithArgmax2D, _interleave

    class MaxPoolingWithArgmax2DForTFLite(MaxPoolingWithArgmax2D):
        def call(self, inputs):
            k = self.pool_size
            h, w = inputs.shape[1], inputs.shape[2]
            pooled = ops.max_pool(inputs, k, k, padding="same")
            x = inputs
            if (-h) % k or (-w) % k:
                # Mirror, not -inf: a -inf would set the int8 scale of everything sharing this
                # tensor's scale. Mirrored cells copy earlier cells of their own window, so the
                # first maximum is always a real one (and the crop below drops them anyway).
                x = ops.pad(inputs, [[0, 0], [0, (-h) % k], [0, (-w) % k], [0, 0]], mode="symmetric")
            taken, firsts = None, []
            for win in (x[:, i::k, j::k, :] for i in range(k) for j in range(k)):
                hit = ops.equal(win, pooled)
                if taken is None:
                    taken = hit
                else:
                    hit = ops.logical_and(hit, ops.logical_not(taken))
                    taken = ops.logical_or(taken, hit)
                firsts.append(ops.cast(hit, inputs.dtype))
            rows = [_interleave(firsts[i * k:(i + 1) * k], k, axis=2) for i in range(k)]
            return pooled, _interleave(rows, k, axis=1)[:, :h, :w, :]

    return MaxPoolingWithArgmax2DForTFLite


@functools.cache
def _lrn_for_tflite():
    """Caffe's cross-channel LRN written as TFLite's builtin ``LOCAL_RESPONSE_NORMALIZATION``.

    The same function as :class:`kseg.layers.LocalResponseNormalization` (TF's definition with
    ``depth_radius = local_size // 2``, ``bias = k`` and ``alpha = alpha / local_size``: Caffe
    divides alpha by the window size, TF does not; channels beyond the edges count as zeros in
    both). The layer's own form (SQUARE, a sum of slices, POW, DIV) has no int8 kernel for POW, so
    in a full-integer file the quantiser wraps POW in DEQUANTIZE/QUANTIZE and gives the divisor
    (values in [1, ~3]) the *output's* scale (~0.5 for RGB in [0, 255]): the divisor keeps ~4
    levels and the LRN output is off by ~10 quantisation steps rms, which costs SegNet-Basic ~5
    mIoU points. As one builtin op the LRN runs in float between a DEQUANTIZE and a QUANTIZE with
    its own calibrated output scale, and is exact to rounding.
    """
    from kseg.layers.normalization import LocalResponseNormalization

    class LocalResponseNormalizationForTFLite(LocalResponseNormalization):
        def call(self, x):
            if len(x.shape) != 4:
                return super().call(x)
            tf = _tf()
            return tf.nn.local_response_normalization(
                x, depth_radius=self.local_size // 2, bias=self.k, alpha=self.alpha / self.local_size,
                beta=self.beta,
            )

    return LocalResponseNormalizationForTFLite


def _doubling_domain_transform(layer):
    """A domain transform as the doubling prefix scan (same function, no control flow, builtin ops);
    the other methods' loops (an XLA cluster on TensorFlow) are for training speed."""
    if layer.method == "doubling":
        return layer
    return type(layer).from_config({**layer.get_config(), "method": "doubling"})


def _for_tflite(model):
    """`model` with layers swapped for their TFLite forms (same function, weights shared):
    mask-form pooling (exact masks in int8), Caffe LRN (one builtin op, see `_lrn_for_tflite`) and
    the domain transform as its doubling scan."""
    from kseg.layers.domain_transform import DomainTransform
    from kseg.layers.normalization import LocalResponseNormalization
    from kseg.layers.pooling import MaxPoolingWithArgmax2D

    def form_of(make_class):
        return lambda layer: make_class().from_config(layer.get_config())

    return _swapped(model, {MaxPoolingWithArgmax2D: form_of(_max_pool_mask_for_tflite),
                            LocalResponseNormalization: form_of(_lrn_for_tflite),
                            DomainTransform: _doubling_domain_transform})


def _for_serving(model):
    """`model` as the SavedModel's graph computes it: stock TensorFlow ops only. A domain transform
    other than the doubling scan runs as an XLA cluster (``jit_compile``), which TF Serving refuses
    unless started with ``--xla_cpu_compilation_enabled``; the doubling scan is the same function."""
    from kseg.layers.domain_transform import DomainTransform

    return _swapped(model, {DomainTransform: _doubling_domain_transform})


def _swapped(model, swaps):
    """`model` rebuilt with each layer of a class in `swaps` replaced by ``swaps[cls](layer)`` (the
    other layers reused: same weights, nothing copied); `model` itself when nothing changes."""
    import keras

    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        return model
    forms = {}
    for layer in model.layers:
        form = swaps[type(layer)](layer) if type(layer) in swaps else layer
        if form is not layer:
            forms[id(layer)] = form
    if not forms:
        return model
    try:  # every other layer reused: same weights, nothing copied
        return keras.models.clone_model(model, clone_function=lambda layer: forms.get(id(layer), layer))
    except Exception:  # a model clone_model cannot rebuild: convert it as it is
        return model


def _interpreter(path, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter

    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"no TFLite file at {str(path)!r}")
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _quantize_input(x, detail):
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if scale == 0:
        return np.clip(np.round(x), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    q = np.round(x / scale + zero)
    return np.clip(q, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)


def _dequantize_output(y, detail):
    if np.issubdtype(y.dtype, np.floating):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * (scale if scale else 1.0)).astype(np.float32)


def run_tflite(path, images, num_threads=None, interpreter=None):
    """Run a kseg ``.tflite`` file in the LiteRT interpreter (XNNPACK) on a batch of images.

    Args:
        path: the ``.tflite`` file.
        images: ``(N, H, W, 3)`` (or one ``(H, W, 3)``) RGB in [0, 255] at the file's size.
            Quantised inputs are quantised with the file's scale and zero point.
        num_threads: interpreter threads (``None``: LiteRT's default).
        interpreter: reuse an already allocated interpreter (for timing loops).

    Returns:
        float32 logits ``(N, H, W, C)`` (dequantised for integer outputs).
    """
    interp = interpreter if interpreter is not None else _interpreter(path, num_threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(inp["shape"][1:]):
        raise ValueError(f"images must be (N, {', '.join(map(str, inp['shape'][1:]))}), got {x.shape}")
    results = []
    for one in x:
        interp.set_tensor(inp["index"], _quantize_input(one[None].astype(np.float32), inp))
        interp.invoke()
        results.append(_dequantize_output(interp.get_tensor(out["index"]), out))
    return np.concatenate(results, axis=0)


def verify_tflite(model, path, images, num_threads=None):
    """Max absolute difference between the Keras model's logits and the ``.tflite`` file's."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    expected = np.asarray(model.predict(x, batch_size=1, verbose=0), dtype=np.float32)
    got = run_tflite(path, x, num_threads=num_threads)
    return float(np.max(np.abs(expected - got)))


# ----------------------------------------------------------------------------------------------
# .keras


def save_keras(model, path):
    """Save to a ``.keras`` file (the path must end in ``.keras``)."""
    from kseg.io import atomic_path

    path = _check_path(path, suffix=".keras")
    with atomic_path(path) as tmp:  # the old file or the new one, never half of either
        model.save(tmp)
    return str(path)


def load_keras(path, compile=False):
    """Load a ``.keras`` file with ``safe_mode=True`` (kseg's custom layers are registered)."""
    from kseg.io import load_keras_file

    return load_keras_file(path, compile=compile)  # a missing, truncated or corrupt file names itself


def export(model, path, format="saved_model", **kwargs):  # noqa: A002  (CLI's --format)
    """Dispatch to :func:`export_saved_model`, :func:`export_tflite` or :func:`save_keras`; `model`
    may be the path of a ``.keras`` file (TFLite: loaded there and freed before converting)."""
    if format == "tflite":
        return export_tflite(model, path, **kwargs)
    if isinstance(model, (str, pathlib.PurePath)):
        model = load_keras(model)
    if format == "saved_model":
        return export_saved_model(model, path, **kwargs)
    if format == "keras":
        if kwargs:
            raise ValueError(f"format='keras' takes no options, got {sorted(kwargs)}")
        return save_keras(model, path)
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}")


"""SegNet-Basic's input LRN in a full-integer TFLite file: exact to rounding (kseg.export's TFLite form)."""

import numpy as np
import pytest

import kseg
from kseg import export

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
litert = pytest.importorskip("ai_edge_litert.interpreter")


def lrn_output_error(tmp_path):
    """(rms error, max error, scale) of the int8 file's LRN output (the first conv's input,
    dequantised) against the Keras model's ``norm`` layer, on images in [0, 255]."""
    keras.utils.set_random_seed(0)
    model = kseg.SegNetBasic(num_classes=4, input_shape=(24, 40, 3), width=8)
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 255, (8, 24, 40, 3)).astype("float32")
    path = export.export_tflite(model, tmp_path / "int8.tflite", quantize="int8",
                                representative_images=calibration)
    interp = litert.Interpreter(model_path=path, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    first_conv = next(op for op in interp._get_ops_details() if op["op_name"] == "CONV_2D")
    lrn_out = next(t for t in interp.get_tensor_details() if t["index"] == first_conv["inputs"][0])
    scale, zero = lrn_out["quantization"]
    norm = keras.Model(model.inputs, model.get_layer("norm").output)
    images = np.concatenate([rng.uniform(0, 255, (2, 24, 40, 3)), rng.uniform(0, 60, (1, 24, 40, 3))])
    images = np.round(images).astype("float32")  # uint8 input: exact
    errors = []
    inp = interp.get_input_details()[0]
    for image, expected in zip(images, np.asarray(norm.predict(images, verbose=0))):
        interp.set_tensor(inp["index"], image[None].astype(np.uint8))
        interp.invoke()
        got = (interp.get_tensor(lrn_out["index"]).astype(np.float32) - zero) * scale
        errors.append(got[0] - expected)
    errors = np.stack(errors)
    return float(np.sqrt(np.mean(errors ** 2))), float(np.abs(errors).max()), float(scale), path


def test_int8_lrn_is_exact_to_rounding(tmp_path):
    """The layer's own graph (SQUARE, sums, POW, DIV) quantised with the divisor at the output's
    scale was ~10 steps rms off on CamVid; the builtin LRN must be within rounding."""
    rms, worst, scale, path = lrn_output_error(tmp_path)
    ops = {name for name, _ in export.tflite_operators(path)}
    assert "LOCAL_RESPONSE_NORMALIZATION" in ops and "POW" not in ops and "DIV" not in ops, ops
    assert all(builtin for _, builtin in export.tflite_operators(path))
    assert rms < 0.5 * scale and worst < 1.01 * scale, (rms / scale, worst / scale)

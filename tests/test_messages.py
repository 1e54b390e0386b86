"""Error and warning messages point at the fix (CRF and TFLite, CRF under fit, JAX SavedModel, [0, 1] images)."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from kseg import data, export, training, utils
from kseg.layers import DenseCRF


def _crf_model(tflite_builtins=False):
    inputs = keras.Input((16, 16, 3))
    logits = keras.layers.Conv2D(3, 1, name="score")(inputs)
    out = DenseCRF(num_iterations=1, name="crf", tflite_builtins=tflite_builtins)([logits, inputs])
    return keras.Model(inputs, out)


def test_dense_crf_under_fit_says_it_is_inference_only():
    model = _crf_model()
    model.compile("sgd", loss=keras.losses.CategoricalCrossentropy())
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[np.zeros((2, 16, 16), int)]
    with pytest.raises(ValueError, match="inference-only.*crf=False.*CRFasRNN"):
        model.fit(x, y, epochs=1, verbose=0)
    assert model.predict(x, verbose=0).shape == (2, 16, 16, 3)  # inference still works


def test_crf_tflite_refusal_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="tflite_builtins=True") as info:
        export.export_tflite(_crf_model(), tmp_path / "crf.tflite")
    assert "'crf'" in str(info.value) and len(str(info.value)) < 1200  # the hint, not a converter dump


def test_unit_range_images_warn_once(tmp_path):
    utils._RANGE_WARNED.clear()
    with pytest.warns(UserWarning, match=r"\[0, 255\].*multiply them by 255"):
        utils.warn_if_unit_range(np.full((1, 4, 4, 3), 0.5, "float32"), "here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        utils.warn_if_unit_range(np.full((1, 4, 4, 3), 0.5, "float32"), "here")  # once only
        utils.warn_if_unit_range(np.full((1, 4, 4, 3), 200.0, "float32"), "elsewhere")  # [0, 255]: silent
    root = data.write_synthetic_dataset(tmp_path / "d", {"train": 2}, height=16, width=16, ignore_label=11)
    rescale = keras.layers.Rescaling(1 / 255)
    ds = data.segmentation_dataset(data.find_pairs(root, "train"), batch_size=2,
                                   augment=lambda ex: {**ex, "images": rescale(ex["images"])})
    with pytest.warns(UserWarning, match="segmentation_dataset"):
        next(iter(ds))
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(11, 1)])
    with pytest.warns(UserWarning, match="predict / evaluate"):
        training.evaluate(model, ds, verbose=0)


@pytest.mark.slow
@pytest.mark.skipif(not __import__("importlib").util.find_spec("jax"), reason="jax not installed")
def test_export_saved_model_on_jax_points_to_model_export(tmp_path):
    code = ("import keras, kseg\nfrom kseg import export\nm = kseg.SegNetBasic(input_shape=(16, 16, 3), width=2)\n"
            "try:\n    export.export_saved_model(m, 'x')\nexcept NotImplementedError as e:\n    print('MSG', e)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's kseg
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert "MSG" in out.stdout, out.stderr[-2000:]
    assert "model.export(path, format='tf_saved_model')" in out.stdout and "KERAS_BACKEND=tensorflow" in out.stdout

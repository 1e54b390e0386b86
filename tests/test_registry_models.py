"""Every registered model, built small: `.keras` round trip (safe_mode=True), builtins-only TFLite,
and build + predict under the JAX backend.

Parametrised over ``kseg.models.list()``, so a model registered later is covered without editing
this file. A model whose builder needs more than ``num_classes`` / ``input_shape`` to be small (a
width, a larger minimum size) gets an entry in ``TINY``.
"""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kseg
from kseg import export

NUM_CLASSES = 3
SIZE = (32, 32)  # divisible by 32: every classic encoder's output stride

# Builder arguments that shrink a model when its builder takes them (parameters dominate the cost of
# building, saving and converting, not the input size). A tuple default becomes a tuple of the tiny
# value; "width" is channels when its default is an int, else a multiplier.
SHRINK = {
    "width_multiplier": 1 / 16, "fc_width": 32, "fc_units": 32, "edge_channels": 8, "feature_dim": 32,
    "context_units": 8, "renet_units": 8, "upsample_filters": 8, "num_rois": 4,
}
TINY_WIDTH_INT, TINY_WIDTH_FLOAT = 4, 1 / 16

# Per-model extras (builders taking **kwargs, minimum sizes).
TINY = {
    "deconvnet": {"input_shape": (193, 193, 3)},  # fc6 needs pool5 >= 7x7
    "deeplab_v2_vgg16": {"width_multiplier": 1 / 16, "fc_width": 32},
    "deeplab_v2_resnet101": {"width_multiplier": 1 / 16, "depths": (1, 1, 1, 1)},
    "deepmask_resnet50": {"width_multiplier": 1 / 16, "feature_dim": 32, "depths": (1, 1, 1)},
    # VGG classifiers: fc6 is a 7x7 conv over pool5, so sides >= 224
    **{f"vgg_{c}": {"input_shape": (224, 224, 3)} for c in ("a", "a_lrn", "b", "c", "d", "e")},
}

# TFLite conversion cost grows with the weights: models still large when "tiny" convert only in the
# slow run (SegNet has no width argument; SegNet-Basic covers the same layers by default).
HEAVY_WHEN_TINY = {"segnet"}
# The default run converts a model of each family of layers that has no TFLite test of its own (the
# pooling indices, crops + deconvolutions, atrous pyramid, L2 norm, proposals, LRN); the models whose
# own test file converts them (DT-EdgeNet, ReSeg, Dilation, MultiPathNet, CRF-as-RNN ...) and the
# rest of the registry convert in the slow run.
TFLITE_DEFAULT = {"segnet_basic", "fcn8s", "deeplab_v2_vgg16", "parsenet", "sharpmask", "vgg_a_lrn"}
# Round trips the default run leaves to the model's own test file (each >= 8 s here).
ROUND_TRIP_OWN_TEST = {"multipathnet", "dt_edgenet", "crf_as_rnn", "sharpmask", "ion", "renet_classifier"}
# full-size only (29 M parameters even tiny-wide: ~15 s); its layers round-trip in segnet_basic and deconvnet
ROUND_TRIP_SLOW = ROUND_TRIP_OWN_TEST | {"segnet"}


def tiny_kwargs(name):
    card = kseg.models.get(name)
    params = inspect.signature(card.builder).parameters
    kwargs = {}
    if card.task == "semantic":
        kwargs.update(num_classes=NUM_CLASSES, input_shape=SIZE + (3,))
    for key, value in SHRINK.items():
        if key in params:
            default = params[key].default
            kwargs[key] = tuple(value for _ in default) if isinstance(default, (tuple, list)) else value
    if "width" in params:
        kwargs["width"] = TINY_WIDTH_INT if isinstance(params["width"].default, int) else TINY_WIDTH_FLOAT
    kwargs.update(TINY.get(name, {}))
    return kwargs


def build_tiny(name):
    return kseg.models.get(name).build(**tiny_kwargs(name))


def model_inputs(model, n=2, seed=0):
    """Random inputs for `model`: images in [0, 255] (variable sizes -> SIZE) and, for detectors,
    valid boxes ``[y1, x1, y2, x2]`` in pixels for any ``rois`` input."""
    rng = np.random.default_rng(seed)
    names = [t.name for t in model.inputs]
    shapes = {t.name: tuple(t.shape) for t in model.inputs}
    image_name = next(k for k in names if "image" in k) if len(names) > 1 else names[0]
    h, w = (d if d is not None else s for d, s in zip(shapes[image_name][1:3], SIZE))
    feed = {image_name: rng.uniform(0, 255, (n, h, w, 3)).astype("float32")}
    for key in names:
        if key == image_name:
            continue
        if "roi" not in key and "box" not in key:
            raise ValueError(f"add an input generator for input {key!r} {shapes[key]} to model_inputs")
        r = shapes[key][1]
        y1, x1 = rng.uniform(0, h / 2, (n, r)), rng.uniform(0, w / 2, (n, r))
        y2, x2 = y1 + rng.uniform(4, h / 2, (n, r)), x1 + rng.uniform(4, w / 2, (n, r))
        feed[key] = np.stack([y1, x1, y2, x2], -1).astype("float32")
    if isinstance(model.input, dict):
        return feed
    return feed[image_name] if len(names) == 1 else [feed[k] for k in names]


def _tflite_params():
    params = []
    for name in kseg.models.list():
        card = kseg.models.get(name)
        marks = []
        if not card.tflite_builtins:
            marks.append(pytest.mark.skip(reason=f"{name}: card says tflite_builtins=False ({card.notes})"))
        elif name in HEAVY_WHEN_TINY or name not in TFLITE_DEFAULT:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(name, marks=marks))
    return params


def image_hw(x):
    if isinstance(x, dict):
        x = next(v for k, v in x.items() if "image" in k)
    elif isinstance(x, (list, tuple)):
        x = x[0]
    return tuple(np.shape(x)[1:3])


def _predict(model, x):
    out = model.predict(x, verbose=0)
    if isinstance(out, dict):
        return [out[k] for k in sorted(out)]
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in ROUND_TRIP_SLOW else [])
                                  for n in kseg.models.list()])
def test_keras_round_trip_safe_mode(name, tmp_path):
    model = build_tiny(name)
    x = model_inputs(model)
    before = _predict(model, x)
    if kseg.models.get(name).task == "semantic":
        assert before[0].shape == (2, *image_hw(x), NUM_CLASSES)
    loaded = export.load_keras(export.save_keras(model, tmp_path / f"{name}.keras"))
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
    after = _predict(loaded, x)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", _tflite_params())
def test_tflite_builtins_only(name, tmp_path):
    card = kseg.models.get(name)
    if card.task != "semantic":
        pytest.skip(f"{name}: export covers semantic (per-pixel logits) models; task is {card.task!r}")
    kwargs = tiny_kwargs(name)
    model = build_tiny(name)
    path = export.export_tflite(model, tmp_path / f"{name}.tflite")
    assert all(builtin for _, builtin in export.tflite_operators(path))
    x = model_inputs(model, n=1)
    logits = model.predict(x, verbose=0)
    got = export.run_tflite(path, x)
    scale = max(1.0, float(np.abs(logits).max()) / 10.0)
    np.testing.assert_allclose(got, logits, rtol=0, atol=1e-4 * scale)


# ------------------------------------------------------------------------------------------------
# JAX backend: one subprocess builds, predicts and (semantic models) trains one step for every
# model whose card lists "jax".

_JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import keras
    import kseg
    assert keras.backend.backend() == "jax", keras.backend.backend()
    sys.path.insert(0, {tests!r})
    from test_registry_models import image_hw, model_inputs, tiny_kwargs
    results = {{}}
    for name in json.loads(sys.argv[1]):
        start = time.perf_counter()
        try:
            kwargs = tiny_kwargs(name)
            model = kseg.models.get(name).build(**kwargs)
            x = model_inputs(model)
            h, w = image_hw(x)
            out = model(x, training=False)
            if isinstance(out, dict):
                out = [out[k] for k in sorted(out)]
            out = [keras.ops.convert_to_numpy(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
            trained = None
            if kseg.models.get(name).task == "semantic":  # one training step on the JAX backend
                model.compile(keras.optimizers.SGD(1e-3),
                              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                y = np.random.default_rng(1).integers(0, kwargs["num_classes"], (x.shape[0], h, w))
                before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_weights]
                loss = float(model.train_on_batch(x, y))
                changed = any(not np.array_equal(b, keras.ops.convert_to_numpy(v))
                              for b, v in zip(before, model.trainable_weights))
                trained = bool(np.isfinite(loss) and changed)
            results[name] = {{"ok": True, "shapes": [list(np.shape(o)) for o in out], "hw": [int(h), int(w)],
                              "seconds": round(time.perf_counter() - start, 1), "trained": trained,
                              "finite": bool(all(np.isfinite(o.astype("float64")).all() for o in out))}}
        except Exception as err:  # reported per model by the test
            results[name] = {{"ok": False, "error": f"{{type(err).__name__}}: {{err}}"[:2000]}}
    print("KSEG_JAX_RESULTS " + json.dumps(results))
    """
)


# XLA compilation makes a JAX build + predict cost 2-40 s per model on 2 cores, so this runs in the slow
# run, for every model whose card lists "jax"; by default tests/models/test_segnet_decoders.py builds,
# predicts and trains SegNet-Basic's encoder (mask pooling, LRN, BN) and two decoders on JAX.
JAX_DEFAULT = {"dilation_frontend"}  # Interp(scale=8) on static sizes (~2 s); SegNet-Basic's layers: tests/models/test_segnet_decoders.py


def _jax_params():
    params = []
    for name in kseg.models.list():
        backends = kseg.models.get(name).backends
        if "jax" not in backends:
            marks = [pytest.mark.skip(reason=f"{name}: card lists backends {backends} (no jax)")]
        else:
            marks = [] if name in JAX_DEFAULT else [pytest.mark.slow]
        params.append(pytest.param(name, marks=marks))
    return params


@pytest.fixture(scope="module")
def jax_results(request):
    """Runs one KERAS_BACKEND=jax subprocess for every JAX test selected in this session."""
    pytest.importorskip("jax")
    names = sorted({
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_jax_backend_build_and_predict"
        and not item.get_closest_marker("skip")
    })
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT.format(tests=tests_dir), json.dumps(names)],
        capture_output=True, text=True, timeout=1800, env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("KSEG_JAX_RESULTS ")]
    assert proc.returncode == 0 and lines, f"JAX subprocess failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("KSEG_JAX_RESULTS "):])


@pytest.mark.parametrize("name", _jax_params())
def test_jax_backend_build_and_predict(name, jax_results):
    """Build, predict and train one step under KERAS_BACKEND=jax."""
    result = jax_results[name]
    assert result["ok"], result.get("error")
    assert result["finite"]
    if kseg.models.get(name).task == "semantic":
        h, w = result["hw"]
        assert result["shapes"][0] == [2, h, w, NUM_CLASSES]
        assert result["trained"], "one training step under JAX: finite loss and updated weights"

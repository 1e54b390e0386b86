"""Mixed precision: every registered model builds and trains one step under each dtype policy.

mixed_bfloat16 runs for a model of each layer family by default and for every model in the slow run;
mixed_float16 (loss scaling, slower on CPU) for SegNet-Basic by default and for every model when slow.
"""

import keras
import numpy as np
import pytest

import kseg
from kseg.precision import PRECISIONS, precision_scope, set_precision
from test_registry_models import tiny_kwargs


# bfloat16 by default for a model of each layer family; every semantic model in the slow run.
BF16_DEFAULT = {"segnet_basic", "fcn8s", "deeplab_v2_vgg16", "parsenet", "reseg", "crf_as_rnn", "dt_edgenet"}


def _params():
    out = []
    for name in kseg.models.list():
        if kseg.models.get(name).task != "semantic":
            continue
        out.append(pytest.param(name, "mixed_bfloat16", marks=[] if name in BF16_DEFAULT else [pytest.mark.slow]))
        marks = [] if name == "segnet_basic" else [pytest.mark.slow]
        out.append(pytest.param(name, "mixed_float16", marks=marks))
    return out


@pytest.mark.parametrize("name,policy", _params())
def test_model_trains_one_step_under_policy(name, policy):
    kwargs = tiny_kwargs(name)
    with precision_scope(policy):
        model = kseg.models.get(name).build(**kwargs)
        compute = policy.split("_")[1]
        # every conv computes in the policy's dtype but the last layer, float32 by Keras' convention
        convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and l is not model.layers[-1]]
        assert convs and all(l.compute_dtype == compute for l in convs)
        assert model.layers[-1].compute_dtype == "float32" and model.output.dtype == "float32"
        assert all(w.dtype == "float32" for w in model.trainable_weights)  # master weights stay fp32
        model.compile(keras.optimizers.SGD(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=kwargs["num_classes"]))
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        h, w, _ = kwargs["input_shape"]
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (2, h, w, 3)).astype("float32")
        y = rng.integers(0, kwargs["num_classes"] + 1, (2, h, w)).astype("int32")
        before = [v.numpy().copy() for v in model.trainable_weights]
        # float16's dynamic loss scaling skips a step whose scaled gradients overflow and halves the
        # scale (from 2^15): CRF-as-RNN's first update lands at scale 32, after 10 skipped steps
        for _ in range(16 if policy == "mixed_float16" else 1):
            loss = float(model.train_on_batch(x, y))
            if any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_weights)):
                break
    assert np.isfinite(loss)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_weights))
    assert keras.config.dtype_policy().name == "float32"  # the scope restored the default


def test_set_precision_rejects_unknown_policy_and_restores():
    assert PRECISIONS == ("float32", "mixed_bfloat16", "mixed_float16")
    with pytest.raises(ValueError, match="precision must be one of"):
        set_precision("bfloat8")
    previous = set_precision("mixed_bfloat16")
    try:
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy(previous)

import math

import numpy as np
import pytest
import tensorflow as tf

import keras

from kseg.layers import DomainTransform
from kseg.layers.domain_transform import domain_transform, domain_transform_sigmas


def reference(x, g, num_iterations=3, sigma_s=130.0, sigma_r=0.1):
    """Straight loops over pixels, as the authors' Caffe layer (forward_only_layer.cpp)."""
    y = np.array(x, dtype="float64")
    g = np.asarray(g, dtype="float64")[..., 0]
    _, h, w, _ = y.shape
    for k in range(num_iterations):
        sigma_k = sigma_s * math.sqrt(3) * 2 ** (num_iterations - (k + 1)) / math.sqrt(4 ** num_iterations - 1)
        wt = np.exp(-math.sqrt(2) / sigma_k * (1 + g * sigma_s / sigma_r))[..., None]
        for j in range(1, w):  # left -> right
            y[:, :, j] += wt[:, :, j] * (y[:, :, j - 1] - y[:, :, j])
        for j in range(w - 2, -1, -1):  # right -> left
            y[:, :, j] += wt[:, :, j + 1] * (y[:, :, j + 1] - y[:, :, j])
        for i in range(1, h):  # top -> bottom
            y[:, i] += wt[:, i] * (y[:, i - 1] - y[:, i])
        for i in range(h - 2, -1, -1):  # bottom -> top
            y[:, i] += wt[:, i + 1] * (y[:, i + 1] - y[:, i])
    return y


def data(shape=(2, 7, 9, 3), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype("float32")
    g = rng.uniform(0, 0.02, size=shape[:3] + (1,)).astype("float32")
    g[:, :, shape[2] // 2] = 0.5  # a strong vertical edge
    return x, g


def test_sigma_schedule_matches_gastal_oliveira_and_sums_variances():
    s = domain_transform_sigmas(130.0, 3)
    assert s == pytest.approx([130 * math.sqrt(3) * 4 / math.sqrt(63), 130 * math.sqrt(3) * 2 / math.sqrt(63),
                               130 * math.sqrt(3) / math.sqrt(63)])
    assert sum(v ** 2 for v in s) == pytest.approx(130.0 ** 2)


@pytest.mark.parametrize("method", ["scan", "doubling", "sequential"])
def test_matches_sequential_numpy_reference(method):
    x, g = data()
    for kwargs in ({}, {"num_iterations": 1, "sigma_s": 5.0, "sigma_r": 0.5}):
        y = np.asarray(DomainTransform(method=method, **kwargs)([x, g]))
        np.testing.assert_allclose(y, reference(x, g, **kwargs), rtol=1e-4, atol=1e-5)


def test_edges_stop_the_filter_and_flat_regions_smooth():
    x = np.zeros((1, 4, 10, 1), "float32")
    x[:, :, 5:] = 1.0  # a step
    g = np.zeros((1, 4, 10, 1), "float32")
    smooth = np.asarray(DomainTransform(sigma_s=20.0, sigma_r=1.0)([x, g]))
    g[:, :, 5] = 10.0  # an edge exactly at the step
    kept = np.asarray(DomainTransform(sigma_s=20.0, sigma_r=1.0)([x, g]))
    assert smooth[0, 0, 4, 0] > 0.2 and smooth[0, 0, 5, 0] < 0.8
    np.testing.assert_allclose(kept, x, atol=1e-6)


def _fd_check(f, arg, eps=1e-6, n=12, seed=0):
    """Directional finite differences of a float64 scalar function vs its autodiff gradient."""
    var = tf.Variable(arg)
    with tf.GradientTape() as tape:
        out = f(var)
    grad = tape.gradient(out, var).numpy()
    rng = np.random.default_rng(seed)
    for _ in range(n):
        d = rng.normal(size=arg.shape)
        numeric = (f(tf.constant(arg + eps * d)).numpy() - f(tf.constant(arg - eps * d)).numpy()) / (2 * eps)
        assert (grad * d).sum() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("method", [pytest.param("scan", marks=pytest.mark.slow),
                                    pytest.param("doubling", marks=pytest.mark.slow), "sequential"])
def test_gradients_wrt_input_and_edges_by_finite_differences(method):
    x, g = (v.astype("float64") for v in data((1, 5, 6, 2), seed=3))
    probe = np.random.default_rng(9).normal(size=x.shape)
    kw = dict(num_iterations=3, sigma_s=8.0, sigma_r=0.5, method=method)

    def loss_x(xv):
        return tf.reduce_sum(domain_transform(xv, tf.constant(g), **kw) * probe)

    def loss_g(gv):
        return tf.reduce_sum(domain_transform(tf.constant(x), gv, **kw) * probe)

    _fd_check(loss_x, x)
    _fd_check(loss_g, g)


def test_gradient_with_respect_to_edges_is_not_zero():
    x, g = data((1, 5, 6, 2))
    gv = tf.Variable(g)
    with tf.GradientTape() as tape:
        y = DomainTransform(sigma_s=8.0, sigma_r=0.5)([tf.constant(x), gv])
        loss = tf.reduce_sum(y ** 2)
    assert np.abs(tape.gradient(loss, gv).numpy()).max() > 1e-4


@pytest.mark.parametrize("method", [pytest.param("scan", marks=pytest.mark.slow), "doubling", "sequential"])
def test_traced_graph_keeps_static_shapes(method):
    x, g = data()
    f = tf.function(lambda a, b: DomainTransform(method=method)([a, b]),
                    input_signature=[tf.TensorSpec((None, 7, 9, 3)), tf.TensorSpec((None, 7, 9, 1))])
    concrete = f.get_concrete_function()
    assert concrete.structured_outputs.shape.as_list() == [None, 7, 9, 3]
    np.testing.assert_allclose(f(x, g).numpy(), reference(x, g), rtol=1e-4, atol=1e-5)


def test_layer_in_model_serializes_and_checks_shapes():
    xi, gi = keras.Input((7, 9, 3)), keras.Input((7, 9, 1))
    model = keras.Model([xi, gi], DomainTransform(num_iterations=2, sigma_s=10.0, name="dt")([xi, gi]))
    clone = keras.models.model_from_json(model.to_json())
    x, g = data()
    np.testing.assert_allclose(np.asarray(clone([x, g])), np.asarray(model([x, g])), atol=1e-6)
    assert clone.get_layer("dt").get_config()["num_iterations"] == 2
    with pytest.raises(ValueError, match="same height and width"):
        DomainTransform()([np.zeros((1, 4, 4, 2), "float32"), np.zeros((1, 4, 5, 1), "float32")])
    with pytest.raises(ValueError, match="method must be one of"):
        DomainTransform(method="loop")


_JAX_SCRIPT = r"""
import sys
import numpy as np
import jax
import jax.numpy as jnp
import keras
assert keras.backend.backend() == "jax"
from kseg.layers import ContextModule, DomainTransform, L2Normalization, ReflectionPadding2D, ReNet2D
from kseg.layers.domain_transform import domain_transform

d = np.load(sys.argv[1])
x, g = d["x"], d["g"]
out = {m: np.asarray(jax.jit(lambda a, b, m=m: DomainTransform(method=m)([a, b]))(x, g))
       for m in ("scan", "doubling", "sequential")}
grad = jax.grad(lambda gg: jnp.sum(domain_transform(x, gg, sigma_s=8.0, sigma_r=0.5) * d["probe"]))(g)
pos = np.abs(x)
out["context"] = np.asarray(ContextModule(3)(pos))
out["l2"] = np.asarray(L2Normalization()(x))
out["pad"] = np.asarray(ReflectionPadding2D(((3, 2), (4, 1)))(x))
out["renet_shape"] = np.array(ReNet2D(1, 2)(x).shape)
np.savez(sys.argv[2], grad=np.asarray(grad), pos=pos, **out)
"""


@pytest.mark.slow
def test_layers_run_on_the_jax_backend(tmp_path):
    import os
    import subprocess
    import sys

    x, g = data()
    probe = np.random.default_rng(9).normal(size=x.shape).astype("float32")
    np.savez(tmp_path / "in.npz", x=x, g=g, probe=probe)
    script = tmp_path / "run.py"
    script.write_text(_JAX_SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   check=True, env=env, capture_output=True, timeout=240)
    out = np.load(tmp_path / "out.npz")
    for method in ("scan", "doubling", "sequential"):
        np.testing.assert_allclose(out[method], reference(x, g), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["context"], out["pos"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["l2"], axis=-1), 10.0, rtol=1e-4)
    np.testing.assert_array_equal(out["pad"], np.pad(x, [(0, 0), (3, 2), (4, 1), (0, 0)], mode="reflect"))
    assert tuple(out["renet_shape"]) == (2, 7, 9, 4)
    # the JAX gradient w.r.t. the edge map agrees with TensorFlow's
    gv = tf.Variable(g)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(domain_transform(tf.constant(x), gv, sigma_s=8.0, sigma_r=0.5) * probe)
    np.testing.assert_allclose(out["grad"], tape.gradient(loss, gv).numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.slow  # three XLA compilations (~15 s)
def test_every_method_compiles_under_xla_as_the_sequential_recurrence():
    """Under XLA the layer runs the sequential recurrence whatever the method: "scan" (keras'
    associative_scan, which XLA cannot compile through its tf.cond) compiles and equals it."""
    import tensorflow as tf

    from kseg.layers.domain_transform import domain_transform

    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 9, 13, 2)).astype("float32")
    g = rng.uniform(0, 0.05, size=(1, 9, 13, 1)).astype("float32")
    def value_and_grads(method):
        def fn(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                y = domain_transform(a, b, method=method)
                loss = tf.reduce_sum(y ** 2)
            return [y] + tape.gradient(loss, [a, b])
        return fn

    plain = [t.numpy() for t in value_and_grads("doubling")(tf.constant(x), tf.constant(g))]  # autodiff, no XLA
    for method in ("scan", "doubling", "sequential"):  # forward and backward compile
        compiled = tf.function(value_and_grads(method), jit_compile=True)(tf.constant(x), tf.constant(g))
        for c, p in zip(compiled, plain):
            np.testing.assert_allclose(c.numpy(), p, rtol=1e-4, atol=1e-4)


def diagonal_guide(h, w, seed=0):
    """A guide ``I(r, c) = F(r + c)``: its horizontal and vertical differences at each pixel are the
    same number, ``|F(r + c) - F(r + c - 1)|``, so OpenCV's per-direction edge maps are one map ``g``."""
    f = np.random.default_rng(seed).uniform(0, 1, h + w).astype("float32")
    f[::7] += 3.0  # strong edges along some diagonals
    guide = f[np.add.outer(np.arange(h), np.arange(w))]
    prev = np.concatenate([f[:1], f[:-1]])
    edges = np.abs(f - prev)[np.add.outer(np.arange(h), np.arange(w))]
    return guide, edges


@pytest.mark.parametrize("method", ["sequential", "doubling"])
def test_agrees_with_opencv_dtfilter_on_the_same_edge_map(method):
    """OpenCV's ``ximgproc.dtFilter`` (DTF_RF; Gastal & Oliveira's authors' recursive filter, an
    implementation nobody here wrote) with a guide whose differences are our edge map."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "ximgproc"):
        pytest.skip("opencv-contrib (cv2.ximgproc) is not installed")
    h, w = 37, 53
    guide, edges = diagonal_guide(h, w)
    x = np.random.default_rng(1).normal(size=(h, w, 3)).astype("float32")
    for sigma_s, sigma_r, k in ((130.0, 0.1, 3), (10.0, 2.0, 2)):
        expected = cv2.ximgproc.dtFilter(guide, x, sigma_s, sigma_r, mode=cv2.ximgproc.DTF_RF, numIters=k)
        y = np.asarray(domain_transform(x[None], edges[None, ..., None], k, sigma_s, sigma_r, method=method))[0]
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
        assert np.abs(expected - x).max() > 0.1  # the filter did something

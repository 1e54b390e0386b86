"""Forward GFLOPs (from the TF graph) and CPU latency of FCN-32s/16s/8s and DeconvNet, with SegNet as the peer.

    flock /tmp/kseg-heavy.lock python benchmarks/flops_fcn_deconvnet.py [--size 500] [--runs 3] [--models ...]

GFLOPs: ``tf.compat.v1.profiler`` float-operation count of the model's concrete function at batch 1
(multiply and add counted separately, as TF's registered op statistics do), cross-checked with an
analytic count of the conv / transposed-conv layers (2 * k*k * C_in * C_out * output pixels; for a
transposed conv, input pixels). "of it deconv" is the graph's share of the transposed convolutions.
The graph count includes what the analytic one leaves out (bias
adds, mean subtraction, pooling, the additive fusions). Latency: median wall time of ``model(x)``
(TensorFlow, eager call of the compiled graph via ``tf.function``) on this machine's CPU, batch 1.
All models are built with random weights at 21 classes (SegNet at 11, its CamVid default).
"""

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kseg  # noqa: E402

MODELS = {
    "fcn32s": lambda s: kseg.FCN32s(input_shape=s),
    "fcn16s": lambda s: kseg.FCN16s(input_shape=s),
    "fcn8s": lambda s: kseg.FCN8s(input_shape=s),
    "fcn8s_nopad": lambda s: kseg.FCN8s(input_shape=s, pad100=False, name="fcn8s_nopad"),
    "deconvnet": lambda s: kseg.DeconvNet(input_shape=s),
    "segnet": lambda s: kseg.SegNet(input_shape=s),
}


def analytic_gflops(model):
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, cin = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2 * kh * kw * cin * layer.filters * h * w
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * kh * kw * c * h * w
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, cout = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * kh * kw * layer.input.shape[-1] * cout * h * w
    return total / 1e9


def graph_gflops(concrete):
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=concrete.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="scope",
                                         options=opts)
    # TF's statistic for a transposed conv (Conv2DBackpropInput) counts output pixels / stride^2
    # input positions, slightly more than the true input size for Caffe's uncropped deconvolutions.
    deconv = sum(c.total_float_ops for c in prof.children if c.name.endswith("conv_transpose"))
    return prof.total_float_ops / 1e9, deconv / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    shape = (args.size, args.size, 3)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1,) + shape).astype("float32"))
    print(f"input {args.size}x{args.size}, batch 1, TF {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores, {args.runs} timed runs after 1 warm-up")
    header = f"{'model':<13}{'params':>14}{'GFLOPs graph':>14}{'GFLOPs conv':>13}{'of it deconv':>14}{'latency s':>11}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        keras.utils.set_random_seed(0)
        model = MODELS[name](shape)
        fn = tf.function(lambda t, m=model: m(t, training=False), autograph=False)
        concrete = fn.get_concrete_function(tf.TensorSpec((1,) + shape, tf.float32))
        graph, deconv = graph_gflops(concrete)
        conv = analytic_gflops(model)
        fn(x)  # warm-up
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            fn(x).numpy()
            times.append(time.perf_counter() - t0)
        print(f"{name:<13}{kseg.count_params(model):>14,}{graph:>14.1f}{conv:>13.1f}{deconv:>14.2f}"
              f"{statistics.median(times):>11.2f}", flush=True)
        del model, fn, concrete
        keras.backend.clear_session()
        gc.collect()


if __name__ == "__main__":
    main()

"""Domain transform (DT-EdgeNet): associative scan vs doubling scan vs sequential recurrence, same run.

    flock /tmp/kseg-heavy.lock python benchmarks/domain_transform.py                 # TensorFlow
    KERAS_BACKEND=jax flock /tmp/kseg-heavy.lock python benchmarks/domain_transform.py

Times the compiled forward pass and forward+backward (gradients w.r.t. the input and the edge map)
of :func:`kseg.layers.domain_transform.domain_transform` on one 360x480 map with 21 channels
(DeepLab's PASCAL scores at CamVid's size), K = 3 iterations of the 4 passes, and prints one
table: median milliseconds over `--repeats` runs after a warm-up, and the largest difference of
each method's output from the sequential recurrence.
"""

import argparse
import os
import statistics
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=(1, 360, 480, 21), metavar=("B", "H", "W", "C"))
    parser.add_argument("--iterations", type=int, default=3, help="K")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["scan", "doubling", "sequential"],
                        help="add '+xla' to a name for tf.function(jit_compile=True), e.g. doubling+xla "
                             "(on TensorFlow every method runs the sequential recurrence under XLA)")
    args = parser.parse_args(argv)

    import keras

    from kseg.layers.domain_transform import domain_transform

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    b, h, w, c = args.shape
    x_np = rng.normal(size=(b, h, w, c)).astype("float32")
    g_np = rng.uniform(0, 0.05, size=(b, h, w, 1)).astype("float32")
    kw = dict(num_iterations=args.iterations, sigma_s=130.0, sigma_r=0.1)

    def compile_fns(method):
        if backend == "jax":
            import jax
            import jax.numpy as jnp

            fwd = jax.jit(lambda x, g: domain_transform(x, g, method=method, **kw))
            grad = jax.jit(jax.grad(lambda x, g: jnp.sum(domain_transform(x, g, method=method, **kw) ** 2),
                                    argnums=(0, 1)))
            return (lambda: fwd(x_np, g_np).block_until_ready(),
                    lambda: [t.block_until_ready() for t in grad(x_np, g_np)],
                    lambda: np.asarray(fwd(x_np, g_np)))
        import tensorflow as tf

        x_tf, g_tf = tf.constant(x_np), tf.constant(g_np)
        xla = method.endswith("+xla")
        method = method.removesuffix("+xla")
        fwd = tf.function(lambda x, g: domain_transform(x, g, method=method, **kw), jit_compile=xla)

        @tf.function(jit_compile=xla)
        def grad(x, g):
            with tf.GradientTape() as tape:
                tape.watch([x, g])
                loss = tf.reduce_sum(domain_transform(x, g, method=method, **kw) ** 2)
            return tape.gradient(loss, [x, g])

        return (lambda: fwd(x_tf, g_tf).numpy(), lambda: [t.numpy() for t in grad(x_tf, g_tf)],
                lambda: fwd(x_tf, g_tf).numpy())

    def timed(fn):
        t0 = time.perf_counter()
        fn()  # trace / compile + first run
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3, first

    rows, outputs = [], {}
    for method in args.methods:
        forward, backward, value = compile_fns(method)
        f_ms, f_first = timed(forward)
        b_ms, b_first = timed(backward)
        outputs[method] = value()
        rows.append((method, f_ms, b_ms, f_first + b_first))
    ref = outputs.get("sequential", next(iter(outputs.values())))
    print(f"domain transform {b}x{h}x{w}x{c}, K={args.iterations}, backend={backend}, "
          f"threads: {os.cpu_count()} CPUs visible, median of {args.repeats}")
    print(f"{'method':<12}{'forward ms':>12}{'fwd+bwd ms':>12}{'compile+1st s':>15}{'max|y-seq|':>13}")
    for method, f_ms, b_ms, first in rows:
        diff = float(np.abs(outputs[method] - ref).max())
        print(f"{method:<12}{f_ms:>12.1f}{b_ms:>12.1f}{first:>15.1f}{diff:>13.2e}")


if __name__ == "__main__":
    main()

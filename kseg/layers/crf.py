"""Dense-CRF layers: DenseCRF (inference-only post-processing) and CRFRNN (CRF as RNN).

Both run mean-field inference in the fully connected CRF of Krähenbühl & Koltun (NIPS 2011) with
permutohedral-lattice filtering built from stock TensorFlow ops (:mod:`kseg.crf`), so a model that
contains them exports to a SavedModel that runs on stock TF Serving. TFLite: by default the
splat/slice op ``SparseTensorDenseMatMul`` is not a TFLite builtin (Flex only); built with
``tflite_builtins=True`` every op of the layers converts to a TFLite builtin (Unique,
UnsortedSegmentMin/Sum, Gather, int64 arithmetic), at 2-3x the CPU cost in TensorFlow.

TF-only code: the layers use TensorFlow ops directly and raise under other Keras backends.
"""

import keras
import numpy as np

from kseg.crf.meanfield import DEEPLAB_LARGEFOV

__all__ = ["DenseCRF", "CRFRNN"]


def _require_tensorflow(who):
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{who} is TF-only code (permutohedral lattice from TensorFlow ops); "
            f"the Keras backend is {backend!r}. Set KERAS_BACKEND=tensorflow."
        )


def _check_positive(**values):
    for name, val in values.items():
        if not float(val) > 0:
            raise ValueError(f"{name} must be > 0, got {val}")


def _check_inputs(who, inputs):
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError(f"{who} expects inputs [unary (B, H, W, L), image (B, H, W, 3)], got {inputs!r}")


@keras.saving.register_keras_serializable(package="kseg")
class DenseCRF(keras.layers.Layer):
    """Fully connected CRF post-processing (DeepLab, Chen et al. ICLR 2015, Sec. 4.2).

    Inference only (no weights, no gradient is meant to flow): inputs ``[logits (B, H, W, L),
    image (B, H, W, 3)]`` with the image in [0, 255] (uint8 or float, RGB; only colour differences
    matter, so a mean-subtracted image gives the same result) -> probabilities ``(B, H, W, L)`` after
    ``num_iterations`` mean-field updates (:func:`kseg.crf.dense_crf`). Defaults are
    DeepLab-LargeFOV's published CRF parameters (bi_w=4, bi_xy_std=121, bi_rgb_std=5, pos_w=3,
    pos_xy_std=3, 10 iterations). TF-only code.

    Args:
        num_iterations: mean-field updates.
        theta_alpha, theta_beta: bilateral kernel std in pixels and in colour levels.
        theta_gamma: spatial kernel std in pixels.
        bilateral_weight, spatial_weight: kernel weights w1, w2.
        compatibility: None (Potts) or an (L, L) nested list, the label compatibility energy.
        normalization: ``"after"`` (the authors'), ``"symmetric"`` or ``"none"``.
        tflite_builtins: use only ops that are TFLite builtins (slower in TensorFlow).
        jit_compile: compile the lattice's point-wise part and each iteration's slice + softmax with
            XLA (:func:`kseg.crf.dense_crf`; ~2x fewer CPU-seconds, about half those of Krähenbühl's
            C++ at 480x360). Off by default: the graph, and a SavedModel of it, then needs XLA's JIT
            kernels wherever it runs, and a TFLite file cannot hold them.

    Example:
        >>> import numpy as np
        >>> crf = DenseCRF(num_iterations=5)
        >>> logits = np.random.randn(2, 24, 32, 4).astype("float32")
        >>> image = np.random.randint(0, 256, (2, 24, 32, 3)).astype("float32")
        >>> tuple(crf([logits, image]).shape)
        (2, 24, 32, 4)
    """

    def __init__(
        self,
        num_iterations=10,
        theta_alpha=DEEPLAB_LARGEFOV["theta_alpha"],
        theta_beta=DEEPLAB_LARGEFOV["theta_beta"],
        theta_gamma=DEEPLAB_LARGEFOV["theta_gamma"],
        bilateral_weight=DEEPLAB_LARGEFOV["bilateral_weight"],
        spatial_weight=DEEPLAB_LARGEFOV["spatial_weight"],
        compatibility=None,
        normalization="after",
        tflite_builtins=False,
        jit_compile=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _require_tensorflow("DenseCRF")
        if tflite_builtins and jit_compile:
            raise ValueError("DenseCRF: tflite_builtins=True and jit_compile=True exclude each other (a TFLite file "
                             "cannot hold XLA clusters); choose one")
        # Lattice construction has data-dependent shapes (tf.unique): Keras' jit_compile="auto"
        # must not compile a model containing this layer with XLA.
        self.supports_jit = False
        if int(num_iterations) < 0:
            raise ValueError(f"num_iterations must be >= 0, got {num_iterations}")
        _check_positive(theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma)
        if normalization not in ("after", "symmetric", "none"):
            raise ValueError(f"normalization must be 'after', 'symmetric' or 'none', got {normalization!r}")
        if compatibility is not None:
            compatibility = np.asarray(compatibility, np.float32)
            if compatibility.ndim != 2 or compatibility.shape[0] != compatibility.shape[1]:
                raise ValueError(f"compatibility must be an (L, L) matrix, got shape {compatibility.shape}")
            compatibility = compatibility.tolist()
        self.num_iterations = int(num_iterations)
        self.theta_alpha = float(theta_alpha)
        self.theta_beta = float(theta_beta)
        self.theta_gamma = float(theta_gamma)
        self.bilateral_weight = float(bilateral_weight)
        self.spatial_weight = float(spatial_weight)
        self.compatibility = compatibility
        self.normalization = normalization
        self.tflite_builtins = bool(tflite_builtins)
        self.jit_compile = bool(jit_compile)
        self.trainable = False

    def call(self, inputs, training=None):
        import tensorflow as tf

        from kseg.crf.meanfield import dense_crf

        if training:
            raise ValueError(
                f"DenseCRF layer {self.name!r} is inference-only: DeepLab (Chen et al., ICLR 2015) trains the "
                "network alone and applies the fully connected CRF as post-processing, so no gradient flows "
                "through it (under fit: 'No gradients provided for any variable'). Train without it, e.g. "
                "DeepLabV1(crf=False), then build DeepLabV1(crf=True) and copy the weights "
                "(kseg.utils.transfer_weights(trained, with_crf)); or train a CRF end to end with CRF-as-RNN "
                "(kseg.CRFasRNN, layer kseg.layers.CRFRNN).")
        _check_inputs("DenseCRF", inputs)
        logits, image = inputs
        logits = tf.stop_gradient(tf.cast(logits, tf.float32))
        return dense_crf(
            logits,
            image,
            num_iterations=self.num_iterations,
            theta_alpha=self.theta_alpha,
            theta_beta=self.theta_beta,
            theta_gamma=self.theta_gamma,
            bilateral_weight=self.bilateral_weight,
            spatial_weight=self.spatial_weight,
            compatibility=self.compatibility,
            unary_is="logits",
            normalization=self.normalization,
            tflite_builtins=self.tflite_builtins,
            jit_compile=self.jit_compile,
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_iterations=self.num_iterations,
            theta_alpha=self.theta_alpha,
            theta_beta=self.theta_beta,
            theta_gamma=self.theta_gamma,
            bilateral_weight=self.bilateral_weight,
            spatial_weight=self.spatial_weight,
            compatibility=self.compatibility,
            normalization=self.normalization,
            tflite_builtins=self.tflite_builtins,
            jit_compile=self.jit_compile,
        )
        return config


@keras.saving.register_keras_serializable(package="kseg")
class CRFRNN(keras.layers.Layer):
    """CRF as RNN (Zheng et al., ICCV 2015): mean-field iterations as a trainable recurrent layer.

    Inputs ``[unary logits (B, H, W, L), image (B, H, W, 3) in [0, 255]]`` -> refined logits
    ``(B, H, W, L)`` (not normalised; apply a softmax or a from-logits loss). Each iteration
    (paper Sec. 4, Algorithm 1; the authors' Caffe ``MeanfieldIteration``) is

    1. ``Q = softmax(H)`` (``H`` starts as the unary),
    2. message passing: ``S = n_s * K_s Q`` (spatial kernel, std ``theta_gamma``) and
       ``B = n_b * K_b Q`` (bilateral kernel, stds ``theta_alpha``, ``theta_beta``), per-pixel
       normalised (``n = 1 / K 1``), both permutohedral lattices built once per image,
    3. weighting filter outputs: ``M = S Ws^T + B Wb^T``,
    4. compatibility transform: ``P = M C^T``,
    5. adding the unary: ``H = U - P``.

    Exactly three learned (L, L) weights shared by all iterations, in the authors' order and
    orientation (row = output label, so Caffe blobs load as they are):
    ``spatial_kernel_weights`` (initialised ``spatial_weight * I``), ``bilateral_kernel_weights``
    (``bilateral_weight * I``) and ``compatibility`` (``-I``, the Potts model: with ``C = -I`` the
    update is ``H = U + w_s S + w_b B``, the label-agreement reward of Krähenbühl's code). No bias.
    Gradients flow to the unary input and to the three weights (the lattice filters are linear in
    their input; the image gets none). TF-only code.

    Args:
        num_classes: L (>= 2).
        num_iterations: mean-field iterations in training (paper: 5).
        num_iterations_inference: iterations at inference (paper: 10); None: ``num_iterations``.
        theta_alpha, theta_beta, theta_gamma: kernel stds (authors' defaults 160, 3, 3).
        spatial_weight, bilateral_weight: initial diagonal kernel weights (authors' 3, 5).
        tflite_builtins: use only ops that are TFLite builtins (slower in TensorFlow).

    Example:
        >>> import numpy as np
        >>> crf = CRFRNN(num_classes=3, num_iterations=2)
        >>> unary = np.random.randn(1, 16, 16, 3).astype("float32")
        >>> image = np.random.randint(0, 256, (1, 16, 16, 3)).astype("float32")
        >>> tuple(crf([unary, image]).shape)
        (1, 16, 16, 3)
    """

    def __init__(
        self,
        num_classes,
        num_iterations=5,
        num_iterations_inference=None,
        theta_alpha=160.0,
        theta_beta=3.0,
        theta_gamma=3.0,
        spatial_weight=3.0,
        bilateral_weight=5.0,
        tflite_builtins=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _require_tensorflow("CRFRNN")
        self.supports_jit = False  # data-dependent lattice size (tf.unique): no XLA train step
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if int(num_iterations) < 1:
            raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
        if num_iterations_inference is not None and int(num_iterations_inference) < 1:
            raise ValueError(f"num_iterations_inference must be >= 1 or None, got {num_iterations_inference}")
        _check_positive(theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma)
        self.num_classes = int(num_classes)
        self.num_iterations = int(num_iterations)
        self.num_iterations_inference = None if num_iterations_inference is None else int(num_iterations_inference)
        self.theta_alpha = float(theta_alpha)
        self.theta_beta = float(theta_beta)
        self.theta_gamma = float(theta_gamma)
        self.spatial_weight = float(spatial_weight)
        self.bilateral_weight = float(bilateral_weight)
        self.tflite_builtins = bool(tflite_builtins)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(f"CRFRNN expects inputs [unary, image], got input shape {input_shape}")
        channels = input_shape[0][-1]
        if channels is not None and channels != self.num_classes:
            raise ValueError(f"unary has {channels} channels but num_classes is {self.num_classes}")
        eye = np.eye(self.num_classes, dtype="float32")
        self.spatial_kernel_weights = self.add_weight(
            name="spatial_kernel_weights",
            shape=(self.num_classes, self.num_classes),
            initializer=keras.initializers.Constant(self.spatial_weight * eye),
        )
        self.bilateral_kernel_weights = self.add_weight(
            name="bilateral_kernel_weights",
            shape=(self.num_classes, self.num_classes),
            initializer=keras.initializers.Constant(self.bilateral_weight * eye),
        )
        self.compatibility = self.add_weight(
            name="compatibility",
            shape=(self.num_classes, self.num_classes),
            initializer=keras.initializers.Constant(-eye),
        )

    def call(self, inputs, training=None):
        import tensorflow as tf

        from kseg.crf.meanfield import build_filters

        _check_inputs("CRFRNN", inputs)
        unary, image = inputs
        unary = tf.cast(unary, tf.float32)
        iterations = self.num_iterations
        if not training and self.num_iterations_inference is not None:
            iterations = self.num_iterations_inference
        shape = tf.shape(unary)
        u = tf.reshape(unary, [-1, self.num_classes])
        filters = build_filters(
            image, self.theta_alpha, self.theta_beta, self.theta_gamma, "after", tflite_builtins=self.tflite_builtins
        )
        ws = tf.convert_to_tensor(self.spatial_kernel_weights)
        wb = tf.convert_to_tensor(self.bilateral_kernel_weights)
        comp = tf.convert_to_tensor(self.compatibility)
        h = u
        for _ in range(iterations):
            q = tf.nn.softmax(h, axis=-1)
            m = tf.linalg.matmul(filters.spatial(q), ws, transpose_b=True) + tf.linalg.matmul(
                filters.bilateral(q), wb, transpose_b=True
            )
            h = u - tf.linalg.matmul(m, comp, transpose_b=True)
        return tf.reshape(h, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            num_iterations=self.num_iterations,
            num_iterations_inference=self.num_iterations_inference,
            theta_alpha=self.theta_alpha,
            theta_beta=self.theta_beta,
            theta_gamma=self.theta_gamma,
            spatial_weight=self.spatial_weight,
            bilateral_weight=self.bilateral_weight,
            tflite_builtins=self.tflite_builtins,
        )
        return config

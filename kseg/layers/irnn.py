"""IRNN2D: Inside-Outside Net's four-direction ReLU RNN context layer.

Bell, Zitnick, Bala & Girshick, "Inside-Outside Net: Detecting Objects in Context with Skip
Pooling and Recurrent Neural Networks", CVPR 2016, Sec. 3.1 and Fig. 4: a 1x1 convolution (the
input-to-hidden transition, shared by the four directions) followed by four independent
recurrent sweeps across the feature map — left-to-right, right-to-left, top-to-bottom,
bottom-to-top — of a ReLU RNN whose hidden-to-hidden transition is initialised to the identity
(an IRNN, Le et al. 2015)::

    h_t = max(0, U_d h_{t-1} + W x_t + b),   one U_d per direction, U_d = I at initialisation

The four hidden maps are concatenated (``4 * units`` channels). ``learn_recurrent=False`` is the
paper's fast form with the recurrence fixed to the identity (no ``U_d``): each sweep is then a
ReLU-clamped running sum, ``h_t = max(0, h_{t-1} + W x_t + b)``.

Example::

    ctx = IRNN2D(512)(conv5_3)          # (B, H, W, 2048): right, left, down, up
"""

import keras
from keras import ops

__all__ = ["IRNN2D", "DIRECTIONS"]

#: (name, axis swept, reverse)
DIRECTIONS = (("right", 2, False), ("left", 2, True), ("down", 1, False), ("up", 1, True))


@keras.saving.register_keras_serializable(package="kseg")
class IRNN2D(keras.layers.Layer):
    """Four-direction IRNN sweep (Bell et al., CVPR 2016). See the module docstring.

    Args:
        units: hidden units per direction (output has ``4 * units`` channels).
        learn_recurrent: learn ``U_d`` (identity-initialised); ``False`` fixes it to the identity.
        kernel_initializer: the shared input-to-hidden 1x1 convolution's initialiser.

    Example:
        >>> import numpy as np
        >>> y = IRNN2D(2)(np.ones((1, 3, 4, 5), "float32"))
        >>> tuple(y.shape)
        (1, 3, 4, 8)
    """

    def __init__(self, units, learn_recurrent=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"units must be >= 1, got {units}")
        self.units = int(units)
        self.learn_recurrent = bool(learn_recurrent)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel axis of {tuple(input_shape)} must be known")
        self.kernel = self.add_weight(name="kernel", shape=(channels, self.units), initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        if self.learn_recurrent:
            eye = ops.convert_to_numpy(ops.tile(ops.eye(self.units)[None], (4, 1, 1)))
            self.recurrent = self.add_weight(name="recurrent", shape=(4, self.units, self.units),
                                             initializer=keras.initializers.Constant(eye))

    def _sweep(self, z, axis, reverse, d):
        # bring the swept axis to the front: (L, B, other, units)
        perm = (axis, 0, 3 - axis, 3)
        seq = ops.transpose(z, perm)

        def step(h, x):
            pre = ops.matmul(h, self.recurrent[d]) if self.learn_recurrent else h
            h = ops.relu(pre + x)
            return h, h

        _, hs = ops.scan(step, ops.zeros_like(seq[0]), seq, reverse=reverse)
        inverse = tuple(perm.index(i) for i in range(4))
        return ops.transpose(hs, inverse)

    def call(self, x):
        z = ops.matmul(x, ops.cast(self.kernel, x.dtype)) + ops.cast(self.bias, x.dtype)
        return ops.concatenate([self._sweep(z, axis, rev, d) for d, (_, axis, rev) in enumerate(DIRECTIONS)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 4 * self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "learn_recurrent": self.learn_recurrent,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}

"""Turning probabilities back into logits, so a model with a CRF at its end keeps the logits contract."""

import keras
from keras import ops

__all__ = ["ProbabilityLogits"]


@keras.saving.register_keras_serializable(package="kseg")
class ProbabilityLogits(keras.layers.Layer):
    """``log(max(p, epsilon))``: logits whose softmax is the (renormalised) distribution `p`.

    kseg models output per-pixel logits; a dense CRF (DeepLab, Chen et al. ICLR 2015 Sec. 4)
    outputs the mean-field marginals Q. ``softmax(log Q) = Q`` for every pixel, and the argmax
    is unchanged, so losses with ``from_logits=True``, metrics and export treat a CRF model like
    any other.

    Example:
        >>> import numpy as np
        >>> p = np.array([[0.25, 0.75]], "float32")
        >>> np.round(ProbabilityLogits()(p).numpy(), 4).tolist()
        [[-1.3863, -0.2877]]
    """

    def __init__(self, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < float(epsilon) < 1.0:
            raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
        self.epsilon = float(epsilon)

    def call(self, p):
        return ops.log(ops.maximum(ops.cast(p, self.compute_dtype), self.epsilon))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}

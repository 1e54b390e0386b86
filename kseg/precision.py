"""Mixed precision through Keras' dtype policies.

``float32`` (default), ``mixed_bfloat16`` (bf16 compute, float32 weights; uses AMX / AVX-512 BF16
on recent x86 CPUs and the tensor cores of GPUs/TPUs) and ``mixed_float16`` (float16 compute with
loss scaling, which ``model.compile`` adds on its own under this policy).

What stays float32 under a mixed policy: the weights (Keras keeps variables float32), losses
(Keras ``Loss`` objects compute in float32), the softmax of the export signatures, and the CRF
layers (``DenseCRF``/``CRFRNN`` run in float32: the mean-field normalisation and the lattice
weights need the precision) and every model's last layer (Keras' convention: the logits come out
float32).

Example:
    >>> import kseg
    >>> with kseg.precision.precision_scope("mixed_bfloat16"):
    ...     model = kseg.SegNetBasic(input_shape=(64, 64, 3), width_multiplier=0.125)
    >>> model.get_layer("conv1").compute_dtype, model.layers[-1].compute_dtype
    ('bfloat16', 'float32')
"""

import contextlib

import keras

__all__ = ["PRECISIONS", "set_precision", "precision_scope"]

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def set_precision(name):
    """Set Keras' global dtype policy to `name`; returns the previous policy's name.

    Models built afterwards compute in that precision; build the model after calling this.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(name)
    return previous


@contextlib.contextmanager
def precision_scope(name):
    """Build (and train) models under `name`, then restore the previous policy."""
    previous = set_precision(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

"""Small helpers shared across kseg."""

import math

import keras

__all__ = ["as_size", "count_params"]


def count_params(model):
    """Parameters counted the way a Caffe prototxt counts them.

    Every weight of the model, trainable or frozen, except BatchNormalization's moving mean and
    variance (running statistics, not learned parameters).
    """
    moving = {
        id(v)
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    }
    return sum(math.prod(v.shape) for v in model.weights if id(v) not in moving)


def as_size(value, name):
    """``None``, an int or a pair -> ``None`` or ``(height, width)`` of positive ints; names `name` on error."""
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be (height, width) with positive sizes, got {value}")
    return value

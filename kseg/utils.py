"""Small helpers shared across kseg."""

import math

import keras
import numpy as np

__all__ = ["as_size", "count_params", "renamed_argument", "transfer_weights"]


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


def transfer_weights(source, target):
    """Copy weights between layers of the same name and shapes; return the copied names.

    A layer of `target` whose namesake in `source` has differently shaped weights is an error.
    """
    copied = set()
    names = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        src = names.get(layer.name)
        if src is None or not layer.weights:
            continue
        sw, tw = src.get_weights(), layer.get_weights()
        if len(sw) != len(tw) or any(a.shape != b.shape for a, b in zip(sw, tw)):
            raise ValueError(f"layer {layer.name!r}: weight shapes differ between the models "
                             f"({[a.shape for a in sw]} vs {[b.shape for b in tw]})")
        layer.set_weights(sw)
        copied.add(layer.name)
    return copied


_RANGE_WARNED = set()


def warn_if_unit_range(images, where):
    """Warn once per `where` when float images look like [0, 1] (max <= 1): kseg's models expect RGB in
    [0, 255] (their first layer subtracts the mean pixel). Returns `images` unchanged."""
    import warnings

    a = np.asarray(images)
    if where in _RANGE_WARNED or a.size == 0 or not np.issubdtype(a.dtype, np.floating):
        return images
    top = float(a.max())
    if 0.0 < top <= 1.0:
        _RANGE_WARNED.add(where)
        warnings.warn(f"{where}: the images are in [0, {top:.3g}], but kseg models expect RGB in [0, 255] "
                      "(the first layer subtracts the mean pixel): multiply them by 255 (or drop a Rescaling(1/255) "
                      "from the pipeline). Warned once.", UserWarning, stacklevel=3)
    return images


def renamed_argument(old, new):
    """Decorator: accept keyword `old` as a deprecated alias of `new` (a DeprecationWarning says so)."""
    import functools
    import warnings

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__qualname__}: pass {new}= only ({old}= is its deprecated name)")
                warnings.warn(f"{fn.__qualname__}({old}=...) is deprecated: use {new}=", DeprecationWarning,
                              stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap

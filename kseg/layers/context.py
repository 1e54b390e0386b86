"""Multi-scale context aggregation by dilated convolutions (Yu & Koltun, ICLR 2016; arXiv:1511.07122).

The context module (Sec. 3, Table 1) is a stack of 3x3 convolutions with exponentially growing
dilation 1, 1, 2, 4, 8, 16, 1 followed by a 1x1 convolution, every layer but the last with a
ReLU. It takes C score maps and returns C score maps, so it plugs onto any dense predictor. Its
layer names follow the authors' generated nets (fyu/dilation ``network.py`` ``build_context`` and
``models/dilation8_*_deploy.prototxt``): ``ctx_conv1_1``, ``ctx_conv1_2``, ``ctx_conv2_1`` ...
``ctx_conv5_1``, ``ctx_fc1``, ``ctx_final``. Every 3x3 layer pads by its dilation (zero
padding, output size = input size).

Identity initialisation (Sec. 3): random initialisation did not train; instead each layer
starts as the identity so the untrained module passes its input through (up to the ReLUs):

- basic (C channels everywhere): ``k(t, a) = 1[t = 0] 1[a = b]`` -> :class:`ContextIdentity`;
- large (widths 2C, 2C, 4C, 8C, 16C, 32C, 32C, C): ``k^b(t, a) = C / c_{i+1}`` if ``t = 0`` and
  ``floor(a C / c_i) = floor(b C / c_{i+1})``, else ``eps ~ N(0, sigma^2)`` with
  ``sigma << C / c_{i+1}`` -> :class:`ContextGroupIdentity`.
"""

import keras
import numpy as np
from keras import layers, ops

__all__ = [
    "ContextIdentity",
    "ContextGroupIdentity",
    "ContextModule",
    "ReflectionPadding2D",
    "CONTEXT_DILATIONS",
    "context_widths",
]

#: Dilations of the 3x3 layers 1..7 of the context module (Table 1); layer 8 is 1x1.
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
#: Output channels of layers 1..8 as multiples of C (Table 1).
_WIDTHS = {"basic": (1, 1, 1, 1, 1, 1, 1, 1), "large": (2, 2, 4, 8, 16, 32, 32, 1)}
#: The authors' layer names (fyu/dilation network.py build_context).
_NAMES = ("ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1", "ctx_conv5_1",
          "ctx_fc1", "ctx_final")


def context_widths(num_classes, variant="basic"):
    """Output channels of the 8 layers: ``[C] * 8`` (basic) or ``[2C, 2C, 4C, 8C, 16C, 32C, 32C, C]`` (large)."""
    if variant not in _WIDTHS:
        raise ValueError(f"variant must be one of {tuple(_WIDTHS)}, got {variant!r}")
    return [m * int(num_classes) for m in _WIDTHS[variant]]


@keras.saving.register_keras_serializable(package="kseg")
class ContextIdentity(keras.initializers.Initializer):
    """Identity kernel of the basic context module: ``k(t, a) = 1[t = 0] 1[a = b]`` (Yu & Koltun, Sec. 3).

    For a ``(kh, kw, c, c)`` kernel: 1 at the centre tap from channel ``a`` to ``a``, 0 elsewhere.

    Example:
        >>> import numpy as np
        >>> k = np.asarray(ContextIdentity()((3, 3, 2, 2)))
        >>> k[1, 1].tolist(), float(k.sum())
        ([[1.0, 0.0], [0.0, 1.0]], 2.0)
    """

    def __call__(self, shape, dtype=None):
        kh, kw, cin, cout = shape
        if cin != cout or kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"ContextIdentity needs an odd square-channel kernel (k, k, c, c), got {tuple(shape)}")
        kernel = np.zeros(shape, "float32")
        kernel[kh // 2, kw // 2] = np.eye(cin, dtype="float32")
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="kseg")
class ContextGroupIdentity(keras.initializers.Initializer):
    """Identity initialisation of the large context module (Yu & Koltun, Sec. 3).

    ``k^b(t, a) = C / c_out`` if ``t = 0`` and ``floor(a C / c_in) = floor(b C / c_out)``, else
    ``eps ~ N(0, sigma^2)`` with ``sigma = relative_stddev * C / c_out`` (the paper asks
    ``sigma << C / c_{i+1}``). Channel ``k`` of the C inputs is spread over a group of
    ``c / C`` channels, each holding ``x_k C / c``; the next layer sums a group back, so the
    chain C -> 2C -> ... -> 32C -> C is the identity when ``relative_stddev = 0``.

    Args:
        base_channels: C, the module's input/output channels (the number of classes).
        relative_stddev: noise level relative to ``C / c_out`` (0 gives the exact identity).
        seed: seed of the noise.

    Example:
        >>> import numpy as np
        >>> k = np.asarray(ContextGroupIdentity(2, relative_stddev=0.0)((3, 3, 2, 4)))
        >>> k[1, 1].tolist()
        [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """

    def __init__(self, base_channels, relative_stddev=1e-3, seed=None):
        if int(base_channels) < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        if float(relative_stddev) < 0:
            raise ValueError(f"relative_stddev must be >= 0, got {relative_stddev}")
        self.base_channels, self.relative_stddev, self.seed = int(base_channels), float(relative_stddev), seed

    def __call__(self, shape, dtype=None):
        kh, kw, cin, cout = shape
        c = self.base_channels
        if kh % 2 == 0 or kw % 2 == 0 or cin % c or cout % c:
            raise ValueError(
                f"ContextGroupIdentity needs an odd kernel whose channels are multiples of {c}, got {tuple(shape)}"
            )
        value = c / cout
        kernel = np.random.default_rng(self.seed).normal(0.0, self.relative_stddev * value, shape).astype("float32")
        a = np.arange(cin)[:, None]
        b = np.arange(cout)[None, :]
        centre = np.where((a * c) // cin == (b * c) // cout, value, kernel[kh // 2, kw // 2])
        kernel[kh // 2, kw // 2] = centre
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {"base_channels": self.base_channels, "relative_stddev": self.relative_stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kseg")
class ContextModule(keras.layers.Layer):
    """The context module of Yu & Koltun (ICLR 2016), Sec. 3 and Table 1.

    ``(batch, H, W, C) -> (batch, H, W, C)``: seven 3x3 convolutions with dilations
    1, 1, 2, 4, 8, 16, 1 (ReLU after each) and a 1x1 convolution, identity-initialised
    (:class:`ContextIdentity` for "basic", :class:`ContextGroupIdentity` for "large"), zero
    biases. An untrained basic module maps ``x`` to ``max(x, 0)`` (the ReLUs truncate negative
    scores, exactly as in the authors' Caffe nets); non-negative inputs pass through unchanged.
    Receptive field: 3, 5, 9, 17, 33, 65, 67, 67.

    Args:
        num_classes: C, the channels of the input score maps.
        variant: ``"basic"`` (C channels everywhere; Dilation8 of the authors' releases) or
            ``"large"`` (2C, 2C, 4C, 8C, 16C, 32C, 32C, C).
        relative_stddev: noise of the large variant's initialisation (relative to ``C / c_out``).
        seed: seed of that noise.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype("float32")
        >>> bool(np.allclose(np.asarray(ContextModule(3)(x)), x, atol=1e-6))
        True
    """

    def __init__(self, num_classes, variant="basic", relative_stddev=1e-3, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.variant = int(num_classes), variant
        self.relative_stddev, self.seed = float(relative_stddev), seed
        widths = context_widths(self.num_classes, variant)
        self.convs = []
        for i, (name, width) in enumerate(zip(_NAMES, widths)):
            last = i == len(widths) - 1
            if variant == "basic":
                init = ContextIdentity()
            else:
                init = ContextGroupIdentity(self.num_classes, relative_stddev, None if seed is None else seed + i)
            self.convs.append(
                layers.Conv2D(
                    width,
                    1 if last else 3,
                    padding="same",
                    dilation_rate=1 if last else CONTEXT_DILATIONS[i],
                    activation=None if last else "relu",
                    kernel_initializer=init,
                    bias_initializer="zeros",
                    name=name,
                )
            )

    def build(self, input_shape):
        if input_shape[-1] != self.num_classes:
            raise ValueError(f"{self.name} expects {self.num_classes} input channels, got {input_shape[-1]}")
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:-1] + (conv.filters,)

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "variant": self.variant,
                "relative_stddev": self.relative_stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kseg")
class ReflectionPadding2D(keras.layers.Layer):
    """Reflection padding (OpenCV ``BORDER_REFLECT_101``, numpy ``mode="reflect"``) of an image batch.

    The dilation front end uses valid convolutions and reflection-pads its input instead
    (Yu & Koltun, Sec. 4; fyu/dilation ``predict.py``: ``label_margin = 186``,
    ``cv2.copyMakeBorder(..., BORDER_REFLECT_101)``). `multiple` adds rows/columns at the bottom
    and right so that ``height - top - bottom`` ... is a multiple of it (the front end's output
    stride 8 needs height and width divisible by 8). Pads wider than the map reflect the padded
    map again, exactly as ``numpy.pad(mode="reflect")``, so small test images work too.

    Args:
        padding: ``((top, bottom), (left, right))`` or one int for all sides.
        multiple: pad the bottom/right further so that the unpadded size becomes a multiple of it.

    Example:
        >>> import numpy as np
        >>> x = np.arange(3, dtype="float32").reshape(1, 1, 3, 1)
        >>> np.asarray(ReflectionPadding2D(((0, 0), (2, 1))) (x))[0, 0, :, 0].tolist()
        [2.0, 1.0, 0.0, 1.0, 2.0, 1.0]
    """

    def __init__(self, padding=1, multiple=1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding, int):
            padding = ((padding, padding), (padding, padding))
        padding = tuple(tuple(int(p) for p in side) for side in padding)
        if len(padding) != 2 or any(len(s) != 2 or min(s) < 0 for s in padding):
            raise ValueError(f"padding must be ((top, bottom), (left, right)) of ints >= 0, got {padding}")
        if int(multiple) < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple}")
        self.padding, self.multiple = padding, int(multiple)

    def _pads(self, height, width):
        (t, b), (l, r) = self.padding
        return [[0, 0], [t, b + (-height) % self.multiple], [l, r + (-width) % self.multiple], [0, 0]]

    def call(self, x):
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            raise ValueError(f"{self.name} needs a static height and width, got {tuple(x.shape)}")
        if height < 2 or width < 2:
            raise ValueError(f"{self.name}: reflection needs height and width >= 2, got {height}x{width}")
        pads = self._pads(height, width)
        for axis in (1, 2):
            # pads wider than the map reflect the already padded map again (numpy's "reflect")
            before, after = pads[axis]
            while before or after:
                n = x.shape[axis]
                step = [min(before, n - 1), min(after, n - 1)]
                widths = [[0, 0]] * 4
                widths[axis] = step
                x = ops.pad(x, widths, mode="reflect")
                before, after = before - step[0], after - step[1]
        return x

    def compute_output_shape(self, input_shape):
        pads = self._pads(input_shape[1] or 0, input_shape[2] or 0)
        grow = lambda n, p: None if n is None else n + p[0] + p[1]  # noqa: E731
        return (input_shape[0], grow(input_shape[1], pads[1]), grow(input_shape[2], pads[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "multiple": self.multiple}


def _receptive_field():
    """Receptive field after each layer of the module (3, 5, 9, 17, 33, 65, 67, 67)."""
    field, out = 1, []
    for d in CONTEXT_DILATIONS + (0,):
        field += 2 * d
        out.append(field)
    return out


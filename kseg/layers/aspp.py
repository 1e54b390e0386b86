"""Atrous Spatial Pyramid Pooling of DeepLab-v2 (Chen et al., PAMI 2018, Sec. 3.3, Fig. 4)."""

import keras
from keras import layers, ops

__all__ = ["AtrousSpatialPyramid"]


@keras.saving.register_keras_serializable(package="kseg")
class AtrousSpatialPyramid(keras.layers.Layer):
    """Parallel dilated-convolution branches on one feature map, their outputs **summed**.

    DeepLab-v2's ASPP (PAMI 2018, Sec. 3.3 and Fig. 4): each branch sees the same features with a
    different field of view (dilation rate) and ends in class scores; the branch scores are
    added (Caffe ``Eltwise`` SUM). Two forms from the authors' definitions:

    - **ASPP-L on VGG16** (``hidden_units=(1024, 1024)``): branch ``k`` is ``fc6_k`` (3x3,
      dilation ``rates[k]``, 1024) -> ReLU -> dropout -> ``fc7_k`` (1x1, 1024) -> ReLU -> dropout
      -> ``fc8_k`` (1x1, classes).
    - **ResNet-101** (``hidden_units=()``): branch ``k`` is one 3x3 conv with dilation
      ``rates[k]`` straight to the classes (``fc1_voc12_c0`` .. ``c3``), with bias.

    Sub-layer names follow the prototxts: ``branch_names`` gives the stem of each branch's
    names; hidden convs are named ``fc6_<stem>``, ``fc7_<stem>`` and the output conv
    ``fc8_<stem>`` when there are hidden layers, else ``<stem>`` itself.

    Args:
        filters: output channels of every branch (the number of classes).
        rates: dilation rates, one branch each (DeepLab-v2: 6, 12, 18, 24).
        hidden_units: widths of the convs before the output conv: the first is 3x3 dilated,
            the others 1x1; ``()`` makes the output conv itself the 3x3 dilated one.
        dropout: dropout rate after each hidden ReLU (0.5 in DeepLab-v2 VGG16).
        branch_names: one name stem per branch (default ``"1"``, ``"2"``, ...).
        kernel_initializer: for the hidden convs; the output convs use N(0, 0.01) and zero
            bias as the authors' ``fc8`` / ``fc1_voc12`` fillers.

    Input ``(batch, H, W, C)`` -> output ``(batch, H, W, filters)``, sizes kept ("same" padding,
    pad = dilation as in the prototxts).

    Example:
        >>> import numpy as np
        >>> aspp = AtrousSpatialPyramid(21, rates=(6, 12, 18, 24))
        >>> aspp(np.zeros((1, 41, 41, 64), "float32")).shape
        (1, 41, 41, 21)
    """

    def __init__(self, filters, rates=(6, 12, 18, 24), hidden_units=(), dropout=0.5, branch_names=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"filters must be >= 1, got {filters}")
        rates = tuple(int(r) for r in rates)
        if not rates or min(rates) < 1:
            raise ValueError(f"rates must be a non-empty list of dilation rates >= 1, got {rates}")
        hidden_units = tuple(int(u) for u in hidden_units)
        if hidden_units and min(hidden_units) < 1:
            raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if branch_names is None:
            branch_names = [str(k) for k in range(1, len(rates) + 1)]
        branch_names = [str(n) for n in branch_names]
        if len(branch_names) != len(rates):
            raise ValueError(f"branch_names needs one name per rate ({len(rates)}), got {branch_names}")
        self.filters, self.rates, self.hidden_units = int(filters), rates, hidden_units
        self.dropout, self.branch_names = float(dropout), branch_names
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        out_init = dict(kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), bias_initializer="zeros")
        self.branches = []
        for rate, stem in zip(rates, branch_names):
            convs = []
            for j, units in enumerate(hidden_units):
                convs.append(layers.Conv2D(
                    units, 3 if j == 0 else 1, padding="same", dilation_rate=rate if j == 0 else 1,
                    kernel_initializer=self.kernel_initializer, name=f"fc{6 + j}_{stem}",
                ))
            if hidden_units:
                out = layers.Conv2D(self.filters, 1, name=f"fc8_{stem}", **out_init)
            else:
                out = layers.Conv2D(self.filters, 3, padding="same", dilation_rate=rate, name=stem, **out_init)
            self.branches.append((convs, out))
        self.drop = layers.Dropout(self.dropout) if hidden_units and self.dropout > 0 else None

    def build(self, input_shape):
        for convs, out in self.branches:
            shape = tuple(input_shape)
            for conv in convs:
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
            out.build(shape)
        self.built = True

    def call(self, x, training=None):
        total = None
        for convs, out in self.branches:
            h = x
            for conv in convs:
                h = ops.relu(conv(h))
                if self.drop is not None:
                    h = self.drop(h, training=training)
            h = out(h)
            total = h if total is None else total + h
        return total

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "rates": list(self.rates),
                "hidden_units": list(self.hidden_units), "dropout": self.dropout,
                "branch_names": list(self.branch_names),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}

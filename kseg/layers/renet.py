"""ReNet: a recurrent alternative to convolution (Visin et al., arXiv:1505.00393, 2015), used by ReSeg (2016).

A ReNet layer (Sec. 2, Fig. 1) splits its input into non-overlapping ``ph x pw`` patches, each
flattened to a vector. Two RNNs sweep every column of patches, one top-down and one bottom-up;
their hidden states are concatenated at each patch. Two more RNNs then sweep every row of that
result, left-right and right-left, and their states are concatenated again: each output
position has seen the whole image. The sweeps are Keras' own recurrent layers (``GRU`` /
``LSTM`` / ``SimpleRNN`` inside ``Bidirectional``), so a GPU gets the cuDNN kernels.
"""

import keras
from keras import layers, ops

__all__ = ["ReNet2D"]

_CELLS = {"gru": layers.GRU, "lstm": layers.LSTM, "rnn": layers.SimpleRNN}


@keras.saving.register_keras_serializable(package="kseg")
class ReNet2D(keras.layers.Layer):
    """One ReNet layer: patches -> bidirectional vertical sweep -> bidirectional horizontal sweep.

    ``(batch, H, W, C) -> (batch, H / ph, W / pw, 2 * units)``. Visin et al. 2015, Sec. 2, Eq. 1-2:
    ``v^F_{i,j} = f_VFWD(z^F_{i-1,j}, p_{i,j})`` and ``v^R_{i,j} = f_VREV(z^R_{i+1,j}, p_{i,j})``
    over the rows of column ``j``; the concatenated ``v`` is then swept along each row by
    ``f_HFWD`` / ``f_HREV``. ReNet and ReSeg use GRUs.

    Args:
        patch_size: ``(ph, pw)`` or an int; H and W must be divisible by it.
        units: hidden units of each of the four RNNs (the output has ``2 * units`` channels).
        cell: ``"gru"`` (default, as the papers), ``"lstm"`` or ``"rnn"`` (``SimpleRNN``, tanh).
        recurrent_kwargs: extra keyword arguments of the Keras recurrent layers (e.g.
            ``{"reset_after": False}``; the default GRU is the cuDNN-compatible one).

    Sublayers: ``vertical`` and ``horizontal`` (``keras.layers.Bidirectional``).

    Example:
        >>> import numpy as np
        >>> ReNet2D(2, 4)(np.zeros((1, 6, 8, 3), "float32")).shape
        (1, 3, 4, 8)
    """

    def __init__(self, patch_size=2, units=64, cell="gru", recurrent_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(patch_size, int):
            patch_size = (patch_size, patch_size)
        patch_size = tuple(int(p) for p in patch_size)
        if len(patch_size) != 2 or min(patch_size) < 1:
            raise ValueError(f"patch_size must be a positive int or (ph, pw), got {patch_size}")
        if int(units) < 1:
            raise ValueError(f"units must be >= 1, got {units}")
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {tuple(_CELLS)}, got {cell!r}")
        self.patch_size, self.units, self.cell = patch_size, int(units), cell
        self.recurrent_kwargs = dict(recurrent_kwargs or {})
        self.vertical = self._bidirectional("vertical")
        self.horizontal = self._bidirectional("horizontal")

    def _bidirectional(self, name):
        # Both directions made here: Bidirectional's own copy of the forward layer goes through
        # Keras' serialisation, whose object-sharing cache can hand back the forward layer itself
        # while a model is being loaded ("should have different go_backwards").
        rnn = _CELLS[self.cell]
        forward = rnn(self.units, return_sequences=True, **self.recurrent_kwargs)
        backward = rnn(self.units, return_sequences=True, go_backwards=True, **self.recurrent_kwargs)
        return layers.Bidirectional(forward, backward_layer=backward, merge_mode="concat", name=name)

    def _grid(self, input_shape):
        """(rows, columns, patch features) of the patch grid; rows / columns None when unknown."""
        _, h, w, c = input_shape
        ph, pw = self.patch_size
        if c is None:
            raise ValueError(f"{self.name} needs a static number of channels, got {tuple(input_shape)}")
        if (h is not None and h % ph) or (w is not None and w % pw):
            raise ValueError(f"{self.name}: input {h}x{w} is not divisible by the patch size {ph}x{pw}")
        return (None if h is None else h // ph), (None if w is None else w // pw), ph * pw * c

    def build(self, input_shape):
        gh, gw, d = self._grid(input_shape)
        self.vertical.build((None, gh, d))
        self.horizontal.build((None, gw, 2 * self.units))

    def call(self, x):
        gh, gw, d = self._grid(x.shape)
        ph, pw = self.patch_size
        c = x.shape[-1]
        # sizes known only at run time (any input size): the sweeps are RNNs over any length
        gh = ops.shape(x)[1] // ph if gh is None else gh
        gw = ops.shape(x)[2] // pw if gw is None else gw
        # non-overlapping patches, flattened in (row, column, channel) order
        x = ops.reshape(x, (-1, gh, ph, gw, pw, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, gh, gw, d))
        # vertical sweep: one sequence per column, over the rows
        v = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, gh, d))
        v = self.vertical(v)
        v = ops.transpose(ops.reshape(v, (-1, gw, gh, 2 * self.units)), (0, 2, 1, 3))
        # horizontal sweep: one sequence per row, over the columns
        out = self.horizontal(ops.reshape(v, (-1, gw, 2 * self.units)))
        return ops.reshape(out, (-1, gh, gw, 2 * self.units))

    def compute_output_shape(self, input_shape):
        gh, gw, _ = self._grid(input_shape)
        return (input_shape[0], gh, gw, 2 * self.units)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "units": self.units, "cell": self.cell,
                "recurrent_kwargs": self.recurrent_kwargs}

"""Readers and writers for the authors' released weight files, and the layout transforms between
their array conventions and Keras'.

The modules here read files into named numpy arrays and know no model (Caffe ``.caffemodel`` in
:mod:`kseg.convert.caffe`, Torch7 ``.t7`` in :mod:`kseg.convert.torch7`, array layouts in
:mod:`kseg.convert.layout`); the mapping from the authors' layer names to kseg layers lives beside
each model (``kseg.models.weights``, ``kseg.models.torch_weights``).
"""

from kseg.io import atomic_path  # the one crash-safe writer: temporary name, fsync, rename


class ConversionError(ValueError):
    """A weight file cannot be read or does not fit the model; the message names the file."""


__all__ = ["ConversionError", "atomic_path"]

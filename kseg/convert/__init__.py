"""Readers and writers for the authors' released weight files, and the layout transforms between
their array conventions and Keras'.

The modules here read files into named numpy arrays and know no model (Caffe ``.caffemodel`` in
:mod:`kseg.convert.caffe`, Torch7 ``.t7`` in :mod:`kseg.convert.torch7`, array layouts in
:mod:`kseg.convert.layout`); the mapping from the authors' layer names to kseg layers lives beside
each model (``kseg.models.weights``, ``kseg.models.torch_weights``).
"""

import contextlib
import os


class ConversionError(ValueError):
    """A weight file cannot be read or does not fit the model; the message names the file."""


@contextlib.contextmanager
def atomic_path(path, suffix=".weights.h5"):
    """Yield a temporary path beside `path` (same folder, same `suffix`); when the block succeeds,
    fsync it and rename it onto `path`, so `path` is either the old file or the complete new one.
    On an error the temporary file is removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    stem = base[: -len(suffix)] if suffix and base.endswith(suffix) else base
    tmp = os.path.join(folder, f".{stem}.tmp{os.getpid()}{suffix if base.endswith(suffix) else ''}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


__all__ = ["ConversionError", "atomic_path"]

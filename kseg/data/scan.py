"""Find the file behind a decode error raised late, inside a running ``tf.data`` pipeline.

The up-front checks (:func:`kseg.data.validate_pairs`) read headers and PNG chunk CRCs, which is
fast but cannot see corrupt compressed data behind valid CRCs. When such a file makes
``tf.io.decode_image`` fail during ``fit`` or ``evaluate``, TensorFlow's message only says "Invalid
PNG data"; :func:`find_corrupt_file` decodes the split's files one by one, as the pipeline does, to
name the culprit.
"""

__all__ = ["find_corrupt_file", "decode_error"]


def decode_error(path, kind="image"):
    """``None`` when `path` decodes as the pipeline decodes it, else the problem as a string."""
    import tensorflow as tf

    try:
        raw = tf.io.read_file(str(path))
        if kind == "image":
            tf.io.decode_image(raw, channels=3, dtype=tf.uint8, expand_animations=False)
        else:
            tf.io.decode_png(raw, channels=0, dtype=tf.uint8)
    except (tf.errors.OpError, OSError) as err:
        message = str(getattr(err, "message", err)).strip().splitlines()
        return f"corrupt {kind} data, cannot decode ({message[0] if message else type(err).__name__})"
    return None


def find_corrupt_file(root_or_pairs, split=None):
    """The first ``(path, problem)`` of a split (or a list of pairs) that fails to decode, or ``None``."""
    from kseg.data.folder import find_pairs

    pairs = find_pairs(root_or_pairs, split) if not isinstance(root_or_pairs, (list, tuple)) else root_or_pairs
    for image, mask in pairs:
        for path, kind in ((image, "image"), (mask, "mask")):
            problem = decode_error(path, kind)
            if problem is not None:
                return str(path), problem
    return None

"""Dataset finders and downloaders (no data is shipped with kseg).

    >>> from kseg.datasets import camvid
    >>> camvid.NUM_CLASSES, camvid.IGNORE_LABEL
    (11, 11)
"""

from kseg.datasets import camvid

__all__ = ["camvid"]

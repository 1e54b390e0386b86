"""Errors raised by the data pipelines."""


class DataError(ValueError):
    """Bad or missing data: the message names the offending file (or folder) and the problem.

    A subclass of ``ValueError``, so ``except ValueError`` also catches it.

    Example:
        >>> from kseg.data import DataError, find_pairs
        >>> try:
        ...     find_pairs("/nonexistent")
        ... except DataError as err:
        ...     print(err)  # doctest: +ELLIPSIS
        data folder /nonexistent does not exist
    """

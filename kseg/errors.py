"""How the ``kseg`` command reports a failure: one or two lines naming the path and the problem.

:func:`run_cli` runs a subcommand and turns every exception into a short message on stderr and a
non-zero exit status, instead of a traceback (``--debug`` or ``KSEG_DEBUG=1`` re-raises it):

======================================  =====================================================  ====
error                                   message                                                exit
======================================  =====================================================  ====
``ValueError`` (``DataError``, ...)     its text (kseg's messages name the file and problem)    2
``OSError`` (missing, read-only, full)  ``PATH: strerror`` (+ a hint for a full disk)            1
TensorFlow ``OpError``                  its first line                                          1
``KeyboardInterrupt``                   ``interrupted`` (+ how to resume a training run)        130
anything else                           ``TypeName: text`` and a pointer to ``--debug``         1
======================================  =====================================================  ====
"""

import errno
import os
import sys

__all__ = ["describe", "run_cli", "debug_requested"]

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space (the previous files are intact)",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.EACCES: "permission denied: choose another --out or fix the permissions",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EDQUOT: "disk quota exceeded: free some space (the previous files are intact)",
}


def debug_requested(argv):
    """``(debug, argv without --debug)``; ``KSEG_DEBUG=1`` also asks for tracebacks."""
    argv = list(argv)
    debug = "--debug" in argv or os.environ.get("KSEG_DEBUG", "") not in ("", "0")
    return debug, [a for a in argv if a != "--debug"]


def _first_line(text):
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def describe(err):
    """``(message, exit status)`` for an exception (see the module docstring)."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(err, ValueError):  # DataError and kseg's argument errors name what is wrong
        return str(err), 2
    if isinstance(err, OSError):
        where = err.filename if err.filename is not None else None
        if err.filename2 is not None:
            where = f"{err.filename} -> {err.filename2}"
        what = err.strerror or _first_line(err) or type(err).__name__
        hint = _HINTS.get(err.errno)
        message = f"{where}: {what}" if where else what
        if not where and "Unable to" in what:  # h5py: "Unable to synchronously open file (...)"
            message = _first_line(err)
        return (f"{message}\n  {hint}" if hint else message), 1
    try:
        import tensorflow as tf

        if isinstance(err, tf.errors.OpError):
            return f"TensorFlow: {_first_line(getattr(err, 'message', err))}", 1
    except ImportError:  # pragma: no cover
        pass
    return f"{type(err).__name__}: {_first_line(err)}\n  (unexpected: run again with --debug for the traceback)", 1


def run_cli(command, fn, *args, debug=False, on_interrupt=None):
    """Run ``fn(*args)``; print ``kseg COMMAND: error: ...`` and return a status instead of raising.

    Returns ``fn``'s result (a status or ``None``) when it succeeds.
    """
    if not debug:
        _quiet_h5py_cleanup()
    try:
        result = fn(*args)
    except (Exception, KeyboardInterrupt) as err:
        if debug:
            raise
        message, status = describe(err)
        if isinstance(err, KeyboardInterrupt) and on_interrupt:
            message = f"{message}: {on_interrupt}"
        print(f"kseg {command}: error: {message}", file=sys.stderr)
        return status
    return result


def _is_h5py_cleanup(exc_value, where=""):
    return "decrement id ref count" in str(exc_value) or "h5py._objects" in str(where)


def _quiet_h5py_cleanup():
    """Silence h5py's complaints about a file whose write failed (a full disk, already reported as
    one line): its objects raise again when collected, which Cython prints as a traceback through
    ``sys.excepthook`` and then ``sys.unraisablehook``. Other errors still print as usual."""
    if getattr(sys.excepthook, "_kseg", False):
        return
    except_hook, unraisable_hook = sys.excepthook, sys.unraisablehook

    def excepthook(exc_type, exc_value, tb):
        if not _is_h5py_cleanup(exc_value):
            except_hook(exc_type, exc_value, tb)

    def unraisablehook(unraisable):
        if not _is_h5py_cleanup(unraisable.exc_value, f"{unraisable.err_msg} {unraisable.object!r}"):
            unraisable_hook(unraisable)

    excepthook._kseg = True
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook

"""Crash-safe file writing: the previous good file or the new complete one, never half of either.

Every file kseg writes (backups, checkpoints, ``model.keras``, ``log.csv``, exports, converted
weights) goes through one of these helpers. The new content is written under a temporary name in
the same folder, flushed and fsynced, then renamed over the target with :func:`os.replace` (atomic on
POSIX within one file system), and the folder is fsynced so that the rename itself survives a power
cut. A kill at any instant, or a full disk, leaves either the old file or the new one, plus at worst
a stray ``.tmp-*`` file that the next successful write of the same target removes.

* :func:`atomic_path`: a context manager yielding a temporary path, for writers that only take a
  path (``model.save``, ``model.save_weights``, h5py, PIL).
* :func:`atomic_write`: a context manager yielding an open file object.
* :func:`atomic_write_bytes` / :func:`atomic_write_text`: one-shot writes.
* :func:`atomic_dir`: the same for a folder (a SavedModel): written to a temporary folder, then
  swapped in.

Example:
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(folder, "model.bin")) as tmp:
    ...     with open(tmp, "wb") as f:
    ...         _ = f.write(b"weights")
    >>> open(os.path.join(folder, "model.bin"), "rb").read()
    b'weights'
"""

import contextlib
import os
import pathlib
import shutil
import uuid

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_dir",
    "fsync_dir",
    "fsync_file",
    "TMP_PREFIX",
]

#: Temporary files and folders start with this (then the target's name), so they are easy to spot.
TMP_PREFIX = ".tmp-"

#: Test hook: a comma-separated list of ``stage:name[:n]`` points (``stage`` is ``written`` -- the
#: temporary file is complete but not yet renamed -- or ``renamed``); when the n-th (default first)
#: write of a file called ``name`` reaches one, the process SIGKILLs itself. Lets tests kill a run at
#: exact points of a write.
KILL_ENV = "KSEG_KILL_AT"


_KILL_COUNTS = {}


def _maybe_kill(stage, target):
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name = pathlib.Path(target).name
    key = (stage, name)
    _KILL_COUNTS[key] = _KILL_COUNTS.get(key, 0) + 1
    for point in spec.split(","):
        parts = point.split(":")
        nth = int(parts[2]) if len(parts) > 2 else 1
        if parts[0] == stage and parts[1] == name and _KILL_COUNTS[key] == nth:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path):
    """fsync a folder so that renames and new entries in it are durable (a no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


def fsync_file(path):
    """fsync one file's content to disk."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _named(err, target):
    """`err` with the target's path attached: an OSError without a file name gets it, and a
    library's wrapped "No space left on device" (TensorFlow, h5py) becomes an ENOSPC OSError."""
    import errno

    if isinstance(err, OSError):
        if err.errno in (errno.ENOSPC, errno.EROFS) and str(target) not in str(err.filename):  # h5py's long text
            return OSError(err.errno, os.strerror(err.errno), str(target))
        if err.filename is None:
            err.filename = str(target)
        return err
    if isinstance(err, Exception) and "No space left on device" in str(err):
        return OSError(errno.ENOSPC, "No space left on device", str(target))
    if isinstance(err, Exception) and "Read-only file system" in str(err):
        return OSError(errno.EROFS, "Read-only file system", str(target))
    return err


def _raise_named(err, target):
    """Re-raise a failed write's error, with the target's path attached (see :func:`_named`)."""
    named = _named(err, target)
    if named is not err:
        raise named from err
    raise err


def _after_rename(target):
    """The end of every successful write: the rename made durable, stale temporaries removed."""
    fsync_dir(target.parent)
    _maybe_kill("renamed", target)
    _remove_stale(target)


def _tmp_name(target):
    return target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}")


def _check_parent(target):
    parent = target.parent
    if not parent.exists():
        raise FileNotFoundError(2, "folder does not exist", str(parent))
    if not parent.is_dir():
        raise NotADirectoryError(20, "not a folder", str(parent))


def _remove_stale(target):
    """Remove temporaries left for `target` by killed writers (after a successful write)."""
    try:
        for p in target.parent.glob(f"{TMP_PREFIX}*-{target.name}"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path, keep_suffix=True):
    """Yield a temporary path next to `path`; on success it is fsynced and renamed to `path`.

    The writer (``model.save(tmp)``, ``h5py.File(tmp, "w")``, ...) writes to the yielded path. When the
    block raises, the temporary file is removed and `path` is left as it was. The temporary name keeps
    `path`'s suffix (``model.save`` checks for ``.keras``).

    Args:
        path: the final file.
        keep_suffix: end the temporary name in `path`'s name (and so its suffix).

    Yields:
        A ``str`` path in the same folder.
    """
    target = pathlib.Path(path)
    _check_parent(target)
    if target.is_dir():
        raise IsADirectoryError(21, "is a folder, expected a file", str(target))
    tmp = _tmp_name(target) if keep_suffix else target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}")
    try:
        yield str(tmp)
        if not tmp.exists():
            raise FileNotFoundError(2, "the writer did not create the file", str(tmp))
        fsync_file(tmp)
        _maybe_kill("written", target)
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _raise_named(err, target)
    _after_rename(target)


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Yield a file object open on a temporary file; flushed, fsynced and renamed to `path` on success."""
    if "r" in mode or "a" in mode or "+" in mode:
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path, data):
    """Write `data` (bytes) to `path` atomically; returns ``str(path)``."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return str(path)


def atomic_write_text(path, text, encoding="utf-8"):
    """Write `text` to `path` atomically; returns ``str(path)``."""
    with atomic_write(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return str(path)


def _fsync_tree(root):
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_dir(folder)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary folder next to `path`; on success it replaces `path` (a folder or nothing).

    Two renames cannot be one atomic step, so an existing `path` is first renamed aside (to
    ``.tmp-old-*``), the new folder renamed in, and the old one deleted. A kill between the two
    renames leaves the complete old folder under the aside name and the complete new one under its
    temporary name; the next :func:`atomic_dir` on the same target cleans both up.
    """
    target = pathlib.Path(path)
    if not target.parent.exists():
        target.parent.mkdir(parents=True)  # as tf.saved_model.save does
    _check_parent(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(20, "exists and is not a folder", str(target))
    tmp = _tmp_name(target)
    tmp.mkdir()
    try:
        yield str(tmp)
        _fsync_tree(tmp)
        _maybe_kill("written", target)
        if target.exists():  # set aside under a temporary name, removed with the other temporaries
            os.replace(target, target.with_name(f"{TMP_PREFIX}old-{uuid.uuid4().hex[:8]}-{target.name}"))
        os.replace(tmp, target)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_named(err, target)
    _after_rename(target)  # also removes the swapped-out old folder (a TMP_PREFIX name)


def check_keras_file(path):
    """Check that `path` is a complete ``.keras`` archive; returns it as a ``pathlib.Path``.

    Raises:
        ValueError: naming the file: missing, a folder, wrong suffix, empty, not a zip archive
            (truncated or another format), or a member failing its CRC (corrupt weights).
    """
    import zipfile

    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, expected a .keras model file")
    if not path.exists():
        raise ValueError(f"no .keras file at {str(path)!r}")
    if path.suffix != ".keras":
        raise ValueError(f"model file must end in .keras, got {str(path)!r}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a .keras model (an interrupted save?)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras model (no zip archive; truncated or another format, {size} bytes)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as err:
        raise ValueError(f"{path}: corrupt .keras archive ({err})") from None
    if bad is not None:
        raise ValueError(f"{path}: corrupt .keras archive (member {bad!r} fails its CRC check)")
    return path


def load_keras_file(path, compile=False, safe_mode=True):
    """``keras.saving.load_model`` after :func:`check_keras_file`; every failure names the file."""
    import keras

    import kseg.layers  # noqa: F401  (registers the custom layers)

    path = check_keras_file(path)
    try:
        return keras.saving.load_model(str(path), safe_mode=safe_mode, compile=compile)
    except Exception as err:
        text = str(err).strip().splitlines()
        raise ValueError(
            f"{path}: cannot load the .keras model ({type(err).__name__}: {text[0] if text else ''})"
        ) from err

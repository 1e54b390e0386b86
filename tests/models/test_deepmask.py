"""DeepMask / SharpMask: parameter counts from the authors' definitions, fully convolutional
inference equal to the patch network, proposals, training steps, serialisation and export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.models.deepmask import DeepMask, DeepMaskResNet50, SharpMask, deepmask_loss
from kseg.ops import paste_masks
from kseg.inference.proposals import FullyConvolutionalDeepMask, export_proposals, proposal_config, proposals, \
    train_proposal_model

TINY_RES = dict(trunk="resnet50", input_size=32, context=16, width_multiplier=0.125, depths=(1, 1, 1),
                mask_size=8, output_size=8, feature_dim=16, score_hidden=(8,))
TINY_VGG = dict(trunk="vgg", input_size=32, context=0, width_multiplier=0.0625, mask_size=8, output_size=16,
                feature_dim=8, score_hidden=(8, 8))


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def dense(n_in, n_out):
    return n_in * n_out + n_out


def resnet50_to_layer3_convs():
    """fb.resnet.torch ResNet-50 convs (no biases) through layer3; BN gamma/beta separately."""
    convs, bn = conv(7, 3, 64, False), 2 * 64
    cin = 64
    for blocks, mid, out in ((3, 64, 256), (4, 128, 512), (6, 256, 1024)):
        for i in range(blocks):
            convs += conv(1, cin, mid, False) + conv(3, mid, mid, False) + conv(1, mid, out, False)
            bn += 2 * (mid + mid + out)
            if i == 0:
                convs += conv(1, cin, out, False)
                bn += 2 * out
            cin = out
    return convs, bn


def test_param_counts_match_the_authors():
    convs, bn = resnet50_to_layer3_convs()
    assert (convs, bn) == (8_512_704, 30_592)
    # DeepMask.lua: trunk = ResNet-50 to layer3 + 1x1 conv 1024->128 + Linear(128*10*10, 512)
    trunk = convs + conv(1, 1024, 128) + dense(128 * 10 * 10, 512)
    mask = dense(512, 56 * 56)
    score = dense(512, 1024) + dense(1024, 1)
    # the authors' training log (facebookresearch/deepmask issue 122) prints exactly these
    assert (trunk, mask, score) == (15_198_016, 1_608_768, 526_337)
    model = DeepMaskResNet50()
    assert kseg.count_params(model) == trunk + bn + mask + score == DeepMaskResNet50.card.num_params
    # SharpMask.lua, km = ks = 32, fSz = 10: vertical nets, horizontal nets, final 3x3 conv to 1
    netv = dense(512, 10 * 10 * 32) + sum(conv(3, n, n) + conv(3, n, n // 2) for n in (32, 16, 8, 4))
    neth = sum(conv(3, nhu1, nhu2) + conv(3, nhu2, n) + conv(3, n, n // 2)
               for (nhu1, nhu2), n in zip(((1024, 64), (512, 64), (256, 64), (64, 32)), (32, 16, 8, 4)))
    assert (netv, neth) == (1_660_050, 1_090_466)
    sharp = SharpMask()
    assert kseg.count_params(sharp) == trunk + bn + score + netv + neth + conv(3, 2, 1) == SharpMask.card.num_params
    # the paper's VGG-A DeepMask at 224: 8 convs; mask 1x1 conv, low-rank 512, 56^2; score 2x2 pool, 512, 1024, 1
    vgg = (conv(3, 3, 64) + conv(3, 64, 128) + conv(3, 128, 256) + conv(3, 256, 256) + conv(3, 256, 512)
           + 3 * conv(3, 512, 512))
    mask_vgg = conv(1, 512, 512) + dense(14 * 14 * 512, 512) + dense(512, 56 * 56)
    score_vgg = dense(7 * 7 * 512, 512) + dense(512, 1024) + dense(1024, 1)
    assert kseg.count_params(DeepMask()) == vgg + mask_vgg + score_vgg == DeepMask.card.num_params == 75_844_545


def test_registry_and_errors():
    assert {"deepmask", "deepmask_resnet50", "sharpmask"} <= set(kseg.models.list_models(task="proposals"))
    with pytest.raises(ValueError, match="trunk must be"):
        DeepMask(trunk="alexnet")
    with pytest.raises(ValueError, match="multiple of 16"):
        DeepMask(input_size=100)
    with pytest.raises(ValueError, match="km and ks"):
        SharpMask(trunk="resnet50", input_size=32, context=16, width_multiplier=0.125, depths=(1, 1, 1), km=8)


@pytest.mark.parametrize("kw", [TINY_RES, TINY_VGG], ids=["resnet50", "vgg"])
def test_fully_convolutional_equals_patch_network(kw):
    keras.utils.set_random_seed(0)
    model = DeepMask(**{**kw, "output_size": kw["mask_size"]})
    cfg = proposal_config(model)
    ws, crop = cfg["window_size"], cfg["context"] // 16
    x = np.random.default_rng(0).uniform(0, 255, (2, ws, ws, 3)).astype("float32")
    ref = model(x, training=False)
    scores, masks = FullyConvolutionalDeepMask(model)(x)
    np.testing.assert_allclose(scores[:, crop, crop], ref["scores"][:, 0], rtol=1e-4, atol=1e-4)
    m = kw["mask_size"]
    np.testing.assert_allclose(tf.reshape(masks[:, crop, crop], (-1, m, m)), ref["masks"], rtol=1e-4, atol=1e-4)


def _batch(cfg, n=4):
    rng = np.random.default_rng(1)
    ws, g = cfg["window_size"], cfg["output_size"]
    images = rng.uniform(0, 255, (n, ws, ws, 3)).astype("float32")
    masks = np.where(rng.uniform(size=(n, g, g)) > 0.5, 1.0, -1.0).astype("float32")
    scores = np.array([[1], [1], [-1], [1]], "float32")[:n]
    weight = np.array([[1], [0], [0], [1]], "float32")[:n]
    return images, {"masks": masks, "scores": scores, "mask_weight": weight}


def _grads_reach_everything(model, loss_fn):
    images, targets = _batch(proposal_config(model))
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss = loss_fn(targets, out)[0]
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    dead = [v.path for v, g in zip(model.trainable_variables, grads) if g is None or not np.any(g.numpy())]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("kw", [TINY_RES, TINY_VGG], ids=["resnet50", "vgg"])
def test_deepmask_training_step_and_round_trip(kw, tmp_path):
    keras.utils.set_random_seed(0)
    model = DeepMask(**kw)
    out = model(np.zeros((1, *model.inputs[0].shape[1:]), "float32"))
    assert out["masks"].shape == (1, kw["output_size"], kw["output_size"]) and out["scores"].shape == (1, 1)
    _grads_reach_everything(model, deepmask_loss)
    path = tmp_path / "dm.keras"
    model.save(path)
    back = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(2).uniform(0, 255, (2, *model.inputs[0].shape[1:])).astype("float32")
    for k in ("masks", "scores"):
        np.testing.assert_allclose(back(x)[k], model(x)[k], rtol=1e-5, atol=1e-5)
    assert proposal_config(back) == proposal_config(model)


def test_joint_loss_weighting():
    targets = {"masks": -np.ones((2, 4, 4), "float32"), "scores": np.array([[1.0], [-1.0]], "float32"),
               "mask_weight": np.array([[1.0], [1.0]], "float32")}
    outputs = {"masks": np.zeros((2, 4, 4), "float32"), "scores": np.zeros((2, 1), "float32")}
    total, mask, score = deepmask_loss(targets, outputs)
    ln2 = np.log(2.0)
    # the negative's mask is ignored even with mask_weight 1; score weighted by 1/32
    assert float(mask) == pytest.approx(ln2)
    assert float(total) == pytest.approx(ln2 + ln2 / 32 * 2, rel=1e-5)  # summed over the batch (Eq. 1)


def test_sharpmask_two_stage(tmp_path):
    keras.utils.set_random_seed(0)
    dm = DeepMask(**TINY_RES)
    sharp = SharpMask(deepmask=dm, **{k: v for k, v in TINY_RES.items()
                                      if k in ("trunk", "width_multiplier", "depths", "feature_dim",
                                               "score_hidden")}, km=16, ks=16)
    cfg = proposal_config(sharp)
    assert cfg["refine"] and cfg["output_size"] == 32 and cfg["window_size"] == 64
    # stage two: trunk and score branch come from DeepMask and are frozen
    np.testing.assert_array_equal(sharp.get_layer("trunk_fc").get_weights()[0], dm.get_layer("trunk_fc").get_weights()[0])
    trainable = {v.path.split("/")[0] for v in sharp.trainable_variables}
    assert trainable and all(n.startswith("refine") for n in trainable)
    _grads_reach_everything(sharp, lambda t, o: kseg.models.deepmask.sharpmask_loss(t, o))
    path = tmp_path / "sm.keras"
    sharp.save(path)
    back = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(back(x)["masks"], sharp(x)["masks"], rtol=1e-5, atol=1e-5)


def _dataset(cfg, n=4):
    images, targets = _batch(cfg, n)
    return tf.data.Dataset.from_tensors((images, targets)).repeat()


def test_proposals_train_and_export(tmp_path):
    keras.utils.set_random_seed(0)
    dm = DeepMask(**TINY_RES)
    hist = train_proposal_model(dm, _dataset(proposal_config(dm)), steps=2)
    assert len(hist) == 2 and all(np.isfinite(h["loss"]) for h in hist)
    image = np.random.default_rng(4).uniform(0, 255, (50, 70, 3)).astype("float32")
    out = proposals(dm, image, scales=(0.5, 1.0), max_proposals=7)
    assert out["boxes"].shape == (7, 4) and out["masks"].shape == (7, 50, 70) and out["masks"].dtype == np.uint8
    assert np.all(np.diff(out["scores"]) <= 0) and np.all((out["scores"] >= 0) & (out["scores"] <= 1))
    assert np.all(out["boxes"][:, 2:] <= [50, 70]) and np.all(out["boxes"][:, :2] >= 0)
    for box, mask in zip(out["boxes"], out["masks"]):  # boxes are the masks' tight boxes
        if mask.any():
            ys, xs = np.nonzero(mask)
            np.testing.assert_array_equal(box, [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    grid = proposals(dm, image, scales=(0.5, 1.0), max_proposals=7, mask_grid=True)  # the compact form
    assert grid["mask_probs"].shape == (7, 8, 8) and grid["windows"].shape == (7, 4)
    np.testing.assert_array_equal(paste_masks(grid["mask_probs"], grid["windows"], (50, 70), 0.2).numpy(),
                                  out["masks"])
    sharp = SharpMask(deepmask=dm, trunk="resnet50", width_multiplier=0.125, depths=(1, 1, 1), feature_dim=16,
                      score_hidden=(8,), km=16, ks=16)
    out_s = proposals(sharp, image, scales=(0.5, 1.0), max_proposals=7)
    np.testing.assert_allclose(out_s["scores"], out["scores"], rtol=1e-5)  # same trunk + score branch
    path = export_proposals(dm, tmp_path / "saved", scales=(0.5, 1.0), max_proposals=5)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    res = serve(image=tf.constant(image))
    assert res["boxes"].shape == (5, 4) and res["masks"].shape == (5, 50, 70)
    np.testing.assert_allclose(res["scores"].numpy(), out["scores"][:5], rtol=1e-5)

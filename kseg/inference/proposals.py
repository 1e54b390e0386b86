"""Full-image object proposals from DeepMask / SharpMask, their training loop and export.

:func:`proposals` is DeepMask's full-scene inference (Pinheiro et al. 2015, Sec. 3.3; the
authors' ``InferDeepMask.lua`` / ``InferSharpMask.lua``): the image is resized to each scale of a
pyramid (``2**-2.5 ... 2**0.5`` in steps of ``2**0.5``, as ``computeProposals.lua``), padded by
half a patch of grey, and the patch network is run *fully convolutionally*: its fully connected
layers become convolutions (``linear2convTrunk`` / ``linear2convHead``), so every 16-pixel
offset is a patch. The best-scoring offsets over all scales become proposals; DeepMask's 56x56
masks are pasted into the image at their windows (threshold ``0.2`` on the probability, as
released); SharpMask re-runs the chosen windows through its refinement (here on crops of the
image: equal to the authors' shared computation up to the trunk's border padding).

    >>> out = kseg.proposals(model, image, max_proposals=100)
    >>> out["boxes"], out["scores"], out["masks"]       # (N,4) [y1,x1,y2,x2], (N,), (N,H,W) uint8

:func:`train_proposal_model` runs the joint loss (``kseg.models.deepmask.deepmask_loss``) on a
:func:`kseg.data.instances.deepmask_dataset`; :func:`export_proposals` writes a SavedModel whose
``serving_default`` takes an image and returns ``boxes, scores, masks``.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from kseg.ops.masks import paste_masks

__all__ = ["proposals", "proposal_config", "FullyConvolutionalDeepMask", "train_proposal_model",
           "export_proposals", "DEFAULT_SCALES"]

#: computeProposals.lua: -si -2.5 -sf .5 -ss .5
_PASTE_CHUNK = 100
DEFAULT_SCALES = tuple(2.0 ** e for e in np.arange(-2.5, 0.51, 0.5))


def proposal_config(model):
    """Geometry of a DeepMask/SharpMask model, read from its layers (works after loading)."""
    names = {layer.name for layer in model.layers}
    if "score" not in names or "masks" not in names:
        raise ValueError(f"model {model.name!r} is not a DeepMask/SharpMask model (no 'score'/'masks' layers)")
    trunk = "resnet50" if "trunk_conv" in names else "vgg"
    window = int(model.inputs[0].shape[1])
    crop = model.get_layer("context_crop").cropping[0][0] if "context_crop" in names else 0
    context = 16 * crop
    refine = "refine0" in names
    cfg = {"trunk": trunk, "window_size": window, "context": context, "input_size": window - 2 * context,
           "refine": refine, "output_size": int(model.get_layer("masks").output.shape[1])}
    cfg["mask_size"] = cfg["output_size"] if refine else int(model.get_layer("mask_reshape").target_shape[0])
    return cfg


def _dense_as_conv(layer, f_h, f_w):
    kernel, bias = layer.get_weights()
    return kernel.reshape(f_h, f_w, -1, kernel.shape[-1]), bias


class FullyConvolutionalDeepMask:
    """DeepMask's trunk and heads as convolutions over an image of any size (``linear2conv``).

    ``self(image_batch)`` -> ``scores (B, h, w)`` logits and ``masks (B, h, w, oSz*oSz)`` logits (the
    DeepMask mask vectors; for SharpMask the DeepMask part has no mask head, so ``masks`` is None).
    Output cell ``(i, j)`` is the patch whose top-left corner is input pixel ``(16 i, 16 j)``.
    """

    def __init__(self, model):
        self.cfg = cfg = proposal_config(model)
        self.model = model
        f = cfg["input_size"] // 16
        if cfg["trunk"] == "resnet50":  # the last block's output, layer3_{n-1}_relu
            last_layer = [layer for layer in model.layers if layer.name.startswith("layer3_") and
                          layer.name.endswith("_relu") and "conv" not in layer.name][-1]
        else:
            last_layer = model.get_layer("conv5_2")
        sub = keras.Model(model.inputs[0], last_layer.output)
        self.trunk = keras.models.clone_model(sub, input_tensors=keras.Input((None, None, 3)))
        self.trunk.set_weights(sub.get_weights())
        get = model.get_layer
        if cfg["trunk"] == "vgg":
            self.mask_conv = get("mask_conv").get_weights()
            self.lowrank = _dense_as_conv(get("mask_lowrank"), f, f)
            n_fc = len([layer for layer in model.layers if layer.name.startswith("score_fc")])
            self.score_fcs = [_dense_as_conv(get("score_fc1"), f // 2, f // 2)]
            self.score_fcs += [_dense_as_conv(get(f"score_fc{k}"), 1, 1) for k in range(2, n_fc + 1)]
        else:
            self.trunk_conv = get("trunk_conv").get_weights()
            self.trunk_fc = _dense_as_conv(get("trunk_fc"), f, f)
            n_fc = len([layer for layer in model.layers if layer.name.startswith("score_fc")])
            self.score_fcs = [_dense_as_conv(get(f"score_fc{k}"), 1, 1) for k in range(1, n_fc + 1)]
        self.score = _dense_as_conv(get("score"), 1, 1)
        self.mask_fc = None if cfg["refine"] else _dense_as_conv(get("mask_fc"), 1, 1)

    @staticmethod
    def _conv(x, wb, dilation=1):
        w, b = wb
        return tf.nn.conv2d(x, w, 1, "VALID", dilations=dilation) + b

    def __call__(self, images):
        feat = self.trunk(images, training=False)
        if self.cfg["trunk"] == "vgg":
            vec = self._conv(tf.nn.relu(self._conv(feat, (self.mask_conv[0], self.mask_conv[1]))), self.lowrank)
            # the 2x2/2 pooling of every patch = a stride-1 pooling read with dilation 2
            s = tf.nn.max_pool2d(feat, 2, 1, "VALID")
            s = tf.nn.relu(self._conv(s, self.score_fcs[0], dilation=2))
            for wb in self.score_fcs[1:]:
                s = tf.nn.relu(self._conv(s, wb))
        else:
            h = tf.nn.relu(self._conv(feat, (self.trunk_conv[0], self.trunk_conv[1])))
            vec = self._conv(h, self.trunk_fc)
            s = vec
            for wb in self.score_fcs:
                s = tf.nn.relu(self._conv(s, wb))
        scores = self._conv(s, self.score)[..., 0]
        masks = None if self.mask_fc is None else self._conv(vec, self.mask_fc)
        return scores, masks


def _crop_boxes(windows, context_frac, height, width, out_size):
    """Normalised crop_and_resize boxes sampling each square window (+ context) at pixel centres."""
    yc = (windows[:, 0] + windows[:, 2]) / 2
    xc = (windows[:, 1] + windows[:, 3]) / 2
    side = (windows[:, 2] - windows[:, 0]) * (1 + 2 * context_frac)
    y0, x0 = yc - side / 2, xc - side / 2
    a_y = (y0 + 0.5 * side / out_size - 0.5) / tf.maximum(height - 1, 1)
    b_y = (y0 + (out_size - 0.5) * side / out_size - 0.5) / tf.maximum(height - 1, 1)
    a_x = (x0 + 0.5 * side / out_size - 0.5) / tf.maximum(width - 1, 1)
    b_x = (x0 + (out_size - 0.5) * side / out_size - 0.5) / tf.maximum(width - 1, 1)
    return tf.stack([a_y, a_x, b_y, b_x], axis=1)


def _mask_boxes(masks, fallback):
    """Tight ``[y1, x1, y2, x2)`` box of each (N, H, W) mask; `fallback` where a mask is empty."""
    rows = tf.reduce_any(masks > 0, axis=2)
    cols = tf.reduce_any(masks > 0, axis=1)
    h = tf.shape(masks)[1]
    w = tf.shape(masks)[2]
    ry = tf.range(h)[None]
    rx = tf.range(w)[None]
    big = 1 << 30
    y1 = tf.reduce_min(tf.where(rows, ry, big), axis=1)
    y2 = tf.reduce_max(tf.where(rows, ry, -1), axis=1) + 1
    x1 = tf.reduce_min(tf.where(cols, rx, big), axis=1)
    x2 = tf.reduce_max(tf.where(cols, rx, -1), axis=1) + 1
    boxes = tf.cast(tf.stack([y1, x1, y2, x2], axis=1), tf.float32)
    return tf.where(tf.reduce_any(rows, axis=1)[:, None], boxes, fallback)


def _proposals_tf(fc, model, image, scales, max_proposals, mask_threshold, nms_threshold, refine_batch,
                  with_grid=False):
    cfg = fc.cfg
    image = tf.convert_to_tensor(image, tf.float32)
    h = tf.shape(image)[0]
    w = tf.shape(image)[1]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    i_sz = float(cfg["input_size"])
    bw = cfg["input_size"] // 2
    all_scores, all_masks, all_windows = [], [], []
    for s in scales:
        sh = tf.maximum(tf.cast(tf.round(hf * s), tf.int32), 1)
        sw = tf.maximum(tf.cast(tf.round(wf * s), tf.int32), 1)
        img = tf.image.resize(image[None], tf.stack([sh, sw]), method="bilinear")
        img = tf.pad(img - 127.5, [[0, 0], [bw, bw], [bw, bw], [0, 0]]) + 127.5  # grey border (0.5 in [0,1])
        scores, masks = fc(img)
        gh, gw = tf.shape(scores)[1], tf.shape(scores)[2]
        yy, xx = tf.meshgrid(tf.range(gh), tf.range(gw), indexing="ij")
        # cell (i, j): padded patch [16i, 16i + iSz) = scaled image [16i - iSz/2, 16i + iSz/2)
        cy = tf.cast(tf.reshape(yy, (-1,)), tf.float32) * 16.0 / s
        cx = tf.cast(tf.reshape(xx, (-1,)), tf.float32) * 16.0 / s
        half = i_sz / 2.0 / s
        all_windows.append(tf.stack([cy - half, cx - half, cy + half, cx + half], axis=1))
        all_scores.append(tf.reshape(scores, (-1,)))
        if masks is not None:
            all_masks.append(tf.reshape(masks, (-1, masks.shape[-1])))
    scores = tf.concat(all_scores, 0)
    windows = tf.concat(all_windows, 0)
    k = tf.minimum(max_proposals, tf.shape(scores)[0])
    top_scores, idx = tf.math.top_k(scores, k)
    top_windows = tf.gather(windows, idx)
    if cfg["refine"]:
        ws = cfg["window_size"]
        boxes = _crop_boxes(top_windows, cfg["context"] / cfg["input_size"], hf, wf, ws)
        outs = []
        n = tf.shape(boxes)[0]
        for start in range(0, max_proposals, refine_batch):
            b = boxes[start:start + refine_batch]
            patches = tf.image.crop_and_resize(image[None], b, tf.zeros(tf.shape(b)[0], tf.int32), (ws, ws),
                                               extrapolation_value=127.5)
            outs.append(model(patches, training=False)["masks"])
        probs = tf.sigmoid(tf.concat(outs, 0)[:n])
    else:
        m = cfg["mask_size"]
        probs = tf.sigmoid(tf.reshape(tf.gather(tf.concat(all_masks, 0), idx), (-1, m, m)))
    clipped = tf.minimum(tf.maximum(top_windows, 0.0), tf.stack([hf, wf, hf, wf]))
    # paste in chunks: 1000 float masks of a 640x480 image would need 1.2 GB at once
    chunks, chunk_boxes = [], []
    for start in range(0, max_proposals, _PASTE_CHUNK):
        m = paste_masks(probs[start:start + _PASTE_CHUNK], top_windows[start:start + _PASTE_CHUNK], (h, w),
                        threshold=mask_threshold)
        chunk_boxes.append(_mask_boxes(m, clipped[start:start + _PASTE_CHUNK]))
        chunks.append(tf.cast(m, tf.uint8))
    masks = tf.concat(chunks, 0)
    boxes = tf.concat(chunk_boxes, 0)
    top_scores = tf.sigmoid(top_scores)
    if nms_threshold is not None:
        keep = tf.image.non_max_suppression(boxes, top_scores, max_proposals, iou_threshold=nms_threshold)
        boxes, top_scores, masks = tf.gather(boxes, keep), tf.gather(top_scores, keep), tf.gather(masks, keep)
        probs, top_windows = tf.gather(probs, keep), tf.gather(top_windows, keep)
    if with_grid:
        return boxes, top_scores, masks, probs, top_windows
    return boxes, top_scores, masks


def proposals(model, image, scales=DEFAULT_SCALES, max_proposals=100, mask_threshold=0.2, nms_threshold=None,
              refine_batch=50, fully_convolutional=None, mask_grid=False):
    """Ranked object proposals of one image from a DeepMask or SharpMask model.

    Args:
        model: a :func:`kseg.DeepMask` / :func:`kseg.SharpMask` (``.keras``-loaded models work).
        image: (H, W, 3) RGB in [0, 255].
        scales: the image pyramid (``DEFAULT_SCALES``: 2^-2.5 ... 2^0.5, step 2^0.5).
        max_proposals: how many to return (the released ``-np``; 1000 for AR@1000).
        mask_threshold: probability threshold of the pasted masks (0.2 as released).
        nms_threshold: optional box NMS IoU (DeepMask uses none).
        refine_batch: SharpMask windows per forward pass.
        fully_convolutional: a prepared :class:`FullyConvolutionalDeepMask` (reuse across images).
        mask_grid: also return each mask before pasting: ``mask_probs`` (N, m, m) probabilities on
            the grid covering ``windows`` (N, 4) (the compact form: ``kseg.ops.paste_masks(mask_probs,
            windows, (H, W), mask_threshold)`` gives ``masks`` back; ``detect(..., mask_windows=)`` takes it).

    Returns a dict of numpy arrays: ``boxes`` (N, 4) ``[y1, x1, y2, x2]`` pixels (the mask's
    tight box), ``scores`` (N,) probabilities, best first, ``masks`` (N, H, W) uint8.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    from kseg.utils import warn_if_unit_range

    warn_if_unit_range(image, "kseg.proposals")
    if int(max_proposals) < 1:
        raise ValueError(f"max_proposals must be >= 1, got {max_proposals}")
    fc = fully_convolutional or FullyConvolutionalDeepMask(model)
    out = _proposals_tf(fc, model, image, tuple(scales), int(max_proposals), mask_threshold, nms_threshold,
                        int(refine_batch), with_grid=mask_grid)
    res = {"boxes": out[0].numpy(), "scores": out[1].numpy(), "masks": out[2].numpy()}
    if mask_grid:
        res["mask_probs"], res["windows"] = out[3].numpy(), out[4].numpy()
    return res


class _StepLog(keras.callbacks.Callback):
    """Per-step history rows (fit runs one step per epoch) and a log line every `log_every` steps."""

    def __init__(self, keys, steps, log_every):
        super().__init__()
        self.keys, self.steps, self.log_every = keys, steps, log_every
        self.history, self.t0 = [], None

    def on_train_begin(self, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(logs[k]) for k in self.keys}
        row["seconds"] = time.time() - self.t0
        self.history.append(row)
        if self.log_every and (epoch + 1) % self.log_every == 0:
            parts = " ".join(f"{k.replace('_loss', '')} {row[k]:.4f}" for k in self.keys[1:])
            print(f"step {epoch + 1}/{self.steps} loss {row['loss']:.4f} {parts} ({row['seconds']:.0f}s)", flush=True)


def train_proposal_model(model, dataset, steps, learning_rate=1e-3, momentum=0.9, weight_decay=5e-4,
                         score_weight=1.0 / 32, log_every=0, clipnorm=None, callbacks=()):
    """SGD on the DeepMask joint loss (or SharpMask's mask loss when `model` refines), with ``fit``.

    The released schedule: SGD, momentum 0.9, weight decay 5e-4, learning rate 1e-3. Runs
    :class:`kseg.inference.fit.InstanceTrainer` for `steps` one-step epochs (so every step has its
    own history row; `callbacks` are Keras callbacks). For checkpoints, TensorBoard and resume use
    :func:`kseg.inference.fit.fit_instance_model` (what ``kseg train`` runs).
    Returns a list of per-step dicts (``loss``, ``mask_loss``, ``score_loss``, ``seconds``).
    """
    from kseg.inference.fit import InstanceTrainer

    trainer = InstanceTrainer(model, score_weight=score_weight)
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=weight_decay,
                                                   clipnorm=clipnorm), jit_compile=False)
    log = _StepLog(("loss", "mask_loss", "score_loss"), int(steps), log_every)
    trainer.fit(dataset, epochs=int(steps), steps_per_epoch=1, verbose=0, callbacks=[log, *callbacks], shuffle=False)
    return log.history


def export_proposals(model, path, scales=DEFAULT_SCALES, max_proposals=100, mask_threshold=0.2):
    """SavedModel with ``serving_default``: ``image (H, W, 3) float32 -> boxes, scores, masks``."""
    fc = FullyConvolutionalDeepMask(model)
    module = tf.Module()
    module.model = model
    module.trunk = fc.trunk
    consts = []
    for attr in ("mask_conv", "lowrank", "trunk_conv", "trunk_fc", "score", "mask_fc"):
        if getattr(fc, attr, None) is not None:
            setattr(fc, attr, tuple(tf.Variable(a, trainable=False) for a in getattr(fc, attr)))
            consts.append(getattr(fc, attr))
    fc.score_fcs = [tuple(tf.Variable(a, trainable=False) for a in wb) for wb in fc.score_fcs]
    module.head_weights = consts + fc.score_fcs

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.float32, name="image")])
    def serve(image):
        boxes, scores, masks = _proposals_tf(fc, model, image, tuple(scales), int(max_proposals), mask_threshold,
                                             None, 50)
        return {"boxes": boxes, "scores": scores, "masks": masks}

    module.serve = serve
    from kseg.io import atomic_dir

    with atomic_dir(path) as tmp:  # written aside, then swapped in: no half SavedModel
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
    return path

"""``kseg train | evaluate | predict | export`` for the proposal and detection models (COCO-format data).

:func:`dispatch` is called by ``kseg.cli.main`` first; it handles the command when the model is a
``task="proposals"`` / ``"detection"`` card (``--model NAME``) or a ``.keras`` file holding one
(``--model-path``), and returns ``None`` otherwise (the semantic CLI then runs)::

    kseg train --model deepmask_resnet50 --data coco_tiny --steps 200 --out runs/deepmask
    kseg train --model sharpmask --deepmask runs/deepmask/model.keras --data coco_tiny --steps 200
    kseg evaluate --model-path runs/deepmask/model.keras --data coco_tiny        # AR@10/100/1000
    kseg train --model multipathnet --data coco_tiny --proposal-model runs/deepmask/model.keras
    kseg evaluate --model-path runs/multipathnet/model.keras --data coco_tiny --proposal-model ...
    kseg predict --model-path runs/deepmask/model.keras img.jpg --out pred/      # masks drawn on the image
    kseg export runs/deepmask/model.keras --out exported/deepmask                # SavedModel serving signature
"""

import argparse
import json
import pathlib
import sys
import zipfile


__all__ = ["dispatch", "instance_task", "build_parser"]

_TASKS = ("proposals", "detection")


def _model_arg(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def instance_task(model=None, model_path=None):
    """``"proposals"`` / ``"detection"`` for a registry name or a ``.keras`` file, else ``None``."""
    if model is not None:
        from kseg import models

        try:
            task = models.get(model).task
        except ValueError:
            return None
        return task if task in _TASKS else None
    if model_path is not None and str(model_path).endswith(".keras") and pathlib.Path(model_path).is_file():
        try:
            with zipfile.ZipFile(model_path) as z:
                cfg = z.read("config.json").decode()
        except (zipfile.BadZipFile, KeyError):
            return None
        if '"rois"' in cfg and '"bbox_pred"' in cfg:
            return "detection"
        if '"score"' in cfg and ('"mask_fc"' in cfg or '"refine0"' in cfg):
            return "proposals"
    return None


def _load_model(path):
    from kseg.io import load_keras_file

    return load_keras_file(path)  # a missing, truncated or corrupt file names itself


def _split_paths(root, split):
    root = pathlib.Path(root)
    ann = root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise FileNotFoundError(f"no COCO annotations at {ann} (expected COCO's layout: annotations/, {split}/)")
    return ann, root / split


def build_parser():
    p = argparse.ArgumentParser(prog="kseg", description="proposal / detection tasks on COCO-format data")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")  # the same flags as `kseg train` (kseg.cli.build_parser)
    _semantic_train_arguments(t)
    e = sub.add_parser("evaluate")
    e.add_argument("--model-path", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="val2017")
    e.add_argument("--max-proposals", type=int, default=1000)
    e.add_argument("--proposal-model", default=None)
    e.add_argument("--short-side", type=int, default=600)
    e.add_argument("--limit", type=int, default=None, help="score only the first N images of the split "
                                                            "(default: every image)")
    e.add_argument("--json", default=None)
    pr = sub.add_parser("predict")
    pr.add_argument("--model-path", required=True)
    pr.add_argument("images", nargs="+")
    pr.add_argument("--out", required=True)
    pr.add_argument("--top", type=int, default=10, help="proposals/detections drawn")
    pr.add_argument("--proposal-model", default=None)
    pr.add_argument("--short-side", type=int, default=600)
    pr.add_argument("--data", default=None, help="detectors: a COCO-layout folder whose category names label "
                                                "the boxes (else class indices)")
    pr.add_argument("--split", default="val2017")
    x = sub.add_parser("export")
    x.add_argument("model_path")
    x.add_argument("--out", required=True, help="SavedModel folder (serving_default: image -> boxes, scores, masks)")
    x.add_argument("--format", default="saved_model", choices=("saved_model",))
    x.add_argument("--max-proposals", type=int, default=100)
    x.add_argument("--proposal-model", default=None, help="detectors: the DeepMask/SharpMask .keras")
    x.add_argument("--short-side", type=int, default=600)
    return p


def add_train_arguments(parser):
    """The flags only the proposal / detection models read, as a group of `kseg train`'s parser."""
    g = parser.add_argument_group(
        "proposal and detection models (DeepMask, SharpMask, MultiPathNet, Fast R-CNN, ION)",
        "--data is then a COCO-layout folder (annotations/instances_SPLIT.json, SPLIT/); these models also read "
        "--epochs, --steps-per-epoch (default 100), --batch-size (DeepMask/SharpMask patches; detectors take one "
        "image per step), --lr, --optimizer (default sgd: momentum 0.9, weight decay 5e-4, as the papers), "
        "--weight-decay, --model-arg, --budget-seconds, --backup-every, --resume, --seed, --out, --quiet, "
        "--precision and --strategy (default or mirrored)")
    g.add_argument("--split", default="train2017", help="COCO split to train on (default train2017)")
    g.add_argument("--steps", type=int, default=None,
                   help="total optimizer steps (shorthand: epochs of --steps-per-epoch steps, or one epoch)")
    g.add_argument("--deepmask", default=None, help="SharpMask stage two: the trained DeepMask .keras "
                                                    "(its trunk settings are taken over)")
    g.add_argument("--proposal-model", default=None, help="detection: DeepMask/SharpMask .keras for proposals "
                                                          "(default: jittered ground truth + random boxes)")
    g.add_argument("--num-rois", type=int, default=64, help="detection: ROIs per image")
    g.add_argument("--short-side", type=int, default=600, help="detection: images resized to this shorter side")
    g.add_argument("--clipnorm", type=float, default=None, help="gradient clipping (detectors: default 10)")
    return g


def _semantic_train_arguments(parser):
    from kseg.cli import add_train_arguments as semantic

    semantic(parser)


def _schedule(args):
    """(epochs, steps_per_epoch) from --epochs / --steps-per-epoch / --steps."""
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        if args.steps_per_epoch:
            return -(-args.steps // args.steps_per_epoch), args.steps_per_epoch
        return 1, args.steps
    return args.epochs, args.steps_per_epoch or 100


def _jittered(inst, rng, n=200):
    import numpy as np  # here, not at import: `kseg --help` / `list` stay light

    out = {}
    for img_id in inst.image_ids:
        info = inst.image_info(img_id)
        h, w = info["height"], info["width"]
        gt = inst.instances(img_id)["boxes"]
        boxes = []
        for _ in range(n):
            if len(gt) and rng.uniform() < 0.5:
                y1, x1, y2, x2 = gt[rng.integers(len(gt))]
                d = rng.normal(scale=0.2, size=4) * [y2 - y1, x2 - x1, y2 - y1, x2 - x1]
                boxes.append([y1 + d[0], x1 + d[1], y2 + d[2], x2 + d[3]])
            else:
                cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(16, max(h, w))
                boxes.append([cy - s / 2, cx - s / 2, cy + s / 2, cx + s / 2])
        b = np.clip(np.array(boxes, np.float32), 0, [h, w, h, w])
        out[img_id] = b[(b[:, 2] - b[:, 0] > 2) & (b[:, 3] - b[:, 1] > 2)]
    return out


def _proposals_for(inst, path, ids, max_proposals=100):
    import keras

    from kseg.inference.proposals import FullyConvolutionalDeepMask, proposals

    pm = _load_model(path)
    fc = FullyConvolutionalDeepMask(pm)
    return {i: proposals(pm, inst.load_image(i), max_proposals=max_proposals, fully_convolutional=fc) for i in ids}


def _train(args):
    import numpy as np  # here, not at import: `kseg --help` / `list` stay light

    import keras

    from kseg import models
    from kseg.data.coco_check import load_checked_coco
    from kseg.inference.fit import fit_instance_model

    from kseg import config as kconfig

    if args.print_config:
        print(kconfig.dump_config(kconfig.resolved_config(args)), end="")
        return
    ann, img_dir = _split_paths(args.data, args.split)
    inst = load_checked_coco(ann, img_dir)  # every record, mask and image file, before training
    card = models.get(args.model)
    kwargs = dict(args.model_arg)
    out = pathlib.Path(args.out or f"runs/{card.name}")
    kconfig.write_config(args, out)
    epochs, steps_per_epoch = _schedule(args)
    keras.utils.set_random_seed(args.seed)
    if card.task == "proposals":
        from kseg.data.instances import DEEPMASK_PAPER, DEEPMASK_RELEASED, SHARPMASK_RELEASED, PatchConfig, \
            deepmask_dataset
        from kseg.inference.proposals import proposal_config

        from kseg.io import load_keras_file

        deepmask = load_keras_file(args.deepmask) if args.deepmask else None
        if deepmask is not None:
            kwargs["deepmask"] = deepmask

        def build():
            return card.build(**kwargs)

        cfg = proposal_config(build())  # the patch geometry (the model is built again in fit's scope)
        base = SHARPMASK_RELEASED if cfg["refine"] else (DEEPMASK_RELEASED if cfg["context"] else DEEPMASK_PAPER)
        patch = PatchConfig(input_size=cfg["input_size"], context=cfg["context"],
                            object_size=-(-cfg["input_size"] * 128 // 224), label_size=cfg["output_size"],
                            shift=base.shift, scale=base.scale)
        ds = deepmask_dataset(inst, patch, args.batch_size, mask_freq=1.0 if cfg["refine"] else 0.5, seed=args.seed)
        clipnorm = args.clipnorm
    else:
        from kseg.inference.detection import detection_dataset

        kwargs.setdefault("num_classes", inst.num_classes)
        kwargs.setdefault("num_rois", args.num_rois)

        def build():
            return card.build(**kwargs)

        if args.proposal_model:
            props = {i: p["boxes"] for i, p in _proposals_for(inst, args.proposal_model, inst.image_ids).items()}
        else:
            props = _jittered(inst, np.random.default_rng(args.seed))
        segmentation = bool(kwargs.get("segmentation_loss", False))  # ION's regulariser
        ds = detection_dataset(inst, props, num_rois=kwargs["num_rois"], short_side=args.short_side,
                               max_side=int(args.short_side * 5 / 3), seed=args.seed, segmentation=segmentation)
        clipnorm = 10.0 if args.clipnorm is None else args.clipnorm
    config = kconfig.resolved_config(args)
    model, history = fit_instance_model(
        build, ds, out, epochs=epochs, steps_per_epoch=steps_per_epoch, learning_rate=args.lr,
        optimizer=args.optimizer or "sgd", weight_decay=args.weight_decay, clipnorm=clipnorm, resume=args.resume,
        backup_every=args.backup_every, budget_seconds=args.budget_seconds, verbose=2 if args.quiet else 1,
        strategy=args.strategy, precision=args.precision, config=config, overwrite=getattr(args, "overwrite", False))
    from kseg.io import atomic_write_text

    atomic_write_text(out / "history.json", json.dumps(history.history))
    done = json.loads((out / "train_config.json").read_text())
    print(f"trained {done['steps_done']} of {done['planned_steps']} planned steps in {done['train_seconds']:.0f} s"
          + (" (stopped by --budget-seconds)" if done["stopped_by_budget"] else ""))
    last = (history.history.get("loss") or [None])[-1]
    print(f"saved {out / 'model.keras'} (last loss {'-' if last is None else f'{last:.4f}'}; last.keras, log.csv, "
          f"TensorBoard: {out / 'logs'})")


def _evaluate(args, task):
    import keras

    from kseg.data.coco_check import load_checked_coco
    from kseg.evaluation.coco_eval import detection_ap, proposal_recall

    ann, img_dir = _split_paths(args.data, args.split)
    inst = load_checked_coco(ann, img_dir)
    ids = inst.image_ids[: args.limit] if args.limit else inst.image_ids
    if task == "proposals":
        res = _proposals_for(inst, args.model_path, ids, args.max_proposals)
        ks = tuple(k for k in (10, 100, 1000) if k <= args.max_proposals) or (args.max_proposals,)
        out = {f"mask {k}": v for k, v in proposal_recall(inst, res, ks, "segm", image_ids=ids).items()}
        out.update({f"box {k}": v for k, v in proposal_recall(inst, res, ks, "bbox", image_ids=ids).items()})
    else:
        from kseg.evaluation.coco_eval import encode_masks
        from kseg.inference.detection import detect
        from kseg.inference.proposals import FullyConvolutionalDeepMask, proposals

        if not args.proposal_model:
            raise ValueError("evaluating a detector needs --proposal-model (a DeepMask/SharpMask .keras)")
        model = _load_model(args.model_path)
        pm = _load_model(args.proposal_model)
        fc = FullyConvolutionalDeepMask(pm)
        res = {}
        for i in ids:  # one image at a time; masks kept as RLE (not 100 full masks per image)
            image = inst.load_image(i)
            p = proposals(pm, image, fully_convolutional=fc, mask_grid=True)
            r = detect(model, image, p["boxes"], p["mask_probs"], short_side=args.short_side,
                       mask_windows=p["windows"])
            res[i] = {**r, "masks": encode_masks(r["masks"])}
        out = {f"box {k}": v for k, v in detection_ap(inst, res, "bbox", image_ids=ids).items()}
        out.update({f"mask {k}": v for k, v in detection_ap(inst, res, "segm", image_ids=ids).items()})
    print(f"{args.split}: {len(ids)} of {len(inst.image_ids)} images scored"
          + (" (--limit)" if len(ids) < len(inst.image_ids) else ""))
    for k, v in out.items():
        print(f"{k:<24} {v:.4f}")
    if args.json:
        from kseg.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=1))


def draw(image, masks, boxes, labels=None, scores=None, alpha=0.45, names=None):
    """RGB PIL image: each mask tinted, its box outlined, ``label score`` written (:func:`kseg.viz.draw_instances`)."""
    from PIL import Image

    from kseg.viz import draw_instances

    return Image.fromarray(draw_instances(image, masks, boxes, labels, scores, names=names, alpha=alpha))


def _predict(args, task):
    import numpy as np  # here, not at import: `kseg --help` / `list` stay light

    import keras
    from PIL import Image

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from kseg.inference.proposals import FullyConvolutionalDeepMask, proposals

    model = _load_model(args.model_path)
    if task == "detection":
        if not args.proposal_model:
            raise ValueError("predicting with a detector needs --proposal-model (a DeepMask/SharpMask .keras)")
        pm = _load_model(args.proposal_model)
    else:
        pm = model
    fc = FullyConvolutionalDeepMask(pm)
    names = None
    if task == "detection" and args.data:
        from kseg.data.coco import load_coco

        inst = load_coco(*_split_paths(args.data, args.split), validate=False)
        names = {lab: inst.coco.cats[cat]["name"] for lab, cat in inst.label_to_cat.items()}
    for path in args.images:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"), np.float32)
        props = proposals(pm, image, max_proposals=max(args.top, 100), fully_convolutional=fc)
        if task == "detection":
            from kseg.inference.detection import detect

            res = detect(model, image, props["boxes"], props["masks"], short_side=args.short_side)
            labels = res["labels"][: args.top]
        else:
            res, labels = props, None
        pil = draw(image, res["masks"][: args.top], res["boxes"][: args.top], labels, res["scores"][: args.top],
                   names=names)
        n = min(args.top, len(res["boxes"]))
        if n == 0:  # say so on the picture, not only in the terminal
            from PIL import ImageDraw

            from kseg.viz import _font

            d = ImageDraw.Draw(pil)
            d.rectangle([2, 2, 250, 26], fill=(0, 0, 0))
            d.text((6, 6), f"no {task} scored >= 0.05", fill=(255, 80, 80), font=_font(16))
        target = out / (pathlib.Path(path).stem + f"_{task}.png")
        from kseg.io import atomic_path

        with atomic_path(target) as tmp:
            pil.save(tmp, format="PNG")
        best = f", best score {float(res['scores'][0]):.3f}" if n else " (none scored >= 0.05: an untrained detector?)"
        print(f"wrote {target}: {n} {task} drawn{best}")


def _export(args, task):
    import keras

    model = _load_model(args.model_path)
    if task == "proposals":
        from kseg.inference.proposals import export_proposals

        export_proposals(model, args.out, max_proposals=args.max_proposals)
    else:
        from kseg.inference.detection import export_detector

        if not args.proposal_model:
            raise ValueError("exporting a detector needs --proposal-model (a DeepMask/SharpMask .keras)")
        export_detector(model, _load_model(args.proposal_model), args.out,
                        short_side=args.short_side)
    print(f"wrote {args.out} (serving_default: image (H, W, 3) float32 -> boxes, scores, masks)")


def dispatch(argv=None):
    """Run ``train|evaluate|predict`` for proposal/detection models; ``None`` for anything else."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "evaluate", "predict", "export"):
        return None

    def value(flag):
        for i, a in enumerate(argv):
            if a == flag and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
        return None

    if argv[0] == "train":
        task = instance_task(model=value("--model"))
    elif argv[0] == "export":
        positional = [a for i, a in enumerate(argv[1:], 1) if not a.startswith("-") and not argv[i - 1].startswith("--")]
        task = instance_task(model_path=positional[0]) if positional else None
    else:
        task = instance_task(model_path=value("--model-path"))
    if task is None:
        return None
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            _train(args)
        elif args.command == "evaluate":
            _evaluate(args, task)
        elif args.command == "export":
            _export(args, task)
        else:
            _predict(args, task)
    except (ValueError, FileNotFoundError) as err:
        print(f"kseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0

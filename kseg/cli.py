"""The ``kseg`` command: ``kseg train | evaluate | predict | export | demo | list | convert``.

Argument parsing only: every subcommand calls :mod:`kseg.training` or :mod:`kseg.export`.

    kseg demo                                   # SegNet-Basic on CamVid, a few minutes on a CPU
    kseg train --model segnet_basic --data ../shared/data/camvid --crop 180 240 --scale 0.5 0.5 \\
        --epochs 20 --out runs/segnet_basic
    kseg evaluate --model-path runs/segnet_basic/best.keras --data ../shared/data/camvid --split test
    kseg predict --model-path runs/segnet_basic/best.keras img1.png img2.png --out predictions/
    kseg export runs/segnet_basic/best.keras --format tflite --out segnet_basic.tflite
    kseg convert --model fcn8s fcn8s-heavy-pascal.caffemodel --out fcn8s.weights.h5
    kseg list
"""

import argparse
import ast
import json
import os
import sys

__all__ = ["main", "build_parser", "add_train_arguments"]


def _model_arg(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--model-arg must be KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass  # a plain string
    return key, value


def add_train_arguments(p):
    """`kseg train`'s flags (semantic models, then the proposal/detection group), on parser `p`."""
    from kseg.inference.cli import add_train_arguments as instance_arguments

    p.add_argument("--model", required=True, help="registry name (see `kseg list`)")
    p.add_argument("--data", required=True, help="dataset folder (CamVid or images/ + masks/ layout; COCO layout "
                   "for the proposal/detection models)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="default: one pass over the split (proposal/detection models: 100)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=(360, 480),
                   help="training crop = the model's input size (default 360 480)")
    p.add_argument("--scale", type=float, nargs=2, metavar=("LOW", "HIGH"), default=(0.75, 1.5),
                   help="random rescaling before the crop (0.5 0.5: train on half-size images)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--optimizer", default=None, choices=("adam", "adamw", "sgd"),
                   help="default adam (semantic models), sgd (proposal/detection models)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--no-class-weights", action="store_true", help="no median-frequency class weights")
    p.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "dice", "focal"),
                   help="segmentation loss (void ignored, class weights as pixel weights; kseg.losses)")
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--ignore-class", "--ignore-label", dest="ignore_class", type=int, default=11,
                   help="label no loss or metric counts (-1 for none; --ignore-label is its old name)")
    p.add_argument("--val-split", default="val", help="'none' to train without validation")
    p.add_argument("--validation-steps", type=int, default=None)
    p.add_argument("--model-arg", type=_model_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="extra builder argument, e.g. width_multiplier=0.5 (repeatable)")
    p.add_argument("--budget-seconds", type=float, default=None, help="stop after this much training time")
    p.add_argument("--backup-every", type=int, default=None, help="also back up every N steps")
    p.add_argument("--bn-stats-steps", type=int, default=0,
                   help="after training, recompute BatchNorm statistics over N training batches (SegNet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/MODEL)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (nothing to do when it is complete)")
    p.add_argument("--overwrite", action="store_true", help="discard a run already in --out and start again")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16", "mixed_float16"),
                   help="Keras dtype policy the model is built under")
    p.add_argument("--strategy", default="default", choices=("default", "mirrored", "multiworker"),
                   help="tf.distribute strategy; multiworker reads TF_CONFIG (docs/distributed.md)")
    p.add_argument("--config", default=None, metavar="RUN.yaml",
                   help="read the options from this YAML file (keys: these options' names; the command line "
                   "wins); every run writes its resolved config to OUT/config.yaml")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    instance_arguments(p)
    return p


def build_parser():
    parser = argparse.ArgumentParser(prog="kseg", description="Classic segmentation models for Keras 3.")
    from kseg import __version__

    parser.add_argument("--version", action="version", version=f"kseg {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's C++ log lines (hidden by default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train a registered model on a segmentation folder")
    add_train_arguments(p)

    p = sub.add_parser("evaluate", help="global / class-average accuracy, mIoU and per-class IoU on a split")
    p.add_argument("--model-path", required=True, help="a .keras file")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize images to this for the model (default: the model's input size)")
    p.add_argument("--ignore-class", "--ignore-label", dest="ignore_class", type=int, default=11,
                   help="label not scored (-1 for none; --ignore-label is its old name)")
    p.add_argument("--json", default=None, help="also write the results to this file (and, beside it, the "
                   "per-class IoU bar chart and the confusion matrix as PNGs)")
    p.add_argument("--save-overlays", default=None, metavar="DIR",
                   help="write image | prediction | ground truth | errors PNGs and the charts into DIR")
    p.add_argument("--max-overlays", type=int, default=8, help="how many images --save-overlays draws")

    p = sub.add_parser("predict", help="write a label PNG and a colour overlay PNG per image")
    p.add_argument("--model-path", required=True, help="a .keras file")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")

    p = sub.add_parser("export", help="export a .keras model to a SavedModel or a TFLite file")
    p.add_argument("model_path", help="a .keras file")
    p.add_argument("--format", default="saved_model", choices=("saved_model", "tflite", "keras"))
    p.add_argument("--out", required=True, help="output path (a folder for saved_model, *.tflite)")
    p.add_argument("--quantize", default=None, help="tflite only: none, float16, dynamic or int8")
    p.add_argument("--representative", default=None,
                   help="tflite int8: a folder of training images to calibrate on (e.g. CamVid train/)")
    p.add_argument("--io-type", default=None, choices=("uint8", "int8", "float32"),
                   help="tflite int8: input/output type (default uint8)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="export size (needed for tflite when the model's size is variable)")

    p = sub.add_parser("demo", help="train SegNet-Basic on CamVid for a few minutes, evaluate, write overlays")
    p.add_argument("--data", default=None, help="CamVid folder (else $KSEG_DATA, else ~/.keras/datasets/camvid)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--budget-seconds", type=float, default=None, help="the most training time; the budget is a fixed number of steps (kseg.training.DEMO)")
    p.add_argument("--download", action="store_true", help="download CamVid when it is not found")
    p.add_argument("--synthetic", action="store_true", help="run on the synthetic scenes even if CamVid is there")
    p.add_argument("--pretrained", action="store_true",
                   help="no training: evaluate kseg's converged CamVid SegNet-Basic (weights='camvid') in seconds")
    p.add_argument("--quiet", action="store_true")

    sub.add_parser("list", help="the registered models")

    p = sub.add_parser("convert", help="convert the authors' .caffemodel / .t7 file into a .weights.h5")
    p.add_argument("--model", required=True, help="registry name (see `kseg list`)")
    p.add_argument("file", help="the authors' weights file (.caffemodel, .t7)")
    p.add_argument("--out", default=None, help="output .weights.h5 (default: MODEL.weights.h5)")
    p.add_argument("--model-arg", type=_model_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="builder argument the file needs, e.g. num_classes=21 (repeatable)")
    return parser


def _ignore(value):
    return None if value is None or value < 0 else value


def _train(args):
    from kseg import config, training

    if args.print_config:
        print(config.dump_config(config.resolved_config(args)), end="")
        return
    for flag, value in (("--steps", args.steps), ("--deepmask", args.deepmask),
                        ("--proposal-model", args.proposal_model), ("--clipnorm", args.clipnorm)):
        if value is not None:
            raise ValueError(f"{flag} is for the proposal/detection models; {args.model} is a semantic model "
                             "(use --epochs and --steps-per-epoch)")
    config.write_config(args, args.out or f"runs/{args.model}")

    val = None if str(args.val_split).lower() == "none" else args.val_split
    training.train(
        args.model,
        args.data,
        out_dir=args.out or f"runs/{args.model}",
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        crop=tuple(args.crop),
        scale_range=tuple(args.scale),
        flip=not args.no_flip,
        learning_rate=args.lr,
        optimizer=args.optimizer or "adam",
        weight_decay=args.weight_decay,
        class_weighting=None if args.no_class_weights else "median_frequency",
        num_classes=args.num_classes,
        ignore_class=_ignore(args.ignore_class),
        val_split=val,
        validation_steps=args.validation_steps,
        resume=args.resume,
        overwrite=args.overwrite,
        backup_every=args.backup_every,
        budget_seconds=args.budget_seconds,
        bn_statistics_steps=args.bn_stats_steps,
        seed=args.seed,
        verbose=2 if args.quiet else 1,
        model_kwargs=dict(args.model_arg),
        precision=args.precision,
        strategy=args.strategy,
        loss=args.loss,
    )
    print(f"saved {args.out or f'runs/{args.model}'}/model.keras (best: best.keras, log: log.csv, TensorBoard: logs/)")


def _evaluate(args):
    from kseg import metrics, training

    result = training.evaluate(
        args.model_path,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        input_size=tuple(args.input_size) if args.input_size else "model",
        ignore_class=_ignore(args.ignore_class),
        save_overlays=args.save_overlays,
        max_overlays=args.max_overlays,
    )
    print(f"{args.split} split, {result['num_images']} images:")
    print(metrics.format_scores(result))
    if args.json:
        import pathlib

        from kseg.io import atomic_write

        with atomic_write(args.json) as f:
            json.dump(result, f, indent=2)
        charts = training.save_charts(pathlib.Path(args.json).parent, result)
        print(f"wrote {args.json}, {charts['iou_chart']}, {charts['confusion_matrix']}")
    if args.save_overlays:
        print(f"wrote {min(args.max_overlays, result['num_images'])} comparisons (image | prediction | ground truth "
              f"| errors) and the charts to {args.save_overlays}")


def _predict(args):
    from kseg import training

    results = training.predict(
        args.model_path,
        args.images,
        args.out,
        input_size=tuple(args.input_size) if args.input_size else "model",
        alpha=args.alpha,
    )
    for r in results:
        print(f"{r['image']} -> {r['labels']}, {r['overlay']}")


def _export(args):
    from kseg import export

    # TFLite: export_tflite loads the file itself and frees the Keras model before the converter runs
    model = args.model_path if args.format == "tflite" else export.load_keras(args.model_path)
    kwargs = {}
    if args.quantize is not None:
        if args.format != "tflite":
            raise ValueError(f"--quantize applies to --format tflite only, got --format {args.format}")
        kwargs["quantize"] = args.quantize
    for flag, name, value in (("--representative", "representative_images", args.representative),
                              ("--io-type", "io_type", args.io_type)):
        if value is not None:
            if args.format != "tflite":
                raise ValueError(f"{flag} applies to --format tflite only, got --format {args.format}")
            kwargs[name] = value
    if args.input_size is not None and args.format != "keras":
        kwargs["input_shape"] = (*args.input_size, 3)
    print(f"wrote {export.export(model, args.out, format=args.format, **kwargs)}")


def _demo(args):
    from kseg import training

    training.demo(
        data=args.data,
        out_dir=args.out,
        budget_seconds=args.budget_seconds,
        download=args.download,
        synthetic=args.synthetic,
        verbose=2 if args.quiet else 1,
        pretrained=args.pretrained,
    )


def _list(args):
    from kseg.models import registry

    rows = [card.summary_row() for card in registry.static_cards()]  # the generated table: no TensorFlow
    print(f"{'name':<22} {'paper':<40} {'params':>12} {'stride':>6}  {'task':<14} presets (weights=)")
    for r in rows:
        presets = ", ".join(r["presets"]) or "-"
        print(f"{r['name']:<22} {r['paper'][:40]:<40} {r['params']:>12,} {r['output_stride']:>6}  {r['task']:<14} {presets}")


def _convert(args):
    from kseg.models.weights import convert

    out = args.out or f"{args.model}.weights.h5"
    if not out.endswith(".weights.h5"):
        raise ValueError(f"--out must end with '.weights.h5' (Keras' weights format), got {out!r}")
    try:  # written crash-safely: a failed conversion leaves the old --out as it was
        convert(args.model, args.file, out, **dict(args.model_arg))
    except FileNotFoundError as err:  # the input is missing (convert creates --out's folder): a usage error
        raise ValueError(str(err)) from err
    except KeyError as err:
        raise ValueError(f"{args.file}: {err}") from err
    print(f"{args.file} -> {out}")


_COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export, "demo": _demo,
             "list": _list, "convert": _convert}


def _import_tensorflow_quietly():
    """Import TensorFlow with stderr (fd 2) on /dev/null: TF 2.21 logs its oneDNN notice through absl
    before logging is initialised, where TF_CPP_MIN_LOG_LEVEL does not reach it."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv=None):
    """Entry point of the ``kseg`` console script; returns the exit status."""
    from kseg.errors import debug_requested, run_cli  # every failure: 1-2 lines, no traceback

    debug, argv = debug_requested(sys.argv[1:] if argv is None else argv)
    # TensorFlow reads its C++ log level once, when first imported: hide INFO/WARNING lines unless asked.
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    heavy = bool(argv) and argv[0] in ("train", "evaluate", "predict", "export", "demo", "convert")
    if argv and argv[0] in ("export", "convert"):
        # TensorFlow's oneDNN allocator keeps every freed tensor in its own pool, out of reach of the
        # TFLite converter's MLIR (and of numpy in convert): with the system allocator FCN-8s' TFLite
        # export peaks ~0.7 GB lower (benchmarks/peak_memory.py --system-allocator). Read once, at import.
        os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    if heavy and not verbose:
        _import_tensorflow_quietly()
    command = argv[0] if argv else "kseg"
    resume = "continue with --resume" if command == "train" else None
    try:
        from kseg.config import expand_argv

        argv = expand_argv(argv)  # kseg train --config RUN.yaml: the file's options, then the command line's
    except (ValueError, FileNotFoundError) as err:
        print(f"kseg {command}: error: {err}", file=sys.stderr)
        return 2
    if argv and argv[0] in ("train", "evaluate", "predict", "export"):
        from kseg.inference.cli import dispatch  # proposal / detection models (task != "semantic")

        handled = run_cli(command, dispatch, argv, debug=debug, on_interrupt=resume)
        if handled is not None:
            return handled
    args = build_parser().parse_args(argv)
    if args.command != "list":
        import kseg

        kseg._load_everything()  # registers every kseg layer before a .keras file is loaded
    return run_cli(args.command, _COMMANDS[args.command], args, debug=debug, on_interrupt=resume) or 0


if __name__ == "__main__":
    sys.exit(main())

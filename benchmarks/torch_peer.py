"""kseg vs PyTorch: one SegNet / FCN-8s training step on this CPU, float32 and bfloat16 (issue 15, goal 6).

The peer a user would pick instead of kseg is PyTorch. This script holds the same two networks
written in plain ``torch.nn`` (our own transcription of kseg's builders, which follow the authors'
prototxts; no third-party model code), checks that their parameter counts equal kseg's, and times
one training step of each side at the same size:

* SegNet (Badrinarayanan et al., PAMI 2017): the 13-conv VGG16 encoder with BN, 2x2 max pooling
  that keeps its argmax, the mirrored decoder that unpools with those indices
  (``nn.MaxPool2d(return_indices=True)`` / ``nn.MaxUnpool2d``), 3x3 classifier; 11 classes.
* FCN-8s (Long et al., CVPR 2015): conv1_1 with pad 100, Caffe's ceil-mode pooling, fc6 7x7 /
  fc7 1x1 (4096, dropout 0.5), zero-initialised score convs, frozen bilinear transposed convs
  (``upscore2``, ``upscore_pool4``, ``upscore8``) and the authors' crops (5, 9, 31); 21 classes.

A step is forward, softmax cross-entropy (void class 11 ignored), backward and an SGD update with
momentum 0.9, on random images in [0, 255] and random labels. kseg: ``model.train_on_batch``
under TensorFlow without XLA and with ``jit_compile=True``; bfloat16 is Keras'
``mixed_bfloat16`` policy. PyTorch: eager mode, ``torch.autocast("cpu", torch.bfloat16)`` for
bfloat16, ``torch.set_num_threads(<cores>)`` (TensorFlow's default pools use every core). Every
configuration runs in its own subprocess (no shared thread pools, its own peak RSS); torch runs
in an interpreter that has it (``--torch-python``; torch is never a dependency of kseg).
images/s is the batch over the median of ``--steps`` timed steps after ``--warmup`` steps.
``--rounds N`` runs every side's child N times, alternating which goes first, and reports the
median of the rounds' own kseg/torch ratios (this machine drifts between children).
The figures and their conditions: benchmarks/README.md.

    /work/venv-torch/bin/python benchmarks/torch_peer.py                # or any python: see --torch-python
    python benchmarks/torch_peer.py --models segnet --precisions float32 --steps 2
    python benchmarks/torch_peer.py --models segnet --precisions float32 --runtimes tf --rounds 5 --steps 5 --warmup 2
    python benchmarks/torch_peer.py --segnet-size 360 480 --fcn-size 256 256 --batch 2
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent

NUM_CLASSES = {"segnet": 11, "fcn8s": 21}
# The ignored ("void") label is num_classes: CamVid's 11 for SegNet, an extra label 21 for FCN-8s.
# VGG16 (configuration D): (filters, kernel) of each conv, block by block -- kseg.backbones.vgg.VGG_CONFIGS["vgg_d"].
VGG16 = (((64, 3), (64, 3)), ((128, 3), (128, 3)), ((256, 3),) * 3, ((512, 3),) * 3, ((512, 3),) * 3)
FCN8S_OFFSETS = {"score_pool4c": 5, "score_pool3c": 9, "score": 31}  # kseg.models.fcn.OFFSETS["fcn8s"]
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


# ----------------------------------------------------------------------------------------------
# the PyTorch models (built lazily: this module imports without torch)


def _torch_models():
    import torch
    from torch import nn

    class Preprocess(nn.Module):
        """kseg's ImageNormalization("caffe"): RGB -> BGR, subtract the ImageNet BGR mean (NCHW)."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1), persistent=False)

        def forward(self, x):
            return x.flip(1) - self.mean

    def conv_bn_relu(cin, cout, k, relu=True):
        conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # MSRA, as the tutorial / kseg's he_normal
        nn.init.zeros_(conv.bias)
        # Keras' BatchNormalization defaults: epsilon 1e-3, moving average 0.99; beta 0.001 as the prototxt.
        bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        nn.init.constant_(bn.bias, 0.001)
        return nn.Sequential(conv, bn, nn.ReLU(inplace=True)) if relu else nn.Sequential(conv, bn)

    class SegNet(nn.Module):
        """kseg.SegNet (backbone vgg_d) in torch.nn: encoder conv{b}_{i} + BN + ReLU, pool{b} with
        indices; decoder upsample{b} (unpool) + conv{b}_{i}_D, the last conv of each block narrowing
        to the next block's width; conv1_1_D classifier (3x3, no BN)."""

        def __init__(self, num_classes=11, blocks=VGG16):
            super().__init__()
            self.pre = Preprocess()
            self.enc = nn.ModuleList()
            cin = 3
            for block in blocks:
                layers = []
                for filters, k in block:
                    layers.append(conv_bn_relu(cin, filters, k))
                    cin = filters
                self.enc.append(nn.Sequential(*layers))
            self.pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)
            self.unpool = nn.MaxUnpool2d(2, 2)
            self.dec = nn.ModuleList()  # dec[0] is block 5's decoder, ..., dec[4] block 1's
            for b in range(len(blocks), 0, -1):
                block = blocks[b - 1]
                layers = []
                for i in range(len(block), 0, -1):
                    if b == 1 and i == 1:
                        break
                    filters = blocks[b - 2][-1][0] if i == 1 else block[i - 1][0]
                    layers.append(conv_bn_relu(cin, filters, block[i - 1][1]))
                    cin = filters
                self.dec.append(nn.Sequential(*layers))
            self.classifier = nn.Conv2d(cin, num_classes, 3, padding=1)
            nn.init.kaiming_normal_(self.classifier.weight, nonlinearity="relu")
            nn.init.zeros_(self.classifier.bias)

        def forward(self, x):
            x = self.pre(x)
            saved = []
            for block in self.enc:
                x = block(x)
                size = x.shape[-2:]
                x, idx = self.pool(x)
                saved.append((idx, size))
            for block, (idx, size) in zip(self.dec, reversed(saved)):
                x = block(self.unpool(x, idx, output_size=size))
            return self.classifier(x).float()

    def bilinear_(weight):
        """Caffe surgery.interp / kseg.initializers.BilinearUpsampling on a (C, C, k, k) kernel: the
        bilinear filter on the diagonal (channel c -> c), zero elsewhere."""
        c, _, k, _ = weight.shape
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        og = torch.arange(k, dtype=torch.float32)
        filt = 1 - (og - center).abs() / factor
        filt = filt[:, None] * filt[None, :]
        with torch.no_grad():
            weight.zero_()
            weight[range(c), range(c)] = filt

    class FCN8s(nn.Module):
        """kseg.FCN8s (pad100=True, backbone vgg_d) in torch.nn: conv1_1 pad 100, ceil-mode 2x2
        pools, fc6 7x7 (pad 0) / fc7 1x1 with ReLU + dropout 0.5, zero-initialised score_fr /
        score_pool4 / score_pool3, frozen bias-free bilinear upscore2 (4/2), upscore_pool4 (4/2),
        upscore8 (16/8), crops at 5, 9, 31 and fusion by sum."""

        def __init__(self, num_classes=21, blocks=VGG16):
            super().__init__()
            self.pre = Preprocess()
            self.blocks = nn.ModuleList()
            cin = 3
            for b, block in enumerate(blocks, start=1):
                layers = []
                for i, (filters, k) in enumerate(block, start=1):
                    conv = nn.Conv2d(cin, filters, k, padding=100 if (b, i) == (1, 1) else k // 2)
                    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                    nn.init.zeros_(conv.bias)
                    layers += [conv, nn.ReLU(inplace=True)]
                    cin = filters
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                self.blocks.append(nn.Sequential(*layers))
            self.fc = nn.Sequential(
                nn.Conv2d(cin, 4096, 7), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Conv2d(4096, 4096, 1), nn.ReLU(inplace=True), nn.Dropout(0.5),
            )
            for m in self.fc:
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
            self.score_fr = nn.Conv2d(4096, num_classes, 1)
            self.score_pool4 = nn.Conv2d(blocks[3][-1][0], num_classes, 1)
            self.score_pool3 = nn.Conv2d(blocks[2][-1][0], num_classes, 1)
            for m in (self.score_fr, self.score_pool4, self.score_pool3):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
            self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, bias=False)
            self.upscore8 = nn.ConvTranspose2d(num_classes, num_classes, 16, 8, bias=False)
            for m in (self.upscore2, self.upscore_pool4, self.upscore8):
                bilinear_(m.weight)
                m.weight.requires_grad_(False)  # lr_mult: 0 (kseg: trainable=False)

        @staticmethod
        def crop(x, ref, offset):
            return x[:, :, offset:offset + ref.shape[2], offset:offset + ref.shape[3]]

        def forward(self, image):
            x = self.pre(image)
            ends = []
            for block in self.blocks:
                x = block(x)
                ends.append(x)
            score = self.score_fr(self.fc(x))
            up = self.upscore2(score)
            score = up + self.crop(self.score_pool4(ends[3]), up, FCN8S_OFFSETS["score_pool4c"])
            up = self.upscore_pool4(score)
            score = up + self.crop(self.score_pool3(ends[2]), up, FCN8S_OFFSETS["score_pool3c"])
            return self.crop(self.upscore8(score), image, FCN8S_OFFSETS["score"]).float()

    return {"segnet": SegNet, "fcn8s": FCN8s}


def torch_model(name, num_classes=None):
    """The torch.nn transcription of kseg's `name` ("segnet" or "fcn8s")."""
    return _torch_models()[name](NUM_CLASSES[name] if num_classes is None else num_classes)


def torch_param_counts(model):
    """``(trainable, all)``: all counts frozen parameters too (the bilinear upscores) and, as
    :func:`kseg.count_params` and the Caffe prototxts, not BN's running statistics."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# children


def _data(batch, h, w, num_classes):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, h, w, 3)).astype("float32")
    y = rng.integers(0, num_classes + 1, (batch, h, w)).astype("int64")  # num_classes+1 values: void included
    return x, y


def _timed(step, warmup, steps):
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss = step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), times, loss


def torch_child(args):
    import resource

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = args.size
    model = torch_model(args.model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable, total = torch_param_counts(model)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=NUM_CLASSES[args.model])
    x, y = _data(args.batch, h, w, NUM_CLASSES[args.model])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(y)
    bf16 = args.precision == "bfloat16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        opt.step()
        return float(loss)

    first, median, times, loss = _timed(step, args.warmup, args.steps)
    return {"trainable": trainable, "params": total, "first_s": first, "step_s": median, "times": times,
            "loss": loss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "version": torch.__version__}


def kseg_child(args):
    import resource

    import keras
    import numpy as np
    import tensorflow as tf

    import kseg

    keras.config.set_dtype_policy("mixed_bfloat16" if args.precision == "bfloat16" else "float32")
    keras.utils.set_random_seed(0)
    h, w = args.size
    model = kseg.models.get(args.model).build(num_classes=NUM_CLASSES[args.model], input_shape=(h, w, 3))
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=NUM_CLASSES[args.model]),
        jit_compile=args.runtime == "xla",
    )
    x, y = _data(args.batch, h, w, NUM_CLASSES[args.model])
    y = y.astype("int32")
    first, median, times, loss = _timed(lambda: float(model.train_on_batch(x, y)), args.warmup, args.steps)
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    return {"trainable": trainable, "params": int(kseg.count_params(model)), "first_s": first, "step_s": median,
            "times": times, "loss": loss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
            "version": f"TF {tf.__version__}"}


# ----------------------------------------------------------------------------------------------
# parent


def default_torch_python():
    """An interpreter that imports torch: this one, else $KSEG_TORCH_PYTHON, else /work/venv-torch."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    for candidate in (os.environ.get("KSEG_TORCH_PYTHON"), "/work/venv-torch/bin/python", shutil.which("python-torch")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def run_child(python, side, model, precision, size, args, runtime="tf"):
    cmd = [python, str(pathlib.Path(__file__).resolve()), "--child", side, "--model", model, "--precision", precision,
           "--runtime", runtime, "--size", *map(str, size), "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    if args.channels_last:
        cmd.append("--channels-last")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {args.timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {**json.loads(line[7:]), "wall_s": time.perf_counter() - t0}
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return {"error": f"exit {proc.returncode}: " + (tail[-1][:120] if tail else "no output")}


def _median_result(results):
    """The round whose step time is the median (the lower middle one for an even count); an error
    only when every round failed."""
    ok = sorted((r for r in results if "error" not in r), key=lambda r: r["step_s"])
    return ok[(len(ok) - 1) // 2] if ok else results[-1]


def ips(r, batch):
    return None if r is None or "error" in r else batch / r["step_s"]


def fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else "n/a"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["segnet", "fcn8s"], choices=list(NUM_CLASSES))
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--runtimes", nargs="+", default=["tf", "xla"], choices=["tf", "xla"],
                        help="kseg's runtimes (TensorFlow without / with XLA)")
    parser.add_argument("--segnet-size", nargs=2, type=int, default=[180, 240], metavar=("H", "W"),
                        help="SegNet's input (default: half of CamVid's 360x480, to fit 2 cores)")
    parser.add_argument("--fcn-size", nargs=2, type=int, default=[128, 128], metavar=("H", "W"),
                        help="FCN-8s's input (pad 100: conv1 sees 328x328)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (tracing / XLA compile)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every side's child this many times, alternating which goes first; the ratio is "
                             "the median of the rounds' own ratios (the machine's drift between children cancels)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (TF: its default)")
    parser.add_argument("--channels-last", action="store_true", help="torch in channels_last memory format")
    parser.add_argument("--torch-python", default=None,
                        help="interpreter with torch (default: this one, $KSEG_TORCH_PYTHON, /work/venv-torch)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per child")
    parser.add_argument("--json", default=None, help="also write every child's result here")
    parser.add_argument("--child", choices=["torch", "kseg"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--runtime", default="tf", help=argparse.SUPPRESS)
    parser.add_argument("--size", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = (torch_child if args.child == "torch" else kseg_child)(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    torch_python = args.torch_python or default_torch_python()
    load0 = os.getloadavg()
    t_start = time.time()
    rows, raw = [], {}
    for model in args.models:
        size = args.segnet_size if model == "segnet" else args.fcn_size
        for precision in args.precisions:
            sides = [*args.runtimes, "torch"]
            results = {side: [] for side in sides}
            ratios = []
            for r in range(args.rounds):  # rounds alternate which side goes first: drift hits both alike
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    if side != "torch":
                        res = run_child(sys.executable, "kseg", model, precision, size, args, side)
                    elif torch_python is None:
                        res = {"error": "no interpreter with torch (pip install torch into a venv; --torch-python)"}
                    else:
                        res = run_child(torch_python, "torch", model, precision, size, args)
                    results[side].append(res)
                    print(f"  {model} {precision} {'torch' if side == 'torch' else 'kseg ' + side} round {r + 1}: "
                          f"{json.dumps(res)[:200]}", file=sys.stderr, flush=True)
                best = max([v for v in (ips(results[rt][-1], args.batch) for rt in args.runtimes) if v], default=None)
                t_ips = ips(results["torch"][-1], args.batch)
                if best and t_ips:
                    ratios.append(best / t_ips)
            cells = {side: _median_result(results[side]) for side in sides}
            rows.append((model, precision, size, cells, ratios))
            raw[f"{model}/{precision}"] = {**cells, "round_ratios": ratios, "rounds": results}
    load1 = os.getloadavg()

    versions = sorted({c["version"] for *_, cells, _ in rows for c in cells.values() if "version" in c})
    print(f"\nOne training step (forward, cross-entropy, backward, SGD momentum 0.9), batch {args.batch}, CPU "
          f"({os.cpu_count()} cores; torch threads {args.threads}{', channels_last' if args.channels_last else ''}), "
          f"median of {args.steps} steps after {args.warmup} warm-up"
          f"{f'; {args.rounds} rounds, sides alternating, median round' if args.rounds > 1 else ''}; "
          f"{', '.join(versions)}")
    print(f"load average (1/5/15 min) at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, at end "
          f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}; {time.time() - t_start:.0f} s")
    print(f"{'model':<8} {'size':>8} {'precision':<9} {'params':>12} {'kseg TF':>9} {'kseg XLA':>9} {'torch':>9} "
          f"{'kseg/torch':>10}   (images/s){'   rounds: kseg/torch each' if args.rounds > 1 else ''}")
    notes = []
    for model, precision, size, cells, ratios in rows:
        tf_ips, xla_ips = ips(cells.get("tf"), args.batch), ips(cells.get("xla"), args.batch)
        t_ips = ips(cells["torch"], args.batch)
        best = max([v for v in (tf_ips, xla_ips) if v is not None], default=None)
        if args.rounds > 1:  # the median of the rounds' own ratios, each round's sides run back to back
            ratio = f"{statistics.median(ratios):.2f}x" if ratios else "n/a"
        else:
            ratio = f"{best / t_ips:.2f}x" if best and t_ips else "n/a"
        counts = {side: (c["trainable"], c["params"]) for side, c in cells.items() if "params" in c}
        if len(set(counts.values())) > 1:
            notes.append(f"{model}: PARAMETER COUNTS DIFFER (trainable, all): {counts}")
        params = next(iter(counts.values()))[1] if counts else None
        print(f"{model:<8} {size[0]:>4}x{size[1]:<3} {precision:<9} {params or 0:>12,} {fmt(tf_ips):>9} "
              f"{fmt(xla_ips):>9} {fmt(t_ips):>9} {ratio:>10}"
              + (f"   {', '.join(f'{q:.2f}' for q in ratios)}" if args.rounds > 1 else ""))
        for side, c in cells.items():
            if "error" in c:
                notes.append(f"{model} {precision} {side}: {c['error']}")
    for side, c in [(f"{m} {p} {s}", c) for m, p, _, cells, _ in rows for s, c in cells.items() if "peak_rss_mb" in c]:
        notes.append(f"{side}: step times {', '.join(f'{t:.2f}' for t in c['times'])} s, first {c['first_s']:.1f} s, "
                     f"peak RSS {c['peak_rss_mb']:.0f} MB")
    for n in notes:
        print("  " + n)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "load": [load0, load1], "cells": raw},
                                                      indent=1))
    return rows


if __name__ == "__main__":
    main()

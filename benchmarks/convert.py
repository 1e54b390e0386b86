"""Converting the largest released file: time and peak memory of reading a DeconvNet-sized
caffemodel and of the whole ``kseg convert`` to ``.weights.h5``; peer: Google's protobuf runtime
parsing the same file (what pycaffe / caffe_pb2 users do), in the same run.

    flock /tmp/kseg-heavy.lock python benchmarks/convert.py
    python benchmarks/convert.py --tmp /big/disk --keep        # keep the generated file

The file is generated first, in the real format (``kseg.convert.caffe.write_caffemodel``): the
layer names, types and blob shapes of HyeonwooNoh/DeconvNet's released
``DeconvNet_inference_deploy`` net (a V1 net: ``layers`` with enum types, legacy 4-d blob shapes,
the fork's ``BN`` layers with their two inference blobs, fc6 7x7x512->4096, fc7, the 7x7
``fc6-deconv``, the mirrored deconvolution decoder, ``seg-score-voc``), random float32 data:
252 M parameters, 1.0 GB. Each measurement runs in a fresh process; "peak" is that process's
VmHWM, "+peak" its growth over the level after imports (the memory the step itself needed).
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
V1 = {"Convolution": 4, "Deconvolution": 39, "ReLU": 18, "Pooling": 17, "BN": 43, "Unpooling": 42}


def deconvnet_layers(num_classes=21, seed=0):
    """(name, V1 type, blobs) of DeconvNet_inference_deploy in file order, one layer at a time."""
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)

    def bn(name, c):
        return (name, V1["BN"], [rand(1, c, 1, 1) + 1, rand(1, c, 1, 1)])

    cin = 3
    for b, block in enumerate(VGG16, start=1):
        for i, c in enumerate(block, start=1):
            yield (f"conv{b}_{i}", V1["Convolution"], [rand(c, cin, 3, 3), rand(c)])
            yield bn(f"bn{b}_{i}", c)
            yield (f"relu{b}_{i}", V1["ReLU"], [])
            cin = c
        yield (f"pool{b}", V1["Pooling"], [])
    yield ("fc6", V1["Convolution"], [rand(4096, 512, 7, 7), rand(4096)])
    yield bn("bnfc6", 4096)
    yield ("fc7", V1["Convolution"], [rand(4096, 4096, 1, 1), rand(4096)])
    yield bn("bnfc7", 4096)
    yield ("fc6-deconv", V1["Deconvolution"], [rand(4096, 512, 7, 7), rand(512)])   # (in, out, kh, kw)
    yield bn("fc6-deconv-bn", 512)
    cin = 512
    for b in range(5, 0, -1):
        yield (f"unpool{b}", V1["Unpooling"], [])
        block = VGG16[b - 1]
        for i in range(1, len(block) + 1):
            c = VGG16[b - 2][-1] if (i == len(block) and b > 1) else block[i - 1]
            yield (f"deconv{b}_{i}", V1["Deconvolution"], [rand(cin, c, 3, 3), rand(c)])
            yield bn(f"debn{b}_{i}", c)
            cin = c
    yield ("seg-score-voc", V1["Convolution"], [rand(num_classes, 64, 1, 1), rand(num_classes)])


def _hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _protobuf_classes():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="bench_caffe.proto", package="bench_caffe", syntax="proto2")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, num, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if type_name:
                f.type_name = ".bench_caffe." + type_name
            if packed:
                f.options.packed = True

    O, R = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("BlobShape", [("dim", 1, F.TYPE_INT64, R, None, True)])
    msg("BlobProto", [("num", 1, F.TYPE_INT32, O, None, False), ("channels", 2, F.TYPE_INT32, O, None, False),
                      ("height", 3, F.TYPE_INT32, O, None, False), ("width", 4, F.TYPE_INT32, O, None, False),
                      ("data", 5, F.TYPE_FLOAT, R, None, True), ("shape", 7, F.TYPE_MESSAGE, O, "BlobShape", False)])
    msg("LayerParameter", [("name", 1, F.TYPE_STRING, O, None, False), ("type", 2, F.TYPE_STRING, O, None, False),
                           ("blobs", 7, F.TYPE_MESSAGE, R, "BlobProto", False)])
    msg("V1LayerParameter", [("name", 4, F.TYPE_STRING, O, None, False), ("type", 5, F.TYPE_INT32, O, None, False),
                             ("blobs", 6, F.TYPE_MESSAGE, R, "BlobProto", False)])
    msg("NetParameter", [("name", 1, F.TYPE_STRING, O, None, False),
                         ("layers", 2, F.TYPE_MESSAGE, R, "V1LayerParameter", False),
                         ("layer", 100, F.TYPE_MESSAGE, R, "LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench_caffe.NetParameter"))


def measure(kind, path, out=None):
    """Run one step in this (fresh) process; print one JSON line."""
    if kind == "read":
        from kseg.convert.caffe import read_caffemodel
    elif kind == "convert":
        from kseg.models.weights import convert
    elif kind == "protobuf":
        net_cls = _protobuf_classes()
    base = _hwm_mb()
    t0 = time.perf_counter()
    if kind == "read":
        layers = read_caffemodel(path)
        nbytes = sum(b.nbytes for layer in layers.values() for b in layer.blobs)
    elif kind == "protobuf":
        with open(path, "rb") as f:
            data = f.read()
        net = net_cls()
        net.ParseFromString(data)
        arrays = {}
        for layer in list(net.layers) + list(net.layer):
            arrays[layer.name] = [np.asarray(b.data, np.float32) for b in layer.blobs]
        nbytes = sum(a.nbytes for v in arrays.values() for a in v)
    elif kind == "convert":
        convert("deconvnet", path, out)
        nbytes = os.path.getsize(out)
    else:
        raise SystemExit(f"unknown step {kind}")
    seconds = time.perf_counter() - t0
    peak = _hwm_mb()
    print(json.dumps({"kind": kind, "seconds": seconds, "base_mb": base, "peak_mb": peak, "nbytes": nbytes}))


def _run(kind, path, out=None, timeout=1800, **extra_env):
    cmd = [sys.executable, __file__, "--measure", kind, str(path)] + ([str(out)] if out else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2", **extra_env)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"kind": kind, "error": f"exit {proc.returncode}: {tail[0][:160]}"}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tmp", default=None, help="folder for the generated file (needs ~2.1 GB)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--skip", default="", help="comma list of steps to skip: read, protobuf, convert, convert+")
    ap.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(*args.measure)
        return
    skip = {s for s in args.skip.split(",") if s}
    work = pathlib.Path(tempfile.mkdtemp(prefix="kseg-convert-", dir=args.tmp))
    src, out = work / "DeconvNet_trainval_inference.caffemodel", work / "deconvnet.weights.h5"
    try:
        sys.path.insert(0, str(ROOT))
        from kseg.convert.caffe import write_caffemodel

        t0 = time.perf_counter()
        write_caffemodel(src, deconvnet_layers(), v1=True, name="DeconvNet_inference_deploy")
        gen_s = time.perf_counter() - t0
        size_mb = os.path.getsize(src) / 2**20
        print(f"generated {src.name}: {size_mb:.0f} MiB, V1 net, legacy 4-d blobs ({gen_s:.1f} s)")
        rows = []
        steps = (("read", "read", "kseg.convert.caffe.read_caffemodel (mmap, one copy per blob)", "0"),
                 ("protobuf", "protobuf", "peer: protobuf runtime ParseFromString + numpy arrays", "0"),
                 ("convert", "convert", "kseg.models.weights.convert('deconvnet') -> .weights.h5, oneDNN pool",
                  "0"),
                 ("convert", "convert+", "the same with TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1 (as `kseg convert`)", "1"))
        for kind, label, note, system_allocator in steps:
            if label in skip:
                continue
            r = _run(kind, src, out if kind == "convert" else None, TF_ONEDNN_USE_SYSTEM_ALLOCATOR=system_allocator)
            rows.append((label, note, r))
        print()
        print(f"DeconvNet-sized caffemodel ({size_mb:.0f} MiB), one fresh process per step "
              f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
        print(f"{'step':<9} {'seconds':>8} {'peak MiB':>9} {'+peak MiB':>10} {'+peak/file':>10}  what")
        for kind, note, r in rows:
            if "error" in r:
                print(f"{kind:<9} {'-':>8} {'-':>9} {'-':>10} {'-':>10}  {note}: FAILED {r['error']}")
                continue
            grow = r["peak_mb"] - r["base_mb"]
            print(f"{kind:<9} {r['seconds']:>8.1f} {r['peak_mb']:>9.0f} {grow:>10.0f} {grow / size_mb:>10.2f}  {note}")
        if out.exists():
            print(f"\nconverted file: {out.name} {os.path.getsize(out) / 2**20:.0f} MiB")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            for p in work.iterdir():
                p.unlink()
            work.rmdir()


if __name__ == "__main__":
    main()

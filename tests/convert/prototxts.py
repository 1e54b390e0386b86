"""The authors' deploy nets, written out by us from the facts of their prototxts, for OpenCV's Caffe importer.

Each generator returns a :class:`Net` whose layers follow the authors' deploy file (cited as
``repo@commit : path`` above it): layer names, types, kernel sizes, pads, strides, dilations,
crop offsets, in-place tops. The files themselves are third-party and are not copied here.

Custom layers of the authors' Caffe forks are written as the stock layers OpenCV has:

* caffe-segnet / DeconvNet ``BN`` in INFERENCE mode (y = scale * x + shift, statistics folded
  in) -> ``Scale`` with ``bias_term: true`` (same two blobs);
* SegNet's ``Upsample`` and DeconvNet's ``UNPOOLING`` (max unpooling with the pooling switches)
  -> the marker type ``Unpool``. OpenCV's ``MaxUnpool`` layer cannot be created from a
  prototxt (its ``pool_k_*`` parameters are no Caffe fields), so :func:`run_opencv` cuts the
  net there: OpenCV runs the parts, and between them the switches of the pooling layer (first
  maximum of each window, Caffe's rule) scatter the decoder's map back, 10 lines of numpy;
* nets stop before layers OpenCV has no equivalent of (CRF-as-RNN's ``MultiStageMeanfield``),
  and before the authors' ``Interp`` / softmax, so that the stride-8 scores are compared.

``width`` scales every channel count except the classes, with kseg's rounding
(``max(1, round(c * width))``), so a reduced net of the same structure runs fast.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def scale(c, width):
    return max(1, int(round(c * float(width))))


@dataclasses.dataclass
class Layer:
    name: str
    type: str
    bottom: list
    top: list
    params: dict = dataclasses.field(default_factory=dict)  # {"convolution_param": {...}, ...}
    extra: dict = dataclasses.field(default_factory=dict)  # test-side facts (unpool's pooling layer)


def _value(v, key=""):
    if key in ("name", "type", "bottom", "top"):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and v.isupper():
        return v  # enum
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v) if isinstance(v, float) else str(v)


def _message(d, indent):
    pad = "  " * indent
    out = []
    for key, value in d.items():
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, dict):
                out.append(f"{pad}{key} {{\n{_message(v, indent + 1)}{pad}}}\n")
            else:
                out.append(f"{pad}{key}: {_value(v, key)}\n")
    return "".join(out)


class Net:
    """A deploy net: an input blob and layers in order (V2 text when written)."""

    def __init__(self, name, source, input_shape=(1, 3, 500, 500)):
        self.name, self.source, self.input_shape = name, source, tuple(input_shape)
        self.layers: list[Layer] = []

    def add(self, name, type_, bottom, top=None, **params):
        bottom = [bottom] if isinstance(bottom, str) else list(bottom)
        top = [name] if top is None else ([top] if isinstance(top, str) else list(top))
        self.layers.append(Layer(name, type_, bottom, top, params))
        return top[0]

    # Layers of the authors' nets ---------------------------------------------------------------
    def conv(self, name, bottom, num_output, kernel, pad=0, stride=1, dilation=1, bias=True, top=None):
        p = {"num_output": num_output, "kernel_size": kernel}
        if pad:
            p["pad"] = pad
        if stride != 1:
            p["stride"] = stride
        if dilation != 1:
            p["dilation"] = dilation
        if not bias:
            p["bias_term"] = False
        return self.add(name, "Convolution", bottom, top, convolution_param=p)

    def deconv(self, name, bottom, num_output, kernel, stride=1, pad=0, bias=True, top=None):
        p = {"num_output": num_output, "kernel_size": kernel}
        if stride != 1:
            p["stride"] = stride
        if pad:
            p["pad"] = pad
        if not bias:
            p["bias_term"] = False
        return self.add(name, "Deconvolution", bottom, top, convolution_param=p)

    def relu(self, name, blob):
        return self.add(name, "ReLU", blob, blob)

    def dropout(self, name, blob, ratio=0.5):
        return self.add(name, "Dropout", blob, blob, dropout_param={"dropout_ratio": ratio})

    def pool(self, name, bottom, kernel=2, stride=2, pad=0, pool="MAX", top=None, mask=None):
        p = {"pool": pool, "kernel_size": kernel, "stride": stride}
        if pad:
            p["pad"] = pad
        out = self.add(name, "Pooling", bottom, top, pooling_param=p)
        self.layers[-1].extra["mask"] = mask  # the authors' second top, computed by run_opencv
        return out

    def bn_folded(self, name, blob):
        """caffe-segnet ``BN`` (INFERENCE: scale, shift) as OpenCV's ``Scale`` with bias."""
        self.add(name, "Scale", blob, blob, scale_param={"bias_term": True})
        self.layers[-1].extra["caffe_type"] = "BN"
        return blob

    def batchnorm_scale(self, bn_name, scale_name, blob):
        """Stock Caffe ``BatchNorm`` (global stats) + ``Scale`` (MSRA ResNet)."""
        self.add(bn_name, "BatchNorm", blob, blob, batch_norm_param={"use_global_stats": True})
        self.add(scale_name, "Scale", blob, blob, scale_param={"bias_term": True})
        return blob

    def unpool(self, name, bottom, pool_name, size_of, top=None):
        """Max unpooling with ``pool_name``'s switches to the size of blob ``size_of`` (marker)."""
        out = self.add(name, "Unpool", bottom, top)
        self.layers[-1].extra.update(pool=pool_name, size_of=size_of)
        return out

    def crop(self, name, bottom, reference, offset, top=None):
        return self.add(name, "Crop", [bottom, reference], top, crop_param={"axis": 2, "offset": offset})

    def eltwise_sum(self, name, a, b, top=None):
        return self.add(name, "Eltwise", [a, b], top, eltwise_param={"operation": "SUM"})

    def scale_fixed(self, name, bottom, top=None):
        return self.add(name, "Scale", bottom, top, scale_param={"bias_term": False})

    def lrn(self, name, bottom, local_size=5, alpha=1e-4, beta=0.75, top=None):
        return self.add(name, "LRN", bottom, top,
                        lrn_param={"local_size": local_size, "alpha": alpha, "beta": beta})

    # Text ----------------------------------------------------------------------------------------
    def prototxt(self, layers=None, inputs=None):
        """V2 text of `layers` (default all, unpool markers excluded); `inputs` {blob: NCHW shape}."""
        inputs = inputs or {"data": self.input_shape}
        lines = [f'name: "{self.name}"\n', f"# {self.source}\n"]
        for blob, shape in inputs.items():
            dims = " ".join(f"dim: {d}" for d in shape)
            lines.append(f'input: "{blob}"\ninput_shape {{ {dims} }}\n')
        for layer in (self.layers if layers is None else layers):
            if layer.type == "Unpool":
                raise ValueError(f"{layer.name}: unpooling has no OpenCV Caffe form; run_opencv cuts the net there")
            body = {"name": layer.name, "type": layer.type}
            text = _message(body, 1)
            text += "".join(f'  bottom: "{b}"\n' for b in layer.bottom)
            text += "".join(f'  top: "{t}"\n' for t in layer.top[:1])
            text += _message(layer.params, 1)
            lines.append("layer {\n" + text + "}\n")
        return "".join(lines)

    def weighted(self):
        """Names of layers that hold blobs in a caffemodel, in order."""
        kinds = {"Convolution", "Deconvolution", "Scale", "BatchNorm", "InnerProduct", "Normalize"}
        return [layer.name for layer in self.layers if layer.type in kinds]


# --------------------------------------------------------------------------------------------------
# Running with OpenCV


def _switches(x, k, s, out_hw):
    """Caffe max-pool switches (ceil mode, pad 0): flat index h * W + w of each window's first max."""
    n, c, h, w = x.shape
    oh, ow = out_hw
    idx = np.zeros((n, c, oh, ow), np.int64)
    best = np.full((n, c, oh, ow), -np.inf, np.float32)
    for dy in range(k):
        for dx in range(k):
            ys = np.arange(oh) * s + dy
            xs = np.arange(ow) * s + dx
            valid = (ys[:, None] < h) & (xs[None, :] < w)
            yc, xc = np.minimum(ys, h - 1), np.minimum(xs, w - 1)
            v = x[:, :, yc[:, None], xc[None, :]]
            take = valid & (v > best)  # strict: the first maximum wins, as Caffe
            best = np.where(take, v, best)
            idx = np.where(take, (yc[:, None] * w + xc[None, :]), idx)
    return idx


def _unpool(y, idx, hw):
    n, c = y.shape[:2]
    out = np.zeros((n, c, hw[0] * hw[1]), np.float32)
    np.put_along_axis(out, idx.reshape(n, c, -1), y.reshape(n, c, -1), axis=2)
    return out.reshape(n, c, *hw)


def run_opencv(net, prototxt_dir, caffemodel, data, outputs):
    """Run `net` with OpenCV's Caffe importer on `data` (NCHW); returns {blob: NCHW array} of `outputs`.

    The net is cut at every ``Unpool`` marker; each part is a prototxt of its own, read with
    ``cv2.dnn.readNetFromCaffe(part, caffemodel)`` (OpenCV matches the caffemodel's layers by
    name), and fed the blobs computed so far.
    """
    import cv2

    blobs = {"data": data.astype(np.float32)}
    parts, current = [], []
    for layer in net.layers:
        if layer.type == "Unpool":
            parts.append(current)
            parts.append([layer])
            current = []
        else:
            current.append(layer)
    parts.append(current)
    needed_later = {}
    for i, part in enumerate(parts):
        for layer in part:
            for b in layer.bottom:
                needed_later.setdefault(b, set()).add(i)
            if layer.type == "Unpool":
                needed_later.setdefault(layer.extra["size_of"], set()).add(i)
    pool_inputs = {}  # pooling layer with switches -> (its input, kernel, stride)
    for i, part in enumerate(parts):
        if not part:
            continue
        if part[0].type == "Unpool":
            layer = part[0]
            pool_input, k, stride = pool_inputs[layer.extra["pool"]]
            idx = _switches(pool_input, k, stride, blobs[layer.bottom[0]].shape[2:])
            blobs[layer.top[0]] = _unpool(blobs[layer.bottom[0]], idx, blobs[layer.extra["size_of"]].shape[2:])
            continue
        produced, external = set(), []
        for layer in part:
            for b in layer.bottom:
                if b not in produced and b not in external:
                    external.append(b)
            produced.update(layer.top[:1])
        # Which blobs (and which versions) must come back: pooling inputs (for switches), blobs used by
        # later parts, and the requested outputs. The value of a blob at a layer = that layer's output.
        requests = {}  # key -> layer name whose output to fetch
        writer = {}  # blob -> the layer whose output it currently is (in-place layers rewrite it)
        for layer in part:
            if layer.type == "Pooling" and layer.extra.get("mask"):
                src = layer.bottom[0]
                requests[("pool_in", layer.name)] = writer.get(src)
            writer[layer.top[0]] = layer.name
        for b in produced:
            later = any(j > i for j in needed_later.get(b, ()))
            if later or b in outputs:
                requests[("blob", b)] = writer[b]
        text = net.prototxt(part, {b: blobs[b].shape for b in external})
        path = f"{prototxt_dir}/{net.name}_part{i}.prototxt"
        with open(path, "w") as f:
            f.write(text)
        cvnet = cv2.dnn.readNetFromCaffe(path, caffemodel)
        cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        for b in external:
            cvnet.setInput(np.ascontiguousarray(blobs[b]), b)
        # OpenCV may name a layer after its top when they differ (seen for the net's last layer)
        known = set(cvnet.getLayerNames())
        top_of = {layer.name: layer.top[0] for layer in part}
        requests = {k: (n if n is None or n in known else top_of[n]) for k, n in requests.items()}
        names = sorted({n for n in requests.values() if n is not None})
        try:
            results = dict(zip(names, cvnet.forward(names))) if names else {}
        except cv2.error as err:
            raise RuntimeError(f"{path}: OpenCV failed fetching {names}: {err}") from err
        for (kind, key), lname in requests.items():
            if kind == "blob":
                blobs[key] = np.array(results[lname])
            else:
                layer = next(candidate for candidate in part if candidate.name == key)
                src = results[lname] if lname is not None else blobs[layer.bottom[0]]
                p = layer.params["pooling_param"]
                pool_inputs[key] = (np.array(src), p["kernel_size"], p["stride"])
    return {b: blobs[b] for b in outputs}


# --------------------------------------------------------------------------------------------------
# The authors' nets


VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def fcn(variant, num_classes=21, width=1.0, input_hw=(500, 500)):
    """FCN-32s/16s/8s/8s-atonce, shelhamer/fcn.berkeleyvision.org@1305c73 : voc-<variant>/deploy.prototxt."""
    folder = "voc-" + variant.replace("_", "-")
    net = Net(variant, f"shelhamer/fcn.berkeleyvision.org@1305c73 : {folder}/deploy.prototxt", (1, 3, *input_hw))
    x = "data"
    for b, block in enumerate(VGG16, start=1):
        for i, c in enumerate(block, start=1):
            x = net.conv(f"conv{b}_{i}", x, scale(c, width), 3, pad=100 if (b, i) == (1, 1) else 1)
            net.relu(f"relu{b}_{i}", x)
        x = net.pool(f"pool{b}", x)
    x = net.conv("fc6", x, scale(4096, width), 7)
    net.relu("relu6", x)
    net.dropout("drop6", x)
    x = net.conv("fc7", x, scale(4096, width), 1)
    net.relu("relu7", x)
    net.dropout("drop7", x)
    score = net.conv("score_fr", x, num_classes, 1)
    if variant == "fcn32s":
        up = net.deconv("upscore", score, num_classes, 64, stride=32, bias=False)
        net.crop("score", up, "data", 19)
        return net
    up = net.deconv("upscore2", score, num_classes, 4, stride=2, bias=False)
    pool4 = "pool4"
    if variant == "fcn8s_atonce":
        pool4 = net.scale_fixed("scale_pool4", "pool4")
    s4 = net.conv("score_pool4", pool4, num_classes, 1)
    s4c = net.crop("score_pool4c", s4, up, 5)
    fuse = net.eltwise_sum("fuse_pool4", up, s4c)
    if variant == "fcn16s":
        up = net.deconv("upscore16", fuse, num_classes, 32, stride=16, bias=False)
        net.crop("score", up, "data", 27)
        return net
    up = net.deconv("upscore_pool4", fuse, num_classes, 4, stride=2, bias=False)
    pool3 = "pool3"
    if variant == "fcn8s_atonce":
        pool3 = net.scale_fixed("scale_pool3", "pool3")
    s3 = net.conv("score_pool3", pool3, num_classes, 1)
    s3c = net.crop("score_pool3c", s3, up, 9)
    fuse = net.eltwise_sum("fuse_pool3", up, s3c)
    up = net.deconv("upscore8", fuse, num_classes, 16, stride=8, bias=False)
    net.crop("score", up, "data", 31)
    return net


def crf_as_rnn(num_classes=21, width=1.0, input_hw=(500, 500)):
    """torrvision/crfasrnn@2156669 : python-scripts/TVG_CRFRNN_new_deploy.prototxt, up to the CRF.

    The three ``Crop`` layers of the authors' file (all named ``crop``) carry no offsets: their
    Caffe computed 5, 9 and 31 from the coordinate maps, which is what the weights were trained
    with, so the offsets are written here (a stock Caffe would crop at 0). Layer names must be
    unique for OpenCV: the crops are named after their tops, the two ``fuse`` after theirs.
    """
    net = Net("crf_as_rnn", "torrvision/crfasrnn@2156669 : python-scripts/TVG_CRFRNN_new_deploy.prototxt",
              (1, 3, *input_hw))
    x = "data"
    for b, block in enumerate(VGG16, start=1):
        for i, c in enumerate(block, start=1):
            x = net.conv(f"conv{b}_{i}", x, scale(c, width), 3, pad=100 if (b, i) == (1, 1) else 1)
            net.relu(f"relu{b}_{i}", x)
        x = net.pool(f"pool{b}", x)
    x = net.conv("fc6", x, scale(4096, width), 7)
    net.relu("relu6", x)
    net.dropout("drop6", x)
    x = net.conv("fc7", x, scale(4096, width), 1)
    net.relu("relu7", x)
    net.dropout("drop7", x)
    score = net.conv("score-fr", x, num_classes, 1, top="score")
    up = net.deconv("score2", score, num_classes, 4, stride=2, bias=True)
    s4 = net.conv("score-pool4", "pool4", num_classes, 1)
    s4c = net.crop("score-pool4c", s4, up, 5)
    fused = net.eltwise_sum("score-fused", up, s4c)
    up = net.deconv("score4", fused, num_classes, 4, stride=2, bias=False)
    s3 = net.conv("score-pool3", "pool3", num_classes, 1)
    s3c = net.crop("score-pool3c", s3, up, 9)
    final = net.eltwise_sum("score-final", up, s3c)
    big = net.deconv("upsample", final, num_classes, 16, stride=8, bias=False, top="bigscore")
    net.crop("coarse", big, "data", 31)
    return net


def segnet_basic(num_classes=11, width=1.0, input_hw=(360, 480)):
    """alexgkendall/SegNet-Tutorial@bb68b64 : Example_Models/segnet_basic_camvid.prototxt.

    The released deploy names the classifier ``dense_softmax_inner_prod`` (``conv_classifier``
    in Models/segnet_basic_inference.prototxt); kseg uses the latter, the file the former.
    """
    net = Net("segnet_basic", "alexgkendall/SegNet-Tutorial@bb68b64 : Example_Models/segnet_basic_camvid.prototxt",
              (1, 3, *input_hw))
    c = scale(64, width)
    x = net.lrn("norm", "data")
    pre = {}
    for s in range(1, 5):
        x = net.conv(f"conv{s}", x, c, 7, pad=3)
        net.bn_folded(f"conv{s}_bn", x)
        net.relu(f"relu{s}", x)
        pre[s] = x
        x = net.pool(f"pool{s}", x, mask=f"pool{s}_mask")
    for s in range(4, 0, -1):
        x = net.unpool(f"upsample{s}", x, f"pool{s}", pre[s])
        x = net.conv(f"conv_decode{s}", x, c, 7, pad=3)
        net.bn_folded(f"conv_decode{s}_bn", x)
    net.conv("dense_softmax_inner_prod", x, num_classes, 1)
    return net


def segnet(num_classes=12, width=1.0, input_hw=(360, 480)):
    """alexgkendall/SegNet-Tutorial@bb68b64 : Example_Models/segnet_model_driving_webdemo.prototxt.

    13 conv + BN + ReLU encoder (pool1..pool5 with masks), ``upsample5`` .. ``upsample1``, the
    mirrored decoder ``conv5_3_D`` .. ``conv1_2_D`` with BN + ReLU, classifier ``conv1_1_D`` (3x3).
    """
    net = Net("segnet", "alexgkendall/SegNet-Tutorial@bb68b64 : Example_Models/segnet_model_driving_webdemo.prototxt",
              (1, 3, *input_hw))
    x, pre = "data", {}
    for b, block in enumerate(VGG16, start=1):
        for i, c in enumerate(block, start=1):
            x = net.conv(f"conv{b}_{i}", x, scale(c, width), 3, pad=1)
            net.bn_folded(f"conv{b}_{i}_bn", x)
            net.relu(f"relu{b}_{i}", x)
        pre[b] = x
        x = net.pool(f"pool{b}", x, mask=f"pool{b}_mask")
    for b in range(5, 0, -1):
        x = net.unpool(f"upsample{b}", x, f"pool{b}", pre[b], top=f"pool{b}_D")
        block = VGG16[b - 1]
        for i in range(len(block), 0, -1):
            if (b, i) == (1, 1):
                break
            c = VGG16[b - 2][-1] if i == 1 else block[i - 1]
            x = net.conv(f"conv{b}_{i}_D", x, scale(c, width), 3, pad=1)
            net.bn_folded(f"conv{b}_{i}_D_bn", x)
            net.relu(f"relu{b}_{i}_D", x)
    net.conv("conv1_1_D", x, num_classes, 3, pad=1)
    return net


def deconvnet(num_classes=21, width=1.0, input_hw=(224, 224)):
    """HyeonwooNoh/DeconvNet@87dd133 : model/DeconvNet/DeconvNet_inference_deploy.prototxt (V1 there, V2 here)."""
    net = Net("deconvnet", "HyeonwooNoh/DeconvNet@87dd133 : model/DeconvNet/DeconvNet_inference_deploy.prototxt",
              (1, 3, *input_hw))
    x, pre = "data", {}
    for b, block in enumerate(VGG16, start=1):
        for i, c in enumerate(block, start=1):
            x = net.conv(f"conv{b}_{i}", x, scale(c, width), 3, pad=1)
            net.bn_folded(f"bn{b}_{i}", x)
            net.relu(f"relu{b}_{i}", x)
        pre[b] = x
        x = net.pool(f"pool{b}", x, mask=f"pool{b}_mask")
    x = net.conv("fc6", x, scale(4096, width), 7)
    net.bn_folded("bnfc6", x)
    net.relu("relu6", x)
    x = net.conv("fc7", x, scale(4096, width), 1)
    net.bn_folded("bnfc7", x)
    net.relu("relu7", x)
    x = net.deconv("fc6-deconv", x, scale(512, width), 7)
    net.bn_folded("fc6-deconv-bn", x)
    net.relu("fc6-deconv-relu", x)
    for b in range(5, 0, -1):
        x = net.unpool(f"unpool{b}", x, f"pool{b}", pre[b])
        block = VGG16[b - 1]
        for i in range(1, len(block) + 1):
            c = VGG16[b - 2][-1] if (i == len(block) and b > 1) else block[i - 1]
            x = net.deconv(f"deconv{b}_{i}", x, scale(c, width), 3, pad=1)
            net.bn_folded(f"debn{b}_{i}", x)
            net.relu(f"derelu{b}_{i}", x)
    net.conv("seg-score-voc", x, num_classes, 1, top="seg-score")
    return net


def _deeplab_vgg_trunk(net, width, pool5a=True):
    """DeepLab's atrous VGG16 (v1 LargeFOV / v2 VGG16): 3x3/s2/p1 max pools 1-3, s1 pools 4-5."""
    x = "data"
    for b, block in enumerate(VGG16, start=1):
        for i, c in enumerate(block, start=1):
            d = 2 if b == 5 else 1
            x = net.conv(f"conv{b}_{i}", x, scale(c, width), 3, pad=d, dilation=d)
            net.relu(f"relu{b}_{i}", x)
        x = net.pool(f"pool{b}", x, kernel=3, stride=2 if b <= 3 else 1, pad=1)
    if pool5a:
        x = net.pool("pool5a", x, kernel=3, stride=1, pad=1, pool="AVE")
    return x


def deeplab_v1(num_classes=21, width=1.0, fc_width=1024, input_hw=(321, 321)):
    """DeepLab-LargeFOV test.prototxt (the authors' file as mirrored by martinkersner/train-DeepLab@509419a :
    DeepLab-LargeFOV/train.prototxt), up to ``fc8`` (the Interp and CRF run outside the net)."""
    net = Net("deeplab_v1", "martinkersner/train-DeepLab@509419a : DeepLab-LargeFOV/train.prototxt", (1, 3, *input_hw))
    x = _deeplab_vgg_trunk(net, width)
    x = net.conv("fc6", x, fc_width, 3, pad=12, dilation=12)
    net.relu("relu6", x)
    net.dropout("drop6", x)
    x = net.conv("fc7", x, fc_width, 1)
    net.relu("relu7", x)
    net.dropout("drop7", x)
    net.conv("fc8_voc12", x, num_classes, 1)
    return net


def dilation8_camvid(num_classes=11, width=1.0, input_hw=(900, 1100)):
    """fyu/dilation@0f10574 : models/dilation8_camvid_deploy.prototxt (input already reflect-padded by 186)."""
    net = Net("dilation8", "fyu/dilation@0f10574 : models/dilation8_camvid_deploy.prototxt", (1, 3, *input_hw))
    x = "data"
    for b, block in enumerate(VGG16, start=1):
        for i, c in enumerate(block, start=1):
            x = net.conv(f"conv{b}_{i}", x, scale(c, width), 3, dilation=2 if b == 5 else 1)
            net.relu(f"relu{b}_{i}", x)
        if b <= 3:
            x = net.pool(f"pool{b}", x)
    x = net.conv("fc6", x, scale(4096, width), 7, dilation=4)
    net.relu("relu6", x)
    net.dropout("drop6", x)
    x = net.conv("fc7", x, scale(4096, width), 1)
    net.relu("relu7", x)
    net.dropout("drop7", x)
    x = net.conv("final", x, num_classes, 1)
    names = ("ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1", "ctx_conv5_1", "ctx_fc1")
    for name, d in zip(names, (1, 1, 2, 4, 8, 16, 1)):
        x = net.conv(name, x, num_classes, 3, pad=d, dilation=d)
        net.relu(name.replace("conv", "relu") if "conv" in name else name + "_relu", x)
    net.conv("ctx_final", x, num_classes, 1)
    return net


def deeplab_v2_vgg16(num_classes=21, width=1.0, fc_width=1024, input_hw=(513, 513)):
    """DeepLab-v2 VGG16 ASPP-L (xmojiao/deeplab_v2@da09c8b : voc2012/config/deeplab_largeFOV/train.prototxt):
    v1's trunk without pool5a; four branches fc6_k (3x3, dilation = pad = 6/12/18/24) -> fc7_k ->
    fc8_voc12_k, summed (``fc8_voc12``). Single scale, up to the sum."""
    net = Net("deeplab_v2_vgg16", "xmojiao/deeplab_v2@da09c8b : voc2012/config/deeplab_largeFOV/train.prototxt",
              (1, 3, *input_hw))
    x = _deeplab_vgg_trunk(net, width, pool5a=False)
    scores = []
    for k, rate in enumerate((6, 12, 18, 24), start=1):
        h = net.conv(f"fc6_{k}", x, fc_width, 3, pad=rate, dilation=rate)
        net.relu(f"relu6_{k}", h)
        net.dropout(f"drop6_{k}", h)
        h = net.conv(f"fc7_{k}", h, fc_width, 1)
        net.relu(f"relu7_{k}", h)
        net.dropout(f"drop7_{k}", h)
        scores.append(net.conv(f"fc8_voc12_{k}", h, num_classes, 1))
    s = net.eltwise_sum("fc8_voc12_sum12", scores[0], scores[1])
    s = net.eltwise_sum("fc8_voc12_sum123", s, scores[2])
    net.eltwise_sum("fc8_voc12", s, scores[3])
    return net


RESNET101 = ((2, 3, 64, 256, 1, 1), (3, 4, 128, 512, 2, 1), (4, 23, 256, 1024, 1, 2), (5, 3, 512, 2048, 1, 4))


def deeplab_v2_resnet101(num_classes=21, width=1.0, input_hw=(513, 513), depths=None):
    """DeepLab-v2 ResNet-101 (DrSleep/tensorflow-deeplab-resnet@066023c : misc/deploy.prototxt, the authors'
    deploy net): MSRA names, no conv bias, BatchNorm (global stats) + Scale after every conv, pool1 max
    3x3/s2/p1, stride on res3a's 1x1 convs, res4 dilation 2, res5 dilation 4; ASPP ``fc1_voc12_c0..c3``
    (3x3, dilation = pad = 6/12/18/24, with bias) summed (``fc1_voc12``). Single scale."""
    net = Net("deeplab_v2_resnet101", "DrSleep/tensorflow-deeplab-resnet@066023c : misc/deploy.prototxt",
              (1, 3, *input_hw))
    x = net.conv("conv1", "data", scale(64, width), 7, pad=3, stride=2, bias=False)
    net.batchnorm_scale("bn_conv1", "scale_conv1", x)
    net.relu("conv1_relu", x)
    x = net.pool("pool1", x, kernel=3, stride=2, pad=1)
    for (stage, blocks, mid, out, stride, dilation), n in zip(RESNET101, depths or [r[1] for r in RESNET101]):
        mid, out = scale(mid, width), scale(out, width)
        names = (["a", "b", "c"] if stage in (2, 5) else ["a"] + [f"b{i}" for i in range(1, n)])[:n]
        for i, block in enumerate(names):
            pre, bn, sc = f"res{stage}{block}", f"bn{stage}{block}", f"scale{stage}{block}"
            s = stride if i == 0 else 1
            if i == 0:
                short = net.conv(f"{pre}_branch1", x, out, 1, stride=s, bias=False)
                net.batchnorm_scale(f"{bn}_branch1", f"{sc}_branch1", short)
            else:
                short = x
            y = net.conv(f"{pre}_branch2a", x, mid, 1, stride=s, bias=False)
            net.batchnorm_scale(f"{bn}_branch2a", f"{sc}_branch2a", y)
            net.relu(f"{pre}_branch2a_relu", y)
            y = net.conv(f"{pre}_branch2b", y, mid, 3, pad=dilation, dilation=dilation, bias=False)
            net.batchnorm_scale(f"{bn}_branch2b", f"{sc}_branch2b", y)
            net.relu(f"{pre}_branch2b_relu", y)
            y = net.conv(f"{pre}_branch2c", y, out, 1, bias=False)
            net.batchnorm_scale(f"{bn}_branch2c", f"{sc}_branch2c", y)
            x = net.eltwise_sum(pre, short, y)
            net.relu(f"{pre}_relu", x)
    scores = [net.conv(f"fc1_voc12_c{k}", x, num_classes, 3, pad=r, dilation=r) for k, r in enumerate((6, 12, 18, 24))]
    s = net.eltwise_sum("fc1_voc12_c01", scores[0], scores[1])
    s = net.eltwise_sum("fc1_voc12_c012", s, scores[2])
    net.eltwise_sum("fc1_voc12", s, scores[3])
    return net


def parsenet(num_classes=21, width=1.0, fc_width=1024, input_hw=(321, 321), context_hw=(41, 41)):
    """ParseNet early fusion (Liu et al., ICLR 2016 workshop, Sec. 3 / Fig. 1) on DeepLab-LargeFOV.

    The authors' deploy file (weiliu89/caffe, branch fcn, ``models/parsenet``) was not reachable here,
    so this net follows the paper and kseg's layer names: ``pool6`` global average pooling of ``fc7``,
    SSD-style ``Normalize`` layers (per-position L2, learned per-channel scale; ``fc7_norm``,
    ``pool6_norm``), the context vector copied back to ``fc7``'s size (``Interp`` to ``context_hw``),
    ``Concat`` and ``fc8``. The layer names of the released file are therefore not verified.
    """
    net = Net("parsenet", "Liu et al., arXiv:1506.04579, Sec. 3 (authors' deploy not read)", (1, 3, *input_hw))
    x = _deeplab_vgg_trunk(net, width)
    x = net.conv("fc6", x, fc_width, 3, pad=12, dilation=12)
    net.relu("relu6", x)
    net.dropout("drop6", x)
    x = net.conv("fc7", x, fc_width, 1)
    net.relu("relu7", x)
    net.dropout("drop7", x)
    net.add("pool6", "Pooling", x, pooling_param={"pool": "AVE", "global_pooling": True})
    net.add("fc7_norm", "Normalize", x, norm_param={"across_spatial": False, "channel_shared": False})
    net.add("pool6_norm", "Normalize", "pool6", norm_param={"across_spatial": False, "channel_shared": False})
    net.add("pool6_unpool", "Interp", "pool6_norm",
            interp_param={"height": int(context_hw[0]), "width": int(context_hw[1])})
    net.add("fc7_concat", "Concat", ["fc7_norm", "pool6_unpool"])
    net.conv("fc8", "fc7_concat", num_classes, 1)
    return net


def dilation8_voc_context(num_classes=21, input_hw=(66, 66)):
    """The context module of fyu/dilation@0f10574 : models/dilation8_pascal_voc_deploy.prototxt alone.

    The *large* module (2C, 2C, 4C, 8C, 16C, 32C, 32C, C channels) with the VOC file's padding:
    ``ct_conv1_1`` pads 33 once and every later 3x3 conv is unpadded (dilations 1, 2, 4, 8, 16, 1),
    so the size is kept overall. Input blob ``fc-final`` (the front end's classifier there).
    """
    net = Net("dilation8_voc_context", "fyu/dilation@0f10574 : models/dilation8_pascal_voc_deploy.prototxt",
              (1, num_classes, *input_hw))
    c = num_classes
    x = net.conv("ct_conv1_1", "data", 2 * c, 3, pad=33)
    net.relu("ct_relu1_1", x)
    specs = (("ct_conv1_2", 2 * c, 1), ("ct_conv2_1", 4 * c, 2), ("ct_conv3_1", 8 * c, 4), ("ct_conv4_1", 16 * c, 8),
             ("ct_conv5_1", 32 * c, 16), ("ct_fc1", 32 * c, 1))
    for name, width, d in specs:
        x = net.conv(name, x, width, 3, dilation=d)
        net.relu(name.replace("conv", "relu") if "conv" in name else name + "_relu", x)
    net.conv("ct_final", x, c, 1)
    return net

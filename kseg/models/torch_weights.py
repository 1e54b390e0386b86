"""Load the authors' released Torch7 models (DeepMask, SharpMask, MultiPathNet / Fast R-CNN) into
kseg's builders, by module position and shape.

Torch7 files hold ``nn`` module trees, not names, so the mapping walks the tree in forward order
(``nn.Sequential`` / ``nn.ConcatTable`` / ``nn.ParallelTable`` children in order; the authors' own
containers in the order their ``forward`` runs them), collects the weighted modules
(``SpatialConvolution``/``MM``/``cudnn.*``, ``SpatialFullConvolution``, ``Linear``,
``SpatialBatchNormalization`` and the fixed ``SpatialConstDiagonal``/``ConstAffine`` that
``BNtoFixed`` leaves in the released DeepMask trunk) and assigns them to the kseg layers listed in
the same order, checking every shape. Module order follows the authors' Lua:

* DeepMask (``DeepMask.lua``): the file is ``{model = nn.DeepMask, config}``; ``trunk`` (ResNet-50
  from fb.resnet.torch up to layer3: conv1, bn, then per bottleneck conv1/bn/conv2/bn/conv3/bn and
  the shortcut conv/bn, then the 1x1 conv 1024->128 and ``Linear`` 12800->512), ``maskBranch``
  (``Linear`` 512->56*56), ``scoreBranch`` (``Linear`` 512->1024, ``Linear`` 1024->1).
* SharpMask (``SharpMask.lua``): ``trunk``, ``scoreBranch``, then ``refs[0]`` (``Linear`` 512 ->
  km*10*10) and ``refs[1..4]`` (``ParallelTable(neth, netv)``: three horizontal convs, two vertical
  ones) with the final 3x3 conv; the DeepMask mask head it carries (``maskBranchDM``) is unused.
* MultiPathNet (``models/multipathnet.lua``, ``model_utils.lua``): VGG16 conv1_1..conv5_3, each
  region tower (``conv_mix`` 1x1 conv, fc6, fc7), the box tower, the classifiers (6 with the
  integral loss) and the box regressor; Fast R-CNN (``models/vgg.lua``): convs, fc6, fc7,
  ``cls_score``, ``bbox_pred``. ``imagenet_pretrained_vgg.t7`` (``{features, top}``) loads as
  encoder weights: the convs and fc6/fc7 into every tower, as ``classifier:clone()`` does.

Torch flattens (C, H, W) where Keras flattens (H, W, C): the ``Linear`` after a flatten (DeepMask's
``trunk_fc``, the detectors' fc6) has its input columns permuted, SharpMask's ``refine0`` (a
``Linear`` viewed as km x 10 x 10) its output rows. A conv bias where the kseg conv has none (a
ResNet conv followed by batch norm) is folded into that batch norm's shift.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from kseg.convert import ConversionError, layout
from kseg.convert.torch7 import TorchObject, read_t7

__all__ = ["TorchModule", "torch_modules", "torch_layer_order", "assign_torch", "load_t7", "load_torch_weights"]

_CONV = ("SpatialConvolution", "SpatialConvolutionMM", "SpatialDilatedConvolution")
_BN = ("SpatialBatchNormalization", "BatchNormalization")
_AFFINE = ("SpatialConstDiagonal", "ConstAffine", "SpatialConstAffine")


@dataclasses.dataclass
class TorchModule:
    """A weighted Torch module: where it sits in the tree, its class and its fields."""

    path: str
    class_name: str
    fields: dict

    @property
    def kind(self) -> str:
        short = self.class_name.rsplit(".", 1)[-1]
        if short in _CONV:
            return "conv"
        if short == "SpatialFullConvolution":
            return "deconv"
        if short in ("Linear", "LinearNB"):
            return "linear"
        if short in _BN:
            return "bn"
        if short in _AFFINE:
            return "affine"
        return "other"

    def describe(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self.fields.items() if isinstance(v, np.ndarray) and v.size}
        return f"{self.path} {self.class_name} {shapes}"


# ------------------------------------------------------------------------------------- tree walk

def _children(obj: TorchObject) -> list[tuple[str, object]]:
    """Sub-modules of a container in the order its forward pass runs them."""
    short = obj.class_name.rsplit(".", 1)[-1]
    if short == "DeepMask":
        return [(k, obj.get(k)) for k in ("trunk", "maskBranch", "scoreBranch") if obj.get(k) is not None]
    if short == "SharpMask":
        out = [(k, obj.get(k)) for k in ("trunk", "scoreBranch") if obj.get(k) is not None]
        refs = obj.get("refs")
        if isinstance(refs, dict):
            out += [(f"refs[{k}]", refs[k]) for k in sorted(refs)]
        elif isinstance(refs, list):
            out += [(f"refs[{k + 1}]", v) for k, v in enumerate(refs)]
        return out
    mods = obj.get("modules")
    if mods is None:
        return []
    items = sorted(mods.items()) if isinstance(mods, dict) else list(enumerate(mods, start=1))
    if short == "DataParallelTable" and items:
        items = items[:1]   # one replica per GPU: the first holds the weights
    return [(f"modules[{k}]", v) for k, v in items]


def _is_weighted(obj: TorchObject) -> bool:
    f = obj.attributes if isinstance(obj.attributes, dict) else {}
    if isinstance(f.get("weight"), np.ndarray) and f["weight"].size and not f.get("modules"):
        return True
    if obj.class_name.rsplit(".", 1)[-1] in _AFFINE and isinstance(f.get("a"), np.ndarray):
        return True
    return isinstance(f.get("running_mean"), np.ndarray) and f["running_mean"].size > 0


def torch_modules(root, prefix: str = "") -> list[TorchModule]:
    """Every weighted module of a Torch7 object tree, in forward order (shared modules once)."""
    out: list[TorchModule] = []
    seen: set[int] = set()

    def walk(obj, path):
        if isinstance(obj, dict) and not isinstance(obj, TorchObject):
            for key in ("model", "features", "top"):   # {model=..., config=...}; {features, top}
                if key in obj:
                    walk(obj[key], f"{path}.{key}" if path else key)
            return
        if not isinstance(obj, TorchObject) or id(obj) in seen:
            return
        seen.add(id(obj))
        if _is_weighted(obj):
            out.append(TorchModule(path or obj.class_name, obj.class_name, dict(obj.attributes)))
            return
        kids = _children(obj)
        if not kids and isinstance(obj.get("model"), (TorchObject, dict)):   # {model = ...} wrappers
            kids = [("model", obj.get("model"))]
        for key, child in kids:
            walk(child, f"{path}.{key}" if path else key)

    walk(root, prefix)
    return out


# ---------------------------------------------------------------------------- kseg layer order

def _names(model) -> set:
    return {layer.name for layer in model.layers}


def _resnet_order(have) -> list[str]:
    order = ["conv1", "conv1_bn"]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        i = 0
        while f"{stage}_{i}_conv1" in have:
            pre = f"{stage}_{i}"
            for c in ("conv1", "conv2", "conv3"):
                order += [f"{pre}_{c}", f"{pre}_{c}_bn"]
            if f"{pre}_downsample" in have:
                order += [f"{pre}_downsample", f"{pre}_downsample_bn"]
            i += 1
    return order


def _vgg16_order(have) -> list[str]:
    return [n for n in (f"conv{b}_{i}" for b in range(1, 6) for i in range(1, 4)) if n in have]


def torch_layer_order(model, source: str = "model") -> list[str]:
    """The kseg layer names the authors' Torch modules map onto, in the Torch forward order.

    ``source``: ``"model"`` for the released model files, ``"encoder"`` for a detector's
    ImageNet VGG16 (``imagenet_pretrained_vgg.t7``: convs, fc6, fc7).
    """
    have = _names(model)
    cfg = getattr(model, "deepmask_config", None)
    if cfg is not None or "trunk_fc" in have or "mask_lowrank" in have:
        if "trunk_fc" not in have:
            raise ConversionError(
                f"{model.name}: the authors released Torch7 DeepMask/SharpMask models on the ResNet-50 trunk "
                f"only; build with trunk='resnet50'")
        order = _resnet_order(have) + ["trunk_conv", "trunk_fc"]
        score = sorted((n for n in have if n.startswith("score_fc")), key=lambda n: int(n[8:])) + ["score"]
        if "refine0" in have:   # SharpMask: trunk, scoreBranch, refs[0..4]
            order += score + ["refine0"]
            i = 1
            while f"refine{i}_h1" in have:
                order += [f"refine{i}_h1", f"refine{i}_h2", f"refine{i}_h3", f"refine{i}_v1", f"refine{i}_v2"]
                i += 1
            return order + ["refine_out"]
        return order + ["mask_fc"] + score
    if "fc6_r1" in have:
        convs = _vgg16_order(have)
        towers = [t for t in ("r1", "r2", "r3", "r4", "box") if f"fc6_{t}" in have]
        if source == "encoder":
            return convs + ["fc6", "fc7"]
        order = list(convs)
        for t in towers:
            order += [n for n in (f"conv_mix_{t}", f"fc6_{t}", f"fc7_{t}") if n in have]
        cls = sorted(n for n in have if n.startswith("cls_score"))
        return order + cls + ["bbox_pred"]
    raise ConversionError(f"{model.name}: no Torch7 layout is known for this model (DeepMask, SharpMask, "
                          f"MultiPathNet and Fast R-CNN have released Torch7 files)")


# ----------------------------------------------------------------------------------- assignment

def _spatial_in(model, name):
    """(H, W, C) of the map flattened into Dense `name`, when a Flatten/Reshape feeds it."""
    layer = model.get_layer(name)
    try:
        prev = layer.input._keras_history.operation
    except (AttributeError, ValueError):
        return None
    if isinstance(prev, (keras.layers.Flatten, keras.layers.Reshape)):
        shape = tuple(prev.input.shape)
        if len(shape) >= 4 and None not in shape[-3:]:
            return tuple(int(d) for d in shape[-3:])
    return None


def _spatial_out(model, name):
    """(H, W, C) a Reshape right after Dense `name` gives its output (SharpMask's refine0)."""
    layer = model.get_layer(name)
    out = layer.output
    for other in model.layers:
        if isinstance(other, keras.layers.Reshape):
            try:
                if other.input is out and len(other.target_shape) == 3:
                    return tuple(int(d) for d in other.target_shape)
            except (AttributeError, ValueError):
                continue
    return None


def _conv_kernel(mod: TorchModule, want_shape) -> np.ndarray:
    w = np.asarray(mod.fields["weight"])
    if w.ndim == 2 and len(want_shape) == 4:     # SpatialConvolutionMM: (out, in*kh*kw)
        kh, kw, cin, _ = want_shape
        return layout.torch_conv_kernel(w, (kh, kw), cin)
    return layout.torch_conv_kernel(w)


def _bn_values(mod: TorchModule, eps_keras: float):
    """(gamma, beta, mean, var) for a Keras BatchNormalization with epsilon `eps_keras`."""
    f = mod.fields
    if mod.kind == "affine":   # y = a x + b  ==  BN(mean 0, var 1 - eps, gamma a, beta b)
        a = np.asarray(f["a"], np.float32).reshape(-1)
        b = np.asarray(f["b"], np.float32).reshape(-1)
        return a, b, np.zeros_like(a), np.full_like(a, 1.0 - eps_keras)
    mean = np.asarray(f["running_mean"], np.float64).reshape(-1)
    eps = float(f.get("eps", 1e-5))
    if isinstance(f.get("running_var"), np.ndarray) and f["running_var"].size:
        var = np.asarray(f["running_var"], np.float64).reshape(-1) + eps - eps_keras
    elif isinstance(f.get("running_std"), np.ndarray):   # older nn: running_std = 1/sqrt(var + eps)
        var = 1.0 / np.square(np.asarray(f["running_std"], np.float64).reshape(-1)) - eps_keras
    else:
        raise ConversionError(f"{mod.path}: batch norm without running_var or running_std")
    w = f.get("weight")
    gamma = np.asarray(w, np.float64).reshape(-1) if isinstance(w, np.ndarray) and w.size else np.ones_like(mean)
    b = f.get("bias")
    beta = np.asarray(b, np.float64).reshape(-1) if isinstance(b, np.ndarray) and b.size else np.zeros_like(mean)
    return tuple(np.asarray(v, np.float32) for v in (gamma, beta, mean, var))


def _set_bn(layer, values):
    gamma, beta, mean, var = values
    by = {"gamma": gamma, "beta": beta, "moving_mean": mean, "moving_variance": var}
    new = []
    for v in layer.weights:
        key = v.name.rsplit("/", 1)[-1].split(":")[0]
        if key not in by:
            raise ConversionError(f"{layer.name}: unexpected batch-norm variable {v.name!r}")
        new.append(by[key])
    return new


def assign_torch(model, modules: list[TorchModule], names: list[str], *, source: str = "Torch7 file",
                 repeat: dict[str, list[str]] | None = None) -> list[str]:
    """Assign ``modules`` (forward order) to the kseg layers ``names`` (same order), checking shapes.

    ``repeat`` maps a name in ``names`` to further kseg layers that receive the same weights
    (a detector's fc6/fc7 copied into every tower). Raises ``ConversionError`` listing every
    count or shape mismatch; nothing is set unless everything fits. Returns the layers set.
    """
    problems = []
    if len(modules) != len(names):
        problems.append(f"{len(modules)} weighted Torch modules for {len(names)} kseg layers")
    staged: dict[str, list[np.ndarray]] = {}
    pending_bias: dict[str, np.ndarray] = {}
    for i, (mod, name) in enumerate(zip(modules, names)):
        try:
            layer = model.get_layer(name)
        except ValueError:
            problems.append(f"kseg layer {name!r} (for {mod.path}) does not exist")
            continue
        want = [tuple(v.shape) for v in layer.weights]
        try:
            values = _values(model, layer, mod, want, names[i + 1] if i + 1 < len(names) else None, pending_bias)
        except (ConversionError, ValueError, KeyError) as e:
            problems.append(f"{name} <- {mod.describe()}: {e}")
            continue
        got = [tuple(v.shape) for v in values]
        if got != want:
            problems.append(f"{name} expects {want}, {mod.describe()} gives {got}")
            continue
        staged[name] = values
    if problems:
        raise ConversionError(f"{source}: does not fit {model.name!r}: " + "; ".join(problems))
    for name, values in staged.items():
        for target in [name] + list((repeat or {}).get(name, [])):
            layer = model.get_layer(target)
            if [tuple(v.shape) for v in layer.weights] != [v.shape for v in values]:
                raise ConversionError(f"{source}: {target} expects {[tuple(v.shape) for v in layer.weights]}, "
                                      f"{name}'s weights are {[v.shape for v in values]}")
            layer.set_weights(values)
    return list(staged)


def _values(model, layer, mod: TorchModule, want, next_name, pending_bias) -> list[np.ndarray]:
    f = mod.fields
    bias = f.get("bias")
    bias = np.asarray(bias, np.float32).reshape(-1) if isinstance(bias, np.ndarray) and bias.size else None
    if isinstance(layer, keras.layers.BatchNormalization):
        if mod.kind not in ("bn", "affine"):
            raise ConversionError("a batch norm needs a Torch BatchNormalization or ConstAffine module")
        gamma, beta, mean, var = _bn_values(mod, float(layer.epsilon))
        folded = pending_bias.pop(layer.name, None)
        if folded is not None:   # conv bias b before BN: BN(x + b) = BN with mean - b
            mean = mean - folded
        return _set_bn(layer, (gamma, beta, mean, var))
    if isinstance(layer, keras.layers.Conv2DTranspose):
        if mod.kind != "deconv":
            raise ConversionError("a transposed conv needs a Torch SpatialFullConvolution")
        out = [layout.torch_deconv_kernel(f["weight"])]
    elif isinstance(layer, keras.layers.Conv2D):
        if mod.kind != "conv":
            raise ConversionError("a conv needs a Torch SpatialConvolution")
        out = [_conv_kernel(mod, want[0])]
    elif isinstance(layer, keras.layers.Dense):
        w = np.asarray(f["weight"])
        if mod.kind == "conv":   # a 1x1 convolution (conv_mix) as a Dense over channels
            if w.ndim == 4 and w.shape[2:] != (1, 1):
                raise ConversionError(f"only a 1x1 convolution maps onto a Dense layer, got kernel {w.shape[2:]}")
            w = w.reshape(w.shape[0], -1)
        elif mod.kind != "linear":
            raise ConversionError("a Dense layer needs a Torch Linear or 1x1 SpatialConvolution")
        kernel = layout.torch_linear(w)                       # (in, out)
        hwc = _spatial_in(model, layer.name)
        if hwc is not None and kernel.shape[0] == int(np.prod(hwc)):
            h, wd, c = hwc                                    # Torch rows are (c, h, w), Keras (h, w, c)
            kernel = np.ascontiguousarray(kernel.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(h * wd * c, -1))
        hwc_out = _spatial_out(model, layer.name)
        if hwc_out is not None and kernel.shape[1] == int(np.prod(hwc_out)):
            h, wd, c = hwc_out
            kernel = np.ascontiguousarray(kernel.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(-1, h * wd * c))
            if bias is not None:
                bias = np.ascontiguousarray(bias.reshape(c, h, wd).transpose(1, 2, 0).reshape(-1))
        out = [kernel]
    else:
        raise ConversionError(f"kseg layer type {type(layer).__name__} has no Torch7 mapping")
    if len(want) == 2:
        out.append(bias if bias is not None else np.zeros(want[1], np.float32))
    elif bias is not None and np.any(bias):
        if next_name is None or not isinstance(model.get_layer(next_name), keras.layers.BatchNormalization):
            raise ConversionError("the Torch module has a bias the kseg layer lacks, and no batch norm follows")
        pending_bias[next_name] = bias
    return out


def load_t7(model, path_or_obj, *, source: str | None = None):
    """Load a released Torch7 file (path, or the object ``read_t7`` returned) into ``model``.

    Picks the file's kind from its contents: a full model (``{model = ...}`` or a module tree) maps
    onto :func:`torch_layer_order`; an ImageNet ``{features, top}`` VGG16 onto a detector's
    encoder (convs, and fc6/fc7 into every tower; ``top``'s 1000-way classifier is unused).
    Raises ``ConversionError`` naming the file and every mismatch. Returns ``model``.
    """
    obj = read_t7(path_or_obj) if isinstance(path_or_obj, (str, bytes)) or hasattr(path_or_obj, "__fspath__") \
        else path_or_obj
    source = source or (str(path_or_obj) if not isinstance(path_or_obj, (dict, TorchObject)) else "Torch7 object")
    if isinstance(obj, dict) and "features" in obj and "top" in obj and "model" not in obj:
        modules = torch_modules(obj["features"], "features") + torch_modules(obj["top"], "top")
        names = torch_layer_order(model, "encoder")
        fc = [m for m in modules if m.kind == "linear"]
        convs = [m for m in modules if m.kind == "conv"]
        if len(fc) < 2:
            raise ConversionError(f"{source}: an ImageNet VGG file needs fc6 and fc7 in 'top', found {len(fc)} Linear")
        towers = sorted({n[4:] for n in _names(model) if n.startswith("fc6_")})
        names = [n for n in names if n not in ("fc6", "fc7")] + [f"fc6_{towers[0]}", f"fc7_{towers[0]}"]
        repeat = {f"fc6_{towers[0]}": [f"fc6_{t}" for t in towers[1:]],
                  f"fc7_{towers[0]}": [f"fc7_{t}" for t in towers[1:]]}
        assign_torch(model, convs + fc[:2], names, source=source, repeat=repeat)
        return model
    assign_torch(model, torch_modules(obj), torch_layer_order(model), source=source)
    return model


#: the name kseg.models.weights also looks for
load_torch_weights = load_t7

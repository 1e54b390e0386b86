"""``weights=`` for every builder: presets, Keras files and the authors' Caffe / Torch7 files.

:func:`load_weights` is what each builder calls with its ``weights`` argument:

* ``None``: keep the initialisation;
* a preset name from the model's card (``kseg.models.get(name).presets``, e.g. ``"voc"``): the
  authors' released file is downloaded once with ``keras.utils.get_file`` into the Keras cache
  (``~/.keras/kseg/``), converted once into ``<model>_<preset>.weights.h5`` next to it, and loaded;
  offline, the error says which file to download and where to put it;
  Loading a preset also sets the model's ``preprocess`` layer to the authors' input transform
  (:func:`set_preprocessing`), so the model fed RGB in [0, 255] computes what the authors' net
  computes on their preprocessed BGR blob;
* a path: ``.weights.h5`` (``model.save_weights``), ``.keras`` (a saved kseg model: weights copied
  layer by layer by name), ``.caffemodel`` (:func:`assign_caffe`, by layer name, with the card's
  ``caffe_rename`` table) or ``.t7`` (:mod:`kseg.models.torch_weights`).

:func:`assign_caffe` maps Caffe layers onto kseg layers of the same name with the layout
transforms of :mod:`kseg.convert.layout`; every missing or mismatched layer is listed in one
:class:`kseg.convert.ConversionError`. :func:`convert` is ``kseg convert --model NAME FILE --out
NAME.weights.h5``: build, load, save.

Preprocessing: kseg models take RGB in [0, 255] and start with an ``ImageNormalization`` layer
named ``preprocess``. A builder's default transform is generic (e.g. Keras' ImageNet "caffe"
mean); the authors' weights were trained with their own (FCN's mean (104.00698793,
116.66876762, 122.67891434), SegNet's raw BGR, ...; :class:`kseg.models.presets.Preset`).
``weights=<preset>`` sets it; for a file path, pass ``preprocessing=<preset name>`` to
:func:`load_weights` or call :func:`set_preprocessing` (a preset, its name, or a dict of
``channel_order`` / ``mean`` / ``std`` / ``scale``). The transform is layer configuration, so
it is saved with the model (``.keras``); a ``.weights.h5`` file does not carry it.

Example::

    model = kseg.FCN8s(weights="voc")                       # download, convert, cache, load
    model = kseg.FCN8s(weights="fcn8s-heavy-pascal.caffemodel")
    kseg.models.weights.convert("fcn8s", "fcn8s-heavy-pascal.caffemodel", "fcn8s_voc.weights.h5")
"""

import collections
import os
import pathlib

import keras
import numpy as np

from kseg.convert import ConversionError

__all__ = [
    "WEIGHT_SUFFIXES",
    "PresetUnavailableError",
    "load_weights",
    "preset_path",
    "assign_caffe",
    "convert",
    "weighted_layers",
    "preprocessing_of",
    "set_preprocessing",
]

#: File kinds ``weights=`` takes (besides ``None`` and a preset name).
WEIGHT_SUFFIXES = (".weights.h5", ".keras", ".caffemodel", ".t7", ".h5")
#: Keras cache subfolder of the downloaded and converted preset files.
CACHE_SUBDIR = "kseg"


class PresetUnavailableError(OSError):
    """A preset's file could not be downloaded; the message says what to download and where to put it."""


def _looks_like_path(value):
    text = str(value)
    return isinstance(value, os.PathLike) or os.sep in text or text.endswith(WEIGHT_SUFFIXES) or os.path.exists(text)


def load_weights(model, weights, *, card=None, preprocessing=None):
    """Load `weights` (``None``, a preset name of `card` or a file path) into `model`; returns `model`.

    A preset also sets the model's input transform to the preset's (:func:`set_preprocessing`);
    `preprocessing` (a preset name of `card`, a :class:`~kseg.models.presets.Preset` or a dict,
    see :func:`set_preprocessing`) sets it explicitly, e.g. for the authors' file given by path.

    Raises:
        ValueError: unknown preset or file kind (the message lists the presets and kinds).
        FileNotFoundError: a path that does not exist.
        kseg.convert.ConversionError: a file that does not fit the model (every missing or
            mismatched layer listed).
        PresetUnavailableError: a preset that cannot be downloaded (what to download, and where).
    """
    if weights is None:
        return model
    model_name = card.name if card is not None else model.name
    if not _looks_like_path(weights):
        presets = tuple(card.presets) if card is not None else ()
        names = [p.name for p in presets]
        if weights not in names:
            hint = ""
            if weights == "imagenet":
                hint = (" ('imagenet' initialises the encoder only: pass encoder_weights='imagenet'"
                        " where the model has a pretrained encoder)")
            raise ValueError(
                f"{model_name}: unknown weights {weights!r}{hint}; presets: {', '.join(names) or 'none'}; or "
                f"the path of a {', '.join(WEIGHT_SUFFIXES)} file"
            )
        preset = presets[names.index(weights)]
        path = preset_path(card, preset)
        _load_keras_weights(model, path)
        set_preprocessing(model, preset if preprocessing is None else preprocessing, card=card)
        return model
    path = pathlib.Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{model_name}: weights file not found: {str(path)!r}")
    name = path.name
    if name.endswith(".weights.h5") or name.endswith(".h5"):
        _load_keras_weights(model, path)
    elif name.endswith(".keras"):
        _load_keras_model_weights(model, path)
    elif name.endswith(".caffemodel"):
        from kseg.convert.caffe import read_caffemodel

        assign_caffe(model, read_caffemodel(str(path)), rename=getattr(card, "caffe_rename", None),
                     skip=getattr(card, "caffe_skip", ()), source=str(path), consume=True)
    elif name.endswith(".t7"):
        try:
            from kseg.models import torch_weights
        except ImportError as err:  # pragma: no cover - the module ships with kseg
            raise ConversionError(f"{path}: Torch7 files need kseg.models.torch_weights ({err})") from err
        loader = getattr(torch_weights, "load_t7", None) or getattr(torch_weights, "load_torch_weights", None)
        if loader is None:
            raise ConversionError(f"{path}: kseg.models.torch_weights has no loader for {model_name}")
        loader(model, str(path))
    else:
        raise ValueError(f"{model_name}: weights file {str(path)!r} is none of {', '.join(WEIGHT_SUFFIXES)}")
    if preprocessing is not None:
        set_preprocessing(model, preprocessing, card=card)
    return model


def preprocessing_of(preset):
    """The ``ImageNormalization`` arguments of `preset`'s input transform (``mode="custom"``)."""
    return {"mode": "custom", "channel_order": preset.channel_order.lower(), "mean": tuple(preset.mean),
            "std": tuple(preset.std), "scale": float(preset.input_scale)}


def set_preprocessing(model, preprocessing, *, card=None):
    """Set the transform of `model`'s ``preprocess`` layer (:class:`kseg.layers.ImageNormalization`).

    Args:
        model: a kseg model (its input layer feeds an ``ImageNormalization`` named ``preprocess``).
        preprocessing: a :class:`~kseg.models.presets.Preset`, a preset name of `card`, a mode
            string (``"caffe"``, ``"none"``...) or a dict of ``ImageNormalization`` arguments
            (``channel_order``, ``mean``, ``std``, ``scale``).
        card: the model's registry card (to resolve a preset name; default: by ``model.name``).

    The constants are layer configuration, not weights: they are set on the layer in place (and
    the model's traced predict/train functions are dropped so the next call uses them), and
    ``model.get_config()`` / ``.keras`` files carry them. Returns `model`.
    """
    from kseg.layers.normalization import ImageNormalization
    from kseg.models.presets import Preset

    try:
        layer = model.get_layer("preprocess")
    except ValueError:
        layer = None
    if not isinstance(layer, ImageNormalization):
        raise ValueError(f"{model.name}: has no ImageNormalization layer named 'preprocess' to set")
    if isinstance(preprocessing, str) and preprocessing not in ImageNormalization.MODES:
        if card is None:
            from kseg.models import registry

            card = registry.get(model.name)
        names = [p.name for p in card.presets]
        if preprocessing not in names:
            raise ValueError(f"{model.name}: unknown preprocessing {preprocessing!r}; presets of {card.name}: "
                             f"{', '.join(names) or 'none'}; or one of {ImageNormalization.MODES} or a dict")
        preprocessing = card.presets[names.index(preprocessing)]
    if isinstance(preprocessing, Preset):
        config = preprocessing_of(preprocessing)
    elif isinstance(preprocessing, str):
        config = {"mode": preprocessing}
    elif isinstance(preprocessing, dict):
        config = dict(preprocessing)
        if "mode" not in config or any(k in config for k in ("mean", "std", "channel_order", "scale")):
            config["mode"] = "custom"
    else:
        raise TypeError(f"{model.name}: preprocessing must be a Preset, a preset name, a mode or a dict, "
                        f"got {type(preprocessing).__name__}")
    checked = ImageNormalization(name=layer.name, **config)  # validates before anything changes
    for attr in ("mode", "mean", "std", "channel_order", "scale"):
        setattr(layer, attr, getattr(checked, attr))
    for fn in ("predict_function", "train_function", "test_function"):
        if getattr(model, fn, None) is not None:
            setattr(model, fn, None)
    return model


def _load_keras_weights(model, path):
    try:
        model.load_weights(str(path))
    except (ValueError, KeyError) as err:
        raise ConversionError(
            f"{path}: does not fit model {model.name!r} (built with other arguments? a .weights.h5 file holds "
            f"one architecture's weights: build the model with the same num_classes / options): {err}"
        ) from err


def _load_keras_model_weights(model, path):
    import kseg.layers  # noqa: F401  (registers the custom layers)

    source = keras.saving.load_model(str(path), safe_mode=True, compile=False)
    src = {layer.name: layer for layer in weighted_layers(source)}
    missing, mismatched = [], []
    pairs = []
    for layer in weighted_layers(model):
        other = src.get(layer.name)
        if other is None:
            missing.append(layer.name)
            continue
        a, b = other.get_weights(), layer.get_weights()
        if [w.shape for w in a] != [w.shape for w in b]:
            mismatched.append(f"{layer.name} {[w.shape for w in a]} vs {[w.shape for w in b]}")
            continue
        pairs.append((layer, a))
    _raise_if(path, model, missing, mismatched)
    for layer, values in pairs:
        layer.set_weights(values)


def _raise_if(source, model, missing, mismatched):
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"missing layers ({len(missing)}): {', '.join(missing)}")
        if mismatched:
            parts.append(f"mismatched layers ({len(mismatched)}): {'; '.join(mismatched)}")
        raise ConversionError(f"{source}: does not fit model {model.name!r}: {'. '.join(parts)}")


def preset_path(card, preset, cache_dir=None):
    """The converted ``.weights.h5`` of `preset` (download and convert it the first time).

    The authors' file goes to ``<cache_dir or ~/.keras>/kseg/<preset.file_name>`` through
    ``keras.utils.get_file`` (checked against the preset's sha256 / md5 when known); the converted
    weights are cached next to it as ``<model>_<preset>.weights.h5``.
    """
    if getattr(preset, "packaged", False):
        return packaged_path(card, preset)
    cache_root = pathlib.Path(cache_dir or os.environ.get("KERAS_HOME") or pathlib.Path.home() / ".keras")
    folder = cache_root / CACHE_SUBDIR
    converted = folder / f"{card.name}_{preset.name}.weights.h5"
    if converted.is_file():
        return converted
    file_hash = getattr(preset, "sha256", None) or getattr(preset, "md5", None)
    target = folder / preset.file_name
    try:
        source = keras.utils.get_file(
            fname=preset.file_name, origin=preset.url, file_hash=file_hash, cache_subdir=CACHE_SUBDIR,
            cache_dir=str(cache_root),
        )
    except Exception as err:  # no network, moved URL, wrong checksum: say what to do by hand
        raise PresetUnavailableError(
            f"{card.name}: could not download preset {preset.name!r} from {preset.url} ({type(err).__name__}: {err}). "
            f"Download that file yourself and put it at {target} (then weights={preset.name!r} converts it), "
            f"or pass weights='/path/to/{preset.file_name}'"
        ) from err
    sha1 = getattr(preset, "sha1", None)
    if sha1 and not file_hash:
        import hashlib

        with open(source, "rb") as f:
            digest = hashlib.file_digest(f, "sha1").hexdigest()
        if digest != sha1:
            raise ConversionError(f"{source}: sha1 {digest} is not the preset's {sha1}: delete the file and retry")
    if getattr(preset, "format", None) == "zip":
        source = _extract_member(source, getattr(preset, "archive_member", None), folder)
    kwargs = dict(getattr(preset, "builder_kwargs", None) or {})
    kwargs.setdefault("num_classes", preset.num_classes)
    reference = card.build(**kwargs)
    load_weights(reference, source, card=card)
    folder.mkdir(parents=True, exist_ok=True)
    from kseg.io import atomic_path

    with atomic_path(converted) as tmp:  # a kill mid-write never leaves a half cache entry
        reference.save_weights(tmp)
    return converted


#: Where weights trained by kseg ship inside the package (``"keras"`` presets).
PACKAGED_DIR = pathlib.Path(__file__).resolve().parents[1] / "weights"


def packaged_path(card, preset):
    """The ``.weights.h5`` of a preset kseg trained and ships (``kseg/weights/<file_name>``)."""
    path = PACKAGED_DIR / preset.file_name
    if not path.is_file():
        raise PresetUnavailableError(
            f"{card.name}: preset {preset.name!r} ships as {path}, which this kseg installation lacks "
            f"(a source checkout without the trained file?); reinstall kseg, or pass weights='/path/to/"
            f"{preset.file_name}'")
    return path


def _extract_member(archive, member, folder):
    """The weights file inside a ``.zip`` preset (`member`, else its one ``.caffemodel`` that is not
    ``init.caffemodel``), extracted next to the archive once."""
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        if member is None:
            found = [n for n in names if n.endswith(".caffemodel") and not n.endswith("init.caffemodel")]
            if len(found) != 1:
                raise ConversionError(f"{archive}: expected one .caffemodel (not init.caffemodel), found {found}")
            member = found[0]
        if member not in names:
            raise ConversionError(f"{archive}: has no {member!r}; it holds {names[:20]}")
        target = pathlib.Path(folder) / pathlib.Path(member).name
        if not target.is_file():
            from kseg.io import atomic_write

            with zf.open(member) as src, atomic_write(target, "wb") as dst:  # never a half-extracted file
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
    return str(target)


def convert(model_name, src_path, out_path, **builder_kwargs):
    """Convert the authors' file `src_path` for registered model `model_name` into a ``.weights.h5``.

    The model is built with `builder_kwargs` (the preset's classes etc.), `src_path` loaded with
    :func:`load_weights` and the weights saved to `out_path`, which then loads with
    ``weights=out_path`` (and into a ``.keras`` file with ``safe_mode=True``). Returns `out_path`.
    """
    from kseg.models import registry

    out_path = str(out_path)
    if not out_path.endswith(".weights.h5"):
        raise ValueError(f"out_path must end with '.weights.h5', got {out_path!r}")
    card = registry.get(model_name)
    model = card.build(**builder_kwargs)
    load_weights(model, src_path, card=card)
    parent = os.path.dirname(out_path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    from kseg.io import atomic_path

    with atomic_path(out_path) as tmp:  # the old file or the complete new one, never half of either
        model.save_weights(tmp)
    return out_path


# ---------------------------------------------------------------------------------------------------------
# Caffe


def weighted_layers(model):
    """Every leaf layer holding weights, nested models and composite layers (ASPP, context) flattened."""
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer.weights:
            continue
        children = [c for c in layer._flatten_layers(include_self=False, recursive=False) if c.weights]
        own = {id(v) for v in layer.weights} - {id(v) for c in children for v in c.weights}
        if children and not own:
            continue  # a container: its children are listed themselves
        out.append(layer)
    return out


def _flatten_source_shape(layer):
    """(h, w, c) of the map a ``Flatten`` before this ``Dense`` flattens, else None."""
    try:
        prev = layer.input._keras_history.operation
    except (AttributeError, ValueError):
        return None
    if isinstance(prev, keras.layers.Flatten):
        shape = tuple(prev.input.shape[1:])
        if len(shape) == 3 and None not in shape:
            return shape
    return None


def _bn_values(layer, caffe, layers_, scale_name):
    """gamma, beta, mean, var for a Keras BatchNormalization from Caffe BatchNorm(+Scale) or caffe-segnet BN."""
    from kseg.convert import layout

    channels = layer.gamma.shape[0] if layer.gamma is not None else layer.moving_mean.shape[0]
    eps = float(layer.epsilon)
    if caffe.type == "BatchNorm":
        mean, var = layout.caffe_batchnorm(caffe.blobs)
        var = np.maximum(var + 1e-5 - eps, 0.0)  # Caffe's BatchNorm eps (default 1e-5)
        scale = layers_.get(scale_name)
        if scale is not None and scale.blobs:
            gamma = scale.blobs[0].reshape(-1)
            beta = scale.blobs[1].reshape(-1) if len(scale.blobs) > 1 else np.zeros(channels, np.float32)
        else:  # a BatchNorm without Scale normalises only
            gamma, beta = np.ones(channels, np.float32), np.zeros(channels, np.float32)
    elif caffe.type in ("BN", "Scale"):  # caffe-segnet / DeconvNet BN: scale, shift [, mean, var]
        gamma, beta = caffe.blobs[0].reshape(-1), caffe.blobs[1].reshape(-1)
        if len(caffe.blobs) >= 4:
            mean = caffe.blobs[2].reshape(-1)
            var = np.maximum(caffe.blobs[3].reshape(-1) + 1e-9 - eps, 0.0)
        else:  # statistics folded into scale / shift (the released inference weights)
            mean, var = np.zeros(channels, np.float32), np.full(channels, 1.0 - eps, np.float32)
    else:
        raise ValueError(f"a {caffe.type} layer cannot set a BatchNormalization")
    values = []
    if layer.scale:
        values.append(gamma)
    if layer.center:
        values.append(beta)
    return values + [mean, var]


def _caffe_values(layer, caffe, layers_, scale_name):
    """The Keras weights of `layer` from Caffe layer `caffe` (a list of arrays, shapes not yet checked)."""
    from kseg.convert import layout

    blobs = [np.asarray(b, np.float32) for b in caffe.blobs]
    target = [tuple(w.shape) for w in layer.weights]
    if isinstance(layer, keras.layers.BatchNormalization):
        return _bn_values(layer, caffe, layers_, scale_name)
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # a Caffe Scale without bias (FCN at-once)
        return [blobs[0].reshape(target[0])] + [b.reshape(-1) for b in blobs[1:len(target)]]
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return [layout.caffe_deconv_kernel(blobs[0])] + [b.reshape(-1) for b in blobs[1:]]
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin, _ = target[0]
        if caffe.type == "InnerProduct" or blobs[0].ndim == 2:
            kernel = layout.caffe_fc_to_conv(blobs[0], (kh, kw), cin)
        else:
            kernel = layout.caffe_conv_kernel(blobs[0])
        return [kernel] + [b.reshape(-1) for b in blobs[1:]]
    if isinstance(layer, keras.layers.Dense):
        src = _flatten_source_shape(layer)
        if src is not None and blobs[0].reshape(blobs[0].shape[0], -1).shape[1] == int(np.prod(src)):
            h, w, c = src  # Caffe flattens (C, H, W), Keras (H, W, C)
            kernel = layout.caffe_fc_to_conv(blobs[0].reshape(blobs[0].shape[0], -1), (h, w), c)
            kernel = kernel.reshape(h * w * c, -1)
        else:
            kernel = layout.caffe_fc_to_dense(blobs[0])
        return [kernel] + [b.reshape(-1) for b in blobs[1:]]
    # Any other layer (L2Normalization's scale, CRFRNN's three matrices): blobs in order, as they are.
    return [b.reshape(t) if b.size == int(np.prod(t)) else b for b, t in zip(blobs, target)]


#: Arrays larger than this are assigned in slices along their first axis (TensorFlow backend).
ASSIGN_CHUNK_BYTES = 64 << 20


def _set_weights(layer, values):
    """``layer.set_weights(values)`` (shapes already checked), a large array in slices along its first
    axis on TensorFlow: a whole 411 MB fc6 kernel would be copied twice on its way in (the float32
    contiguous array, then the tensor ``assign`` makes of it), the slices one 64 MB piece at a time."""
    import keras

    for variable, value in zip(layer.weights, values):
        value = np.asarray(value)
        target = getattr(variable, "value", None)
        if (value.nbytes <= ASSIGN_CHUNK_BYTES or value.ndim == 0 or keras.backend.backend() != "tensorflow"
                or not hasattr(target, "__getitem__") or not hasattr(target, "assign")):
            variable.assign(np.asarray(value, np.float32))
            continue
        rows = max(1, ASSIGN_CHUNK_BYTES // max(1, value.nbytes // value.shape[0]))
        for start in range(0, value.shape[0], rows):
            piece = np.ascontiguousarray(value[start:start + rows], dtype=variable.dtype)
            target[start:start + rows].assign(piece)
            del piece


def assign_caffe(model, layers, rename=None, skip=(), source="caffemodel", consume=False):
    """Set every weighted layer of `model` from the Caffe layer of the same name.

    Args:
        model: a kseg model.
        layers: ``{name: CaffeLayer}`` (:func:`kseg.convert.caffe.read_caffemodel`).
        rename: ``{caffe layer name: kseg layer name}`` where the authors' names differ
            (the card's ``caffe_rename``); Caffe ``Scale`` layers that hold a BatchNorm's
            gamma / beta are found as ``scale<suffix>`` of ``bn<suffix>`` or ``<name>_scale``.
        skip: kseg layer names to leave as they are (layers the authors' file lacks by design).
        source: the file, for the messages.
        consume: remove each Caffe layer from `layers` once its values are set (a caller that
            read the file only for this: its arrays are freed as the model fills, so converting
            holds about one copy of the file beside the model's, not two).

    Returns:
        The names of the layers that were set.

    Raises:
        kseg.convert.ConversionError: listing every kseg layer the file lacks and every layer
            whose blobs do not fit (with both shapes).
    """
    rename = dict(rename or {})
    by_kseg = {rename.get(name, name): layer for name, layer in layers.items()}
    raw = dict(layers)
    missing, mismatched, ready = [], [], []
    for layer in weighted_layers(model):
        if layer.name in skip:
            continue
        caffe = by_kseg.get(layer.name)
        if caffe is None or not caffe.blobs:
            missing.append(layer.name)
            continue
        scale_name = None
        if caffe.type == "BatchNorm":
            inverse = {v: k for k, v in rename.items()}
            cname = inverse.get(layer.name, layer.name)
            candidates = [f"{cname}_scale", cname.replace("bn", "scale", 1), cname.replace("_bn", "_scale")]
            scale_name = next((c for c in candidates if c in raw and raw[c].type == "Scale"), None)
            if scale_name is not None:
                scale_name = scale_name
        try:
            values = _caffe_values(layer, caffe, raw, scale_name)
        except ValueError as err:
            mismatched.append(f"{layer.name} ({caffe.type}): {err}")
            continue
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(v)) for v in values]
        del values  # checked here, converted again below: one layer's copy at a time, not the whole file's
        if got != want:
            mismatched.append(f"{layer.name} ({caffe.type}): file {got}, model {want}")
            continue
        ready.append((layer, caffe, scale_name))
    _raise_if(source, model, missing, mismatched)  # nothing is set unless everything fits
    names = [layer.name for layer, _, _ in ready]
    sources = [[caffe] + ([raw[s]] if s in raw else []) for _, caffe, s in ready]  # a BatchNorm's Scale too
    users_left = collections.Counter(id(c) for used in sources for c in used)
    key_of = {id(c): name for name, c in layers.items()}
    for i, used in enumerate(sources):
        layer, caffe, scale_name = ready[i]
        ready[i] = sources[i] = None  # consume: these lists no longer keep the Caffe layers alive
        _set_weights(layer, _caffe_values(layer, caffe, raw, scale_name))
        for c in used:
            users_left[id(c)] -= 1
            if consume and not users_left[id(c)]:  # its last user is set: out of every table
                name = key_of[id(c)]
                for table, key in ((layers, name), (raw, name), (by_kseg, rename.get(name, name))):
                    if table.get(key) is c:
                        del table[key]
        del caffe, used, c
    return names

"""Read and write Caffe ``.caffemodel`` files without Caffe or a compiled ``caffe.proto``.

A caffemodel is one serialised ``NetParameter`` protobuf message (field numbers from BVLC's
``src/caffe/proto/caffe.proto``):

- ``NetParameter``: name = 1, layers = 2 (``V1LayerParameter``, old files), layer = 100
  (``LayerParameter``).
- ``LayerParameter``: name = 1, type = 2 (string), blobs = 7.
- ``V1LayerParameter``: name = 4, type = 5 (an enum, mapped here to the V2 type strings),
  blobs = 6, and an even older ``V0LayerParameter`` in field 1 (name = 1, type = 2, blobs = 50).
- ``BlobProto``: num/channels/height/width = 1..4 (legacy 4-d shape), data = 5 (float, packed),
  shape = 7 (``BlobShape``: dim = 1, packed int64), double_data = 8.

The reader maps the file into memory and walks the wire format with offsets, touching only the
headers; every blob's float data is read with ``pread`` straight into its result array (doubles
converted in 16 MB pieces), so a 1 GB file needs about 1 GB of RAM for its arrays and nothing
more. ``read_prototxt`` parses the protobuf text
format of deploy prototxts (for tests and name mapping).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import re
import struct
from collections.abc import Iterable, Sequence

import numpy as np

from kseg.convert import ConversionError

__all__ = [
    "CaffeLayer",
    "read_caffemodel",
    "write_caffemodel",
    "read_prototxt",
    "parse_prototxt",
    "V1_LAYER_TYPES",
]

# V1LayerParameter.LayerType (BVLC caffe.proto) -> the V2 type string Caffe's upgrade gives it.
V1_LAYER_TYPES: dict[int, str] = {
    0: "",
    1: "Accuracy",
    2: "BNLL",
    3: "Concat",
    4: "Convolution",
    5: "Data",
    6: "Dropout",
    7: "EuclideanLoss",
    8: "Flatten",
    9: "HDF5Data",
    10: "HDF5Output",
    11: "Im2col",
    12: "ImageData",
    13: "InfogainLoss",
    14: "InnerProduct",
    15: "LRN",
    16: "MultinomialLogisticLoss",
    17: "Pooling",
    18: "ReLU",
    19: "Sigmoid",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    22: "Split",
    23: "TanH",
    24: "WindowData",
    25: "Eltwise",
    26: "Power",
    27: "SigmoidCrossEntropyLoss",
    28: "HingeLoss",
    29: "MemoryData",
    30: "ArgMax",
    31: "Threshold",
    32: "DummyData",
    33: "Slice",
    34: "MVN",
    35: "AbsVal",
    36: "Silence",
    37: "ContrastiveLoss",
    38: "Exp",
    39: "Deconvolution",
    # Numbers BVLC never used, added by the DeconvNet fork (HyeonwooNoh/caffe), whose released
    # DeconvNet model is a V1 net with these layers.
    40: "Crop",
    42: "Unpooling",
    43: "BN",
}
# V1 enum names as written in old prototxts (type: CONVOLUTION) -> V2 strings.
_V1_ENUM_NAMES: dict[str, str] = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col", "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "POOLING": "Pooling",
    "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
    "CROP": "Crop", "UNPOOLING": "Unpooling", "BN": "BN",
}
_V2_TO_V1 = {v: k for k, v in V1_LAYER_TYPES.items() if v}

_CHUNK_VALUES = 1 << 21  # doubles are converted to float32 in pieces of this many values (16 MB)

# wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclasses.dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, V2 type string and parameter blobs (float32)."""

    name: str
    type: str
    blobs: list[np.ndarray]


# ---------------------------------------------------------------------------------------- reading


class _Wire:
    """Offset-based protobuf wire-format walker over a buffer (an mmap), copying nothing."""

    def __init__(self, buf, path: str, fd: int | None = None):
        self.buf = buf
        self.path = path
        self.fd = fd

    def read_into(self, dest: np.ndarray, offset: int) -> None:
        """Fill `dest` with the file's bytes at `offset`, read straight into it (no mapped pages,
        no intermediate buffer)."""
        view = memoryview(dest.reshape(-1)).cast("B")
        done = 0
        while done < view.nbytes:
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n <= 0:
                raise self.fail(f"file ends inside the data at byte {offset + done}")
            done += n

    def fail(self, what: str) -> ConversionError:
        return ConversionError(f"{self.path}: not a valid caffemodel ({what})")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        buf = self.buf
        result = shift = 0
        while True:
            if pos >= end:
                raise self.fail(f"truncated varint at byte {pos}")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise self.fail(f"varint too long at byte {pos}")

    def fields(self, start: int, end: int):
        """Yield (field number, wire type, value or (start, end) span) for a message's fields."""
        pos = start
        while pos < end:
            key, pos = self.varint(pos, end)
            field, wtype = key >> 3, key & 7
            if field == 0:
                raise self.fail(f"field number 0 at byte {pos}")
            if wtype == _VARINT:
                value, pos = self.varint(pos, end)
                yield field, wtype, value
            elif wtype == _LEN:
                n, pos = self.varint(pos, end)
                if pos + n > end:
                    raise self.fail(f"field {field} of {n} bytes at byte {pos} runs past its message (ends at {end})")
                yield field, wtype, (pos, pos + n)
                pos += n
            elif wtype == _I32:
                if pos + 4 > end:
                    raise self.fail(f"truncated 32-bit field at byte {pos}")
                yield field, wtype, (pos, pos + 4)
                pos += 4
            elif wtype == _I64:
                if pos + 8 > end:
                    raise self.fail(f"truncated 64-bit field at byte {pos}")
                yield field, wtype, (pos, pos + 8)
                pos += 8
            else:  # groups (3, 4) are not used by caffe.proto
                raise self.fail(f"unsupported wire type {wtype} for field {field} at byte {pos}")

    def string(self, span) -> str:
        return bytes(self.buf[span[0]:span[1]]).decode("utf-8", errors="replace")

    def packed_varints(self, span) -> list[int]:
        out, pos = [], span[0]
        while pos < span[1]:
            v, pos = self.varint(pos, span[1])
            out.append(v - (1 << 64) if v >= 1 << 63 else v)
        return out


def _blob(w: _Wire, span, where: str) -> np.ndarray:
    legacy: dict[int, int] = {}
    dims: list[int] | None = None
    packed: list[tuple[str, tuple[int, int]]] = []   # (dtype, span) in file order
    loose: dict[str, list[bytes]] = {"<f4": [], "<f8": []}
    for field, wtype, value in w.fields(*span):
        if field in (1, 2, 3, 4) and wtype == _VARINT:
            legacy[field] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 7 and wtype == _LEN:
            dims = []
            for f2, wt2, v2 in w.fields(*value):
                if f2 == 1 and wt2 == _LEN:
                    dims.extend(w.packed_varints(v2))
                elif f2 == 1 and wt2 == _VARINT:
                    dims.append(v2 - (1 << 64) if v2 >= 1 << 63 else v2)
        elif field in (5, 8):
            dtype = "<f4" if field == 5 else "<f8"
            size = 4 if field == 5 else 8
            if wtype == _LEN:
                if (value[1] - value[0]) % size:
                    raise w.fail(f"{where}: packed {'float' if size == 4 else 'double'} data of "
                                 f"{value[1] - value[0]} bytes is not a multiple of {size}")
                packed.append((dtype, value))
            elif wtype == (_I32 if size == 4 else _I64):
                loose[dtype].append(bytes(w.buf[value[0]:value[1]]))
            else:
                raise w.fail(f"{where}: blob data field {field} has wire type {wtype}")
        # 6 (diff) and 9 (double_diff) are gradients: skipped without reading them
    kinds = {d for d, _ in packed} | {d for d, v in loose.items() if v}
    if len(kinds) > 1:
        raise w.fail(f"{where}: blob holds both float and double data")
    dtype = kinds.pop() if kinds else "<f4"
    count = sum((e - s) // np.dtype(dtype).itemsize for _, (s, e) in packed) + len(loose[dtype])
    if dims is not None:
        shape = tuple(dims)
    elif legacy:
        shape = tuple(legacy.get(i, 0) for i in (1, 2, 3, 4))
    else:
        shape = (count,)
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != count:
        raise w.fail(f"{where}: blob shape {shape} does not match its {count} values")
    out = np.empty(count, np.float32)
    at = 0
    for dt, (s, e) in packed:
        n = (e - s) // np.dtype(dt).itemsize
        if w.fd is None:   # a plain buffer: convert/copy from a view on it
            out[at:at + n] = np.frombuffer(w.buf, dtype=dt, count=n, offset=s)
        elif dt == "<f4" and out.dtype.byteorder in "=<" and np.little_endian:
            w.read_into(out[at:at + n], s)      # the one copy: file -> result array
        else:
            chunk = _CHUNK_VALUES
            tmp = np.empty(min(n, chunk), dt)
            for k in range(0, n, chunk):
                m = min(chunk, n - k)
                w.read_into(tmp[:m], s + tmp.itemsize * k)
                out[at + k:at + k + m] = tmp[:m]
        at += n
    if loose[dtype]:
        out[at:] = np.frombuffer(b"".join(loose[dtype]), dtype=dtype)
    return out.reshape(shape)


def _layer(w: _Wire, span, index: int, v1: bool) -> CaffeLayer:
    name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
    name, ltype, blob_spans, v0 = None, None, [], None
    for field, wtype, value in w.fields(*span):
        if field == name_f and wtype == _LEN:
            name = w.string(value)
        elif field == type_f:
            if v1 and wtype == _VARINT:
                ltype = V1_LAYER_TYPES.get(value, f"V1LayerType{value}")
            elif not v1 and wtype == _LEN:
                ltype = w.string(value)
        elif field == blobs_f and wtype == _LEN:
            blob_spans.append(value)
        elif v1 and field == 1 and wtype == _LEN:
            v0 = value
    if v1 and v0 is not None and name is None and not blob_spans:
        # V0LayerParameter (Caffe of 2014): name = 1, type = 2 (string), blobs = 50
        for field, wtype, value in w.fields(*v0):
            if field == 1 and wtype == _LEN:
                name = w.string(value)
            elif field == 2 and wtype == _LEN:
                ltype = w.string(value)
            elif field == 50 and wtype == _LEN:
                blob_spans.append(value)
    name = name if name is not None else f"layer{index}"
    ltype = ltype or ""
    blobs = [_blob(w, s, f"layer {name!r} blob {i}") for i, s in enumerate(blob_spans)]
    return CaffeLayer(name, ltype, blobs)


def read_caffemodel(path) -> dict[str, CaffeLayer]:
    """Read a ``.caffemodel`` into ``{layer name: CaffeLayer}`` in file order.

    Handles V2 ``layer`` and V1 ``layers`` (enum types mapped to V2 strings, e.g. 4 ->
    "Convolution", 39 -> "Deconvolution", 14 -> "InnerProduct"), blob shapes from ``shape`` or
    the legacy num/channels/height/width (kept 4-d), packed or unpacked float ``data`` and
    ``double_data`` (returned as float32). Layers without blobs are kept (their type tells the
    mapping what they are). A name seen twice keeps the later layer, as Caffe's weight copy
    does. Raises ``ConversionError`` naming the file on anything malformed.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ConversionError(f"{path}: cannot open caffemodel ({e.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ConversionError(f"{path}: empty file, not a caffemodel")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            # the map serves the small headers; blob data is read with pread straight into
            # the arrays, so the mapped pages touched stay a few kilobytes per layer
            w = _Wire(mm, path, f.fileno())
            layers: dict[str, CaffeLayer] = {}
            index = 0
            try:
                for field, wtype, value in w.fields(0, size):
                    if field in (100, 2) and wtype == _LEN:
                        layer = _layer(w, value, index, v1=field == 2)
                        layers.pop(layer.name, None)
                        layers[layer.name] = layer
                        index += 1
            except ConversionError:
                raise
            except (IndexError, ValueError, struct.error) as e:
                raise ConversionError(f"{path}: not a valid caffemodel ({e})") from None
    if not layers:
        raise ConversionError(f"{path}: no layers found; is this a caffemodel (NetParameter)?")
    return layers


# ---------------------------------------------------------------------------------------- writing


def _enc_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wtype: int) -> bytes:
    return _enc_varint(field << 3 | wtype)


class _Chunks:
    """A message as a list of byte chunks (headers and zero-copy array buffers) with its size."""

    def __init__(self):
        self.parts: list = []
        self.size = 0

    def add(self, b) -> None:
        n = b.nbytes if isinstance(b, memoryview) else len(b)
        self.parts.append(b)
        self.size += n

    def field_bytes(self, field: int, data) -> None:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        self.add(_key(field, _LEN) + _enc_varint(n))
        self.add(data)

    def field_message(self, field: int, msg: "_Chunks") -> None:
        self.add(_key(field, _LEN) + _enc_varint(msg.size))
        self.parts.extend(msg.parts)
        self.size += msg.size

    def field_varint(self, field: int, v: int) -> None:
        self.add(_key(field, _VARINT) + _enc_varint(v))


def _blob_chunks(a, double: bool, legacy_shape: bool) -> _Chunks:
    arr = np.ascontiguousarray(a, dtype="<f8" if double else "<f4")
    m = _Chunks()
    if legacy_shape:
        if arr.ndim > 4:
            raise ValueError(f"a legacy (num, channels, height, width) blob has at most 4 axes, got {arr.shape}")
        shape4 = (1,) * (4 - arr.ndim) + arr.shape
        for field, d in zip((1, 2, 3, 4), shape4):
            m.field_varint(field, int(d))
    else:
        dims = b"".join(_enc_varint(int(d)) for d in arr.shape)  # BlobShape.dim, packed
        m.field_bytes(7, _key(1, _LEN) + _enc_varint(len(dims)) + dims if dims else b"")
    m.field_bytes(8 if double else 5, memoryview(arr.reshape(-1)).cast("B"))
    return m


def write_caffemodel(
    path,
    layers: Iterable[Sequence],
    v1: bool = False,
    double: bool = False,
    legacy_shape: bool | None = None,
    name: str = "net",
) -> str:
    """Write a real ``NetParameter`` caffemodel.

    ``layers``: ``(name, type, blobs)`` or ``(name, type, blobs, bottoms, tops)`` tuples, ``type``
    a V2 string (for ``v1=True`` it is written as the V1 enum; an int is written as is).
    ``double`` writes ``double_data`` instead of float ``data``. ``legacy_shape`` (default: the
    same as ``v1``) writes the old num/channels/height/width fields instead of ``shape``.
    Array data is streamed from the arrays' own buffers (no serialised copy of the file in RAM);
    ``layers`` may be a generator. Returns the path.
    """
    path = os.fspath(path)
    legacy_shape = v1 if legacy_shape is None else legacy_shape
    with open(path, "wb") as f:
        head = _Chunks()
        head.field_bytes(1, name.encode())
        for part in head.parts:
            f.write(part)
        # NetParameter has no length prefix of its own: each layer is serialised and written as it
        # comes, so a generator of layers never holds more than one layer's arrays.
        for entry in layers:
            net = _Chunks()
            net.field_message(2 if v1 else 100, _layer_chunks(entry, v1, double, legacy_shape))
            for part in net.parts:
                f.write(part)
    return path


def _layer_chunks(entry, v1: bool, double: bool, legacy_shape: bool) -> _Chunks:
    lname, ltype, blobs = entry[0], entry[1], entry[2]
    bottoms = entry[3] if len(entry) > 3 else ()
    tops = entry[4] if len(entry) > 4 else ()
    m = _Chunks()
    if v1:
        if isinstance(ltype, int):
            code = ltype
        elif ltype in _V2_TO_V1:
            code = _V2_TO_V1[ltype]
        else:
            raise ValueError(f"layer {lname!r}: type {ltype!r} has no V1 enum value")
        for b in bottoms:
            m.field_bytes(2, b.encode())
        for t in tops:
            m.field_bytes(3, t.encode())
        m.field_bytes(4, lname.encode())
        m.field_varint(5, code)
        blob_field = 6
    else:
        m.field_bytes(1, lname.encode())
        m.field_bytes(2, str(ltype).encode())
        for b in bottoms:
            m.field_bytes(3, b.encode())
        for t in tops:
            m.field_bytes(4, t.encode())
        blob_field = 7
    for b in blobs:
        m.field_message(blob_field, _blob_chunks(b, double, legacy_shape))
    return m


# ------------------------------------------------------------------------------ prototxt (text)

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|(?P<punct>[{}:<>;,\[\]])|"""
    r"""(?P<word>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![A-Za-z0-9_])|"""
    r"""[-+]?[A-Za-z_][A-Za-z0-9_.]*)"""
)


def _tokens(text: str):
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise ValueError(f"prototxt line {line}: unexpected character {text[pos]!r}")
        pos = m.end()
        if m.group("str") is not None:
            yield "str", bytes(m.group("str")[1:-1], "utf-8").decode("unicode_escape"), m.start()
        elif m.group("punct") is not None:
            yield "punct", m.group("punct"), m.start()
        elif m.group("word") is not None:
            yield "word", m.group("word"), m.start()


def _scalar(word: str):
    low = word.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        if re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)", word):
            return int(word, 0) if not re.fullmatch(r"[-+]?0\d+", word) else int(word, 8)
        return float(word.rstrip("fF")) if word[-1:] in "fF" and not word.lower().endswith("inf") else float(word)
    except ValueError:
        return word  # an enum value (MAX, CONVOLUTION, ...) or inf/nan spelled as a word


def parse_prototxt(text: str) -> dict[str, list]:
    """Parse protobuf text format into nested dicts: every field maps to the LIST of its values
    (scalars, strings, enum names as ``str``, or nested dicts), in order."""
    toks = list(_tokens(text))
    pos = 0

    def where(i):
        at = toks[i][2] if i < len(toks) else len(text)
        return f"prototxt line {text.count(chr(10), 0, at) + 1}"

    def message(close: str | None) -> dict[str, list]:
        nonlocal pos
        msg: dict[str, list] = {}
        while True:
            if pos >= len(toks):
                if close is None:
                    return msg
                raise ValueError(f"{where(pos)}: missing {close!r}")
            kind, val, _ = toks[pos]
            if kind == "punct" and val == close:
                pos += 1
                return msg
            if kind == "punct" and val in ";,":
                pos += 1
                continue
            if kind != "word":
                raise ValueError(f"{where(pos)}: expected a field name, got {val!r}")
            field = val
            pos += 1
            if pos < len(toks) and toks[pos][:2] == ("punct", ":"):
                pos += 1
            if pos >= len(toks):
                raise ValueError(f"{where(pos)}: field {field!r} has no value")
            kind, val, _ = toks[pos]
            if kind == "punct" and val in "{<":
                pos += 1
                msg.setdefault(field, []).append(message("}" if val == "{" else ">"))
            elif kind == "punct" and val == "[":
                pos += 1
                while toks[pos][:2] != ("punct", "]"):
                    k2, v2, _ = toks[pos]
                    if k2 == "punct" and v2 == ",":
                        pos += 1
                        continue
                    if k2 == "punct" and v2 == "{":
                        pos += 1
                        msg.setdefault(field, []).append(message("}"))
                    else:
                        msg.setdefault(field, []).append(v2 if k2 == "str" else _scalar(v2))
                        pos += 1
                pos += 1
            elif kind == "str":
                s = val
                pos += 1
                while pos < len(toks) and toks[pos][0] == "str":  # adjacent strings concatenate
                    s += toks[pos][1]
                    pos += 1
                msg.setdefault(field, []).append(s)
            elif kind == "word":
                msg.setdefault(field, []).append(_scalar(val))
                pos += 1
            else:
                raise ValueError(f"{where(pos)}: unexpected {val!r} after field {field!r}")

    return message(None)


def _simplify(msg: dict[str, list]) -> dict:
    out = {}
    for k, vals in msg.items():
        vals = [_simplify(v) if isinstance(v, dict) else v for v in vals]
        out[k] = vals[0] if len(vals) == 1 else vals
    return out


def read_prototxt(path_or_text) -> list[dict]:
    """The layers of a (deploy) prototxt: a list of ``{"name", "type", "bottom", "top", "params"}``.

    ``path_or_text`` is a file path or the text itself. Both ``layer { type: "Convolution" }`` and
    V1 ``layers { type: CONVOLUTION }`` are read (V1 enum names become V2 strings). ``bottom`` and
    ``top`` are lists; ``params`` holds every other field, a field seen once as its value and a
    repeated one as a list (``{"convolution_param": {"num_output": 64, "pad": 1, ...}}``).
    The net-level fields (``input``, ``input_dim``, ``input_shape``) are on ``parse_prototxt``.
    """
    text = os.fspath(path_or_text) if isinstance(path_or_text, os.PathLike) else path_or_text
    looks_like_path = "\n" not in text and "{" not in text and ":" not in text
    if isinstance(path_or_text, os.PathLike) or (looks_like_path and (os.path.exists(text) or text.endswith(
            (".prototxt", ".pbtxt", ".txt")))):
        try:
            with open(text, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise FileNotFoundError(f"{text}: cannot read prototxt ({e.strerror})") from None
    net = parse_prototxt(text)
    out = []
    for key in ("layer", "layers"):
        for layer in net.get(key, []):
            params = {k: v for k, v in _simplify(layer).items() if k not in ("name", "type", "bottom", "top")}
            ltype = layer.get("type", [""])[0]
            if key == "layers" and isinstance(ltype, str):
                ltype = _V1_ENUM_NAMES.get(ltype, ltype)
            elif isinstance(ltype, int):
                ltype = V1_LAYER_TYPES.get(ltype, f"V1LayerType{ltype}")
            out.append({
                "name": layer.get("name", [""])[0],
                "type": ltype,
                "bottom": list(layer.get("bottom", [])),
                "top": list(layer.get("top", [])),
                "params": params,
            })
    return out

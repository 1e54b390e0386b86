"""Read (and, for tests, write) Torch7 ``.t7`` files in ``torch.File``'s binary format, to numpy.

The format (torch7 ``File.lua`` ``writeObject``/``readObject``, little-endian, 64-bit ``long``):
every object starts with an int32 type tag -- nil 0, number 1 (float64), string 2 (int32 length +
bytes), table 3, torch object 4, boolean 5 (int32), function 6, legacy recursive function 7,
recursive function 8. Tables, torch objects and functions carry an int32 index next; an index
seen before is a reference to the object already read (shared modules, shared storages, cycles).
A torch object then has a version string ``"V 1"`` (absent in the oldest files) and its class
name. Tensors (``torch.FloatTensor``, ``torch.CudaTensor``, ...) are ndim (int32), sizes and
strides (int64 each), a 1-based storage offset (int64) and their storage object; a storage is its
length (int64) and raw elements. CUDA types are written by cutorch exactly like their CPU twins
(copied to the host first). Any other class (``nn.Sequential``, ``cudnn.SpatialConvolution``...)
is serialised as a table of its fields, read here as a :class:`TorchObject`.

``read_t7`` maps the file into memory for the headers and reads each storage once, with
``pread`` straight into its array; tensors are numpy views on their storage (shared storages stay
shared, as in Torch).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from typing import Any

import numpy as np

from kseg.convert import ConversionError

__all__ = ["TorchObject", "TorchFunction", "TorchTensor", "read_t7", "write_t7", "TENSOR_TYPES"]

TYPE_NIL, TYPE_NUMBER, TYPE_STRING, TYPE_TABLE, TYPE_TORCH = 0, 1, 2, 3, 4
TYPE_BOOLEAN, TYPE_FUNCTION, LEGACY_TYPE_RECUR_FUNCTION, TYPE_RECUR_FUNCTION = 5, 6, 7, 8

_ELEMENT = {
    "Byte": np.uint8, "Char": np.int8, "Short": np.int16, "Int": np.int32, "Long": np.int64,
    "Float": np.float32, "Double": np.float64, "Half": np.float16,
}
# class prefix (without Tensor/Storage) -> numpy dtype, CPU and cutorch types
_PREFIXES: dict[str, np.dtype] = {}
for _k, _v in _ELEMENT.items():
    _PREFIXES[f"torch.{_k}"] = np.dtype(_v)
    _PREFIXES[f"torch.Cuda{_k}"] = np.dtype(_v)
_PREFIXES["torch.Cuda"] = np.dtype(np.float32)        # torch.CudaTensor / torch.CudaStorage
_PREFIXES.pop("torch.CudaFloat")                      # cutorch spells it torch.CudaTensor
TENSOR_TYPES: dict[str, np.dtype] = {p + "Tensor": d for p, d in _PREFIXES.items()}
STORAGE_TYPES: dict[str, np.dtype] = {p + "Storage": d for p, d in _PREFIXES.items()}
_DEFAULT_TENSOR = {np.dtype(v): f"torch.{k}Tensor" for k, v in _ELEMENT.items()}


@dataclasses.dataclass(eq=False)
class TorchObject:
    """An instance of a Torch class other than tensors/storages: ``nn.SpatialConvolution`` etc.

    ``attributes`` is the object's field table (``weight``, ``bias``, ``modules`` ...).
    """

    class_name: str
    attributes: Any = dataclasses.field(default_factory=dict)
    version: int = 1

    def __getitem__(self, key):
        return self.attributes[key]

    def __setitem__(self, key, value):
        self.attributes[key] = value

    def get(self, key, default=None):
        return self.attributes.get(key, default) if isinstance(self.attributes, dict) else default

    def __contains__(self, key):
        return isinstance(self.attributes, dict) and key in self.attributes

    def __repr__(self):
        keys = list(self.attributes) if isinstance(self.attributes, dict) else type(self.attributes).__name__
        return f"TorchObject({self.class_name!r}, {keys})"


@dataclasses.dataclass(eq=False)
class TorchFunction:
    """A serialised Lua function (bytecode and upvalues); kept, never run."""

    dumped: bytes
    upvalues: Any = None


@dataclasses.dataclass(eq=False)
class TorchTensor:
    """For ``write_t7``: an array written as a given tensor class, e.g. ``torch.CudaTensor``."""

    array: np.ndarray
    class_name: str


# ---------------------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, buf, path: str, fd: int | None = None):
        self.buf = buf
        self.pos = 0
        self.path = path
        self.fd = fd
        self.memo: dict[int, Any] = {}

    def fail(self, what: str) -> ConversionError:
        return ConversionError(f"{self.path}: not a readable Torch7 file ({what}, at byte {self.pos})")

    def _unpack(self, fmt: str, size: int):
        if self.pos + size > len(self.buf):
            raise self.fail("file ends early")
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v

    def int(self) -> int:
        return self._unpack("<i", 4)[0]

    def long(self) -> int:
        return self._unpack("<q", 8)[0]

    def longs(self, n: int) -> tuple:
        return self._unpack(f"<{n}q", 8 * n) if n else ()

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"a {n}-byte field runs past the end")
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return b

    def string(self) -> bytes:
        return self.raw(self.int())

    def storage(self, dtype: np.dtype) -> np.ndarray:
        n = self.long()
        nbytes = n * dtype.itemsize
        if n < 0 or self.pos + nbytes > len(self.buf):
            raise self.fail(f"a storage of {n} elements runs past the end")
        if self.fd is not None and np.little_endian:
            arr = np.empty(n, dtype)   # read straight into the array: one copy, no mapped pages
            view = memoryview(arr).cast("B")
            done = 0
            while done < nbytes:
                got = os.preadv(self.fd, [view[done:]], self.pos + done)
                if got <= 0:
                    raise self.fail("file ends inside a storage")
                done += got
        else:
            arr = np.frombuffer(self.buf, dtype=dtype.newbyteorder("<"), count=n, offset=self.pos).astype(dtype)
        self.pos += nbytes
        return arr

    def tensor(self, class_name: str) -> np.ndarray:
        ndim = self.int()
        if ndim < 0 or ndim > 64:
            raise self.fail(f"{class_name} with {ndim} dimensions")
        sizes = self.longs(ndim)
        strides = self.longs(ndim)
        offset = self.long() - 1
        storage = self.object()
        dtype = TENSOR_TYPES[class_name]
        if ndim == 0 or 0 in sizes:
            return np.empty(sizes if ndim else (0,), dtype)
        if not isinstance(storage, np.ndarray):
            raise self.fail(f"{class_name}'s storage is a {type(storage).__name__}")
        if storage.dtype != dtype:
            raise self.fail(f"{class_name} on a {storage.dtype} storage")
        last = offset + sum((s - 1) * st for s, st in zip(sizes, strides))
        if offset < 0 or min(strides) < 0 or last >= storage.size:
            raise self.fail(f"{class_name} of size {sizes}, stride {strides}, offset {offset + 1} "
                            f"reaches outside its storage of {storage.size}")
        contiguous = all(st == int(np.prod(sizes[i + 1:])) for i, st in enumerate(strides) if sizes[i] > 1)
        if contiguous:
            n = int(np.prod(sizes))
            return storage[offset:offset + n].reshape(sizes)      # a view: shared storage stays shared
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=sizes, strides=[st * dtype.itemsize for st in strides], writeable=False)
        return np.array(view)

    def object(self):
        tag = self.int()
        if tag == TYPE_NIL:
            return None
        if tag == TYPE_NUMBER:
            v = self._unpack("<d", 8)[0]
            return int(v) if v.is_integer() and abs(v) < 2**53 else v
        if tag == TYPE_BOOLEAN:
            return self.int() == 1
        if tag == TYPE_STRING:
            return _text(self.string())
        if tag not in (TYPE_TABLE, TYPE_TORCH, TYPE_FUNCTION, TYPE_RECUR_FUNCTION, LEGACY_TYPE_RECUR_FUNCTION):
            raise self.fail(f"unknown type tag {tag}")
        index = self.int()
        if index in self.memo:
            return self.memo[index]
        if tag in (TYPE_FUNCTION, TYPE_RECUR_FUNCTION, LEGACY_TYPE_RECUR_FUNCTION):
            fn = TorchFunction(self.string())
            self.memo[index] = fn
            fn.upvalues = self.object()
            return fn
        if tag == TYPE_TABLE:
            n = self.int()
            table: dict = {}
            self.memo[index] = table
            for _ in range(n):
                k = self.object()
                table[_key(k)] = self.object()
            return table
        # TYPE_TORCH
        version = self.string()
        if version.startswith(b"V "):
            version_number = int(float(version[2:]))
            class_name = _text(self.string())
        else:  # written before torch.File had versions: the string is the class name
            version_number, class_name = 0, _text(version)
        if class_name in TENSOR_TYPES:
            out = self.tensor(class_name)
        elif class_name in STORAGE_TYPES:
            out = self.storage(STORAGE_TYPES[class_name])
        else:
            obj = TorchObject(class_name, {}, version_number)
            self.memo[index] = obj
            obj.attributes = self.object()
            return obj
        self.memo[index] = out
        return out


def _text(b: bytes):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _key(k):
    if isinstance(k, (dict, list, TorchObject, np.ndarray)):
        return id(k)  # tables as keys: rare (sets); keep them distinct
    return k


def _listify(obj, seen: dict):
    """Tables whose keys are exactly 1..n become lists (Lua arrays); sharing and cycles kept."""
    if isinstance(obj, dict):
        if id(obj) in seen:
            return seen[id(obj)]
        n = len(obj)
        if n and all(isinstance(k, int) for k in obj) and set(obj) == set(range(1, n + 1)):
            out: Any = [None] * n
            seen[id(obj)] = out
            for i in range(n):
                out[i] = _listify(obj[i + 1], seen)
        else:
            out = {}
            seen[id(obj)] = out
            for k, v in obj.items():
                out[k] = _listify(v, seen)
        return out
    if isinstance(obj, TorchObject):
        if id(obj) not in seen:
            seen[id(obj)] = obj
            obj.attributes = _listify(obj.attributes, seen)
        return obj
    if isinstance(obj, TorchFunction):
        if id(obj) not in seen:
            seen[id(obj)] = obj
            obj.upvalues = _listify(obj.upvalues, seen)
        return obj
    return obj


def read_t7(path):
    """Read a Torch7 binary ``.t7`` file into Python objects.

    Tensors and storages of every CPU and CUDA type become numpy arrays (float16 for Half types),
    Lua tables become lists (keys 1..n) or dicts, other Torch classes :class:`TorchObject`
    (``class_name``, ``attributes``), numbers int when integral. Raises ``ConversionError`` naming
    the file on anything malformed (ASCII-mode ``.t7`` files are not supported).
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ConversionError(f"{path}: cannot open Torch7 file ({e.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < 4:
            raise ConversionError(f"{path}: {size} bytes, not a Torch7 file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            r = _Reader(mm, path, f.fileno())
            try:
                obj = r.object()
            except ConversionError:
                raise
            except (struct.error, ValueError, KeyError, OverflowError, MemoryError) as e:
                raise r.fail(str(e)) from None
            if r.pos != size:
                raise ConversionError(f"{path}: {size - r.pos} bytes left after the object; not a binary Torch7 file")
    return _listify(obj, {})


# ---------------------------------------------------------------------------------------- writing


class _Writer:
    def __init__(self, f):
        self.f = f
        self.memo: dict[int, int] = {}
        self.keep: list = []       # keeps memoised objects alive so ids stay unique
        self.storages: dict[tuple, int] = {}
        self.next_index = 1

    def int(self, v):
        self.f.write(struct.pack("<i", v))

    def long(self, v):
        self.f.write(struct.pack("<q", v))

    def string(self, s):
        b = s.encode() if isinstance(s, str) else bytes(s)
        self.int(len(b))
        self.f.write(b)

    def _index(self, obj) -> tuple[int, bool]:
        if id(obj) in self.memo:
            return self.memo[id(obj)], True
        i = self.next_index
        self.next_index += 1
        self.memo[id(obj)] = i
        self.keep.append(obj)
        return i, False

    def torch_header(self, tag_obj, class_name) -> bool:
        self.int(TYPE_TORCH)
        i, seen = self._index(tag_obj)
        self.int(i)
        if seen:
            return False
        self.string("V 1")
        self.string(class_name)
        return True

    def storage(self, root: np.ndarray, class_name: str):
        key = id(root)
        self.int(TYPE_TORCH)
        if key in self.storages:
            self.int(self.storages[key])
            return
        i = self.next_index
        self.next_index += 1
        self.storages[key] = i
        self.keep.append(root)
        self.int(i)
        self.string("V 1")
        self.string(class_name.replace("Tensor", "Storage"))
        self.long(root.size)
        self.f.write(memoryview(np.ascontiguousarray(root.reshape(-1), root.dtype.newbyteorder("<"))).cast("B"))

    def tensor(self, arr: np.ndarray, class_name: str, key_obj):
        if not self.torch_header(key_obj, class_name):
            return
        dtype = TENSOR_TYPES[class_name]
        arr = np.asarray(arr)
        if arr.dtype != dtype:
            arr = arr.astype(dtype)
        self.int(arr.ndim)
        if arr.size == 0:
            for d in arr.shape:
                self.long(d)
            for _ in arr.shape:
                self.long(1)
            self.long(1)
            self.int(TYPE_NIL)
            return
        # share the storage of the array this one is a view of (Torch's view semantics)
        root = arr
        while isinstance(root.base, np.ndarray):
            root = root.base
        ptr = arr.__array_interface__["data"][0]
        rptr = root.__array_interface__["data"][0] if root.dtype == arr.dtype else None
        item = arr.itemsize
        if (root is not arr and rptr is not None and root.flags.c_contiguous
                and (ptr - rptr) % item == 0 and all(s % item == 0 and s >= 0 for s in arr.strides)):
            offset, strides = (ptr - rptr) // item, [s // item for s in arr.strides]
        else:
            root = np.ascontiguousarray(arr)
            offset, strides = 0, [s // item for s in root.strides]
        for d in arr.shape:
            self.long(d)
        for s in strides:
            self.long(s)
        self.long(offset + 1)
        self.storage(root, class_name)

    def object(self, obj):
        if obj is None:
            self.int(TYPE_NIL)
        elif isinstance(obj, (bool, np.bool_)):
            self.int(TYPE_BOOLEAN)
            self.int(1 if obj else 0)
        elif isinstance(obj, (int, float, np.integer, np.floating)):
            self.int(TYPE_NUMBER)
            self.f.write(struct.pack("<d", float(obj)))
        elif isinstance(obj, (str, bytes)):
            self.int(TYPE_STRING)
            self.string(obj)
        elif isinstance(obj, TorchTensor):
            if obj.class_name not in TENSOR_TYPES:
                raise ValueError(f"unknown Torch tensor class {obj.class_name!r}")
            self.tensor(obj.array, obj.class_name, obj)
        elif isinstance(obj, np.ndarray):
            if obj.dtype not in _DEFAULT_TENSOR:
                raise ValueError(f"no Torch tensor type for dtype {obj.dtype}")
            self.tensor(obj, _DEFAULT_TENSOR[obj.dtype], obj)
        elif isinstance(obj, TorchObject):
            if self.torch_header(obj, obj.class_name):
                self.object(obj.attributes)
        elif isinstance(obj, TorchFunction):
            self.int(TYPE_FUNCTION)
            i, seen = self._index(obj)
            self.int(i)
            if not seen:
                self.string(obj.dumped)
                self.object(obj.upvalues)
        elif isinstance(obj, (dict, list, tuple)):
            self.int(TYPE_TABLE)
            i, seen = self._index(obj)
            self.int(i)
            if seen:
                return
            items = obj.items() if isinstance(obj, dict) else ((k + 1, v) for k, v in enumerate(obj))
            items = list(items)
            self.int(len(items))
            for k, v in items:
                self.object(k)
                self.object(v)
        else:
            raise ValueError(f"cannot write a {type(obj).__name__} to a Torch7 file")


def write_t7(path, obj) -> str:
    """Write ``obj`` in Torch7's binary format (as ``torch.save(path, obj)`` does).

    ``np.ndarray`` -> tensor of the matching CPU type (``TorchTensor(array, "torch.CudaTensor")``
    to force another), ``TorchObject`` -> an instance of its class, dict/list -> tables (lists
    get keys 1..n), the same Python object twice -> one object and a reference, arrays that are
    views of one contiguous array -> tensors sharing one storage. Returns the path.
    """
    path = os.fspath(path)
    with open(path, "wb") as f:
        _Writer(f).object(obj)
    return path

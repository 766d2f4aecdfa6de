"""GGUF, read and written from the bytes up (numpy + struct + mmap): the single-file model format of llama.cpp.

The layout, top to bottom (spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), all little-endian:

    header       magic b"GGUF" | version uint32 (3; 2 has the same layout) | tensor_count uint64 | kv_count uint64
    KV store     kv_count × (key: string | value_type uint32 | value)               self-describing metadata
    tensor info  tensor_count × (name: string | n_dims uint32 | dims uint64[n_dims] | ggml_type uint32 | offset uint64)
    padding      zeros up to a multiple of `general.alignment` (default 32)           -> data_offset
    tensor data  tensor i at data_offset + offset_i (a multiple of the alignment), each padded to the alignment

    string = uint64 length + that many UTF-8 bytes (no NUL);  array = elem_type uint32 | count uint64 | count values
    dims: dims[0] (ne0) is the fastest-varying axis, so the numpy shape is reversed(dims).

A model file comes from strangers, so the reader is a parser of untrusted input: every length and count is checked
against the bytes that remain BEFORE anything is allocated or looped over, every type id against the known ones, and
every tensor against the file's end, the alignment and the other tensors. Any malformed file raises `GGUFError`
(a ValueError) naming what is wrong and where; parsing allocates at most a small multiple of the file's size and
takes time linear in it (tests/test_gguf.py fuzzes thousands of corrupted files). Tensor data is never copied:
`GGUFFile.tensor_bytes` is a view into the memory-mapped file, so opening a multi-GB model costs only the metadata.
`write` emits the same layout (the way llama.cpp and gguf-py lay it out: tensors in order, each padded), so reading
a llama.cpp file and writing it back reproduces it byte for byte.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .gguf_quants import BLOCK, GGMLType, dequantize

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # v1 (2023, uint32 counts) is obsolete; v3 added big-endian files, which this reader refuses
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME: a tensor name (with its C NUL) must fit in 64 bytes
MAX_NESTING = 8  # arrays of arrays of ... deeper than this are refused (a parser must not recurse unboundedly)
LEGACY_MAGICS = {b"lmgg": "GGML (unversioned)", b"fmgg": "GGMF", b"tjgg": "GGJT"}  # the pre-GGUF formats' uint32 magics


class GGUFError(ValueError):
    """The bytes are not a valid GGUF file (the message says what is wrong and at which offset)."""


class ValueType(IntEnum):
    """gguf_metadata_value_type: the type tag stored before every metadata value."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


SCALAR = {ValueType.UINT8: "<u1", ValueType.INT8: "<i1", ValueType.UINT16: "<u2", ValueType.INT16: "<i2",
          ValueType.UINT32: "<u4", ValueType.INT32: "<i4", ValueType.FLOAT32: "<f4", ValueType.BOOL: "<u1",
          ValueType.UINT64: "<u8", ValueType.INT64: "<i8", ValueType.FLOAT64: "<f8"}  # numpy dtypes of fixed-size types
STRUCT = dict(zip(SCALAR, ["<B", "<b", "<H", "<h", "<I", "<i", "<f", "<B", "<Q", "<q", "<d"]))  # the same, for struct
MIN_SIZE = {**{t: np.dtype(f).itemsize for t, f in SCALAR.items()}, ValueType.STRING: 8, ValueType.ARRAY: 12}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor-info record: where a tensor's bytes are and how to read them."""

    name: str
    dims: tuple  # GGUF order: dims[0] = ne0, the fastest-varying axis
    ggml_type: GGMLType
    offset: int  # relative to the data section (GGUFFile.data_offset)

    @property
    def shape(self) -> tuple:  # numpy order
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.dims, dtype=object)) if self.dims else 1

    @property
    def nbytes(self) -> int:
        block_size, type_size = BLOCK[self.ggml_type]
        return self.n_elements // block_size * type_size


# ---------------------------------------------------------------------------------------------------- the reader
class _Cursor:
    """Reads little-endian values from a byte buffer, refusing to read (or allocate) past its end."""

    def __init__(self, buf: np.ndarray):
        self.buf, self.view, self.pos, self.end = buf, memoryview(buf), 0, len(buf)

    def need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise GGUFError(f"{what} at offset {self.pos} needs {n} bytes but only {self.end - self.pos} remain "
                            f"(file of {self.end} bytes): the file is truncated or corrupt")

    def scalar(self, fmt: str, what: str):
        """One value of a struct format ("<I" uint32, "<Q" uint64, ...)."""
        size = struct.calcsize(fmt)
        self.need(size, what)
        self.pos += size
        return struct.unpack_from(fmt, self.view, self.pos - size)[0]

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        """`count` values of a fixed-size type, as a zero-copy view."""
        size = np.dtype(dtype).itemsize
        self.need(count * size, what)
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * size
        return out

    def string(self, what: str) -> str:
        n = self.scalar("<Q", f"length of {what}")
        self.need(n, f"{what} ({n} bytes)")
        self.pos += n
        try:
            return str(self.view[self.pos - n:self.pos], "utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{what} ending at offset {self.pos} is not valid UTF-8 ({e.reason})") from None

    def value_type(self, what: str) -> ValueType:
        t = self.scalar("<I", f"type of {what}")
        if t not in ValueType._value2member_map_:
            raise GGUFError(f"{what}: unknown value type {t} at offset {self.pos - 4} (known: 0..12)")
        return ValueType(t)


def _read_value(c: _Cursor, vtype: ValueType, what: str, depth: int = 0):
    """One metadata value of type `vtype` -> (python value, type spec)."""
    if vtype == ValueType.STRING:
        return c.string(what), vtype
    if vtype != ValueType.ARRAY:
        v = c.scalar(STRUCT[vtype], what)
        if vtype == ValueType.BOOL:
            if v > 1:
                raise GGUFError(f"{what}: a bool must be 0 or 1, got {v} at offset {c.pos - 1}")
            v = bool(v)
        return v, vtype
    if depth >= MAX_NESTING:
        raise GGUFError(f"{what}: arrays nested deeper than {MAX_NESTING} levels")
    etype = c.value_type(f"elements of {what}")
    count = c.scalar("<Q", f"length of {what}")
    c.need(count * MIN_SIZE[etype], f"{what} ({count} × {etype.name})")  # before any allocation or loop
    if etype == ValueType.STRING:  # the common big case (a tokenizer's vocabulary): a tight loop
        return [c.string(f"an item of {what}") for i in range(count)], (ValueType.ARRAY, etype)
    if etype in SCALAR:
        a = c.array(SCALAR[etype], count, what)
        if etype == ValueType.BOOL:
            if count and a.max() > 1:
                raise GGUFError(f"{what}: a bool must be 0 or 1")
            a = a.astype(bool)
        return a.tolist(), (ValueType.ARRAY, etype)
    items = [_read_value(c, etype, f"{what}[{i}]", depth + 1) for i in range(count)]
    return [v for v, _ in items], (ValueType.ARRAY, [s for _, s in items])


def _read_header(c: _Cursor) -> tuple[int, int, int]:
    """magic, version, tensor_count, kv_count -> (version, tensor_count, kv_count)."""
    c.need(4, "magic")
    magic = c.buf[:4].tobytes()
    if magic != MAGIC:
        old = LEGACY_MAGICS.get(magic)
        hint = f"it is a {old} file, the format GGUF replaced: reconvert the model" if old else "not a GGUF file"
        raise GGUFError(f"bad magic {magic!r} (expected {MAGIC!r}): {hint}")
    c.pos = 4
    version = c.scalar("<I", "version")
    if version not in VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in VERSIONS:
            raise GGUFError(f"version {version:#010x} is {version >> 24} byte-swapped: a big-endian GGUF file; "
                            f"this reader reads little-endian files only")
        raise GGUFError(f"unsupported GGUF version {version} (this reader handles {VERSIONS})")
    n_tensors = c.scalar("<Q", "tensor_count")
    n_kv = c.scalar("<Q", "kv_count")
    return version, n_tensors, n_kv


def _read_metadata(c: _Cursor, n_kv: int) -> tuple[dict, dict]:
    """The KV store -> (key -> value, key -> type spec)."""
    c.need(n_kv * (8 + 4 + 1), f"{n_kv} metadata entries")  # each: key length, type, >= 1 byte of value
    metadata, types = {}, {}
    for i in range(n_kv):
        key = c.string(f"key of metadata entry {i}")
        if key in metadata:
            raise GGUFError(f"duplicate metadata key {key!r}")
        metadata[key], types[key] = _read_value(c, c.value_type(key), key)
    return metadata, types


def _alignment(metadata: dict, types: dict) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    a = metadata["general.alignment"]
    if types["general.alignment"] != ValueType.UINT32 or a == 0 or a & (a - 1):
        raise GGUFError(f"general.alignment must be a UINT32 power of two, got {a!r} ({types['general.alignment']})")
    return a


def _read_tensor_infos(c: _Cursor, n_tensors: int) -> dict[str, TensorInfo]:
    c.need(n_tensors * (8 + 4 + 4 + 8), f"{n_tensors} tensor infos")  # name length, n_dims, type, offset
    infos = {}
    for i in range(n_tensors):
        name = c.string(f"name of tensor {i}")
        if len(name.encode()) >= MAX_NAME or name in infos:
            raise GGUFError(f"tensor {i}: name {name[:80]!r} is " + ("a duplicate" if name in infos else
                                                                     f"longer than {MAX_NAME - 1} bytes"))
        n_dims = c.scalar("<I", f"n_dims of {name}")
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor {name!r}: n_dims = {n_dims} > {MAX_DIMS}")
        dims = tuple(c.array("<u8", n_dims, f"dims of {name}").tolist())
        t = c.scalar("<I", f"type of {name}")
        if t not in GGMLType._value2member_map_:
            raise GGUFError(f"tensor {name!r}: unknown ggml type {t}")
        offset = c.scalar("<Q", f"offset of {name}")
        block_size = BLOCK[GGMLType(t)][0]
        if any(d >= 2**63 for d in dims) or (dims[0] if dims else 1) % block_size:  # n_dims = 0: a scalar
            raise GGUFError(f"tensor {name!r}: dims {dims} invalid for {GGMLType(t).name} (ne0 must be a multiple "
                            f"of its block size {block_size})")
        infos[name] = TensorInfo(name, dims, GGMLType(t), offset)
    return infos


def _check_layout(infos: dict[str, TensorInfo], data_offset: int, alignment: int, size: int) -> None:
    """Every tensor aligned, inside the file, and not overlapping the next one."""
    end = 0
    for ti in sorted(infos.values(), key=lambda t: t.offset):
        if ti.offset % alignment:
            raise GGUFError(f"tensor {ti.name!r}: offset {ti.offset} is not a multiple of the alignment {alignment}")
        if data_offset + ti.offset + ti.nbytes > size:
            raise GGUFError(f"tensor {ti.name!r}: data [{data_offset + ti.offset}, +{ti.nbytes}) runs past the end "
                            f"of the file ({size} bytes): the file is truncated or corrupt")
        if ti.offset < end:
            raise GGUFError(f"tensor {ti.name!r} at offset {ti.offset} overlaps the previous tensor (ends at {end})")
        end = ti.offset + ti.nbytes


def _open(source) -> np.ndarray:
    """The file as a read-only uint8 array: memory-mapped for a path, a view for bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(source) if isinstance(source, bytearray) else source, dtype=np.uint8)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise GGUFError(f"{path}: the file is empty")
    return np.memmap(path, dtype=np.uint8, mode="r")


def align(n: int, alignment: int) -> int:
    """n rounded up to a multiple of `alignment`."""
    return n + (-n) % alignment


def read(source) -> "GGUFFile":
    """Parse a GGUF file (path or bytes); tensor data stays in the memory map."""
    buf = _open(source)
    c = _Cursor(buf)
    version, n_tensors, n_kv = _read_header(c)
    metadata, value_types = _read_metadata(c, n_kv)
    alignment = _alignment(metadata, value_types)
    tensors = _read_tensor_infos(c, n_tensors)
    data_offset = align(c.pos, alignment)
    _check_layout(tensors, data_offset, alignment, len(buf))
    return GGUFFile(buf, version, metadata, value_types, tensors, alignment, c.pos, data_offset)


@dataclass
class GGUFFile:
    """A parsed GGUF file: metadata in python values, tensors as views into the mapped bytes."""

    buf: np.ndarray  # the whole file, uint8 (memory-mapped)
    version: int
    metadata: dict[str, Any]
    value_types: dict[str, Any]
    tensors: dict[str, TensorInfo]
    alignment: int
    infos_end: int  # where the tensor infos end; zero padding follows up to data_offset
    data_offset: int

    @property
    def size(self) -> int:
        return len(self.buf)

    def tensor_offset(self, name: str) -> int:
        return self.data_offset + self.tensors[name].offset

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The tensor's bytes as stored (uint8), zero-copy."""
        start = self.tensor_offset(name)
        return self.buf[start:start + self.tensors[name].nbytes].view(np.ndarray)

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as float32 in numpy shape order (F32: a zero-copy view; other types are decoded)."""
        ti = self.tensors[name]
        if ti.ggml_type == GGMLType.F32:
            return self.tensor_bytes(name).view("<f4").reshape(ti.shape)
        return dequantize(self.tensor_bytes(name), ti.ggml_type, ti.shape)

    def __repr__(self) -> str:
        return (f"GGUFFile(v{self.version}, {len(self.metadata)} keys, {len(self.tensors)} tensors, "
                f"alignment {self.alignment}, data at {self.data_offset}, {self.size} bytes)")


# ---------------------------------------------------------------------------------------------------- the writer
class RawTensor(NamedTuple):
    """Tensor bytes already in a ggml type (e.g. quantized blocks), with the numpy-order shape they encode."""

    data: Any  # bytes or uint8 array
    ggml_type: int
    shape: tuple


NUMPY_TO_GGML = {np.dtype("float32"): GGMLType.F32, np.dtype("float16"): GGMLType.F16,
                 np.dtype("float64"): GGMLType.F64, np.dtype("int8"): GGMLType.I8, np.dtype("int16"): GGMLType.I16,
                 np.dtype("int32"): GGMLType.I32, np.dtype("int64"): GGMLType.I64}
NUMPY_TO_VALUE = {np.dtype(f).newbyteorder("="): t for t, f in SCALAR.items() if t != ValueType.BOOL}


def infer_type(value):
    """The type spec `write` uses for a python value that has none in `value_types`."""
    if isinstance(value, (bool, np.bool_)):
        return ValueType.BOOL
    if isinstance(value, np.generic):
        return NUMPY_TO_VALUE[value.dtype.newbyteorder("=")]
    if isinstance(value, int):
        return (ValueType.INT32 if -2**31 <= value < 2**31 else ValueType.INT64 if -2**63 <= value < 2**63
                else ValueType.UINT64)
    if isinstance(value, float):
        return ValueType.FLOAT32
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, np.ndarray):
        elem = ValueType.BOOL if value.dtype == bool else NUMPY_TO_VALUE[value.dtype.newbyteorder("=")]
        return (ValueType.ARRAY, elem)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (list, tuple, np.ndarray)) for v in value):
            return (ValueType.ARRAY, [infer_type(v) for v in value])
        specs = {infer_type(v) for v in value} or {ValueType.INT32}
        if specs <= {ValueType.INT32, ValueType.INT64, ValueType.UINT64}:
            return (ValueType.ARRAY, max(specs, key=[ValueType.INT32, ValueType.INT64, ValueType.UINT64].index))
        if len(specs) != 1 or isinstance(next(iter(specs)), tuple):
            raise TypeError(f"an array's items must share one scalar type (or all be arrays), got {specs}")
        return (ValueType.ARRAY, specs.pop())
    raise TypeError(f"cannot store a {type(value).__name__} in GGUF metadata (use int, float, bool, str or lists)")


def _pack_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _pack_value(value, spec, with_type: bool = True) -> bytes:
    """A value as stored (its uint32 type tag first when `with_type`)."""
    vtype = spec[0] if isinstance(spec, tuple) else ValueType(spec)
    out = struct.pack("<I", vtype) if with_type else b""
    if vtype == ValueType.STRING:
        return out + _pack_string(value)
    if vtype != ValueType.ARRAY:
        return out + _pack_numbers(value, vtype)
    if not isinstance(spec, tuple):
        raise TypeError("an array's type is (ValueType.ARRAY, element type)")
    elem = spec[1]
    if isinstance(elem, list):  # nested arrays: each item carries its own element type and count
        if len(elem) != len(value):
            raise ValueError(f"nested array spec has {len(elem)} item specs for {len(value)} items")
        out += struct.pack("<IQ", ValueType.ARRAY, len(value))
        return out + b"".join(_pack_value(v, s, with_type=False) for v, s in zip(value, elem))
    elem = ValueType(elem)
    out += struct.pack("<IQ", elem, len(value))
    if elem == ValueType.STRING:
        return out + b"".join(_pack_string(v) for v in value)
    return out + _pack_numbers(value, elem)


def _pack_numbers(value, vtype: ValueType) -> bytes:
    """A number (or list of numbers) as `vtype`; out-of-range values and floats given for integers are errors."""
    if np.dtype(SCALAR[vtype]).kind in "iub":
        items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if not all(isinstance(v, (int, np.integer, np.bool_)) for v in items):
            raise TypeError(f"{vtype.name} needs integers")
    return np.asarray(value, dtype=SCALAR[vtype]).tobytes()


def _as_raw(name: str, t) -> tuple[bytes, GGMLType, tuple]:
    """A tensor argument of `write` -> (bytes, ggml type, numpy shape), checked."""
    if isinstance(t, np.ndarray):
        native = t.dtype.newbyteorder("=")
        if native not in NUMPY_TO_GGML:
            raise TypeError(f"tensor {name!r}: dtype {t.dtype} has no ggml type; pass a RawTensor for quantized data")
        data = np.ascontiguousarray(t, native.newbyteorder("<")).tobytes()  # GGUF data is little-endian
        ggml_type, shape = NUMPY_TO_GGML[native], t.shape
    else:
        data, ggml_type, shape = RawTensor(*t)
        data, ggml_type, shape = np.asarray(data, dtype=np.uint8).tobytes(), GGMLType(ggml_type), tuple(shape)
    info = TensorInfo(name, tuple(reversed(shape)), ggml_type, 0)
    if len(shape) > MAX_DIMS or len(name.encode()) >= MAX_NAME:
        raise ValueError(f"tensor {name!r}: at most {MAX_DIMS} dims and names shorter than {MAX_NAME} bytes")
    if (shape and shape[-1] % BLOCK[ggml_type][0]) or len(data) != info.nbytes:
        raise ValueError(f"tensor {name!r}: {len(data)} bytes do not encode shape {shape} in {ggml_type.name} "
                         f"(expected {info.nbytes}; the last axis must be a multiple of {BLOCK[ggml_type][0]})")
    return data, ggml_type, tuple(shape)


def write(path, metadata: dict, tensors: dict, alignment: int = DEFAULT_ALIGNMENT,
          value_types: dict | None = None) -> Path:
    """Write a GGUF v3 file: header, KV store, tensor infos, then the aligned tensor data. Returns the path."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment}")
    metadata, value_types = dict(metadata), dict(value_types or {})
    if alignment != DEFAULT_ALIGNMENT and "general.alignment" not in metadata:
        metadata["general.alignment"], value_types["general.alignment"] = alignment, ValueType.UINT32
    if metadata.get("general.alignment", alignment) != alignment:
        raise ValueError(f"metadata says general.alignment = {metadata['general.alignment']} but alignment={alignment}")
    head = [MAGIC, struct.pack("<IQQ", 3, len(tensors), len(metadata))]
    for key, value in metadata.items():
        spec = value_types[key] if key in value_types else infer_type(value)
        try:
            head.append(_pack_string(key) + _pack_value(value, spec))
        except (OverflowError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"metadata {key!r}: {value!r:.80} cannot be stored as {getattr(spec, 'name', spec)}: {e}") from None
    raws, offset = [], 0
    for name, t in tensors.items():
        data, ggml_type, shape = _as_raw(name, t)
        head.append(_pack_string(name) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *reversed(shape),
                                                     ggml_type, offset))
        raws.append(data)
        offset = align(offset + len(data), alignment)
    header = b"".join(head)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(header + bytes(align(len(header), alignment) - len(header)))
        for data in raws:
            f.write(data + bytes(align(len(data), alignment) - len(data)))
    return path

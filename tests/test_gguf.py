"""helpers.formats.gguf / gguf_quants against gguf-py (llama.cpp's own Python reader, `gguf` 0.19), plus a fuzz test.

(a) every metadata key/value and every tensor of the course's SmolLM2 GGUF (written by llama.cpp) agrees with
    gguf.GGUFReader; writing it back gives the same bytes;
(b) our dequantization is bit-equal to gguf.quants.dequantize for Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q6_K;
(c) writer round trips (all value types, nested arrays, alignment 32/64) read back by us AND by gguf.GGUFReader;
(d) thousands of corrupted files: each parses or raises GGUFError, quickly, allocating < file size + 64 KiB.
"""
import struct
import time
import tracemalloc

import gguf as gguf_py
import numpy as np
import pytest

from helpers import llm
from helpers.formats import gguf_quants as Q
from helpers.formats.gguf import GGMLType, GGUFError, RawTensor, ValueType, read, write


@pytest.fixture(scope="module")
def real():
    path = llm.gguf_path()
    return path, read(path), gguf_py.GGUFReader(path)


# ----------------------------------------------------------------------------------------- (a) the real file
def _spec_types(spec) -> list:
    """Our type spec flattened like gguf-py's ReaderField.types (main type, then element types)."""
    if isinstance(spec, tuple):
        elem = spec[1]
        return [ValueType.ARRAY] + (_spec_types(elem[0]) if isinstance(elem, list) else [elem])
    return [spec]


def test_every_key_and_tensor_agrees_with_gguf_py(real):
    path, ours, ref = real
    header = {"GGUF.version": ours.version, "GGUF.tensor_count": len(ours.tensors), "GGUF.kv_count": len(ours.metadata)}
    fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    for k, v in header.items():
        assert ref.fields[k].contents() == v, k
    assert list(fields) == list(ours.metadata)  # same keys, same order
    for key, field in fields.items():
        assert [int(t) for t in field.types] == [int(t) for t in _spec_types(ours.value_types[key])], key
        assert field.contents() == ours.metadata[key], key
    assert ours.alignment == ref.alignment and ours.data_offset == ref.data_offset
    assert [t.name for t in ref.tensors] == list(ours.tensors)
    for t in ref.tensors:
        ti = ours.tensors[t.name]
        assert ti.dims == tuple(int(d) for d in t.shape), t.name
        assert ti.ggml_type == t.tensor_type and ti.nbytes == t.n_bytes, t.name
        assert ours.tensor_offset(t.name) == t.data_offset, t.name
        assert np.array_equal(ours.tensor_bytes(t.name), np.asarray(t.data).reshape(-1).view(np.uint8)), t.name
    assert len(fields) == 33 and len(ref.tensors) == 272  # the file's own counts (30 layers × 9 + 2)


def test_tensor_views_are_zero_copy(real):
    _, ours, _ = real
    raw = ours.tensor_bytes("blk.0.ffn_up.weight")
    assert np.shares_memory(raw, ours.buf) and not raw.flags.writeable
    norm = ours.tensor("blk.0.attn_norm.weight")
    assert norm.shape == (576,) and np.shares_memory(norm, ours.buf)


def test_rewrite_is_byte_identical(real, tmp_path):
    path, ours, _ = real
    tensors = {n: RawTensor(ours.tensor_bytes(n), t.ggml_type, t.shape) for n, t in ours.tensors.items()}
    out = write(tmp_path / "copy.gguf", ours.metadata, tensors, alignment=ours.alignment, value_types=ours.value_types)
    assert out.stat().st_size == path.stat().st_size
    assert np.array_equal(np.memmap(out, dtype=np.uint8, mode="r"), ours.buf)


# ----------------------------------------------------------------------------------------- (b) dequantization
def _bit_equal(a, b) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_real_q4_1_and_q8_0_tensors_dequantize_like_gguf_py(real):
    _, ours, ref = real
    by_type = {}
    for t in ref.tensors:
        by_type.setdefault(t.tensor_type.name, []).append(t)
    picked = by_type["Q4_1"][::15] + by_type["Q8_0"] + by_type["F32"][:3]
    for t in picked:
        assert _bit_equal(ours.tensor(t.name), gguf_py.quants.dequantize(t.data, t.tensor_type)), t.name
    assert len(by_type["Q4_1"]) == 210 and len(by_type["Q8_0"]) == 1


def _random_blocks(ggml_type, n_blocks, rng):
    """Random valid blocks: random bytes everywhere, with finite float16 scales at the struct's ggml_half fields."""
    block_size, type_size = Q.BLOCK[ggml_type]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    halves = {GGMLType.Q8_0: [0], GGMLType.Q4_0: [0], GGMLType.Q5_0: [0], GGMLType.Q4_1: [0, 2],
              GGMLType.Q5_1: [0, 2], GGMLType.Q4_K: [0, 2], GGMLType.Q6_K: [208]}[ggml_type]
    for at in halves:
        blocks[:, at:at + 2] = rng.normal(0, 0.05, size=(n_blocks, 1)).astype("<f2").view(np.uint8)
    return blocks


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"])
def test_dequantize_matches_gguf_py(name):
    t = GGMLType[name]
    rng = np.random.default_rng(int(t))
    ref_type = gguf_py.GGMLQuantizationType[name]
    block_size, type_size = Q.BLOCK[t]
    blocks = _random_blocks(t, 512, rng).reshape(4, -1)  # (4 rows, 128 blocks' bytes)
    shape = (4, 128 * block_size)
    assert _bit_equal(Q.dequantize(blocks, t, shape), gguf_py.quants.dequantize(blocks, ref_type))
    if name not in ("Q4_K", "Q6_K"):  # gguf-py quantizes only the legacy formats
        x = rng.normal(size=(8, 256)).astype(np.float32)
        raw = gguf_py.quants.quantize(x, ref_type)
        assert _bit_equal(Q.dequantize(raw, t, x.shape), gguf_py.quants.dequantize(raw, ref_type))


def test_quantize_q8_0_is_ggml_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 320)).astype(np.float32)
    x[0, :32] = 0  # an all-zero block (d = 0)
    x[1, :32] = np.arange(32) - 15.5  # ties: roundf rounds halves away from zero
    x[2, :32] = np.float32(127) / 2 * np.sign(rng.normal(size=32))
    assert np.array_equal(Q.quantize_q8_0(x), gguf_py.quants.quantize(x, gguf_py.GGMLQuantizationType.Q8_0))
    with pytest.raises(ValueError, match="multiple of 32"):
        Q.quantize_q8_0(np.zeros((2, 33), np.float32))


def test_block_sizes_match_gguf_constants():
    for t, (block_size, type_size) in Q.BLOCK.items():
        if t == GGMLType.Q8_1:  # gguf-py keeps the historical 40 bytes (float d, s); ggml's block_q8_1 is 36 now
            continue
        assert gguf_py.GGML_QUANT_SIZES[gguf_py.GGMLQuantizationType(int(t))] == (block_size, type_size), t.name
    assert Q.bytes_per_weight(GGMLType.Q4_0) == 18 / 32
    with pytest.raises(NotImplementedError, match="IQ2_XXS"):
        Q.dequantize(np.zeros(66, np.uint8), GGMLType.IQ2_XXS, (256,))


# ----------------------------------------------------------------------------------------- (c) the writer
METADATA = {
    "general.architecture": "llama",
    "t.u8": 255, "t.i8": -128, "t.u16": 65535, "t.i16": -32768, "t.u32": 2**32 - 1, "t.i32": -2**31,
    "t.f32": 1.5, "t.bool": True, "t.str": "héllo wörld ✓", "t.u64": 2**64 - 1, "t.i64": -2**63, "t.f64": 1 / 3,
    "t.empty_str": "",
    "a.u8": [0, 1, 255], "a.i16": [-3, 4], "a.f32": [0.5, -2.25], "a.bool": [True, False, True],
    "a.str": ["a", "", "ünïcode", "tab\tnewline\n"], "a.f64": [1e300, -1e-300], "a.u64": [2**64 - 1, 0],
    "a.empty": [],
    "a.nested": [[1, 2], [3, 4, 5], []], "a.nested_str": [["x", "yy"], ["zzz"]],
}
TYPES = {"t.u8": ValueType.UINT8, "t.i8": ValueType.INT8, "t.u16": ValueType.UINT16, "t.i16": ValueType.INT16,
         "t.u32": ValueType.UINT32, "t.i32": ValueType.INT32, "t.f32": ValueType.FLOAT32, "t.u64": ValueType.UINT64,
         "t.i64": ValueType.INT64, "t.f64": ValueType.FLOAT64, "a.u8": (ValueType.ARRAY, ValueType.UINT8),
         "a.i16": (ValueType.ARRAY, ValueType.INT16), "a.f64": (ValueType.ARRAY, ValueType.FLOAT64),
         "a.u64": (ValueType.ARRAY, ValueType.UINT64),
         "a.nested": (ValueType.ARRAY, [(ValueType.ARRAY, ValueType.INT32)] * 2 + [(ValueType.ARRAY, ValueType.UINT8)])}


def _tensors(rng):
    x = rng.normal(size=(3, 64)).astype(np.float32)
    return {"f32": rng.normal(size=(5, 7)).astype(np.float32),  # 140 bytes: padding needed
            "f16": rng.normal(size=(3,)).astype(np.float16), "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
            "q8": RawTensor(Q.quantize_q8_0(x), GGMLType.Q8_0, x.shape), "empty": np.zeros((0, 4), np.float32)}


def _flat(v):
    return [y for x in v for y in _flat(x)] if isinstance(v, list) else [v]


@pytest.mark.parametrize("alignment", [32, 64])
def test_write_read_round_trip(tmp_path, alignment):
    rng = np.random.default_rng(alignment)
    tensors = _tensors(rng)
    path = write(tmp_path / "t.gguf", METADATA, tensors, alignment=alignment, value_types=TYPES)
    f = read(path)
    expected = dict(METADATA, **({"general.alignment": alignment} if alignment != 32 else {}))
    assert f.metadata == expected and list(f.metadata) == list(expected)
    for k, spec in TYPES.items():
        assert f.value_types[k] == spec, k
    assert f.value_types["a.str"] == (ValueType.ARRAY, ValueType.STRING) and f.value_types["t.bool"] == ValueType.BOOL
    assert f.alignment == alignment and f.data_offset % alignment == 0
    for name, t in tensors.items():
        assert all(ti.offset % alignment == 0 for ti in f.tensors.values())
        if isinstance(t, RawTensor):
            assert np.array_equal(f.tensor_bytes(name), t.data.reshape(-1))
            assert _bit_equal(f.tensor(name), Q.dequantize(t.data, t.ggml_type, t.shape))
        else:
            assert f.tensors[name].shape == t.shape and np.array_equal(f.tensor(name), t.astype(np.float32))
    ref = gguf_py.GGUFReader(path)  # llama.cpp's Python reader sees the same file
    assert ref.alignment == alignment and ref.data_offset == f.data_offset
    for key, v in expected.items():
        assert ref.fields[key].contents() == (_flat(v) if key.startswith("a.nested") else v), key
    for t in ref.tensors:
        assert np.array_equal(np.asarray(t.data).reshape(-1).view(np.uint8), f.tensor_bytes(t.name)), t.name
        assert tuple(int(d) for d in t.shape) == f.tensors[t.name].dims
    assert path.stat().st_size % alignment == 0


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        write(tmp_path / "x.gguf", {}, {}, alignment=48)
    with pytest.raises(ValueError, match="do not encode"):
        write(tmp_path / "x.gguf", {}, {"q": RawTensor(np.zeros(33, np.uint8), GGMLType.Q8_0, (32,))})
    with pytest.raises(TypeError, match="share one scalar type"):
        write(tmp_path / "x.gguf", {"k": [1, "a"]}, {})
    with pytest.raises(ValueError, match="cannot be stored as"):
        write(tmp_path / "x.gguf", {"k": 300}, {}, value_types={"k": ValueType.UINT8})
    with pytest.raises(TypeError, match="no ggml type"):
        write(tmp_path / "x.gguf", {}, {"c": np.zeros(4, np.complex64)})


def test_reader_errors_are_clear(tmp_path):
    good = write(tmp_path / "g.gguf", {"k": 1}, {"w": np.ones(8, np.float32)}).read_bytes()
    cases = {b"GGML" + good[4:]: "bad magic", b"tjgg" + good[4:]: "GGJT", good[:4] + struct.pack("<I", 1) + good[8:]:
             "unsupported GGUF version 1", good[:4] + struct.pack(">I", 3) + good[8:]: "big-endian",
             good[:8] + struct.pack("<Q", 2**40) + good[16:]: "tensor infos", good[:50]: "truncated", b"": "empty"}
    for data, message in cases.items():
        with pytest.raises(GGUFError, match=message):
            read(data if data else (tmp_path / "empty.gguf").write_bytes(b"") or tmp_path / "empty.gguf")
    assert read(good[:4] + struct.pack("<I", 2) + good[8:]).version == 2


def test_each_kind_of_corruption_has_its_error(tmp_path):
    """One hand-made corruption per rule the reader enforces, each with the error it must give."""
    w = lambda meta, tensors=None, **kw: write(tmp_path / "x.gguf", meta, tensors or {}, **kw).read_bytes()  # noqa: E731
    data = w({"k": "ab", "b": True, "n": [[[1]]]}, {"t": np.zeros((2, 32), np.float32), "u": np.zeros(8, np.float32)})
    f = read(data)
    pos = lambda s: data.index(s)  # noqa: E731
    t_info = pos(struct.pack("<Q", 1) + b"t")  # tensor "t": name, n_dims, dims, type, offset
    u_off = pos(struct.pack("<Q", 1) + b"u") + 9 + 4 + 8 + 4
    patch = lambda at, fmt, v: data[:at] + struct.pack(fmt, v) + data[at + struct.calcsize(fmt):]  # noqa: E731
    cases = {
        "at offset 8 needs": data[:12],
        "needs 9223372036854775808 bytes": patch(pos(struct.pack("<Q", 2) + b"ab"), "<Q", 2**63),
        "metadata entries": patch(16, "<Q", 2**62),
        "unknown value type 13": patch(pos(b"k") + 1, "<I", 13),
        "not valid UTF-8": data.replace(b"ab", b"\xff\xfe", 1),
        "a bool must be 0 or 1": patch(pos(b"b\x07\x00\x00\x00") + 5, "<B", 2),
        "n_dims = 5 > 4": patch(t_info + 9, "<I", 5),
        "unknown ggml type 4": patch(t_info + 9 + 4 + 16, "<I", 4),
        "multiple of its block size": patch(t_info + 9 + 4 + 16, "<I", int(GGMLType.Q4_K)),
        "not a multiple of the alignment": patch(u_off, "<Q", f.tensors["u"].offset + 4),
        "overlaps": patch(u_off, "<Q", 0),
        "runs past the end": patch(u_off, "<Q", 2**40),
        "duplicate metadata key": data.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00b", b"\x01\x00\x00\x00\x00\x00\x00\x00k"),
        "duplicate": data.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00u", b"\x01\x00\x00\x00\x00\x00\x00\x00t"),
        "power of two": w({}, alignment=64).replace(b"alignment\x04\x00\x00\x00\x40", b"alignment\x04\x00\x00\x00\x30"),
        "nested deeper than 8": w({"deep": [[[[[[[[[[1]]]]]]]]]]}),
    }
    for message, bad in cases.items():
        with pytest.raises(GGUFError, match=message):
            read(bad)
    assert read(w({"deep": [[[[[[[[1]]]]]]]]})).metadata["deep"] == [[[[[[[[1]]]]]]]]  # 8 levels: allowed


# ----------------------------------------------------------------------------------------- (d) the fuzz test
def _fuzz_base(tmp_path) -> bytes:
    rng = np.random.default_rng(7)
    meta = {k: METADATA[k] for k in ["general.architecture", "t.u8", "t.u32", "t.f32", "t.bool", "t.str", "t.u64",
                                     "a.u8", "a.str", "a.bool", "a.nested"]}
    tensors = {"a": rng.normal(size=(2, 8)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float16),
               "q": RawTensor(Q.quantize_q8_0(rng.normal(size=(2, 32)).astype(np.float32)), GGMLType.Q8_0, (2, 32))}
    return write(tmp_path / "base.gguf", meta, tensors, value_types=TYPES).read_bytes()


def _field_positions(data: bytes) -> dict:
    """Byte positions of the header counts, string lengths, value types, n_dims, dims, tensor types and offsets."""
    f = read(data)
    pos = {"count": [8, 16], "length": [], "type": [], "n_dims": [], "dims": [], "ttype": [], "offset": []}
    for key in f.metadata:
        at = data.index(struct.pack("<Q", len(key.encode())) + key.encode())
        pos["length"].append(at)
        pos["type"].append(at + 8 + len(key.encode()))
    end_kv = max(pos["type"])
    for name, ti in f.tensors.items():
        at = data.index(struct.pack("<Q", len(name)) + name.encode(), end_kv)
        p = at + 8 + len(name)
        pos["length"].append(at)
        pos["n_dims"].append(p)
        pos["dims"] += [p + 4 + 8 * i for i in range(len(ti.dims))]
        pos["ttype"].append(p + 4 + 8 * len(ti.dims))
        pos["offset"].append(p + 8 + 8 * len(ti.dims))
    for v in ["t.str", "a.str"]:  # the value strings' own lengths
        s = f.metadata[v] if isinstance(f.metadata[v], str) else f.metadata[v][2]
        pos["length"].append(data.index(struct.pack("<Q", len(s.encode())) + s.encode()))
    return pos


def _mutants(data: bytes, rng) -> list:
    n, out = len(data), []
    out += [data[:k] for k in range(n)]  # truncation at every offset
    for _ in range(900):  # single bit flips
        b = bytearray(data)
        i = int(rng.integers(n))
        b[i] ^= 1 << int(rng.integers(8))
        out.append(bytes(b))
    header_end = read(data).data_offset
    for _ in range(500):  # random bytes over the header / KV store / tensor infos
        b = bytearray(data)
        i = int(rng.integers(header_end))
        k = int(rng.integers(1, 9))
        b[i:i + k] = rng.integers(0, 256, size=k, dtype=np.uint8).tobytes()
        out.append(bytes(b[:n]))
    pos = _field_positions(data)
    evil = {"count": ["<Q", [0, 1, 2**63, 2**64 - 1, n, 10**6]],
            "length": ["<Q", [2**63, 2**64 - 1, 2**63 - 1, n, n + 1, 0, 2**32]],
            "type": ["<I", [13, 99, 2**32 - 1] + list(range(13))],
            "n_dims": ["<I", [0, 5, 2**32 - 1, 1, 3]], "dims": ["<Q", [0, 1, 2**63, 2**64 - 1, 31, 33, 2**40]],
            "ttype": ["<I", [4, 5, 31, 99, 2**32 - 1, 2, 3, 6, 8, 12, 14, 16, 30]],
            "offset": ["<Q", [1, 31, 32, 16, 2**63, 2**64 - 32, n, 0]]}
    for kind, (fmt, values) in evil.items():
        for p in pos[kind]:
            for v in values:
                b = bytearray(data)
                struct.pack_into(fmt, b, p, v)
                out.append(bytes(b))
    return out


def test_fuzz_corrupted_files_fail_safely(tmp_path):
    data = _fuzz_base(tmp_path)
    cases = _mutants(data, np.random.default_rng(1234))
    assert len(cases) >= 2000
    kinds, worst_time, worst_mem = {}, 0.0, 0
    tracemalloc.start()
    try:
        for i, case in enumerate(cases):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            try:
                f = read(case)
                for name in f.tensors:  # a parsed file's tensors must be readable too
                    try:
                        f.tensor(name)
                    except NotImplementedError:
                        pass
                kinds["parsed"] = kinds.get("parsed", 0) + 1
            except GGUFError as e:
                kinds[str(e).split(":")[0][:20]] = kinds.get(str(e).split(":")[0][:20], 0) + 1
            except Exception as e:  # anything else is a parser bug
                pytest.fail(f"case {i}: {type(e).__name__}: {e}")
            worst_time = max(worst_time, time.perf_counter() - t0)
            worst_mem = max(worst_mem, tracemalloc.get_traced_memory()[1] - base - len(case))
    finally:
        tracemalloc.stop()
    assert worst_time < 0.5, f"a case took {worst_time:.3f} s"
    assert worst_mem < 64 * 1024, f"a case allocated {worst_mem} bytes more than its size"
    assert kinds.get("parsed", 0) > 0 and sum(kinds.values()) - kinds.get("parsed", 0) > len(cases) // 2


def test_fuzz_files_on_disk(tmp_path):
    """The memory-mapped path: truncated files and a zero-length file."""
    data = _fuzz_base(tmp_path)
    f = read(data)
    end = max(f.tensor_offset(n) + t.nbytes for n, t in f.tensors.items())  # after it: only padding
    for k in range(0, end, 37):
        p = tmp_path / f"t{k}.gguf"
        p.write_bytes(data[:k])
        with pytest.raises(GGUFError):
            read(p)
    assert read(tmp_path / "base.gguf").tensors["q"].ggml_type == GGMLType.Q8_0

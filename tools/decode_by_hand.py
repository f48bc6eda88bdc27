"""An independent DCF decoder written from spec/FORMAT.md alone, checked against the vectors.

It imports nothing from dcformat: only numpy, zlib, zstandard, hashlib, struct and json. It
follows the spec's order (preamble, footer, directory, streams, encodings) and reuses its
field names, so a disagreement with dcformat points at the spec or at one of the two
decoders. Usage::

    python tools/decode_by_hand.py [fixtures/vectors/NAME.dcf ...]
    python tools/decode_by_hand.py --malformed

With no arguments it decodes every vector in fixtures/vectors and compares each tensor, byte
for byte, with NAME.npz. With ``--malformed`` it checks that it rejects every file of
fixtures/malformed that expected.json lists with an error (or a verification problem) and
accepts the others. bfloat16 is handled as uint16 bit patterns (the top half of a
binary32), which is also how the .npz files store it. Exit status 1 when anything differs.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import zstandard

# Section 6.3 dtype codes. bfloat16 maps to "<u2": this script keeps its bit patterns.
DTYPES = ["<f4", "<f2", "bf16", "<f8", "i1", "<i2", "<i4", "<i8", "u1", "?", "<u2", "<u4", "<u8"]
FLOAT_CODES = {0, 1, 2, 3}
KINDS = {"raw": (1,), "shared": (2, 3), "sparse-shared": (2, 3, 4), "uniform": (5, 6), "lowrank": ()}
ENCODINGS = ["raw", "shared", "sparse-shared", "uniform", "lowrank"]
PARAMS_SIZE = {"raw": 2, "shared": 8, "sparse-shared": 12, "uniform": 8, "lowrank": 12}


class Rejected(Exception):
    """The file breaks a MUST of the spec."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise Rejected(message)


class Cursor:
    """Section 1: little-endian fields, every read bounds-checked."""

    def __init__(self, data, position: int = 0) -> None:
        self.data, self.position, self.end = data, position, len(data)

    def take(self, size: int) -> bytes:
        require(0 <= size <= self.end - self.position, f"{size} bytes wanted at {self.position}, past the end")
        self.position += size
        return bytes(self.data[self.position - size : self.position])

    def u(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def zero(self, size: int, what: str) -> None:
        require(not any(self.take(size)), f"reserved field {what} is not zero")


def bits_msb_first(data: bytes, count: int, width: int) -> list[int]:
    """Section 1: read ``count`` values of ``width`` bits, MSB-first, back to back."""
    big = int.from_bytes(data, "big")
    total = 8 * len(data)
    return [(big >> (total - (i + 1) * width)) & ((1 << width) - 1) for i in range(count)]


def utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejected(f"invalid UTF-8: {error}") from None


def check_padding(data: bytes, used_bits: int) -> None:
    spare = 8 * len(data) - used_bits
    require(spare == 0 or data[-1] & ((1 << spare) - 1) == 0, "unused low bits of the last byte are not zero")


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round binary32 to bfloat16 bit patterns, nearest-even (finite inputs only)."""
    bits = values.astype("<f4").view("<u4").astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")


def to_dtype(values: np.ndarray, code: int) -> np.ndarray:
    """Sections 9.2 to 9.5: convert float results to the record's dtype, round-to-nearest-even."""
    if code != 2:
        return values.astype(DTYPES[code])
    # NOTE: binary64 input (a lowrank product) is rounded to binary32 first, so it can round
    # twice. The vectors' products are small integers, which every float type represents exactly.
    return f32_to_bf16_bits(values.astype("<f4"))


# --- section 4: preamble, section 5: footer, section 10: checksums --------------------------


def read_file(data: bytes) -> dict:
    require(len(data) >= 16 + 88, "shorter than a preamble and a footer")
    preamble = Cursor(data)
    require(preamble.take(8) == b"\x89DCF\r\n\x1a\n", "bad magic")
    major, minor = preamble.u(2), preamble.u(2)
    require(major == 1, f"major_version {major} unsupported")
    preamble.zero(4, "preamble.reserved")

    base = len(data) - 88
    require(data[-8:] == b"\x89DCF\x1aEND", "bad footer_magic")
    require(zlib.crc32(data[base : base + 40]) == struct.unpack_from("<I", data, base + 40)[0], "footer_crc32")
    footer = Cursor(data, base)
    directory_offset, stored_size, directory_size = footer.u(8), footer.u(8), footer.u(8)
    directory_crc32, required_flags, optional_flags = footer.u(4), footer.u(4), footer.u(4)
    alignment_log2, compression = footer.u(1), footer.u(1)
    footer.zero(2, "footer.reserved")
    footer.u(4)  # footer_crc32, checked above
    footer.zero(4, "footer.reserved")
    digest = footer.take(32)
    require(required_flags & ~1 == 0, f"unknown required flag bits {required_flags:#x}")
    require(alignment_log2 <= 16, "alignment_log2 above 16")
    require(compression in (0, 1), "directory_compression")
    require(compression == 0 or required_flags & 1, "zstd directory without the zstd flag")
    require(directory_offset >= 16 and directory_offset + stored_size == base, "directory_offset")
    # This decoder always runs full verification (section 10), so the digest is checked too.
    require(hashlib.sha256(data[: len(data) - 40]).digest() == digest, "digest")

    stored = data[directory_offset:base]
    require(zlib.crc32(stored) == directory_crc32, "directory_crc32")
    if compression == 1:
        require(directory_size <= 256 << 20, "directory_size above the limit")
        try:
            directory = zstandard.ZstdDecompressor().decompress(stored, max_output_size=directory_size)
        except zstandard.ZstdError as error:
            raise Rejected(f"directory zstd frame: {error}") from None
    else:
        directory = stored
    require(len(directory) == directory_size, "directory_size")
    info = read_directory(directory, 1 << alignment_log2, directory_offset, data)
    info.update(data=data, minor=minor, optional_flags=optional_flags)
    return info


# --- section 6: directory, section 7: metadata ----------------------------------------------


def read_directory(directory: bytes, alignment: int, directory_offset: int, data: bytes) -> dict:
    cursor = Cursor(directory)
    section_count, tensor_count, user_count, metadata_size = (cursor.u(4) for _ in range(4))
    require(section_count <= 4_000_000 and section_count * 24 <= cursor.end - cursor.position, "section_count")
    # A tensor record takes at least 21 bytes (a 1-byte name, no dimensions, no params), a
    # user section entry at least 7.
    require(tensor_count <= 1_000_000 and tensor_count * 21 <= cursor.end - cursor.position, "tensor_count")
    require(user_count * 7 + metadata_size <= cursor.end - cursor.position, "user_section_count or metadata_size")
    require(metadata_size <= 64 << 20, "metadata_size above the limit")

    sections, previous_end = [], 16
    for _ in range(section_count):
        offset, size, crc32, kind = cursor.u(8), cursor.u(8), cursor.u(4), cursor.u(1)
        cursor.zero(3, "section.reserved")
        require(offset % alignment == 0, f"section offset {offset} not aligned to {alignment}")
        # The spec says "strictly increasing", but an empty section (size 0) shares its offset
        # with the next section (empty_tensors.dcf), so only overlap is checked.
        require(offset >= previous_end, f"section at {offset} overlaps the previous one")
        require(offset + size <= directory_offset, "section ends after directory_offset")
        require(offset == -(-previous_end // alignment) * alignment and not any(data[previous_end:offset]),
             f"padding before the section at {offset} is not minimal and zero")
        sections.append({"offset": offset, "size": size, "crc32": crc32, "kind": kind})
        previous_end = offset + size
    require(previous_end == directory_offset, "bytes between the last section and the directory")

    tensors = []
    for index in range(tensor_count):
        name = utf8(cursor.take(cursor.u(2)))
        require(name and name not in {t["name"] for t in tensors}, f"tensor name {name!r}")
        dtype, ndim, encoding, version, flags = (cursor.u(1) for _ in range(5))
        cursor.zero(3, "tensor.reserved")
        require(dtype < len(DTYPES) and ndim <= 32 and flags & ~1 == 0, f"tensor {name!r} fields")
        shape = tuple(cursor.u(8) for _ in range(ndim))
        first_section, own_sections, params_size = cursor.u(4), cursor.u(4), cursor.u(2)
        params = cursor.take(params_size)
        require(encoding < len(ENCODINGS) and version == 1, f"tensor {name!r}: encoding {encoding} v{version}")
        kind_name = ENCODINGS[encoding]
        require(len(params) == PARAMS_SIZE[kind_name], f"tensor {name!r}: params_size")
        kinds = tuple(s["kind"] for s in sections[first_section : first_section + own_sections])
        require(first_section + own_sections <= section_count and kinds == KINDS[kind_name],
             f"tensor {name!r}: section kinds {kinds}")
        require(kind_name == "raw" or dtype in FLOAT_CODES, f"tensor {name!r}: dtype")
        size = 1
        for dim in shape:
            size *= dim
        require(size * np.dtype(DTYPES[dtype] if dtype != 2 else "<u2").itemsize < 1 << 63, "shape overflow")
        tensors.append({"index": index, "name": name, "dtype": dtype, "shape": shape, "size": size,
                        "encoding": kind_name, "factor": bool(flags & 1), "params": params,
                        "sections": sections[first_section : first_section + own_sections]})

    user_sections = {}
    for _ in range(user_count):
        name = utf8(cursor.take(cursor.u(2)))
        user_sections[name] = cursor.u(4)
        require(sections[user_sections[name]]["kind"] == 255, "user section kind")
    metadata = read_metadata(cursor.take(metadata_size))
    require(cursor.position == cursor.end, "bytes after the metadata")
    return {"sections": sections, "tensors": tensors, "user_sections": user_sections, "metadata": metadata}


def read_metadata(text: bytes) -> dict:
    def unique(pairs):
        keys = [key for key, _ in pairs]
        require(len(keys) == len(set(keys)), "duplicate metadata key")
        return dict(pairs)

    def check(value, depth):
        # Depth counts objects and arrays only, the top-level object being level 1.
        require(value is not None, "metadata null")
        if isinstance(value, (dict, list)):
            require(depth <= 32, "metadata nested deeper than 32 levels")
            for child in value.values() if isinstance(value, dict) else value:
                check(child, depth + 1)

    if not text:
        return {}
    value = json.loads(utf8(text), object_pairs_hook=unique,
                       parse_constant=lambda token: require(False, f"metadata {token}"))
    require(isinstance(value, dict), "metadata is not an object")
    check(value, 1)
    return value


# --- section 8: streams ---------------------------------------------------------------------


def section_bytes(info: dict, section: dict) -> bytes:
    data = info["data"][section["offset"] : section["offset"] + section["size"]]
    require(zlib.crc32(data) == section["crc32"], f"section CRC-32 at {section['offset']}")
    return data


def canonical_codes(lengths: list[int]) -> dict[tuple[int, int], int]:
    """Section 8.2: (length, code) -> symbol, codes assigned as in DEFLATE."""
    table, code, previous = {}, -1, 0
    for length, symbol in sorted((l, s) for s, l in enumerate(lengths) if l):
        code = 0 if code < 0 else (code + 1) << (length - previous)
        table[(length, code)] = symbol
        previous = length
    return table


def read_stream(data: bytes, width: int, count: int | None, cap: int) -> list[int]:
    """Section 8: decode a stream section; ``count`` None means "any count up to ``cap``"."""
    cursor = Cursor(data)
    form, stored_width, max_code_length = cursor.u(1), cursor.u(1), cursor.u(1)
    cursor.zero(1, "stream.reserved")
    stored_count = cursor.u(8)
    require(stored_width == width, f"stream width {stored_width}, expected {width}")
    require(stored_count == count if count is not None else stored_count <= cap, f"stream count {stored_count}")
    count = stored_count

    if form == 0:
        require(max_code_length == 0, "max_code_length of a packed stream")
        payload = cursor.take((count * width + 7) // 8)
        require(cursor.position == cursor.end, "bytes after the packed payload")
        check_padding(payload, count * width)
        return bits_msb_first(payload, count, width)

    require(form == 1 and 1 <= max_code_length <= 24, "stream form or max_code_length")
    alphabet_size, block_size, payload_bits = cursor.u(4), cursor.u(4), cursor.u(8)
    require(alphabet_size <= 1 << width and (alphabet_size == 0) == (count == 0), "alphabet_size")
    require(block_size >= 1, "block_size")
    table_bytes = cursor.take((5 * alphabet_size + 7) // 8)
    check_padding(table_bytes, 5 * alphabet_size)
    lengths = bits_msb_first(table_bytes, alphabet_size, 5)
    require(max(lengths, default=0) <= max_code_length, "code length above max_code_length")
    entries = max(0, -(-count // block_size) - 1)
    block_offsets = [cursor.u(8) for _ in range(entries)]
    payload = cursor.take((payload_bits + 7) // 8)
    require(cursor.position == cursor.end, "bytes after the Huffman payload")
    check_padding(payload, payload_bits)

    present = [s for s, length in enumerate(lengths) if length]
    if count == 0:
        return []
    if len(present) == 1:
        require(lengths[present[0]] == 1 and payload_bits == 0, "single-symbol rule")
        return present * count
    require(sum(2.0 ** -lengths[s] for s in present) == 1.0, "Kraft sum is not 1")
    table = canonical_codes(lengths)
    bits = "".join(f"{byte:08b}" for byte in payload)[:payload_bits]
    symbols, position, code, length, starts = [], 0, 0, 0, []
    for bit in bits:
        if length == 0 and len(symbols) % block_size == 0 and symbols:
            starts.append(position)
        code, length, position = (code << 1) | int(bit), length + 1, position + 1
        if (length, code) in table:
            symbols.append(table[(length, code)])
            code = length = 0
    require(length == 0 and len(symbols) == count, "payload does not hold exactly count codes")
    require(starts == block_offsets, f"block_offsets {block_offsets}, decoder found {starts}")
    return symbols


# --- section 9: encodings -------------------------------------------------------------------


def read_codebook(data: bytes, codebook_dtype: int, coding: int, n_clusters: int) -> np.ndarray:
    """Section 9.2: plain values, or zstd-compressed, shuffled order-key deltas."""
    nbytes = 4 if codebook_dtype == 0 else 2
    float_type, int_type = ("<f4", "<u4") if nbytes == 4 else ("<f2", "<u2")
    if coding == 1:
        try:
            declared = zstandard.get_frame_parameters(data).content_size
            require(declared == n_clusters * nbytes, "codebook zstd content size")
            data = zstandard.ZstdDecompressor().decompress(data, max_output_size=declared)
        except zstandard.ZstdError as error:
            raise Rejected(f"zstd frame: {error}") from None
    require(len(data) == n_clusters * nbytes, "codebook size")
    if coding == 0:
        return np.frombuffer(data, float_type)
    width = 8 * nbytes
    deltas = np.frombuffer(data, "u1").reshape(nbytes, n_clusters).T.copy().view(int_type).reshape(-1)
    keys, key, sign, top = [], 0, 1 << (width - 1), (1 << width) - 1
    for delta in deltas:
        key = (key + int(delta)) & top
        keys.append(key - sign if key >= sign else top - key)
    return np.array(keys, dtype=int_type).view(float_type)


def decode(info: dict, tensor: dict) -> np.ndarray:
    sections = [section_bytes(info, s) for s in tensor["sections"]]
    params, size, code = tensor["params"], tensor["size"], tensor["dtype"]
    out_dtype = "<u2" if code == 2 else DTYPES[code]

    if tensor["encoding"] == "raw":
        compression, shuffle = params
        require(compression in (0, 1) and shuffle in (0, 1), "raw params")
        itemsize = np.dtype(out_dtype).itemsize
        data = sections[0]
        if compression == 1:
            try:
                declared = zstandard.get_frame_parameters(data).content_size
                require(declared == size * itemsize, "zstd content size")
                data = zstandard.ZstdDecompressor().decompress(data, max_output_size=declared)
            except zstandard.ZstdError as error:
                raise Rejected(f"zstd frame: {error}") from None
        require(len(data) == size * itemsize, "raw size")
        if shuffle:
            data = np.frombuffer(data, "u1").reshape(itemsize, size).T.tobytes()
        if code == 9:
            require(all(byte in (0, 1) for byte in data), "bool byte other than 0 or 1")
        return np.frombuffer(data, out_dtype).reshape(tensor["shape"])

    if tensor["encoding"] in ("shared", "sparse-shared"):
        codebook_dtype, bits = params[0], params[1]
        n_clusters = struct.unpack_from("<I", params, 4)[0]
        require(codebook_dtype in (0, 1) and 1 <= bits <= 16 and 1 <= n_clusters <= 1 << bits, "shared params")
        coding = params[2] if tensor["encoding"] == "shared" else params[3]
        require(coding in (0, 1), "codebook_coding")
        raw_codebook = read_codebook(sections[0], codebook_dtype, coding, n_clusters)
        codebook = to_dtype(raw_codebook, code)
        if tensor["encoding"] == "shared":
            require(params[3] == 0, "shared.reserved")
            assignments = read_stream(sections[1], bits, size, size)
            require(all(a < n_clusters for a in assignments), "assignment beyond the codebook")
            return codebook[np.array(assignments, dtype=np.int64)].reshape(tensor["shape"])
        index_bits, zero_slot = params[2], struct.unpack_from("<I", params, 8)[0]
        require(1 <= index_bits <= 16 and zero_slot < n_clusters, "sparse params")
        require(raw_codebook[zero_slot] == 0 and not np.signbit(raw_codebook[zero_slot]),
                "codebook[zero_slot] is not +0.0")
        gaps = read_stream(sections[2], index_bits, None, size)
        assignments = read_stream(sections[1], bits, len(gaps), size)
        positions = np.cumsum(np.array(gaps, dtype=np.int64) + 1) - 1
        require(positions.size == 0 or positions[-1] < size, "an entry lies past the end of the tensor")
        require(all(a < n_clusters for a in assignments), "assignment beyond the codebook")
        dense = np.zeros(size, out_dtype)
        dense[positions] = codebook[np.array(assignments, dtype=np.int64)]
        return dense.reshape(tensor["shape"])

    if tensor["encoding"] == "uniform":
        bits, axis, channels = params[0], params[1], struct.unpack_from("<I", params, 4)[0]
        require(params[2:4] == b"\0\0" and 1 <= bits <= 16, "uniform params")
        require(channels == 1 if axis == 255 else axis == 0 and tensor["shape"] and channels == tensor["shape"][0],
             "uniform axis and channels")
        require(len(sections[0]) == 8 * channels, "qparams size")
        scales = np.frombuffer(sections[0], "<f4", channels)
        zero_points = np.frombuffer(sections[0], "<i4", channels, offset=4 * channels)
        require(bool(np.all(np.isfinite(scales))), "scale not finite")
        per_channel = size // channels if channels else 0  # the spec leaves 0 / 0 undefined
        levels = np.array(read_stream(sections[1], bits, size, size), dtype=np.int64).reshape(channels, per_channel)
        values = (levels - zero_points[:, None].astype(np.int64)).astype("<f4") * scales[:, None]
        return to_dtype(values, code).reshape(tensor["shape"])

    rank, left, right = struct.unpack("<III", params)
    rows = tensor["shape"][0]
    columns = size // rows if rows else 0
    factors = info["tensors"]
    require(rank >= 1 and max(left, right) < len(factors), "lowrank rank or factor index")
    require(factors[left]["factor"] and factors[right]["factor"], "lowrank factors not flagged factor")
    left_array = as_float64(decode(info, factors[left]), factors[left]["dtype"]).reshape(rows, rank)
    right_array = as_float64(decode(info, factors[right]), factors[right]["dtype"]).reshape(rank, columns)
    return to_dtype(left_array @ right_array, code).reshape(tensor["shape"])


def as_float64(array: np.ndarray, code: int) -> np.ndarray:
    if code == 2:  # bfloat16 bits: the top half of a binary32
        return (array.astype("<u4") << 16).view("<f4").astype(np.float64)
    return array.astype(np.float64)


# --- section 13: test vectors ---------------------------------------------------------------


def decode_all(data: bytes, max_tensor_bytes: int = 4 << 30) -> dict[str, np.ndarray]:
    """Decode every listed tensor, applying the decoded-size limit of section 12 first."""
    info = read_file(data)
    arrays = {}
    for tensor in info["tensors"]:
        if tensor["factor"]:
            continue
        itemsize = 2 if tensor["dtype"] == 2 else np.dtype(DTYPES[tensor["dtype"]]).itemsize
        require(tensor["size"] * itemsize <= max_tensor_bytes, f"tensor {tensor['name']!r} above max_tensor_bytes")
        arrays[tensor["name"]] = decode(info, tensor)
    return arrays


def check_vector(path: Path) -> list[str]:
    arrays = decode_all(path.read_bytes())
    with np.load(path.with_suffix(".npz")) as expected:
        wanted = {name: expected[name] for name in expected.files}
    if list(arrays) != list(wanted):
        return [f"{path.name}: tensors {list(arrays)} != {list(wanted)}"]
    return [
        f"{path.name}: tensor {name!r} differs from the .npz"
        for name, actual in arrays.items()
        if actual.shape != wanted[name].shape or actual.tobytes() != wanted[name].tobytes()
    ]


def check_malformed(folder: Path) -> list[str]:
    """Return the malformed files this decoder accepts although expected.json lists a fault."""
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    problems = []
    for name, case in expected.items():
        faulty = case["error"] is not None or case["call"] == "verify"
        try:
            decode_all((folder / name).read_bytes(), case.get("max_tensor_bytes", 4 << 30))
            accepted = True
        except Rejected:
            accepted = False
        if accepted == faulty:
            problems.append(f"{name}: {'accepted' if accepted else 'rejected'}, expected "
                            f"{case['error'] or case['call']}")
    return problems


def main(argv: list[str]) -> int:
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    if argv == ["--malformed"]:
        problems = check_malformed(fixtures / "malformed")
        print("\n".join(problems) or "every malformed file is rejected and every valid one accepted")
        return 1 if problems else 0
    paths = [Path(p) for p in argv] or sorted((fixtures / "vectors").glob("*.dcf"))
    failures = 0
    for path in paths:
        try:
            problems = check_vector(path)
        except Rejected as error:
            problems = [f"{path.name}: rejected: {error}"]
        failures += bool(problems)
        print("\n".join(problems) if problems else f"{path.name}: ok")
    print(f"{len(paths) - failures} of {len(paths)} vectors decoded by hand match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

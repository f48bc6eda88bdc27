"""Benchmark dcformat's Huffman streams against bitarray and zlib, and write JSON.

Usage::

    python tools/bench_huffman.py [--out FILE] [--repeat 5] [--weights FILE]

Cases:

- ``squeezenet-indices``: 5-bit cluster indices of the non-zero weights of ``conv_final`` in
  the Deep Compression SqueezeNet release
  (``../shared/real/squeezenet-dc/squeezenet_dc_weights.safetensors``), clustered by a 1-D
  k-means with 32 centroids, linear initialisation (evenly spaced between the minimum and the
  maximum, as Deep Compression does) and 20 Lloyd iterations. Skipped, with the reason in
  ``skipped``, where the file is absent.
- ``random-gaps-1m``: 5-bit relative-index gaps, with fillers, of a seeded random tensor of
  1,000,000 elements of which 10 % are kept.
- ``random-gaps-16m``: the same at 16,000,000 elements, for throughput on a longer stream.

For each case the JSON gives the order-0 entropy and the coded payload bits, whose ratio must
be at most 1.01, and the section sizes of both stream forms. It also gives the best of
``--repeat`` timings of dcformat's ``encode_stream`` and ``decode_stream`` (huffman form)
and of three baselines measured in the same run. The baselines are bitarray's own ``encode``
and ``decode`` with a ``decodetree`` of the same code, and zlib level 9 on the packed bytes.
The third, for decoding only, is a vectorised numpy table decoder (``numpy_table_decode``
below), the alternative to bitarray's C decoder that ``dcformat.huffman`` does not use. ``speedup`` is baseline seconds
divided by dcformat seconds. The exit status is 1 when a round trip fails or a case misses
the 1 % bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import zlib
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import bitarray  # noqa: E402
from bitarray import decodetree  # noqa: E402

from dcformat import bitpack, huffman  # noqa: E402
from dcformat.constants import StreamForm  # noqa: E402
from dcformat.streams import (  # noqa: E402
    decode_stream,
    default_max_code_length,
    encode_stream,
    read_stream_info,
)

DEFAULT_WEIGHTS = (
    REPO_ROOT.parent / "shared" / "real" / "squeezenet-dc" / "squeezenet_dc_weights.safetensors"
)
WEIGHT_TENSOR = "conv_final.weight"
WIDTH = 5
ENTROPY_BOUND = 1.01
SEED = 20161


def kmeans_indices(values: np.ndarray, clusters: int, iterations: int) -> np.ndarray:
    """Cluster 1-D values with Lloyd's algorithm from linear initialisation."""
    centroids = np.linspace(values.min(), values.max(), clusters)
    for _ in range(iterations):
        boundaries = (centroids[1:] + centroids[:-1]) / 2
        indices = np.searchsorted(boundaries, values)
        sums = np.bincount(indices, weights=values, minlength=clusters)
        sizes = np.bincount(indices, minlength=clusters)
        centroids = np.where(sizes > 0, sums / np.maximum(sizes, 1), centroids)
    return np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)


def squeezenet_indices(weights: Path) -> tuple[np.ndarray, dict]:
    from safetensors.numpy import load_file

    tensor = load_file(str(weights))[WEIGHT_TENSOR]
    values = tensor.reshape(-1).astype(np.float64)
    values = values[values != 0]
    indices = kmeans_indices(values, 1 << WIDTH, iterations=20)
    source = {
        "file": str(weights),
        "tensor": WEIGHT_TENSOR,
        "shape": list(tensor.shape),
        "symbols": "cluster index of each non-zero weight",
        "quantiser": "1-D k-means, 32 centroids, linear initialisation, 20 Lloyd iterations",
    }
    return indices, source


def random_gaps(size: int, density: float, seed: int) -> tuple[np.ndarray, dict]:
    """Return the gaps, fillers included, of a random mask with ``density`` kept elements."""
    rng = np.random.default_rng(seed)
    positions = np.flatnonzero(rng.random(size) < density)
    zeros_before = np.diff(positions, prepend=-1) - 1
    filler_gap = (1 << WIDTH) - 1
    fillers = zeros_before >> WIDTH  # D zeros need D div 2^bits fillers of gap 2^bits - 1
    gaps = np.full(int(fillers.sum()) + positions.size, filler_gap, dtype=np.int64)
    entry_at = np.cumsum(fillers + 1) - 1
    gaps[entry_at] = zeros_before & filler_gap
    source = {
        "symbols": f"relative-index gaps with fillers, {WIDTH}-bit",
        "elements": size,
        "density": density,
        "seed": seed,
        "fillers": int(fillers.sum()),
    }
    return gaps, source


def numpy_table_decode(payload: bytes, payload_bits: int, count: int,
                       lengths: np.ndarray) -> np.ndarray:
    """Decode with numpy alone, the alternative to bitarray's C decoder.

    A lookup table gives the code length and symbol as if a code started at every bit of the
    payload. The code starts reachable from bit 0 then follow by pointer jumping: a 64-step
    jump table built by squaring the one-step table six times, a scalar walk over every 64th
    start, and 64 vectorised steps from those starts. Needs codes of at most 24 bits.
    """
    longest = int(lengths.max())
    codes = huffman.canonical_codes(lengths)
    table_length = np.zeros(1 << longest, dtype=np.int64)
    table_symbol = np.zeros(1 << longest, dtype=np.uint16)
    for symbol in np.flatnonzero(lengths):  # once per alphabet symbol
        spare = longest - int(lengths[symbol])
        first = int(codes[symbol]) << spare
        table_length[first : first + (1 << spare)] = lengths[symbol]
        table_symbol[first : first + (1 << spare)] = symbol

    data = np.concatenate([np.frombuffer(payload, dtype=np.uint8), np.zeros(4, np.uint8)])
    data = data.astype(np.uint32)
    words = (data[:-3] << 24) | (data[1:-2] << 16) | (data[2:-1] << 8) | data[3:]
    positions = np.arange(payload_bits, dtype=np.int64)
    windows = (words[positions >> 3] << (positions & 7).astype(np.uint32)) >> (32 - longest)
    # Codes read near the end may run past it; the end maps to itself.
    step = np.append(np.minimum(positions + table_length[windows], payload_bits), payload_bits)
    symbol_at = np.append(table_symbol[windows], 0)

    jump = step
    for _ in range(6):
        jump = jump[jump]
    lanes = -(-count // 64)
    lane_starts = np.empty(lanes, dtype=np.int64)
    position = 0
    for lane in range(lanes):
        lane_starts[lane] = position
        position = jump[position]
    out = np.empty((lanes, 64), dtype=np.uint16)
    current = lane_starts
    for k in range(64):
        out[:, k] = symbol_at[current]
        current = step[current]
    return out.reshape(-1)[:count]


def best_time(function, repeat: int) -> tuple[float, object]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def throughput(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_case(name: str, symbols: np.ndarray, source: dict, repeat: int) -> dict:
    count = int(symbols.size)
    frequencies = np.bincount(symbols, minlength=1 << WIDTH)
    entropy = huffman.entropy_bits(frequencies)

    # dcformat, huffman form: the whole section, code construction included.
    encode_seconds, section = best_time(
        lambda: encode_stream(symbols, WIDTH, form=StreamForm.HUFFMAN), repeat
    )
    decode_seconds, decoded = best_time(
        lambda: decode_stream(section, count=count, width=WIDTH, section="bench"), repeat
    )
    info = read_stream_info(section, section="bench")
    packed_section = encode_stream(symbols, WIDTH, form=StreamForm.PACKED)
    automatic = read_stream_info(encode_stream(symbols, WIDTH), section="bench").form

    # Baseline 1: bitarray's own encoder and tree decoder, with the same code.
    codes = huffman.canonical_codes(info.code_lengths)
    table = {
        int(symbol): bitarray.bitarray(format(int(codes[symbol]), f"0{int(length)}b"))
        for symbol, length in enumerate(info.code_lengths)
        if length
    }
    tree = decodetree(table)

    def bitarray_encode():
        bits = bitarray.bitarray(endian="big")
        bits.encode(table, symbols.tolist())
        return bits

    bitarray_encode_seconds, bits = best_time(bitarray_encode, repeat)
    bitarray_decode_seconds, bitarray_decoded = best_time(
        lambda: np.fromiter(bits.decode(tree), dtype=np.uint8, count=count), repeat
    )

    # Baseline 2: the numpy table decoder; slow, so it runs at most twice.
    payload = bytes(section[info.header_bytes :])
    numpy_decode_seconds, numpy_decoded = best_time(
        lambda: numpy_table_decode(payload, info.payload_bits, count, info.code_lengths),
        min(repeat, 2),
    )

    # Baseline 3: zlib level 9 on the packed bytes.
    packed = bitpack.pack(symbols, WIDTH)
    zlib_encode_seconds, compressed = best_time(lambda: zlib.compress(packed, 9), repeat)
    zlib_decode_seconds, zlib_decoded = best_time(
        lambda: bitpack.unpack(zlib.decompress(compressed), count, WIDTH), repeat
    )

    round_trip = bool(
        np.array_equal(decoded, symbols)
        and np.array_equal(bitarray_decoded, symbols)
        and np.array_equal(numpy_decoded, symbols)
        and np.array_equal(zlib_decoded, symbols)
        and len(bits) == info.payload_bits
    )
    ratio = info.payload_bits / entropy if entropy else 1.0
    return {
        "case": name,
        "source": source,
        "count": count,
        "width": WIDTH,
        "max_code_length": info.max_code_length,
        "round_trip_ok": round_trip,
        "entropy_bits": round(entropy, 1),
        "payload_bits": info.payload_bits,
        "payload_to_entropy": round(ratio, 5),
        "within_1_percent": ratio <= ENTROPY_BOUND,
        "bits_per_symbol": {
            "entropy": round(entropy / count, 4),
            "huffman_payload": round(info.payload_bits / count, 4),
            "huffman_section": round(8 * len(section) / count, 4),
            "packed_section": round(8 * len(packed_section) / count, 4),
            "zlib_packed": round(8 * len(compressed) / count, 4),
        },
        "bytes": {
            "huffman_section": len(section),
            "huffman_header": info.header_bytes,
            "packed_section": len(packed_section),
            "zlib_packed": len(compressed),
        },
        "automatic_form": automatic.name.lower(),
        "seconds": {
            "dcformat_encode": encode_seconds,
            "dcformat_decode": decode_seconds,
            "bitarray_encode": bitarray_encode_seconds,
            "bitarray_decode": bitarray_decode_seconds,
            "numpy_table_decode": numpy_decode_seconds,
            "zlib_encode": zlib_encode_seconds,
            "zlib_decode": zlib_decode_seconds,
        },
        "symbols_per_second": {
            "dcformat_encode": throughput(count, encode_seconds),
            "dcformat_decode": throughput(count, decode_seconds),
            "bitarray_encode": throughput(count, bitarray_encode_seconds),
            "bitarray_decode": throughput(count, bitarray_decode_seconds),
            "numpy_table_decode": throughput(count, numpy_decode_seconds),
            "zlib_encode": throughput(count, zlib_encode_seconds),
            "zlib_decode": throughput(count, zlib_decode_seconds),
        },
        "speedup": {
            "encode_vs_bitarray": round(bitarray_encode_seconds / encode_seconds, 3),
            "decode_vs_bitarray": round(bitarray_decode_seconds / decode_seconds, 3),
            "decode_vs_numpy_table": round(numpy_decode_seconds / decode_seconds, 3),
            "encode_vs_zlib": round(zlib_encode_seconds / encode_seconds, 3),
            "decode_vs_zlib": round(zlib_decode_seconds / decode_seconds, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per timing; the best is kept (default 5)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="SqueezeNet safetensors file (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    cases = []
    skipped = []
    if args.weights.is_file():
        symbols, source = squeezenet_indices(args.weights)
        cases.append(bench_case("squeezenet-indices", symbols, source, args.repeat))
    else:
        skipped.append({"case": "squeezenet-indices", "reason": f"{args.weights} not found"})
    for name, size in (("random-gaps-1m", 1_000_000), ("random-gaps-16m", 16_000_000)):
        symbols, source = random_gaps(size, 0.1, SEED)
        cases.append(bench_case(name, symbols, source, args.repeat))

    report = {
        "tool": "tools/bench_huffman.py",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "bitarray": bitarray.__version__,
        "repeat": args.repeat,
        "default_max_code_length": default_max_code_length(WIDTH),
        "cases": cases,
        "skipped": skipped,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    failed = [case["case"] for case in cases
              if not (case["round_trip_ok"] and case["within_1_percent"])]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

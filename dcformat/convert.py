"""Read the compressed SqueezeNet released by the Deep Compression authors, and convert it.

The release is two files: a ``.net`` file with the authors' own compressed layout, and the
Caffe network description (``.prototxt``) that gives the layer order and shapes. The ``.net``
file has no header of its own, so it cannot be read without the prototxt. All numbers are
little-endian:

1. one ``u32`` entry count per convolution layer, in prototxt order;
2. then, per layer in the same order: a codebook of 256 ``f32`` values whose entry 0 is 0.0,
   and the layer's biases (``f32``, one per output channel). Then the cluster index of each
   entry (one ``u8`` each), and the relative-index gaps, two 4-bit values per byte, low
   nibble first;
3. entry ``i`` sits at flat position ``p[i] = p[i - 1] + gap[i] + 1`` (``p[-1] = -1``) of the
   row-major weight tensor. An entry with cluster index 0 is a filler and decodes to 0.0, as
   does every position without an entry. The file ends exactly after the last layer.

This is the relative index of ``spec/FORMAT.md`` (section 9.3) with 4-bit gaps, 8-bit packed
cluster indices and no entropy coding. :func:`read_release` parses and checks both files;
:func:`convert_release` writes the same weights as a DCF file (``sparse-shared`` weights with
the authors' codebooks, Huffman-coded streams, raw biases) that decodes to identical bits.

Layer shapes come from the prototxt: ``num_output`` and ``kernel_size`` of each
``Convolution`` layer, and input channels followed through the graph (a ``Concat`` along the
channel axis adds up the channels of its inputs).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from . import __version__, encodings
from .binary import ByteReader
from .constants import DTYPE_NAMES, ENCODING_NAMES, MAX_STREAM_WIDTH, DType, SectionKind
from .container import ContainerWriter, TensorEntry
from .encoder import AUTO_INDEX_BITS, HASHES_KEY, CompressionReport, TensorReport, tensor_sha256
from .errors import IndexOutOfRangeError, InputError, InvalidFieldError, ReservedFieldError

__all__ = [
    "ConvLayer",
    "ReleaseLayer",
    "ReleaseFile",
    "parse_prototxt",
    "conv_layers",
    "read_release",
    "convert_release",
    "is_release_path",
]

logger = logging.getLogger(__name__)

NET_SUFFIX = ".net"
SECTION = "net"
CODEBOOK_ENTRIES = 256  # the release stores 8-bit cluster indices
RELEASE_INDEX_BITS = 4  # the release packs two gaps per byte
RELEASE_BITS = 8

# Caffe layer types whose learned parameters the .net layout has no place for.
UNSUPPORTED_WEIGHTED_TYPES = frozenset(
    {"InnerProduct", "Deconvolution", "BatchNorm", "Scale", "PReLU", "Embed", "Bias"}
)
# Caffe layer types whose output channel count this reader does not derive.
UNKNOWN_CHANNEL_TYPES = frozenset({"Slice", "Reshape", "Flatten", "InnerProduct"})


def is_release_path(path: str | os.PathLike) -> bool:
    """Return whether ``path`` names a ``.net`` release file (by its suffix)."""
    return Path(path).suffix.lower() == NET_SUFFIX


# --------------------------------------------------------------------------------------
# Prototxt (protobuf text format)

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}:<>\[\],;])
  | (?P<word>[^\s{}:<>\[\],;"'\#]+)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int
    column: int


def _tokenize(text: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    line, line_start = 1, 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InputError(f"{source}: line {line}, column {position - line_start + 1}: "
                             f"invalid character {text[position]!r} in the prototxt")
        kind = match.lastgroup
        value = match.group()
        if kind != "space":
            tokens.append(_Token(kind, value, line, position - line_start + 1))
        newlines = value.count("\n")
        if newlines:
            line += newlines
            line_start = position + value.rindex("\n") + 1
        position = match.end()
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


class _PrototxtParser:
    def __init__(self, tokens: list[_Token], source: str) -> None:
        self.tokens = tokens
        self.position = 0
        self.source = source

    def _error(self, expected: str) -> InputError:
        if self.position < len(self.tokens):
            token = self.tokens[self.position]
            where = f"line {token.line}, column {token.column}"
            found = repr(token.text)
        else:
            last_line = self.tokens[-1].line if self.tokens else 1
            where = f"line {last_line}, at the end of the file"
            found = "the end of the file"
        return InputError(f"{self.source}: {where}: expected {expected}, found {found}")

    def _peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, kind: str, text: str | None = None) -> _Token | None:
        token = self._peek()
        if token is not None and token.kind == kind and (text is None or token.text == text):
            self.position += 1
            return token
        return None

    def message(self, closing: str | None) -> dict[str, list[Any]]:
        fields: dict[str, list[Any]] = {}
        while True:
            if closing is not None and self._take("punct", closing):
                return fields
            if self._peek() is None:
                if closing is None:
                    return fields
                raise self._error(f"{closing!r} to close a message")
            name = self._take("word")
            if name is None:
                raise self._error("a field name")
            has_colon = self._take("punct", ":") is not None
            if self._take("punct", "{"):
                value: Any = self.message("}")
            elif self._take("punct", "<"):
                value = self.message(">")
            elif not has_colon:
                raise self._error(f"':' or '{{' after field {name.text!r}")
            elif self._take("punct", "["):
                value = self._list()
                fields.setdefault(name.text, []).extend(value)
                self._take("punct", ",") or self._take("punct", ";")
                continue
            else:
                value = self._scalar()
            fields.setdefault(name.text, []).append(value)
            self._take("punct", ",") or self._take("punct", ";")

    def _scalar(self) -> str:
        token = self._take("string")
        if token is not None:
            # Adjacent string literals concatenate, as in C.
            parts = [_unquote(token.text)]
            while (token := self._take("string")) is not None:
                parts.append(_unquote(token.text))
            return "".join(parts)
        token = self._take("word")
        if token is None:
            raise self._error("a value")
        return token.text

    def _list(self) -> list[Any]:
        values: list[Any] = []
        if self._take("punct", "]"):
            return values
        while True:
            values.append(self.message("}") if self._take("punct", "{") else self._scalar())
            if self._take("punct", "]"):
                return values
            if not self._take("punct", ","):
                raise self._error("',' or ']' in a list")


def parse_prototxt(text: str, *, source: str = "<prototxt>") -> dict[str, list[Any]]:
    """Parse protobuf text format into nested dicts: field name -> list of values.

    Scalars stay strings (quoted strings unescaped); nested messages are dicts of the same
    form. Raises :class:`InputError` naming the line and column of a syntax error.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    parser = _PrototxtParser(_tokenize(text, source), source)
    return parser.message(None)


@dataclass(frozen=True)
class ConvLayer:
    """One convolution layer of the network description, with its derived shapes."""

    name: str
    num_output: int
    input_channels: int
    kernel: tuple[int, int]
    group: int = 1
    bias: bool = True

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """Caffe's OIHW layout: output channels, input channels per group, height, width."""
        return (self.num_output, self.input_channels // self.group, *self.kernel)

    @property
    def weight_size(self) -> int:
        return int(np.prod(self.weight_shape))

    @property
    def bias_size(self) -> int:
        return self.num_output if self.bias else 0


def _one(message: dict[str, list[Any]], key: str, where: str, default: Any = None) -> Any:
    values = message.get(key, [])
    if not values:
        if default is None:
            raise InputError(f"{where}: missing {key!r}")
        return default
    return values[-1]


def _integer(value: Any, key: str, where: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise InputError(f"{where}: {key} must be an integer, found {value!r}") from None


def _positive_int(value: Any, key: str, where: str) -> int:
    number = _integer(value, key, where)
    if number < 1:
        raise InputError(f"{where}: {key} must be at least 1, found {number}")
    return number


def _boolean(value: Any, key: str, where: str) -> bool:
    text = str(value).lower()
    if text in ("true", "t", "1"):
        return True
    if text in ("false", "f", "0"):
        return False
    raise InputError(f"{where}: {key} must be true or false, found {value!r}")


def _input_channels(network: dict[str, list[Any]], source: str) -> dict[str, int | None]:
    """Channels of the network inputs declared at the top level (``input`` with its shape)."""
    channels: dict[str, int | None] = {}
    names = [str(name) for name in network.get("input", [])]
    dims = network.get("input_dim", [])
    shapes = network.get("input_shape", [])
    for index, name in enumerate(names):
        where = f"{source}: input {name!r}"
        if len(dims) >= 4 * (index + 1):
            channels[name] = _positive_int(dims[4 * index + 1], "input_dim", where)
        elif index < len(shapes) and len(shapes[index].get("dim", [])) >= 2:
            channels[name] = _positive_int(shapes[index]["dim"][1], "input_shape.dim", where)
        else:
            channels[name] = None
    return channels


def _conv_layer(layer: dict[str, list[Any]], name: str, channels: dict[str, int | None],
                where: str) -> ConvLayer:
    bottoms = [str(b) for b in layer.get("bottom", [])]
    if len(bottoms) != 1:
        raise InputError(f"{where}: a Convolution needs exactly one bottom, found {len(bottoms)}")
    if bottoms[0] not in channels:
        raise InputError(f"{where}: bottom {bottoms[0]!r} is not produced by any earlier layer or input")
    input_channels = channels[bottoms[0]]
    if input_channels is None:
        raise InputError(f"{where}: the channel count of bottom {bottoms[0]!r} cannot be derived "
                         "from the prototxt")
    param = _one(layer, "convolution_param", where, {})
    num_output = _positive_int(_one(param, "num_output", where), "num_output", where)
    kernel = param.get("kernel_size", [])
    if kernel:
        sizes = [_positive_int(k, "kernel_size", where) for k in kernel]
        kernel_hw = (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])
    else:
        kernel_hw = (_positive_int(_one(param, "kernel_h", where), "kernel_h", where),
                     _positive_int(_one(param, "kernel_w", where), "kernel_w", where))
    group = _positive_int(_one(param, "group", where, "1"), "group", where)
    if input_channels % group or num_output % group:
        raise InputError(f"{where}: group {group} does not divide the {input_channels} input and "
                         f"{num_output} output channels")
    bias = _boolean(_one(param, "bias_term", where, "true"), "bias_term", where)
    return ConvLayer(name, num_output, input_channels, kernel_hw, group, bias)


def conv_layers(prototxt: str | os.PathLike | dict[str, list[Any]]) -> list[ConvLayer]:
    """Return the convolution layers of a Caffe network description, in file order.

    ``prototxt`` is a path or an already parsed message. Input channels follow the graph from
    the declared inputs: a convolution produces ``num_output`` channels, a ``Concat`` along
    axis 1 the sum of its inputs', and other layers pass on the channels of their first input.
    Raises :class:`InputError` for a layer whose weights the ``.net`` layout cannot hold, or
    a convolution whose input channels cannot be derived.
    """
    if isinstance(prototxt, dict):
        network, source = prototxt, "<prototxt>"
    else:
        source = os.fspath(prototxt)
        network = parse_prototxt(Path(prototxt).read_text(encoding="utf-8"), source=source)
    if "layers" in network and "layer" not in network:
        raise InputError(f"{source}: the V1 'layers' format is not supported; convert it to the "
                         "'layer' format with Caffe's upgrade_net_proto_text tool")

    channels = _input_channels(network, source)
    layers: list[ConvLayer] = []
    for index, layer in enumerate(network.get("layer", [])):
        name = str(_one(layer, "name", f"{source}: layer {index}", f"layer{index}"))
        kind = str(_one(layer, "type", f"{source}: layer {name!r}"))
        where = f"{source}: layer {name!r} ({kind})"
        tops = [str(t) for t in layer.get("top", [])]
        bottoms = [str(b) for b in layer.get("bottom", [])]
        produced: int | None
        if kind == "Input":
            shapes = _one(layer, "input_param", where, {}).get("shape", [])
            for top_index, top in enumerate(tops):
                dims = shapes[top_index].get("dim", []) if top_index < len(shapes) else []
                channels[top] = _positive_int(dims[1], "shape.dim", where) if len(dims) >= 2 else None
            continue
        if kind == "Convolution":
            conv = _conv_layer(layer, name, channels, where)
            layers.append(conv)
            produced = conv.num_output
        elif kind in UNSUPPORTED_WEIGHTED_TYPES:
            # NOTE: the .net layout of the SqueezeNet release stores convolutions only; how the
            # authors' other releases lay out fully connected or normalisation layers is unknown.
            raise InputError(f"{where}: layers of type {kind} are not supported in .net files")
        elif kind == "Concat":
            param = _one(layer, "concat_param", where, {})
            axis = _integer(_one(param, "axis", where, _one(param, "concat_dim", where, "1")), "axis", where)
            inputs = [channels.get(b) for b in bottoms]
            if axis in (1, -3):
                produced = None if None in inputs or not inputs else sum(inputs)
            else:
                produced = inputs[0] if inputs else None
        elif kind in UNKNOWN_CHANNEL_TYPES:
            produced = None
        else:
            produced = channels.get(bottoms[0]) if bottoms else None
        for top in tops:
            channels[top] = produced
    if not layers:
        raise InputError(f"{source}: no Convolution layers found")
    return layers


# --------------------------------------------------------------------------------------
# The .net file


@dataclass(frozen=True)
class ReleaseLayer:
    """The absolute byte offsets of one layer's parts in the ``.net`` file."""

    layer: ConvLayer
    count: int  # entries, fillers included
    count_offset: int
    codebook_offset: int
    bias_offset: int
    indices_offset: int
    gaps_offset: int
    end: int

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def codebook_bytes(self) -> int:
        return self.bias_offset - self.codebook_offset

    @property
    def bias_bytes(self) -> int:
        return self.indices_offset - self.bias_offset

    @property
    def indices_bytes(self) -> int:
        return self.gaps_offset - self.indices_offset

    @property
    def gaps_bytes(self) -> int:
        return self.end - self.gaps_offset


@dataclass
class ReleaseFile:
    """A parsed and checked ``.net`` file: layer positions and accessors for each part.

    Every accessor returns a fresh array. :func:`read_release` has already checked that every
    part is present, that the file ends after the last layer, that each codebook's entry 0 is
    zero and that every entry position lies inside its tensor.
    """

    path: str
    file_bytes: int
    layers: list[ReleaseLayer]
    data: bytes = field(repr=False)

    def layer(self, name: str) -> ReleaseLayer:
        """Return the layer called ``name`` (a layer name, or a tensor name ending in .weight/.bias)."""
        base = name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name
        for layer in self.layers:
            if layer.name == base:
                return layer
        known = ", ".join(repr(layer.name) for layer in self.layers[:10])
        raise InputError(f"layer {name!r} not found in {self.path}; it has: {known}"
                         + (" ..." if len(self.layers) > 10 else ""))

    def codebook(self, layer: ReleaseLayer) -> np.ndarray:
        """Return the layer's 256 shared weights (float32), entry 0 as +0.0 even if stored as -0.0."""
        codebook = np.frombuffer(self.data, "<f4", CODEBOOK_ENTRIES, layer.codebook_offset).copy()
        # Fillers and unstored positions decode to the same zero, whatever the sign stored.
        codebook[0] = 0.0
        return codebook

    def biases(self, layer: ReleaseLayer) -> np.ndarray:
        return np.frombuffer(self.data, "<f4", layer.layer.bias_size, layer.bias_offset).copy()

    def indices(self, layer: ReleaseLayer) -> np.ndarray:
        """Return the cluster index of each entry (uint8), fillers included."""
        return np.frombuffer(self.data, np.uint8, layer.count, layer.indices_offset).copy()

    def gaps(self, layer: ReleaseLayer) -> np.ndarray:
        """Return the 4-bit gap of each entry (uint8), unpacked low nibble first."""
        packed = np.frombuffer(self.data, np.uint8, layer.gaps_bytes, layer.gaps_offset)
        gaps = np.empty(2 * packed.size, dtype=np.uint8)
        gaps[0::2] = packed & 0x0F
        gaps[1::2] = packed >> 4
        return gaps[: layer.count]

    def positions(self, layer: ReleaseLayer) -> np.ndarray:
        """Return the flat position of each entry in the weight tensor (int64)."""
        return np.cumsum(self.gaps(layer).astype(np.int64) + 1) - 1

    def weights(self, layer: ReleaseLayer) -> np.ndarray:
        """Decode the weight tensor (float32, OIHW)."""
        dense = np.zeros(layer.layer.weight_size, dtype=np.float32)
        dense[self.positions(layer)] = self.codebook(layer)[self.indices(layer)]
        return dense.reshape(layer.layer.weight_shape)

    def tensors(self) -> dict[str, np.ndarray]:
        """Decode every tensor: ``NAME.weight`` then ``NAME.bias`` per layer, in file order."""
        result: dict[str, np.ndarray] = {}
        for layer in self.layers:
            result[f"{layer.name}.weight"] = self.weights(layer)
            if layer.layer.bias:
                result[f"{layer.name}.bias"] = self.biases(layer)
        return result


def read_release(net: str | os.PathLike | bytes, prototxt: str | os.PathLike | dict) -> ReleaseFile:
    """Parse and check a ``.net`` file against the layer shapes of its prototxt.

    ``net`` is a path or the file's bytes. Raises a :class:`~dcformat.errors.DCFormatError`
    subclass naming the field and its absolute byte offset for a malformed file:
    :class:`~dcformat.errors.TruncatedError` when a part is missing or bytes follow the last
    layer (also the symptom of a prototxt that does not match the file),
    :class:`~dcformat.errors.IndexOutOfRangeError` for an entry count or position past the
    tensor, :class:`~dcformat.errors.InvalidFieldError` for a codebook whose entry 0 is not
    0.0, and :class:`~dcformat.errors.ReservedFieldError` for a non-zero unused last nibble.
    """
    layers = conv_layers(prototxt)
    if isinstance(net, (bytes, bytearray, memoryview)):
        data, path = bytes(net), "<bytes>"
    elif isinstance(net, (str, os.PathLike)):
        data, path = Path(net).read_bytes(), os.fspath(net)
    else:
        raise TypeError(f"net must be a path or bytes, not {type(net).__name__}")

    reader = ByteReader(data, section=SECTION)
    counts = []
    for layer in layers:
        at = reader.offset
        count = reader.u32(f"{layer.name}.count")
        # Each entry advances the position by at least one, so a tensor has at most size entries.
        if count > layer.weight_size:
            raise IndexOutOfRangeError(
                section=SECTION, field=f"{layer.name}.count", offset=at,
                expected=f"at most {layer.weight_size} entries (the size of {layer.weight_shape})",
                found=count,
            )
        counts.append((count, at))

    parsed: list[ReleaseLayer] = []
    for layer, (count, count_offset) in zip(layers, counts):
        codebook_offset = reader.offset
        codebook = reader.array("<f4", CODEBOOK_ENTRIES, f"{layer.name}.codebook")
        if codebook[0] != 0:
            raise InvalidFieldError(
                section=SECTION, field=f"{layer.name}.codebook[0]", offset=codebook_offset,
                expected="0.0 (cluster index 0 decodes fillers)", found=float(codebook[0]),
            )
        bias_offset = reader.offset
        reader.read_bytes(4 * layer.bias_size, f"{layer.name}.biases")
        indices_offset = reader.offset
        reader.read_bytes(count, f"{layer.name}.indices")
        gaps_offset = reader.offset
        packed = reader.read_bytes((count + 1) // 2, f"{layer.name}.gaps")
        if count % 2 and packed[-1] >> 4:
            raise ReservedFieldError(
                section=SECTION, field=f"{layer.name}.gaps padding", offset=reader.offset - 1,
                expected="a zero high nibble after an odd number of gaps", found=f"0x{packed[-1]:02x}",
            )
        entry = ReleaseLayer(layer, count, count_offset, codebook_offset, bias_offset, indices_offset,
                             gaps_offset, reader.offset)
        parsed.append(entry)
    reader.expect_end(f"end of the {len(layers)} layers of the prototxt")

    release = ReleaseFile(path, len(data), parsed, data)
    for entry in parsed:
        if entry.count:
            last = int(release.positions(entry)[-1])
            if last >= entry.layer.weight_size:
                raise IndexOutOfRangeError(
                    section=SECTION, field=f"{entry.name}.gaps", offset=entry.gaps_offset,
                    expected=f"positions below {entry.layer.weight_size} (the size of {entry.layer.weight_shape})",
                    found=f"last position {last}",
                )
    logger.debug("read %s: %d layers, %d bytes", path, len(parsed), len(data))
    return release


# --------------------------------------------------------------------------------------
# Conversion to DCF


def _index_bits_choice(index_bits: int | str) -> tuple[int, ...]:
    if index_bits == "auto":
        return AUTO_INDEX_BITS
    if isinstance(index_bits, bool) or not isinstance(index_bits, int):
        raise TypeError(f"index_bits must be an int or 'auto', not {type(index_bits).__name__}")
    if not 1 <= index_bits <= MAX_STREAM_WIDTH:
        raise ValueError(f"index_bits must be from 1 to {MAX_STREAM_WIDTH} or 'auto', got {index_bits}")
    return (index_bits,)


def _stored_bytes(entry: TensorEntry) -> int:
    return sum(len(section.data) for section in entry.sections)


def _weight_entry(release: ReleaseFile, layer: ReleaseLayer, widths: Sequence[int],
                  encoding: str) -> tuple[TensorEntry, int | None, int]:
    """Encode one layer's weights with the authors' codebook; return (entry, index_bits, zero_slot).

    With ``encoding`` "auto", a dense ``shared`` tensor competes with the sparse candidates.

    The codebook is stored sorted, which changes no value: sorted centroids have small
    differences, so the delta-coded codebook (spec section 9.2) is about a third of the size.
    """
    conv = layer.layer
    codebook = release.codebook(layer)
    order = np.argsort(codebook, kind="stable")
    rank = np.empty(CODEBOOK_ENTRIES, dtype=np.uint8)
    rank[order] = np.arange(CODEBOOK_ENTRIES, dtype=np.uint8)
    assignments = np.full(conv.weight_size, rank[0], dtype=np.uint8)
    # Fillers carry cluster index 0, which maps to the zero slot, so writing them changes nothing.
    assignments[release.positions(layer)] = rank[release.indices(layer)]
    candidates = [
        (encodings.encode_sparse_shared(f"{conv.name}.weight", np.dtype(np.float32), conv.weight_shape,
                                        codebook[order], assignments, RELEASE_BITS, width, int(rank[0])),
         width)
        for width in widths
    ]
    if encoding == "auto":
        candidates.append((encodings.encode_shared(f"{conv.name}.weight", np.dtype(np.float32), conv.weight_shape,
                                                   codebook[order], assignments, RELEASE_BITS), None))
    entry, width = min(candidates, key=lambda pair: _stored_bytes(pair[0]))
    return entry, width, int(rank[0])


def convert_release(
    net: str | os.PathLike | bytes,
    prototxt: str | os.PathLike | dict,
    target: str | os.PathLike | BinaryIO,
    *,
    index_bits: int | str = "auto",
    encoding: str = "sparse-shared",
    alignment: int = 64,
) -> CompressionReport:
    """Write the weights of a ``.net`` release as a DCF file at ``target``; return a report.

    Each layer's weights become a ``sparse-shared`` tensor ``NAME.weight`` with the authors'
    256-entry codebook and 8-bit cluster indices. Its biases become a raw tensor
    ``NAME.bias``. ``index_bits`` is the gap width: ``"auto"`` keeps the smallest of 2
    to 8 bits per layer, and 4 keeps the authors' width (and their fillers). With ``encoding``
    "auto" a layer is stored as a dense ``shared`` tensor where that is smaller (dense layers
    need no gaps). ``alignment`` is the section alignment in bytes. Each stream is
    stored in the smaller of its packed and Huffman forms. The metadata records the tensors'
    content hashes as :func:`dcformat.encoder.compress` does. Decoding the file gives exactly
    the tensors of :meth:`ReleaseFile.tensors`.
    """
    widths = _index_bits_choice(index_bits)
    if encoding not in ("sparse-shared", "auto"):
        raise ValueError(f"encoding must be 'sparse-shared' or 'auto', not {encoding!r}")
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 1 \
            or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment!r}")
    release = read_release(net, prototxt)

    reports: list[TensorReport] = []
    hashes: dict[str, str] = {}
    writer = ContainerWriter(target, alignment_log2=alignment.bit_length() - 1)
    try:
        for layer in release.layers:
            entry, width, zero_slot = _weight_entry(release, layer, widths, encoding)
            weights = release.weights(layer)
            writer.add_tensor(entry)
            reports.append(_weight_report(entry, weights, width, zero_slot))
            hashes[entry.name] = tensor_sha256(weights)
            if layer.layer.bias:
                biases = release.biases(layer)
                bias_entry = encodings.encode_raw(f"{layer.name}.bias", biases)
                writer.add_tensor(bias_entry)
                reports.append(_bias_report(bias_entry, biases))
                hashes[bias_entry.name] = tensor_sha256(biases)
        document = {
            "encoder": {"name": "dcformat", "version": __version__},
            "source": {"format": "deep-compression-net", "file": Path(release.path).name},
            HASHES_KEY: hashes,
        }
        file_bytes = writer.close(document)
    except BaseException:
        writer.abort()
        raise
    return CompressionReport(reports, file_bytes, sum(r.original_bytes for r in reports))


def _weight_report(entry: TensorEntry, weights: np.ndarray, width: int | None,
                   zero_slot: int) -> TensorReport:
    nnz = int(np.count_nonzero(weights))
    kind = ENCODING_NAMES[entry.encoding]
    entries = fillers = None
    if width is not None:
        assignments = entry.symbols[SectionKind.ASSIGNMENTS]
        entries = int(assignments.size)
        fillers = int(np.count_nonzero(assignments == zero_slot))
    return TensorReport(
        name=entry.name, shape=tuple(weights.shape), dtype=DTYPE_NAMES[DType.FLOAT32],
        encoding=kind, original_bytes=weights.nbytes, stored_bytes=_stored_bytes(entry),
        size=weights.size, nnz=nnz, sparsity=1 - nnz / weights.size if weights.size else 0.0,
        bits=RELEASE_BITS, index_bits=width, n_clusters=CODEBOOK_ENTRIES, entries=entries,
        fillers=fillers,
        settings={"encoding": kind, "bits": RELEASE_BITS, "index_bits": width},
        sections={SectionKind(s.kind).name.lower(): len(s.data) for s in entry.sections},
        sha256=tensor_sha256(weights),
    )


def _bias_report(entry: TensorEntry, biases: np.ndarray) -> TensorReport:
    return TensorReport(
        name=entry.name, shape=tuple(biases.shape), dtype=DTYPE_NAMES[DType.FLOAT32], encoding="raw",
        original_bytes=biases.nbytes, stored_bytes=_stored_bytes(entry), size=biases.size,
        nnz=int(np.count_nonzero(biases)), sparsity=0.0,
        sections={SectionKind(s.kind).name.lower(): len(s.data) for s in entry.sections},
        sha256=tensor_sha256(biases),
    )

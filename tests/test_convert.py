"""The authors' .net release files: prototxt parsing, reading, conversion, malformed files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import dcformat
from dcformat.audit import audit_file
from dcformat.cli import main
from dcformat.convert import (
    ConvLayer,
    conv_layers,
    convert_release,
    parse_prototxt,
    read_release,
)
from dcformat.errors import (
    DCFormatError,
    IndexOutOfRangeError,
    InputError,
    InvalidFieldError,
    ReservedFieldError,
    TruncatedError,
)
from dcformat.inspection import inspect_release, inspect_release_tensor

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RELEASE_DIR = SHARED / "real" / "squeezenet-dc"
RELEASE_NET = RELEASE_DIR / "compressed_SqueezeNet.net"
RELEASE_PROTOTXT = RELEASE_DIR / "SqueezeNet_deploy.prototxt"
RELEASE_WEIGHTS = RELEASE_DIR / "squeezenet_dc_weights.safetensors"
needs_release = pytest.mark.skipif(not RELEASE_NET.exists(), reason="../shared/real/squeezenet-dc not present")

# A small network in the shape of a SqueezeNet fire module: conv1 (3 -> 4 channels), two
# branches on it (2 and 3 channels), their concat (5 channels) and a final 1x1 conv.
PROTOTXT = """
name: "tiny"   # a comment
input: "data"
input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "left" type: "Convolution" bottom: "conv1" top: "left"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "right" type: "Convolution" bottom: "conv1" top: "right"
        convolution_param { num_output: 3 pad: 1 kernel_size: 3 } }
layer { name: "cat" type: "Concat" bottom: "left" bottom: "right" top: "cat" }
layer { name: "drop" type: "Dropout" bottom: "cat" top: "cat" dropout_param { dropout_ratio: 0.5 } }
layer { name: "final" type: "Convolution" bottom: "cat" top: "final"
        convolution_param { num_output: 6 kernel_size: 1 } }
"""
TINY_SHAPES = {"conv1": (4, 3, 3, 3), "left": (2, 4, 1, 1), "right": (3, 4, 3, 3), "final": (6, 5, 1, 1)}


def make_net(layers: list[ConvLayer], seed: int = 0, density: float = 0.4) -> tuple[bytes, dict[str, np.ndarray]]:
    """Write a .net file the way the release is laid out; return it and its decoded tensors."""
    rng = np.random.default_rng(seed)
    counts, blocks, tensors = [], [], {}
    for layer in layers:
        codebook = np.concatenate([[0.0], rng.normal(0, 0.1, 255)]).astype("<f4")
        size = layer.weight_size
        kept = np.flatnonzero(rng.random(size) < density)
        slots = rng.integers(1, 256, kept.size)
        gaps, indices, previous = [], [], -1
        for position, slot in zip(kept, slots):
            zeros = position - previous - 1
            while zeros > 15:
                gaps.append(15)
                indices.append(0)
                zeros -= 16
            gaps.append(zeros)
            indices.append(slot)
            previous = position
        gaps = np.array(gaps + [0] * (len(gaps) % 2), dtype=np.uint8)
        packed = (gaps[0::2] | (gaps[1::2] << 4)).astype(np.uint8)
        biases = rng.normal(0, 0.1, layer.bias_size).astype("<f4")
        counts.append(len(indices))
        blocks.append(codebook.tobytes() + biases.tobytes() + np.array(indices, np.uint8).tobytes()
                      + packed.tobytes())
        weights = np.zeros(size, np.float32)
        weights[kept] = codebook[slots]
        tensors[f"{layer.name}.weight"] = weights.reshape(layer.weight_shape)
        tensors[f"{layer.name}.bias"] = biases
    return np.array(counts, "<u4").tobytes() + b"".join(blocks), tensors


@pytest.fixture(scope="module")
def tiny() -> tuple[bytes, dict[str, np.ndarray], dict]:
    network = parse_prototxt(PROTOTXT)
    data, tensors = make_net(conv_layers(network))
    return data, tensors, network


# --------------------------------------------------------------------------------------
# Prototxt


def test_parse_prototxt_structure():
    parsed = parse_prototxt('a: 1 b { c: "x\\"y" c: \'z\' } d: [1, 2, 3] e < f: TRUE >; g: "p" "q"')
    assert parsed == {"a": ["1"], "b": [{"c": ['x"y', "z"]}], "d": ["1", "2", "3"], "e": [{"f": ["TRUE"]}],
                      "g": ["pq"]}


def test_conv_layers_follow_the_graph():
    layers = conv_layers(parse_prototxt(PROTOTXT))
    assert {layer.name: layer.weight_shape for layer in layers} == TINY_SHAPES
    assert [layer.name for layer in layers] == ["conv1", "left", "right", "final"]


def test_conv_layers_optional_fields():
    layers = conv_layers(parse_prototxt("""
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 8 dim: 5 dim: 5 } } }
        layer { name: "dw" type: "Convolution" bottom: "x" top: "y"
                convolution_param { num_output: 8 group: 4 kernel_h: 3 kernel_w: 1 bias_term: false } }
    """))
    assert layers == [ConvLayer("dw", 8, 8, (3, 1), 4, False)]
    assert layers[0].weight_shape == (8, 2, 3, 1)
    assert layers[0].bias_size == 0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('layer { name: "a" type: "Convolution" bottom: "x" ', "line 1"),
        ("a: {", "line 1"),
        ('layer { name: "a" type: "Convolution" bottom: "nowhere" convolution_param { num_output: 1 kernel_size: 1 } }',
         "'nowhere' is not produced"),
        ('input: "x" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3 '
         'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" }', "InnerProduct"),
        ('input: "x" input_dim: 1 input_dim: 3 input_dim: 3 input_dim: 3 '
         'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { kernel_size: 1 } }',
         "missing 'num_output'"),
        ('input: "x" input_dim: 1 input_dim: 3 input_dim: 3 input_dim: 3 '
         'layer { name: "c" type: "Convolution" bottom: "x" top: "y" '
         'convolution_param { num_output: 4 kernel_size: 1 group: 2 } }', "group 2"),
        ('layers { name: "old" }', "V1"),
        ('input: "x" input_dim: 1 input_dim: 3 input_dim: 3 input_dim: 3 '
         'layer { name: "c" type: "Concat" bottom: "x" top: "y" concat_param { axis: one } }', "axis must be an integer"),
        ('input: "x"', "no Convolution"),
        ('a: "unterminated', "invalid character"),
    ],
)
def test_bad_prototxt(text, fragment):
    with pytest.raises(InputError) as info:
        conv_layers(parse_prototxt(text))
    assert fragment in str(info.value)


# --------------------------------------------------------------------------------------
# Reading and converting


def test_read_release_decodes_tensors(tiny):
    data, tensors, network = tiny
    release = read_release(data, network)

    assert release.file_bytes == len(data)
    decoded = release.tensors()
    assert list(decoded) == list(tensors)
    for name, expected in tensors.items():
        assert decoded[name].tobytes() == expected.tobytes(), name
        assert decoded[name].shape == expected.shape, name


@pytest.mark.parametrize("index_bits", ["auto", 4, 7])
@pytest.mark.parametrize("encoding", ["sparse-shared", "auto"])
def test_convert_is_bit_exact(tiny, index_bits, encoding):
    data, tensors, network = tiny
    buffer = io.BytesIO()
    report = convert_release(data, network, buffer, index_bits=index_bits, encoding=encoding, alignment=1)
    decoded = dcformat.load(buffer.getvalue())

    assert report.file_bytes == len(buffer.getvalue())
    assert list(decoded) == list(tensors)
    for name, expected in tensors.items():
        assert decoded[name].dtype == np.float32
        assert decoded[name].tobytes() == expected.tobytes(), name
    if encoding == "sparse-shared":
        weights = [t for t in report.tensors if t.name.endswith(".weight")]
        assert {t.encoding for t in weights} == {"sparse-shared"}
        if index_bits != "auto":
            assert {t.index_bits for t in weights} == {index_bits}


def test_convert_keeps_the_authors_entries_at_4_bits(tiny):
    data, _, network = tiny
    release = read_release(data, network)
    report = convert_release(data, network, io.BytesIO(), index_bits=4)
    entries = [t.entries for t in report.tensors if t.name.endswith(".weight")]
    assert entries == [layer.count for layer in release.layers]


def test_convert_records_hashes(tiny):
    from dcformat.encoder import HASHES_KEY, tensor_sha256

    data, tensors, network = tiny
    buffer = io.BytesIO()
    convert_release(data, network, buffer)
    with dcformat.open(buffer.getvalue()) as reader:
        hashes = reader.metadata()[HASHES_KEY]
    assert hashes == {name: tensor_sha256(array) for name, array in tensors.items()}


def test_convert_argument_checks(tiny):
    data, _, network = tiny
    with pytest.raises(ValueError, match="index_bits"):
        convert_release(data, network, io.BytesIO(), index_bits=0)
    with pytest.raises(TypeError):
        convert_release(data, network, io.BytesIO(), index_bits=4.0)
    with pytest.raises(ValueError, match="encoding"):
        convert_release(data, network, io.BytesIO(), encoding="raw")
    with pytest.raises(ValueError, match="alignment"):
        convert_release(data, network, io.BytesIO(), alignment=3)


def test_audit_and_inspect_release(tiny):
    data, tensors, network = tiny
    audit = audit_file(data, prototxt=network)

    assert audit.accounted_bytes == audit.file_bytes == len(data)
    assert [t.name for t in audit.tensors] == list(tensors)
    first = audit.tensors[0]
    assert first.header_bytes == 4 and first.codebook_bytes == 1024
    assert first.value_bytes == first.entries and first.index_bytes == (first.entries + 1) // 2

    summary = inspect_release(data, network)
    assert [layer["name"] for layer in summary["layers"]] == list(TINY_SHAPES)
    detail = inspect_release_tensor(data, network, "right.weight")
    assert detail["shape"] == list(TINY_SHAPES["right"])
    assert sum(entry["count"] for entry in detail["gap_histogram"]) == summary["layers"][2]["count"]


# --------------------------------------------------------------------------------------
# Malformed .net files


def _layer_offsets(data, network):
    return read_release(data, network).layers


def test_truncated_net(tiny):
    data, _, network = tiny
    for cut in (0, 3, 16, 20, 1000, len(data) - 1):
        with pytest.raises(TruncatedError) as info:
            read_release(data[:cut], network)
        assert info.value.offset is not None
        assert info.value.offset <= cut


def test_trailing_bytes(tiny):
    data, _, network = tiny
    with pytest.raises(TruncatedError, match="trailing") as info:
        read_release(data + b"\0", network)
    assert info.value.offset == len(data)


def test_count_too_large(tiny):
    data, _, network = tiny
    damaged = bytearray(data)
    damaged[4:8] = np.array([10_000], "<u4").tobytes()  # layer "left" has 8 weights
    with pytest.raises(IndexOutOfRangeError, match="left.count") as info:
        read_release(bytes(damaged), network)
    assert info.value.offset == 4


def test_codebook_entry_zero_not_zero(tiny):
    data, _, network = tiny
    layer = _layer_offsets(data, network)[1]
    damaged = bytearray(data)
    damaged[layer.codebook_offset:layer.codebook_offset + 4] = np.array([0.5], "<f4").tobytes()
    with pytest.raises(InvalidFieldError, match=r"codebook\[0\]") as info:
        read_release(bytes(damaged), network)
    assert info.value.offset == layer.codebook_offset


def test_position_past_the_tensor(tiny):
    data, _, network = tiny
    layer = _layer_offsets(data, network)[0]
    damaged = bytearray(data)
    damaged[layer.gaps_offset:layer.end] = bytes([0xFF]) * (layer.end - layer.gaps_offset - 1) + b"\x0f"
    with pytest.raises(IndexOutOfRangeError, match="positions below") as info:
        read_release(bytes(damaged), network)
    assert info.value.offset == layer.gaps_offset


ODD_PROTOTXT = """
input: "x" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 3
layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 1 kernel_h: 1 kernel_w: 3 } }
"""


def test_odd_count_padding_nibble():
    # One layer of 1 x 1 x 1 x 3 weights with one entry: its gap byte has an unused high nibble.
    codebook = np.zeros(256, "<f4")
    codebook[1] = 1.0
    head = np.array([1], "<u4").tobytes() + codebook.tobytes() + np.zeros(1, "<f4").tobytes() + bytes([1])
    network = parse_prototxt(ODD_PROTOTXT)

    release = read_release(head + bytes([0x02]), network)
    assert release.weights(release.layers[0]).reshape(-1).tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ReservedFieldError) as info:
        read_release(head + bytes([0x22]), network)
    assert info.value.offset == len(head)


def test_malformed_net_errors_are_dcformat_errors(tiny):
    data, _, network = tiny
    with pytest.raises(DCFormatError):
        read_release(data[:-5], network)


# --------------------------------------------------------------------------------------
# Command line


def test_cli_convert_inspect_audit(capsys, tmp_path, tiny):
    data, tensors, _ = tiny
    net = tmp_path / "tiny.net"
    net.write_bytes(data)
    prototxt = tmp_path / "tiny.prototxt"
    prototxt.write_text(PROTOTXT)
    output = tmp_path / "tiny.dcf"

    assert main(["convert", str(net), "--prototxt", str(prototxt), "-o", str(output), "--index-bits", "4"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {output}" in out
    decoded = dcformat.load(output)
    assert all(decoded[name].tobytes() == array.tobytes() for name, array in tensors.items())

    assert main(["convert", str(net), "--prototxt", str(prototxt), "-o", str(output)]) == 1
    assert "--force" in capsys.readouterr().err

    assert main(["inspect", str(net), "--prototxt", str(prototxt)]) == 0
    assert "conv1" in capsys.readouterr().out
    assert main(["inspect", str(net), "--prototxt", str(prototxt), "--tensor", "final", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [6, 5, 1, 1]

    assert main(["audit", str(net), "--prototxt", str(prototxt), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["format"] == "net"
    assert audit["accounted_bytes"] == len(data)


def test_cli_net_needs_prototxt(capsys, tmp_path, tiny):
    net = tmp_path / "tiny.net"
    net.write_bytes(tiny[0])
    for command in (["inspect", str(net)], ["audit", str(net)]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.startswith("dcformat: error: ")
        assert "--prototxt" in err


def test_cli_malformed_net(capsys, tmp_path, tiny):
    net = tmp_path / "bad.net"
    net.write_bytes(tiny[0][:100])
    prototxt = tmp_path / "tiny.prototxt"
    prototxt.write_text(PROTOTXT)
    assert main(["audit", str(net), "--prototxt", str(prototxt)]) == 1
    err = capsys.readouterr().err
    assert "at offset" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------------------
# The SqueezeNet release


@needs_release
@pytest.mark.parametrize("index_bits", ["auto", 4])
def test_squeezenet_release_converts_bit_exactly(index_bits):
    from safetensors.numpy import load_file

    expected = load_file(str(RELEASE_WEIGHTS))
    buffer = io.BytesIO()
    report = convert_release(RELEASE_NET, RELEASE_PROTOTXT, buffer, index_bits=index_bits)
    decoded = dcformat.load(buffer.getvalue())

    assert sorted(decoded) == sorted(expected)
    for name, array in expected.items():
        assert decoded[name].shape == array.shape, name
        assert decoded[name].tobytes() == array.tobytes(), name
    assert report.file_bytes < RELEASE_NET.stat().st_size


@needs_release
def test_squeezenet_release_audit_adds_up():
    audit = audit_file(RELEASE_NET, prototxt=RELEASE_PROTOTXT)
    assert audit.file_bytes == audit.accounted_bytes == 675_763
    assert audit.parameters == 1_248_424
    assert len(audit.tensors) == 52
    assert sum(t.header_bytes for t in audit.tensors) == 26 * 4

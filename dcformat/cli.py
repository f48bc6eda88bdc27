"""The ``dcformat`` command: compress, decompress, inspect, verify, audit, compare and convert.

Exit status: 0 on success, 1 when a command fails (an unreadable or invalid file, an output
that exists without ``--force``, a file that fails verification), 2 on bad usage (argparse).
Failures print one line, ``dcformat: error: ...``, on standard error and no traceback.

This module only parses arguments and formats results; the work happens in
:mod:`dcformat.encoder`, :mod:`dcformat.io`, :mod:`dcformat.inspection`,
:mod:`dcformat.audit`, :mod:`dcformat.compare`, :mod:`dcformat.convert` and
:mod:`dcformat.plot`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from . import __version__
from .config import CONV_BITS, DEFAULT_QUALITY, FC_BITS, Config, Rule, TensorSettings, parse_assignment
from .errors import ConfigError, DCFormatError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # the shell convention for a process stopped by SIGINT

PROG = "dcformat"


class CommandError(Exception):
    """A failure of the command itself (not of the library), reported as one line."""


# --------------------------------------------------------------------------------------
# Formatting helpers


def escape(text: str) -> str:
    """Escape non-printable characters the way ``repr`` does, so names cannot drive a terminal.

    Printable characters, non-ASCII letters included, are kept; control characters, format
    characters (such as bidirectional overrides) and backslashes are escaped.
    """
    if text.isprintable() and "\\" not in text:
        return text
    parts = []
    for char in text:
        if char == "\\":
            parts.append("\\\\")
        elif char.isprintable():
            parts.append(char)
        else:
            parts.append(repr(char)[1:-1])
    return "".join(parts)


def _one_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    if len(lines) == 1:
        return lines[0]
    return lines[0] + " " + "; ".join(lines[1:])


def _print_error(message: str) -> None:
    print(f"{PROG}: error: {escape(_one_line(message))}", file=sys.stderr)


def _os_error_message(error: OSError) -> str:
    if error.strerror and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def _bytes(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(dim) for dim in shape) if shape else "scalar"


def _optional(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Lay out ``rows`` under ``headers`` in columns; column indices in ``right`` align right."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    # Reports may carry numpy scalars (an iteration count, a step size) from the encoder.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _print_json(data: Any) -> None:
    # ensure_ascii escapes every non-ASCII character, so tensor names cannot drive a terminal.
    print(json.dumps(data, indent=2, ensure_ascii=True, default=_json_default))


class ProgressBar:
    """A one-line progress bar redrawn in place with carriage returns."""

    def __init__(self, label: str, stream: TextIO, width: int = 30) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self._shown_width = 0

    def update(self, name: str, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {escape(name)[:40]}"
        self.stream.write("\r" + line.ljust(self._shown_width))
        self.stream.flush()
        self._shown_width = len(line)

    def close(self) -> None:
        if self._shown_width:
            self.stream.write("\r" + " " * self._shown_width + "\r")
            self.stream.flush()
            self._shown_width = 0


def _progress_bar(args: argparse.Namespace, label: str) -> ProgressBar | None:
    stream = sys.stderr
    if args.quiet or not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return ProgressBar(label, stream)


# --------------------------------------------------------------------------------------
# Argument types (a ValueError or ArgumentTypeError here makes argparse exit with status 2)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, found {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), found {text}")
    return value


def _setting_rule(key: str, convert: Callable[[str], Any]) -> Callable[[str], Rule]:
    def parse(text: str) -> Rule:
        try:
            rule = parse_assignment(text, key, convert)
            TensorSettings(**rule.settings)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return rule

    parse.__name__ = key  # argparse names the type in its "invalid ... value" message
    return parse


def _quality(text: str) -> float:
    try:
        value = float(text)
        TensorSettings(quality=value)
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 100, found {text!r}") from None
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, found {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {2**32 - 1}, found {text}")
    return value


def _metadata_item(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {text!r}")
    return key, parse_metadata_value(raw)


def _reject_constant(name: str):
    raise ValueError(name)


def parse_metadata_value(text: str) -> Any:
    """Parse ``text`` as JSON when it is a string, number, boolean, list or object; else keep it.

    ``null``, ``NaN`` and ``Infinity`` stay strings because DCF metadata cannot hold them.
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text
    return text if value is None else value


def _writable_output(text: str) -> str:
    from .io import WRITE_SUFFIXES

    if Path(text).suffix.lower() not in WRITE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no writable suffix; expected one of {', '.join(WRITE_SUFFIXES)}"
        )
    return text


def _dcf_output(text: str) -> str:
    if Path(text).suffix.lower() != ".dcf":
        raise argparse.ArgumentTypeError(
            f"{text!r} does not end in .dcf; compress writes a .dcf file (use decompress to write "
            "a model file)"
        )
    return text


# --------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``dcformat`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compress trained neural networks into .dcf files (pruning, weight sharing, "
        "Huffman coding) and read them back.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = argparse.ArgumentParser(add_help=False)
    output_mode = report.add_mutually_exclusive_group()
    output_mode.add_argument("--json", action="store_true", help="print the result as JSON on standard output")
    output_mode.add_argument("--quiet", "-q", action="store_true",
                             help="print nothing on success (errors still go to standard error)")

    overwrite = argparse.ArgumentParser(add_help=False)
    overwrite.add_argument("--force", "-f", action="store_true", help="overwrite the output file if it exists")

    _add_compress(commands, [report, overwrite])
    _add_decompress(commands, [report, overwrite])

    inspect = commands.add_parser(
        "inspect", parents=[report], help="describe the sections and tensors of a .dcf file",
        description="Print the container version, flags, alignment (bytes), directory, every section "
        "(offset, size in bytes, CRC-32, owner) and every tensor (encoding, bits, density as a "
        "fraction 0..1, stored bytes, bits per weight, stream forms, checksum status). With --tensor, "
        "dump one tensor: its header fields with their byte offsets, codebook, Huffman code lengths "
        "and symbol counts, block index and gap histogram. A .net release file of the Deep "
        "Compression authors needs --prototxt. Exit status 1 when the file cannot be opened.",
    )
    inspect.add_argument("file", metavar="FILE", help="the .dcf file, or a .net file with --prototxt")
    inspect.add_argument("--tensor", metavar="NAME", help="dump this tensor in depth")
    inspect.add_argument("--prototxt", metavar="FILE",
                         help="Caffe network description that gives the layer shapes of a .net file")
    inspect.set_defaults(handler=_run_inspect)

    _add_audit(commands, overwrite)
    _add_compare(commands, report)
    _add_convert(commands, [report, overwrite])

    verify = commands.add_parser(
        "verify", parents=[report], help="check every checksum of a .dcf file",
        description="Check the footer, the directory, the CRC-32 of every section, every padding "
        "byte and the SHA-256 digest. Exit status 1 when any check fails.",
    )
    verify.add_argument("file", metavar="FILE", help="the .dcf file")
    verify.add_argument("--decode", action="store_true",
                        help="also decode every tensor, which catches invalid streams with valid checksums")
    verify.set_defaults(handler=_run_verify)
    return parser


def _settings_parent() -> argparse.ArgumentParser:
    """Options that set the compression configuration, shared by ``compress`` and ``audit``."""
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument("--config", metavar="FILE", help="compression settings from a .toml or .json file")

    pruning = settings.add_mutually_exclusive_group()
    pruning.add_argument("--sparsity", type=_fraction, metavar="F",
                         help="fraction of each prunable tensor's weights to prune, 0 <= F < 1 (e.g. 0.9)")
    pruning.add_argument("--quality", type=_quality, metavar="Q",
                         help="prune weights whose magnitude is below Q standard deviations of their tensor "
                         f"(0 to 100; default {DEFAULT_QUALITY})")

    settings.add_argument("--bits", action="append", default=[], metavar="[PATTERN=]N",
                          type=_setting_rule("bits", int),
                          help="bits per shared-weight index, 1 to 16 (the codebook has up to 2^N entries); "
                          "repeatable, a bare N applies to every tensor")
    settings.add_argument("--index-bits", action="append", default=[], metavar="[PATTERN=]N",
                          type=_setting_rule("index_bits", int),
                          help="bits per relative-index gap of sparse tensors, 1 to 16; repeatable")
    settings.add_argument("--encoding", action="append", default=[], metavar="[PATTERN=]NAME",
                          type=_setting_rule("encoding", str),
                          help="encoding: auto (the smallest), raw, shared, sparse-shared, uniform, lowrank, "
                          "float16 or bfloat16; repeatable")

    settings.add_argument("--seed", type=_non_negative_int, metavar="N",
                          help="seed of the k-means initialisation, 0 to 2^32-1 (default 0)")
    settings.add_argument("--scope", choices=("tensor", "global"),
                          help="prune with one threshold across all prunable tensors (global, the default) "
                          "or each tensor on its own (tensor)")
    settings.add_argument("--smallest", action="store_true",
                          help="align sections to 1 byte instead of 64 and leave the per-tensor settings "
                          "and content hashes out of the metadata")
    return settings


SETTINGS_OPTIONS = ("config", "sparsity", "quality", "bits", "index_bits", "encoding", "seed", "scope",
                    "smallest")


def _add_compress(commands, parents) -> None:
    compress = commands.add_parser(
        "compress", parents=[*parents, _settings_parent()], help="compress a model file into a .dcf file",
        description="Prune, cluster and entropy-code the weights of a model file into a .dcf file. "
        f"Without options, fully connected weights get {FC_BITS}-bit weight sharing and {FC_BITS}-bit "
        f"gaps, convolution weights {CONV_BITS} and {CONV_BITS} bits, and biases and buffers are "
        "stored losslessly. Options "
        "given here override the configuration file. PATTERN is a glob over tensor names "
        "(fnmatch, e.g. 'fc*.weight'); later options win over earlier ones.",
    )
    compress.add_argument("input", metavar="IN", help="model file: .safetensors, .pt, .pth, .bin (state dict) or .npz")
    compress.add_argument("-o", "--output", required=True, metavar="OUT.dcf", type=_dcf_output,
                          help="the .dcf file to write")
    compress.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", type=_metadata_item,
                          help="store KEY in the file's user metadata; VALUE is parsed as JSON when it parses, "
                          "else kept as a string; repeatable")
    compress.set_defaults(handler=_run_compress)


def _add_audit(commands, overwrite) -> None:
    audit = commands.add_parser(
        "audit", parents=[overwrite, _settings_parent()],
        help="show where the bytes of a compressed model go, layer by layer",
        description="Print a per-tensor size table in the shape of the Deep Compression tables: "
        "parameters, the percentage of weights kept, bits per stored weight and per gap at their fixed width, as "
        "stored and at the order-0 entropy bound, bytes of codebook, gaps (index), values, headers "
        "and alignment padding, and the size as a percentage of float32; then the container's "
        "bytes, which with the tensors add up to the file size, and the file at each stage "
        "(dense float32, pruned with relative index, shared weights, as stored). FILE is a .dcf "
        "file, a .net release file with --prototxt, or a model file (.safetensors, .pt, .pth, "
        ".bin, .npz): then nothing is written and the audit shows what compress would produce "
        "with the given settings.",
    )
    audit.add_argument("file", metavar="FILE", help="a .dcf file, a .net file (with --prototxt) or a model file")
    audit.add_argument("--prototxt", metavar="FILE",
                       help="Caffe network description that gives the layer shapes of a .net file")
    output_mode = audit.add_mutually_exclusive_group()
    output_mode.add_argument("--json", action="store_true", help="print the audit as JSON on standard output")
    output_mode.add_argument("--csv", action="store_true",
                             help="print one CSV row per tensor and container part, then the total")
    output_mode.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    output_mode.add_argument("--quiet", "-q", action="store_true",
                             help="print nothing on success (errors still go to standard error)")
    audit.add_argument("--plot", metavar="OUT.png",
                       help="also draw the bytes per tensor by stream and one tensor's weight histogram "
                       "(needs matplotlib: pip install 'dcformat[plot]'); .png, .svg or .pdf")
    audit.add_argument("--plot-tensor", metavar="NAME",
                       help="the tensor whose histogram --plot draws (default: the one with the most parameters)")
    audit.set_defaults(handler=_run_audit)


def _add_compare(commands, report) -> None:
    compare = commands.add_parser(
        "compare", parents=[report], help="list the tensors that differ between two .dcf files",
        description="Compare two .dcf files tensor by tensor, by the SHA-256 of each decoded tensor "
        "(read from the metadata where the files store it, else computed by decoding), and print "
        "the changed, added and removed tensors with their stored sizes in bytes, then the bytes "
        "a device that has OLD must receive to get NEW when it reuses the unchanged tensors.",
    )
    compare.add_argument("old", metavar="OLD.dcf", help="the file a device already has")
    compare.add_argument("new", metavar="NEW.dcf", help="the file to update to")
    compare.add_argument("--all", action="store_true", help="list unchanged tensors too")
    compare.add_argument("--decode", action="store_true",
                         help="ignore stored hashes and decode every tensor to hash it")
    compare.set_defaults(handler=_run_compare)


def _index_bits_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 16 or 'auto', found {text!r}") from None
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 16 or 'auto', found {value}")
    return value


def _add_convert(commands, parents) -> None:
    convert = commands.add_parser(
        "convert", parents=parents, help="convert a .net release file of the Deep Compression authors to .dcf",
        description="Read a .net file as released by the Deep Compression authors (for example "
        "compressed_SqueezeNet.net) with the Caffe prototxt that gives its layer shapes, and write "
        "the same weights, bit for bit, as a .dcf file: each layer's weights as sparse-shared with "
        "the authors' 256-entry codebook and Huffman-coded streams, its biases raw.",
    )
    convert.add_argument("input", metavar="NET", help="the .net file")
    convert.add_argument("--prototxt", required=True, metavar="FILE",
                         help="Caffe network description that gives the layer shapes")
    convert.add_argument("-o", "--output", required=True, metavar="OUT.dcf", help="the .dcf file to write")
    convert.add_argument("--index-bits", type=_index_bits_or_auto, default="auto", metavar="N",
                         help="bits per relative-index gap, 1 to 16, or auto: the smallest of 2 to 8 per "
                         "layer (default); 4 keeps the authors' gaps")
    convert.add_argument("--encoding", choices=("sparse-shared", "auto"), default="sparse-shared",
                         help="sparse-shared for every layer (default), or auto: dense shared where "
                         "that is smaller")
    convert.add_argument("--smallest", action="store_true", help="align sections to 1 byte instead of 64")
    convert.set_defaults(handler=_run_convert)


def _add_decompress(commands, parents) -> None:
    decompress = commands.add_parser(
        "decompress", parents=parents, help="decode a .dcf file into a model file",
        description="Decode every tensor of a .dcf file and write them to OUT, in the format its "
        "suffix names. bfloat16 tensors need .safetensors or .pt.",
    )
    decompress.add_argument("input", metavar="IN.dcf", help="the .dcf file")
    decompress.add_argument("-o", "--output", required=True, metavar="OUT", type=_writable_output,
                            help="model file to write: .safetensors, .pt, .pth or .npz")
    decompress.set_defaults(handler=_run_decompress)


# --------------------------------------------------------------------------------------
# Commands


def _check_output(path: Path, force: bool) -> None:
    if path.is_dir():
        raise CommandError(f"{path} is a directory; expected an output file path")
    if path.exists() and not force:
        raise CommandError(f"{path} exists; pass --force to overwrite it")


def build_config(args: argparse.Namespace) -> Config:
    """Build the compression configuration: the file, then the command-line options."""
    config = Config.from_file(args.config) if args.config else Config()
    changes: dict[str, Any] = {}
    if args.scope is not None:
        changes["scope"] = args.scope
    if args.smallest:
        changes.update(alignment=1, record_settings=False)
    if changes:
        config = dataclasses.replace(config, **changes)

    rules: list[Rule] = []
    if args.sparsity is not None:
        rules.append(Rule("*", {"sparsity": args.sparsity}))
    if args.quality is not None:
        rules.append(Rule("*", {"quality": args.quality}))
    if args.seed is not None:
        rules.append(Rule("*", {"seed": args.seed}))
    rules += args.bits + args.index_bits + args.encoding
    return config.with_rules(*rules) if rules else config


def _run_compress(args: argparse.Namespace) -> int:
    from .encoder import compress
    from .io import read_tensors

    output = Path(args.output)
    _check_output(output, args.force)
    config = build_config(args)
    tensors = read_tensors(args.input)
    metadata = dict(args.metadata) if args.metadata else None

    progress = _progress_bar(args, "compress")
    try:
        report, _ = compress(tensors, output, config, metadata=metadata,
                             progress=progress.update if progress else None)
    finally:
        if progress:
            progress.close()

    if args.json:
        _print_json({"input": args.input, "output": args.output, **report.as_dict()})
    elif not args.quiet:
        print(format_compress_report(report))
        print(f"wrote {escape(args.output)}")
    return EXIT_OK


def format_compress_report(report) -> str:
    """Format a :class:`~dcformat.encoder.CompressionReport` as a table and totals."""
    headers = ("name", "shape", "encoding", "bits", "index bits", "sparsity %",
               "original bytes", "stored bytes", "bits/weight")
    rows = [
        (
            escape(t.name), _shape(t.shape), t.encoding, _optional(t.bits), _optional(t.index_bits),
            f"{100 * t.sparsity:.1f}", _bytes(t.original_bytes), _bytes(t.stored_bytes),
            f"{t.bits_per_weight:.2f}",
        )
        for t in report.tensors
    ]
    table = format_table(headers, rows, right=(3, 4, 5, 6, 7, 8))
    ratio = f"{report.ratio:.2f}x" if report.file_bytes else "-"
    totals = format_table(
        ("", ""),
        [("original bytes", _bytes(report.original_bytes)), ("file bytes", _bytes(report.file_bytes)),
         ("ratio", ratio)],
        right=(1,),
    ).split("\n", 1)[1]
    return f"{table}\n\n{totals}"


def _run_decompress(args: argparse.Namespace) -> int:
    from . import open as open_dcf
    from .io import write_tensors

    output = Path(args.output)
    _check_output(output, args.force)
    tensors = {}
    progress = _progress_bar(args, "decompress")
    try:
        with open_dcf(args.input) as reader:
            names = reader.keys()
            for index, name in enumerate(names):
                if progress:
                    progress.update(name, index, len(names))
                tensors[name] = reader.get(name)
            if progress:
                progress.update("", len(names), len(names))
    finally:
        if progress:
            progress.close()
    write_tensors(tensors, output)

    summary = [
        {"name": name, "shape": list(array.shape), "dtype": str(array.dtype), "bytes": int(array.nbytes)}
        for name, array in tensors.items()
    ]
    total = sum(item["bytes"] for item in summary)
    if args.json:
        _print_json({"input": args.input, "output": args.output, "tensors": summary,
                     "tensor_bytes": total, "file_bytes": output.stat().st_size})
    elif not args.quiet:
        rows = [(escape(t["name"]), _shape(t["shape"]), t["dtype"], _bytes(t["bytes"])) for t in summary]
        print(format_table(("name", "shape", "dtype", "bytes"), rows, right=(3,)))
        print(f"\nwrote {escape(args.output)}: {len(summary)} tensors, {_bytes(total)} bytes of tensor data, "
              f"{_bytes(output.stat().st_size)} bytes on disk")
    return EXIT_OK


def _is_release(path: str, prototxt: str | None) -> bool:
    """Return whether ``path`` is read as a .net release file; raise when its --prototxt is missing."""
    from .convert import is_release_path

    if prototxt is not None:
        return True
    if is_release_path(path):
        raise CommandError(f"{path} is a .net release file; pass --prototxt with its Caffe network description")
    return False


def _run_inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect_file, inspect_release, inspect_release_tensor, inspect_tensor

    if _is_release(args.file, args.prototxt):
        if args.tensor is not None:
            data = inspect_release_tensor(args.file, args.prototxt, args.tensor)
        else:
            data = inspect_release(args.file, args.prototxt)
    elif args.tensor is not None:
        data = inspect_tensor(args.file, args.tensor)
    else:
        data = inspect_file(args.file)
    if args.json:
        _print_json(data)
    elif not args.quiet:
        if args.tensor is not None:
            print(format_tensor_inspection(data))
        elif data.get("format") == "net":
            print(format_release_inspection(data))
        else:
            print(format_inspection(data))
    return EXIT_OK


def format_inspection(data: dict[str, Any]) -> str:
    """Format the result of :func:`dcformat.inspection.inspect_file` for a terminal."""
    directory = data["directory"]
    flags = data["flags"]
    totals = data["totals"]
    lines = [
        f"file       {escape(data['path'])} ({_bytes(data['file_bytes'])} bytes)",
        f"version    {data['version']}",
        f"flags      required: {', '.join(flags['required']) or 'none'}; "
        f"optional: {', '.join(flags['optional']) or 'none'}",
        f"alignment  {data['alignment']} bytes",
        f"directory  at {directory['offset']:#x}, {_bytes(directory['stored_bytes'])} bytes stored, "
        f"{_bytes(directory['bytes'])} bytes decoded ({directory['compression']}), crc32 {directory['crc32']}",
        f"digest     sha256 {data['digest']}",
        "",
    ]

    tensor_rows = []
    for t in data["tensors"]:
        forms = ",".join(f"{s['kind']}:{s.get('form', 'invalid')}" for s in t["streams"]) or "-"
        tensor_rows.append((
            escape(t["name"]), _shape(t["shape"]), t["dtype"], t["encoding"], _optional(t["bits"]),
            _optional(t["index_bits"]), _optional(t["n_clusters"]), _optional(t["density"], ".4f"),
            _bytes(t["stored_bytes"]), _optional(t["bits_per_weight"], ".2f"), forms, t["checksum"],
        ))
    lines.append(format_table(
        ("tensor", "shape", "dtype", "encoding", "bits", "index bits", "clusters", "density",
         "stored bytes", "bits/weight", "streams", "checksum"),
        tensor_rows, right=(4, 5, 6, 7, 8, 9),
    ))
    for t in data["tensors"]:
        if t["error"]:
            lines.append(f"  {escape(t['name'])}: {escape(_one_line(t['error']))}")
    lines.append("")

    section_rows = [
        (str(s["index"]), s["kind"], s["offset_hex"], _bytes(s["size"]), s["crc32"],
         "ok" if s["crc_ok"] else "MISMATCH", escape(s["owner"]) if s["owner"] is not None else "-")
        for s in data["sections"]
    ]
    lines.append(format_table(("section", "kind", "offset", "bytes", "crc32", "check", "owner"),
                              section_rows, right=(0, 2, 3)))
    lines.append("")
    ratio = f"{totals['ratio']:.2f}x" if totals["ratio"] else "-"
    lines.append(f"{totals['tensors']} tensors, {_bytes(totals['original_bytes'])} bytes decoded, "
                 f"{_bytes(totals['file_bytes'])} bytes in the file, ratio {ratio}")
    if data["metadata"]:
        lines += ["", "metadata", json.dumps(data["metadata"], indent=2, ensure_ascii=True)]
    return "\n".join(lines)


def _run_verify(args: argparse.Namespace) -> int:
    from .inspection import verify_file

    data = verify_file(args.file, decode=args.decode)
    if args.json:
        _print_json(data)
    elif not args.quiet:
        print(format_verification(data))
    if data["ok"]:
        return EXIT_OK
    count = len(data["problems"])
    _print_error(f"{data['path']} failed verification ({count} problem{'s' if count != 1 else ''})")
    return EXIT_FAILURE


def format_verification(data: dict[str, Any]) -> str:
    """Format the result of :func:`dcformat.inspection.verify_file` for a terminal."""
    path = escape(data["path"])
    if data["ok"]:
        return (f"{path}: OK, {data['checked_sections']} sections and {data['tensors']} tensors, "
                "SHA-256 digest matches")
    lines = [f"{path}: FAILED"]
    for problem in data["problems"]:
        where = escape(problem["part"])
        if problem.get("offset") is not None:
            where += f" at offset {problem['offset']} ({problem['offset']:#x})"
        lines.append(f"  {where}: {escape(_one_line(problem['message']))}")
    return "\n".join(lines)


def format_release_inspection(data: dict[str, Any]) -> str:
    """Format the result of :func:`dcformat.inspection.inspect_release` for a terminal."""
    rows = []
    for layer in data["layers"]:
        parts = {part["part"]: part for part in layer["parts"]}
        rows.append((
            escape(layer["name"]), _shape(layer["weight_shape"]), _bytes(layer["count"]), _bytes(layer["nnz"]),
            _bytes(layer["fillers"]), _optional(layer["density"], ".4f"),
            f"{parts['count']['offset']:#x}", f"{parts['codebook']['offset']:#x}",
            f"{parts['indices']['offset']:#x}", f"{parts['gaps']['offset']:#x}", _bytes(layer["stored_bytes"]),
        ))
    totals = data["totals"]
    ratio = f"{totals['ratio']:.2f}x" if totals["ratio"] else "-"
    return "\n".join([
        f"file       {escape(data['path'])} ({_bytes(data['file_bytes'])} bytes)",
        "format     .net release of the Deep Compression authors (8-bit indices, 4-bit gaps, no Huffman)",
        "",
        format_table(("layer", "weight shape", "entries", "nnz", "fillers", "density", "count at",
                      "codebook at", "indices at", "gaps at", "bytes"), rows, right=(2, 3, 4, 5, 6, 7, 8, 9, 10)),
        "",
        f"{totals['layers']} layers, {_bytes(totals['parameters'])} parameters, "
        f"{_bytes(totals['float32_bytes'])} bytes as float32, {_bytes(totals['file_bytes'])} bytes in the "
        f"file, ratio {ratio}",
    ])


def _value(value: Any) -> str:
    return escape(value) if isinstance(value, str) else str(value)


def format_tensor_inspection(data: dict[str, Any]) -> str:
    """Format :func:`~dcformat.inspection.inspect_tensor` (or its .net twin) for a terminal."""
    params = ", ".join(f"{key} {value}" for key, value in data["params"].items())
    lines = [
        f"tensor     {escape(data['name'])} ({_shape(data['shape'])} {data['dtype']}, {data['encoding']}, "
        f"{_bytes(data['stored_bytes'])} bytes stored)",
        f"file       {escape(data['path'])}",
        f"params     {params}",
        "",
    ]
    if data["directory_compression"] == "zstd":
        lines.append("fields (directory offsets are into the decoded directory, stored zstd-compressed)")
    else:
        lines.append("fields")
    rows = [(f["space"], str(f["offset"]), f"{f['offset']:#x}", str(f["size"]), escape(f["field"]), _value(f["value"]))
            for f in data["fields"]]
    lines.append(format_table(("in", "offset", "hex", "bytes", "field", "value"), rows, right=(1, 2, 3)))

    codebook = data["codebook"]
    if codebook is not None:
        values = codebook["values"]
        zero = f"; zero slot {codebook['zero_slot']}" if codebook["zero_slot"] is not None else ""
        lines += ["", f"codebook ({len(values)} x {codebook['dtype']}, {codebook['coding']}{zero})"]
        cells = [f"{index:>5}: {value: .8g}" for index, value in enumerate(values)]
        for start in range(0, len(cells), 4):
            lines.append("  ".join(cell.ljust(22) for cell in cells[start:start + 4]).rstrip())

    for stream in data["streams"]:
        count = stream["count"]
        per_symbol = f"{stream['payload_bits'] / count:.3f}" if count else "-"
        entropy = f"{stream['entropy_bits'] / count:.3f}" if count else "-"
        where = f" (section {stream['section']})" if stream["section"] is not None else ""
        lines += ["", f"stream {stream['kind']}{where}: {stream['form']}, width {stream['width']}, "
                      f"{_bytes(count)} symbols, {_bytes(stream['payload_bits'])} payload bits "
                      f"({per_symbol} bits/symbol, entropy {entropy})"]
        if stream["form"] == "huffman":
            offsets = stream["block_offsets"]
            shown = ", ".join(str(offset) for offset in offsets[:16]) + (" ..." if len(offsets) > 16 else "")
            lines.append(f"  block size {stream['block_size']} symbols; block index "
                         f"({len(offsets)} bit offsets after block 0): {shown or 'none'}")
            lines.append(f"  longest code {stream['max_code_length']} bits")
        rows = []
        for symbol in stream["symbols"]:
            share = 100 * symbol["count"] / count if count else 0.0
            rows.append((str(symbol["symbol"]), _bytes(symbol["count"]), f"{share:.2f}",
                         _optional(symbol["code_length"])))
        lines.append(format_table(("symbol", "count", "%", "code length"), rows, right=(0, 1, 2, 3)))

    if data["gap_histogram"] is not None:
        histogram = data["gap_histogram"]
        largest = max((entry["count"] for entry in histogram), default=0)
        lines += ["", "gap histogram (zeros skipped before each entry; fillers have the largest gap)"]
        rows = [(str(entry["value"]), _bytes(entry["count"]),
                 "#" * max(1, round(40 * entry["count"] / largest)) if largest else "")
                for entry in histogram]
        lines.append(format_table(("gap", "count", ""), rows, right=(0, 1)))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# audit


def _audit_source(args: argparse.Namespace):
    """Audit the input of ``audit``; return (audit, decoding source, original tensors or None)."""
    from .audit import audit_file, compress_to_bytes
    from .constants import MAGIC
    from .io import read_tensors

    settings_given = [option for option in SETTINGS_OPTIONS if getattr(args, option) not in (None, False, [])]
    if _is_release(args.file, args.prototxt):
        if settings_given:
            raise CommandError("compression settings apply to model files only, not to a .net file")
        return audit_file(args.file, prototxt=args.prototxt), args.file, None
    path = Path(args.file)
    with open(path, "rb") as handle:
        is_dcf = handle.read(len(MAGIC)) == MAGIC
    if is_dcf:
        if settings_given:
            raise CommandError(f"{args.file} is already a .dcf file; compression settings apply to model files only")
        return audit_file(args.file), args.file, None
    tensors = read_tensors(path)
    data = compress_to_bytes(tensors, build_config(args))
    return audit_file(data, name=args.file, dry_run=True), data, tensors


def _run_audit(args: argparse.Namespace) -> int:
    plot_path = Path(args.plot) if args.plot else None
    if plot_path is not None:
        if plot_path.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise CommandError(f"{args.plot}: expected a .png, .svg or .pdf file for --plot")
        _check_output(plot_path, args.force)
        from .plot import require_matplotlib

        require_matplotlib()
    elif args.plot_tensor is not None:
        raise CommandError("--plot-tensor needs --plot")

    audit, source, originals = _audit_source(args)
    if plot_path is not None:
        from .audit import weight_distribution
        from .plot import default_plot_tensor, save_audit_plot

        name = args.plot_tensor or default_plot_tensor(audit)
        original = originals.get(name) if originals is not None else None
        distribution = weight_distribution(source, name, original=original, prototxt=args.prototxt)
        save_audit_plot(audit, plot_path, distribution)

    if args.json:
        _print_json(audit.as_dict())
    elif args.csv:
        _print_audit_csv(audit)
    elif args.markdown:
        print(format_audit(audit, markdown=True))
    elif not args.quiet:
        print(format_audit(audit))
        if plot_path is not None:
            print(f"\nwrote {escape(args.plot)}")
    return EXIT_OK


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _print_audit_csv(audit) -> None:
    import csv

    from .audit import CSV_COLUMNS

    # Names are escaped as in the table, because standard output is often a terminal; --json
    # gives them exactly.
    writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in audit.rows():
        row["name"] = escape(row["name"])
        writer.writerow({key: _csv_cell(value) for key, value in row.items()})


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join(" ---: " if i in right else " --- " for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _bits(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


AUDIT_HEADERS = ("tensor", "params", "kept %", "w.fixed", "w.stored", "w.H0", "i.fixed", "i.stored", "i.H0",
                 "codebook", "index", "values", "header", "padding", "total", "% f32")
AUDIT_LEGEND = (
    "w.* / i.*: bits per stored weight (cluster index or level) / per relative-index gap: fixed width, "
    "as stored (payload only), and the order-0 entropy bound H0. Byte columns: codebook (or scales), "
    "index = gap payload, values = index or level payload or raw bytes, header = stream headers, "
    "Huffman tables and block index, padding = alignment before the tensor's sections."
)


def format_audit(audit, *, markdown: bool = False) -> str:
    """Format a :class:`~dcformat.audit.FileAudit` as terminal tables (or Markdown ones)."""
    table = _markdown_table if markdown else format_table
    rows = []
    for t in audit.tensors:
        row = t.row()
        kept = row["kept_percent"]
        rows.append((
            escape(t.name), _bytes(t.parameters), "-" if kept is None else f"{kept:.1f}",
            _optional(row["weight_bits_fixed"]), _bits(row["weight_bits_stored"]), _bits(row["weight_bits_entropy"]),
            _optional(row["index_bits_fixed"]), _bits(row["index_bits_stored"]), _bits(row["index_bits_entropy"]),
            _bytes(t.codebook_bytes), _bytes(t.index_bytes), _bytes(t.value_bytes), _bytes(t.header_bytes),
            _bytes(t.padding_bytes), _bytes(t.total_bytes), _optional(t.percent_of_float32, ".2f"),
        ))
    total = audit.totals_row()
    kept = total["kept_percent"]
    rows.append((
        "total (tensors)", _bytes(audit.parameters), "-" if kept is None else f"{kept:.1f}",
        "", "", "", "", "", "",
        _bytes(total["codebook_bytes"]), _bytes(total["index_bytes"]), _bytes(total["value_bytes"]),
        _bytes(total["header_bytes"]), _bytes(total["padding_bytes"]), _bytes(audit.tensor_bytes),
        f"{100 * audit.tensor_bytes / audit.float32_bytes:.2f}" if audit.float32_bytes else "-",
    ))
    kind = {"dcf": ".dcf file", "net": ".net release file"}[audit.format]
    if audit.dry_run:
        kind = "dry run: the .dcf file compress would write (nothing written)"
    lines = [f"{escape(audit.source)}: {kind}", "",
             table(AUDIT_HEADERS, rows, right=tuple(range(1, len(AUDIT_HEADERS)))), "",
             AUDIT_LEGEND if markdown else textwrap.fill(AUDIT_LEGEND, 100)]

    container_rows = [(part, _bytes(size)) for part, size in audit.container.items()]
    container_rows.append(("tensors (above)", _bytes(audit.tensor_bytes)))
    container_rows.append(("file", _bytes(audit.file_bytes)))
    lines += ["", table(("part", "bytes"), container_rows, right=(1,))]
    if audit.accounted_bytes != audit.file_bytes:
        lines.append(f"unaccounted: {audit.file_bytes - audit.accounted_bytes} bytes")

    streams = audit.stream_totals
    if streams["payload_bytes"]:
        lines += ["", f"streams: {_bytes(streams['payload_bytes'])} payload bytes stored, order-0 entropy "
                      f"bound {_bytes(streams['entropy_bytes'])} bytes "
                      f"({100 * streams['entropy_bytes'] / streams['payload_bytes']:.1f} %), "
                      f"{_bytes(streams['header_bytes'])} header bytes"]

    stage_rows = [(s.name, s.description, _bytes(s.bytes), _optional(s.ratio, ".2f"),
                   f"{8 * s.bytes / audit.parameters:.2f}" if audit.parameters else "-")
                  for s in audit.stages]
    lines += ["", table(("stage", "what", "bytes", "ratio", "bits/param"), stage_rows, right=(2, 3, 4))]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# compare and convert


def _signed(value: int) -> str:
    return f"{value:+,}"


def _run_compare(args: argparse.Namespace) -> int:
    from .compare import compare_files

    comparison = compare_files(args.old, args.new, decode=args.decode)
    if args.json:
        _print_json(comparison.as_dict())
    elif not args.quiet:
        print(format_comparison(comparison, show_all=args.all))
    return EXIT_OK


def format_comparison(comparison, *, show_all: bool = False) -> str:
    """Format a :class:`~dcformat.compare.Comparison`; unchanged tensors only with ``show_all``."""
    lines = [
        f"old  {escape(comparison.old)}: {_bytes(comparison.old_file_bytes)} bytes "
        f"(hashes from {comparison.old_hashes})",
        f"new  {escape(comparison.new)}: {_bytes(comparison.new_file_bytes)} bytes "
        f"({_signed(comparison.size_delta)}; hashes from {comparison.new_hashes})",
        "",
    ]

    shown = comparison.tensors if show_all else [t for t in comparison.tensors if t.status != "unchanged"]
    rows = []
    for t in shown:
        note = f"same content as {escape(t.reused_from)}" if t.reused_from else ""
        if t.status == "unchanged" and not t.identical_bytes:
            note = "re-encoded"
        if t.old_shape is not None and t.new_shape is not None and t.old_shape != t.new_shape:
            note = f"shape {_shape(t.old_shape)} -> {_shape(t.new_shape)}"
        rows.append((escape(t.name), t.status, _bytes(t.old_bytes), _bytes(t.new_bytes), _signed(t.size_delta),
                     _bytes(t.transfer_bytes), note))
    if rows:
        lines.append(format_table(("tensor", "status", "old bytes", "new bytes", "delta", "transfer", ""),
                                  rows, right=(2, 3, 4, 5)))
    else:
        lines.append("no tensor changed")

    counts = comparison.counts
    if not show_all and counts["unchanged"]:
        lines.append(f"({counts['unchanged']} unchanged tensors not listed; --all lists them)")
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    share = 100 * comparison.transfer_bytes / comparison.new_file_bytes if comparison.new_file_bytes else 0.0
    lines += [
        "",
        f"tensors: {summary}",
        f"update:  {_bytes(comparison.transfer_bytes)} bytes ({share:.1f} % of the new file): "
        f"manifest (preamble, directory, footer) {_bytes(comparison.manifest_bytes)} + tensor sections "
        f"{_bytes(comparison.transfer_bytes - comparison.manifest_bytes)}",
        f"byte-exact copy of the new file: {_bytes(comparison.exact_transfer_bytes)} bytes",
    ]
    return "\n".join(lines)


def _run_convert(args: argparse.Namespace) -> int:
    from .convert import convert_release

    output = Path(args.output)
    _check_output(output, args.force)
    report = convert_release(args.input, args.prototxt, output, index_bits=args.index_bits,
                             encoding=args.encoding, alignment=1 if args.smallest else 64)
    if args.json:
        _print_json({"input": args.input, "output": args.output, "release_bytes": Path(args.input).stat().st_size,
                     **report.as_dict()})
    elif not args.quiet:
        print(format_compress_report(report))
        print(f"wrote {escape(args.output)} ({_bytes(report.file_bytes)} bytes; the .net file has "
              f"{_bytes(Path(args.input).stat().st_size)})")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# Entry point


class _WarningLog(logging.Handler):
    """Print the library's warnings as ``dcformat: warning: ...`` and remember them."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.add(message)
        print(f"{PROG}: warning: {escape(_one_line(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` by default); return the exit status.

    Bad usage raises ``SystemExit(2)`` from argparse, as it does for every argparse program.
    """
    args = build_parser().parse_args(argv)
    library_logger = logging.getLogger("dcformat")
    handler = _WarningLog()
    library_logger.addHandler(handler)
    try:
        # The encoder reports some events both as a log record and as a warning. The log
        # record is printed, so a warning is printed only when no record had its message.
        with warnings.catch_warnings(record=True) as caught:
            try:
                return args.handler(args)
            finally:
                for warning in caught:
                    if str(warning.message) not in handler.messages:
                        print(f"{PROG}: warning: {escape(_one_line(str(warning.message)))}", file=sys.stderr)
    except (DCFormatError, CommandError) as error:
        _print_error(str(error))
        return EXIT_FAILURE
    except OSError as error:
        _print_error(_os_error_message(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        library_logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())

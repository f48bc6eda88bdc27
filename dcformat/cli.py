"""The ``dcformat`` command: compress, decompress, inspect and verify DCF files.

Exit status: 0 on success, 1 when a command fails (an unreadable or invalid file, an output
that exists without ``--force``, a file that fails verification), 2 on bad usage (argparse).
Failures print one line, ``dcformat: error: ...``, on standard error and no traceback.

This module only parses arguments and formats results; the work happens in
:mod:`dcformat.encoder`, :mod:`dcformat.io` and :mod:`dcformat.inspection`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
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
        "fraction 0..1, stored bytes, bits per weight, stream forms, checksum status). Exit status 1 "
        "when the file cannot be opened.",
    )
    inspect.add_argument("file", metavar="FILE", help="the .dcf file")
    inspect.set_defaults(handler=_run_inspect)

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


def _add_compress(commands, parents) -> None:
    compress = commands.add_parser(
        "compress", parents=parents, help="compress a model file into a .dcf file",
        description="Prune, cluster and entropy-code the weights of a model file into a .dcf file. "
        f"Without options, fully connected weights get {FC_BITS}-bit weight sharing and {FC_BITS}-bit "
        f"gaps, convolution weights {CONV_BITS} and {CONV_BITS} bits, and biases and buffers are "
        "stored losslessly. Options "
        "given here override the configuration file. PATTERN is a glob over tensor names "
        "(fnmatch, e.g. 'fc*.weight'); later options win over earlier ones.",
    )
    compress.add_argument("input", metavar="IN", help="model file: .safetensors, .pt, .pth, .bin (state dict) or .npz")
    compress.add_argument("-o", "--output", required=True, metavar="OUT.dcf", help="the .dcf file to write")
    compress.add_argument("--config", metavar="FILE", help="compression settings from a .toml or .json file")

    pruning = compress.add_mutually_exclusive_group()
    pruning.add_argument("--sparsity", type=_fraction, metavar="F",
                         help="fraction of each prunable tensor's weights to prune, 0 <= F < 1 (e.g. 0.9)")
    pruning.add_argument("--quality", type=_quality, metavar="Q",
                         help="prune weights whose magnitude is below Q standard deviations of their tensor "
                         f"(0 to 100; default {DEFAULT_QUALITY})")

    compress.add_argument("--bits", action="append", default=[], metavar="[PATTERN=]N",
                          type=_setting_rule("bits", int),
                          help="bits per shared-weight index, 1 to 16 (the codebook has up to 2^N entries); "
                          "repeatable, a bare N applies to every tensor")
    compress.add_argument("--index-bits", action="append", default=[], metavar="[PATTERN=]N",
                          type=_setting_rule("index_bits", int),
                          help="bits per relative-index gap of sparse tensors, 1 to 16; repeatable")
    compress.add_argument("--encoding", action="append", default=[], metavar="[PATTERN=]NAME",
                          type=_setting_rule("encoding", str),
                          help="encoding: auto (the smallest), raw, shared, sparse-shared, uniform, lowrank, "
                          "float16 or bfloat16; repeatable")

    compress.add_argument("--seed", type=_non_negative_int, metavar="N",
                          help="seed of the k-means initialisation, 0 to 2^32-1 (default 0)")
    compress.add_argument("--scope", choices=("tensor", "global"),
                          help="prune each tensor on its own (tensor, the default) or with one threshold "
                          "across all prunable tensors (global)")
    compress.add_argument("--smallest", action="store_true",
                          help="align sections to 1 byte instead of 64 and leave the per-tensor settings "
                          "out of the metadata")
    compress.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", type=_metadata_item,
                          help="store KEY in the file's user metadata; VALUE is parsed as JSON when it parses, "
                          "else kept as a string; repeatable")
    compress.set_defaults(handler=_run_compress)


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


def _run_inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect_file

    data = inspect_file(args.file)
    if args.json:
        _print_json(data)
    elif not args.quiet:
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

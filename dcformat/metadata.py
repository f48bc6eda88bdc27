"""The metadata block: JSON with the strict grammar of spec/FORMAT.md section 7."""

from __future__ import annotations

import json
import math
from typing import Any

from .constants import MAX_METADATA_DEPTH
from .errors import InvalidFieldError, LimitExceededError

SECTION = "metadata"

# Cap on the values in one metadata block, counted before parsing. Python builds an object
# for every value and the grammar check visits each. Without the cap, 64 MiB of "{}," (a
# few KB once the directory is zstd-compressed) cost 1.7 GB and 24 s at open, on one core
# of a 2-core x86 machine. Two million values are the recorded settings of about 200,000
# tensors and take about a second to parse and check there.
MAX_METADATA_VALUES = 2_000_000


def value_bound(data: bytes) -> int:
    """Return an upper bound on the JSON values in ``data``, without parsing it.

    Every value but the top-level one is the first element of an array or object or follows
    a comma, so the bound is 1 + commas + brackets + braces. Characters inside strings only
    raise the bound.
    """
    return 1 + data.count(b",") + data.count(b"[") + data.count(b"{")


def _check_value_bound(data: bytes) -> None:
    bound = value_bound(data)
    if bound > MAX_METADATA_VALUES:
        raise LimitExceededError(
            f"metadata: up to {bound} JSON values (counted as 1 + commas + brackets + braces), above "
            f"the limit of {MAX_METADATA_VALUES}; store fewer values (Config(record_settings=False) "
            "leaves out the per-tensor settings)",
            section=SECTION, field="values", expected=f"at most {MAX_METADATA_VALUES}", found=bound,
        )


# Maximum length of an integer, in decimal digits: CPython's default for str/int conversion
# (sys.get_int_max_str_digits), which exists because the conversion time is quadratic. The
# limit is fixed here so that the result does not depend on the interpreter's setting.
MAX_INTEGER_DIGITS = 4300
_INTEGER_BOUND = 10**MAX_INTEGER_DIGITS


def _parse_int(token: str) -> int:
    digits = len(token) - token.startswith("-")
    if digits > MAX_INTEGER_DIGITS:
        raise InvalidFieldError(
            section=SECTION, field="value", expected=f"an integer of at most {MAX_INTEGER_DIGITS} digits",
            found=f"{digits} digits",
        )
    try:
        return int(token)
    except ValueError:  # the interpreter's own digit limit is set lower
        raise InvalidFieldError(
            section=SECTION, field="value", expected="an integer this interpreter converts",
            found=f"{digits} digits",
        ) from None


def _check_text(text: str, path: str) -> None:
    # json.loads turns an escaped lone surrogate such as "\ud800" into a str that has no
    # UTF-8 encoding, so the metadata could be read but never written again.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidFieldError(
                section=SECTION, field=path, expected="valid Unicode text",
                found=f"lone surrogate U+{ord(text[error.start]):04X}",
            ) from None


def _reject_constant(token: str) -> Any:
    raise InvalidFieldError(
        section=SECTION, field="value", expected="a finite number", found=token
    )


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidFieldError(
                section=SECTION, field="key", expected="unique object keys", found=repr(key)
            )
        result[key] = value
    return result


def check_value(value: Any, path: str = "$", depth: int = 0) -> None:
    """Raise :class:`InvalidFieldError` unless ``value`` fits the metadata grammar.

    Allowed: strings, finite numbers, booleans, lists and string-keyed dicts of those, nested at
    most ``MAX_METADATA_DEPTH`` levels. ``None`` (JSON null) is not allowed.
    """
    if depth > MAX_METADATA_DEPTH:
        raise InvalidFieldError(
            section=SECTION, field=path, expected=f"nesting of at most {MAX_METADATA_DEPTH} levels",
            found="deeper nesting",
        )
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, int):
        if not -_INTEGER_BOUND < value < _INTEGER_BOUND:
            raise InvalidFieldError(
                section=SECTION, field=path, expected=f"an integer of at most {MAX_INTEGER_DIGITS} digits",
                found=f"about {int(value.bit_length() * 0.30103)} digits",
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFieldError(section=SECTION, field=path, expected="a finite number", found=value)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidFieldError(section=SECTION, field=path, expected="string keys", found=repr(key))
            _check_text(key, path)
            check_value(item, f"{path}.{key}", depth + 1)
        return
    raise InvalidFieldError(
        section=SECTION,
        field=path,
        expected="a string, finite number, boolean, list or object",
        found=type(value).__name__ if value is not None else "null",
    )


def encode_metadata(metadata: dict[str, Any]) -> bytes:
    """Serialise ``metadata`` deterministically (sorted keys, no spaces) after checking it."""
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    check_value(metadata)
    if not metadata:
        return b""
    data = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
    _check_value_bound(data)
    return data


def decode_metadata(data: bytes | memoryview) -> dict[str, Any]:
    """Parse and check a metadata block; an empty block is an empty object."""
    if len(data) == 0:
        return {}
    data = bytes(data)
    _check_value_bound(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidFieldError(
            section=SECTION, field="text", expected="UTF-8", found=f"invalid byte at {error.start}"
        ) from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant,
                           parse_int=_parse_int)
    except json.JSONDecodeError as error:
        raise InvalidFieldError(
            section=SECTION, field="text", expected="JSON",
            found=f"{error.msg} at character {error.pos}",
        ) from None
    except RecursionError:
        raise InvalidFieldError(
            section=SECTION, field="text", expected=f"nesting of at most {MAX_METADATA_DEPTH} levels",
            found="deeper nesting",
        ) from None
    if not isinstance(value, dict):
        raise InvalidFieldError(
            section=SECTION, field="$", expected="a JSON object", found=type(value).__name__
        )
    check_value(value)
    return value

"""The metadata block: JSON with the strict grammar of spec/FORMAT.md section 7."""

from __future__ import annotations

import json
import math
from typing import Any

from .constants import MAX_METADATA_DEPTH
from .errors import InvalidFieldError

SECTION = "metadata"


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
    if isinstance(value, bool) or isinstance(value, str):
        return
    if isinstance(value, int):
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
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def decode_metadata(data: bytes | memoryview) -> dict[str, Any]:
    """Parse and check a metadata block; an empty block is an empty object."""
    if len(data) == 0:
        return {}
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidFieldError(
            section=SECTION, field="text", expected="UTF-8", found=f"invalid byte at {error.start}"
        ) from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
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

"""Compression configuration: per-tensor settings chosen by name patterns.

A :class:`Config` contains default settings and an ordered list of rules, each a glob pattern
over tensor names with the settings it overrides. Later rules win over earlier ones. Every
value is validated when the configuration is built, and a bad one raises
:class:`~dcformat.errors.ConfigError` naming the key, the value and the allowed range.

Built-in defaults follow Deep Compression. Weights of convolutions (3-D, 4-D and 5-D
tensors) get 8-bit shared weights and 8-bit gaps. Weights of fully connected layers (2-D
tensors) get 5-bit shared weights and 5-bit gaps. Everything else (biases, norm scales,
integer and bool buffers, tensors under ``min_elements``) is stored raw and lossless.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

ENCODINGS = ("auto", "raw", "shared", "sparse-shared", "uniform", "lowrank", "float16", "bfloat16")
INITS = ("linear", "density", "random")
STREAM_FORMS = ("auto", "packed", "huffman")
CODEBOOK_DTYPES = ("float32", "float16")
NONFINITE_POLICIES = ("raw", "error")
SCOPES = ("tensor", "global")

# Deep Compression's defaults: 8 bits for convolutions and 5 for fully connected layers, both
# for the shared weights and for the relative-index gaps.
CONV_BITS = 8
FC_BITS = 5

# The default pruning threshold: the Deep Compression rule (threshold = quality x standard
# deviation) with quality 1.0, applied with one threshold across all weight tensors
# (scope "global"), so large redundant layers lose more weights than small ones. Without
# fine-tuning this cost 0.6 points of test accuracy on the bundled LeNet-300-100 at 22x, where
# per-tensor thresholds lost 1.5 points at 19x (tools/sweep_defaults.py measures both).
DEFAULT_QUALITY = 1.0


@dataclass(frozen=True)
class TensorSettings:
    """Settings for one tensor. ``None`` means "the built-in default for this tensor"."""

    encoding: str = "auto"
    bits: int | None = None
    index_bits: int | str | None = None  # "auto": try 2 to 8 bits and keep the smallest
    sparsity: float | None = None
    quality: float | None = None
    prune: bool | None = None
    init: str = "linear"
    seed: int = 0
    max_iter: int = 300
    codebook_dtype: str = "float32"
    uniform_step: float | None = None
    per_channel: bool = False
    rank: int | None = None
    stream: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("encoding", self.encoding, ENCODINGS)
        _check_int("bits", self.bits, 1, 16, optional=True)
        if self.index_bits != "auto":
            _check_int("index_bits", self.index_bits, 1, 16, optional=True)
        if self.sparsity is not None:
            _check_float("sparsity", self.sparsity, 0.0, 1.0, upper_open=True)
        if self.quality is not None:
            _check_float("quality", self.quality, 0.0, 100.0)
        if self.sparsity is not None and self.quality is not None:
            raise ConfigError(
                f"sparsity={self.sparsity} and quality={self.quality}: set at most one pruning criterion"
            )
        if self.prune is not None and not isinstance(self.prune, bool):
            raise ConfigError(f"prune={self.prune!r}: expected true or false")
        _check_choice("init", self.init, INITS)
        _check_int("seed", self.seed, 0, 2**32 - 1)
        _check_int("max_iter", self.max_iter, 1, 100_000)
        _check_choice("codebook_dtype", self.codebook_dtype, CODEBOOK_DTYPES)
        if self.uniform_step is not None:
            _check_float("uniform_step", self.uniform_step, 1e-6, 1e6)
        if not isinstance(self.per_channel, bool):
            raise ConfigError(f"per_channel={self.per_channel!r}: expected true or false")
        _check_int("rank", self.rank, 1, 1 << 20, optional=True)
        _check_choice("stream", self.stream, STREAM_FORMS)


SETTING_KEYS = tuple(f.name for f in fields(TensorSettings))


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(allowed)}")


def _check_int(key: str, value: Any, low: int, high: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        extra = " or 'auto'" if key == "index_bits" else ""
        raise ConfigError(f"{key}={value!r}: expected an integer from {low} to {high}{extra}")


def _check_float(key: str, value: Any, low: float, high: float, *, upper_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value < high if upper_open else value <= high)
    if not ok:
        bracket = ")" if upper_open else "]"
        raise ConfigError(f"{key}={value!r}: expected a number in [{low}, {high}{bracket}")


@dataclass(frozen=True)
class Rule:
    """Settings applied to every tensor whose name matches ``pattern`` (fnmatch glob)."""

    pattern: str
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Config:
    """A full compression configuration.

    ``defaults`` override the built-in per-kind defaults for every tensor; ``rules`` then
    override per name pattern, in order. ``min_elements``: smaller tensors stay raw.
    ``scope``: ``"global"`` prunes all selected tensors with one threshold. ``alignment``:
    section alignment in bytes (a power of two, 1 for the smallest file).
    ``record_settings`` stores each tensor's settings and content hash in the metadata. ``nonfinite``: what to
    do with a float tensor that contains NaN or infinity (``"raw"`` keeps it lossless with a
    warning, ``"error"`` rejects it).
    """

    defaults: Mapping[str, Any] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    min_elements: int = 256
    scope: str = "global"
    alignment: int = 64
    record_settings: bool = True
    nonfinite: str = "raw"

    def __post_init__(self) -> None:
        _check_settings_keys(self.defaults, "defaults")
        TensorSettings(**self.defaults)  # validates every value
        for index, rule in enumerate(self.rules):
            if not isinstance(rule, Rule):
                raise ConfigError(f"rules[{index}]: expected a dcformat.Rule(pattern, settings), "
                                  f"found {type(rule).__name__}")
            if not isinstance(rule.pattern, str) or not rule.pattern:
                raise ConfigError(f"rule pattern {rule.pattern!r}: expected a non-empty glob string")
            _check_settings_keys(rule.settings, f"rules[{rule.pattern!r}]")
            TensorSettings(**rule.settings)
        _check_int("min_elements", self.min_elements, 0, 2**62)
        _check_choice("scope", self.scope, SCOPES)
        if isinstance(self.alignment, bool) or not isinstance(self.alignment, int) \
                or self.alignment < 1 or self.alignment > 65536 or self.alignment & (self.alignment - 1):
            raise ConfigError(f"alignment={self.alignment!r}: expected a power of two from 1 to 65536")
        if not isinstance(self.record_settings, bool):
            raise ConfigError(f"record_settings={self.record_settings!r}: expected true or false")
        _check_choice("nonfinite", self.nonfinite, NONFINITE_POLICIES)

    def pruning_criterion(self) -> tuple[float | None, float | None]:
        """Return the (sparsity, quality) pair that ``defaults`` give every prunable tensor."""
        if self.defaults.get("sparsity") is not None:
            return self.defaults["sparsity"], None
        return None, self.defaults.get("quality", DEFAULT_QUALITY)

    def unmatched_patterns(self, names) -> list[str]:
        """Rule patterns that match none of ``names`` (usually a typo)."""
        names = list(names)
        return [rule.pattern for rule in self.rules
                if not any(fnmatch.fnmatchcase(name, rule.pattern) for name in names)]

    @property
    def alignment_log2(self) -> int:
        return self.alignment.bit_length() - 1

    def with_rules(self, *rules: Rule) -> "Config":
        return replace(self, rules=self.rules + tuple(rules))

    def with_defaults(self, **settings: Any) -> "Config":
        return replace(self, defaults={**self.defaults, **settings})

    def settings_for(self, name: str, shape: tuple[int, ...], is_float: bool) -> TensorSettings:
        """Resolve the settings of tensor ``name``: built-in kind defaults, then defaults, then rules."""
        size = 1
        for dim in shape:
            size *= dim
        base: dict[str, Any] = {}
        weight_like = is_float and len(shape) >= 2 and size >= self.min_elements
        if not weight_like:
            base["encoding"] = "raw"
        elif len(shape) == 2:
            base.update(bits=FC_BITS, index_bits=FC_BITS)
        else:
            base.update(bits=CONV_BITS, index_bits=CONV_BITS)
        if weight_like:
            base["quality"] = DEFAULT_QUALITY
        merged = {**base, **_pruning_override(base, self.defaults)}
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, rule.pattern):
                merged = {**merged, **_pruning_override(merged, rule.settings)}
        if not is_float and merged.get("encoding") not in ("raw", None):
            merged["encoding"] = "raw"
        if merged.get("encoding") not in ("raw", "float16", "bfloat16"):
            merged.setdefault("bits", FC_BITS if len(shape) == 2 else CONV_BITS)
            merged.setdefault("index_bits", merged["bits"])
        return TensorSettings(**merged)

    # Loading

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        """Build a configuration from a parsed TOML or JSON document.

        Layout: top-level settings keys (defaults for every tensor), the keys ``min_elements``,
        ``scope``, ``alignment``, ``record_settings``, ``nonfinite``, and ``rules``: a list of
        tables with a ``pattern`` and settings keys, or a table mapping patterns to settings.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"configuration: expected a table/object, found {type(data).__name__}")
        top_keys = {"min_elements", "scope", "alignment", "record_settings", "nonfinite", "rules"}
        defaults = {k: v for k, v in data.items() if k not in top_keys}
        _check_settings_keys(defaults, "configuration")
        rules = []
        raw_rules = data.get("rules", [])
        if isinstance(raw_rules, Mapping):
            raw_rules = [{"pattern": p, **s} for p, s in raw_rules.items()]
        if not isinstance(raw_rules, list):
            raise ConfigError(f"rules: expected a list of tables or a table, found {type(raw_rules).__name__}")
        for i, item in enumerate(raw_rules):
            if not isinstance(item, Mapping) or "pattern" not in item:
                raise ConfigError(f"rules[{i}]: expected a table with a 'pattern' key")
            rules.append(Rule(item["pattern"], {k: v for k, v in item.items() if k != "pattern"}))
        options = {k: data[k] for k in top_keys - {"rules"} if k in data}
        return cls(defaults=defaults, rules=tuple(rules), **options)

    @classmethod
    def from_file(cls, path: str | Path) -> "Config":
        """Load a configuration from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
        if path.suffix.lower() == ".toml":
            import tomllib

            try:
                data = tomllib.loads(text.decode("utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
                raise ConfigError(f"invalid TOML in {path}: {error}") from None
        elif path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ConfigError(f"invalid JSON in {path}: {error}") from None
        else:
            raise ConfigError(f"configuration {path}: expected a .toml or .json file")
        return cls.from_dict(data)


def _pruning_override(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge helper: setting one pruning criterion clears the other one inherited so far."""
    result = dict(update)
    if "sparsity" in update and "quality" not in update and "quality" in current:
        result["quality"] = None
    if "quality" in update and "sparsity" not in update and "sparsity" in current:
        result["sparsity"] = None
    return result


def _check_settings_keys(settings: Mapping[str, Any], where: str) -> None:
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, found {type(settings).__name__}")
    for key in settings:
        if key not in SETTING_KEYS:
            raise ConfigError(f"{where}: unknown setting {key!r}; expected one of {', '.join(SETTING_KEYS)}")


def parse_assignment(text: str, key: str, convert) -> Rule:
    """Parse a CLI ``PATTERN=VALUE`` (or bare ``VALUE`` for every tensor) into a rule."""
    pattern, sep, value = text.rpartition("=")
    if not sep:
        pattern, value = "*", text
    try:
        converted = convert(value)
    except ValueError:
        raise ConfigError(f"--{key.replace('_', '-')} {text!r}: expected PATTERN=VALUE with a valid value") from None
    return Rule(pattern, {key: converted})

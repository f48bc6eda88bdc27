"""The SqueezeNet weights released by the Deep Compression authors re-encode bit-exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import squeezenet  # noqa: E402

pytestmark = pytest.mark.skipif(not squeezenet.WEIGHTS.exists(), reason="shared SqueezeNet weights not present")


def test_squeezenet_release_reencodes_bit_exactly_under_540_kb():
    result = squeezenet.reencode(squeezenet.WEIGHTS)
    assert result["bit_exact"], result["mismatched"]
    assert result["file_bytes"] <= 540_000
    assert len(result["layers"]) == 26

"""Re-encode the SqueezeNet weights released by the Deep Compression authors, bit-exactly.

Usage: python tools/squeezenet.py [--weights FILE] [-o OUT.dcf] [--out FILE.json]

The release holds 8-bit shared weights (256 distinct values per layer, pruned). dcformat
stores them without pruning or clustering again (each layer's 256 values become its codebook
exactly), Huffman-codes the indices and gaps, and keeps biases raw. The script checks that
every decoded tensor equals the released weights bit for bit and prints JSON with the file
size and a per-layer breakdown.

The weights are read from ../shared/real/squeezenet-dc/squeezenet_dc_weights.safetensors
beside the repository, or from the file that --weights names.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from safetensors.numpy import load_file

import dcformat
from dcformat import Config, Rule
from dcformat.encoder import compress

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT.parent / "shared" / "real" / "squeezenet-dc" / "squeezenet_dc_weights.safetensors"
RELEASE = WEIGHTS.parent / "compressed_SqueezeNet.net"

# The released values are already shared weights, so they are kept as they are: no pruning,
# and each codebook contains the layer's 256 values exactly. The gap width is chosen per
# layer, and the settings metadata and alignment padding are left out for the smallest file.
CONFIG = Config(
    defaults={"prune": False, "bits": 8, "index_bits": "auto"},
    rules=(Rule("*.bias", {"encoding": "raw"}),),
    min_elements=0,
    alignment=1,
    record_settings=False,
)


def reencode(weights: Path, output: Path | None = None) -> dict:
    tensors = load_file(str(weights))
    target = output if output is not None else io.BytesIO()
    report, _ = compress(tensors, target, CONFIG)
    data = output.read_bytes() if output is not None else target.getvalue()
    decoded = dcformat.load(data)
    mismatched = [name for name in tensors if decoded[name].tobytes() != tensors[name].tobytes()]
    layers = []
    for tensor in report.tensors:
        if tensor.name.endswith(".bias"):
            continue
        layers.append({
            "name": tensor.name,
            "parameters": tensor.size,
            "density": round(1 - tensor.sparsity, 4),
            "encoding": tensor.encoding,
            "index_bits": tensor.index_bits,
            "stored_bytes": tensor.stored_bytes,
            "bits_per_weight": round(tensor.bits_per_weight, 3),
            "streams": {s.kind: {"form": s.form, "bytes": s.stored_bytes,
                                 "entropy_bytes": round(s.entropy_bits / 8)} for s in tensor.streams},
        })
    return {
        "file_bytes": len(data),
        "release_bytes": RELEASE.stat().st_size if RELEASE.exists() else None,
        "float32_bytes": sum(4 * a.size for a in tensors.values()),
        "bit_exact": not mismatched,
        "mismatched": mismatched,
        "layers": layers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="released weights as safetensors")
    parser.add_argument("-o", "--output", type=Path, help="also write the .dcf file here")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if not args.weights.exists():
        print(f"squeezenet: weights not found: {args.weights}", file=sys.stderr)
        return 1
    result = reencode(args.weights, args.output)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())

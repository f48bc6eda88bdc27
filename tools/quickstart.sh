#!/usr/bin/env bash
# Set up .venv, compress the bundled LeNet-300-100 with the default settings, and print the
# sizes, the ratio and the test accuracy before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
mkdir -p out
.venv/bin/dcformat compress fixtures/models/lenet300.safetensors -o out/lenet300.dcf --force
.venv/bin/python tools/demo.py fixtures/models/lenet300.safetensors out/lenet300.dcf

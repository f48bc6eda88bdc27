#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
# pytest exits with 5 when it collected no test; that counts as a failure here.
.venv/bin/python -m pytest "$@"

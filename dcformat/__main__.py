"""Run the command-line tool as ``python -m dcformat``."""

import sys

from .cli import main

sys.exit(main())

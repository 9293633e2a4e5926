"""``python -m vaelab.sweep``: see vaelab/sweep/__init__.py and ``--help``."""

import sys

from vaelab.sweep.cli import main

sys.exit(main())

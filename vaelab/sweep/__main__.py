import sys

from vaelab.sweep.cli import main

sys.exit(main())

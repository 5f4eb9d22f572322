"""``python -m rsm_shm``: the ``rsm-shm`` command line (see rsm_shm/cli.py)."""

import sys

from .cli import main

sys.exit(main())

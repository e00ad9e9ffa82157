"""``python -m headstart.cli`` (and ``torchrun -m headstart.cli``) runs the ``headstart`` command."""

import sys

from .main import main

sys.exit(main())

"""``python -m baqylau``: the same as the ``baqylau`` command."""

import sys

from baqylau.cli import main

sys.exit(main())

"""``python -m framewire``."""

import sys

from framewire.cli import main

sys.exit(main())

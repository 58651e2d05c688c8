"""``python -m reports``: the same as the ``lossparity`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m arrowloader``: the ``arrowloader`` command."""

import sys

from arrowloader.cli import main

if __name__ == "__main__":
    sys.exit(main())

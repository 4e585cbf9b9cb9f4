"""``python -m demo [--no-database] [--keep]``: see :mod:`demo.run` and docs/demo.md."""

import sys

from demo.run import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m programs.transit_watch``: see :mod:`programs.transit_watch.watch`."""

import sys

from programs.transit_watch.watch import main

if __name__ == "__main__":
    sys.exit(main())

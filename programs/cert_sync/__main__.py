"""``python -m programs.cert_sync``: see :mod:`programs.cert_sync.sync`."""

import sys

from programs.cert_sync.sync import main

if __name__ == "__main__":
    sys.exit(main())

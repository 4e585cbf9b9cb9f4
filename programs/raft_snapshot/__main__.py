"""``python -m programs.raft_snapshot``: see :mod:`programs.raft_snapshot.snapshot`."""

import sys

from programs.raft_snapshot.snapshot import main

if __name__ == "__main__":
    sys.exit(main())

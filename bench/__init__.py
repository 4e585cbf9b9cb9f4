"""``make bench``: the figures of docs/performance.md, measured on this machine (see bench/run.py).

Nothing here is a second implementation: the program is evaluated by ``offline.engine``, the real
servers and peers come from the rig (``rig/``), and the rotation delay from ``offline.secret_flow``.
Importing the package imports nothing else, so that ``python -m bench.evaluation`` forks its
children from an interpreter that has loaded no provider SDK.
"""

"""Pytest glue shared by tests/unit and tests/real: helpers that only make sense inside a pytest run
(they fail the running test). The local platform itself is the rig (``rig/``)."""

"""``make demo``: the Vault side of a hub and one edge, run for real on this machine (see ``demo.run``)."""

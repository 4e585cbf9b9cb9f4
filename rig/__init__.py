"""The test rig: what the tests and the demo run the stacks' declarations with on this machine."""

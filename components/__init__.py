"""One ComponentResource per concept of a fedobs stack.

Each component takes a typed args dataclass (never the raw config), parents every child to
itself, prefixes child names with its own name, and registers its outputs.
"""

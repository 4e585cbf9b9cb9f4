"""fedobs: load the typed stack config, build the hub or edge stack, export its outputs."""

import pulumi

from config import ConfigError, load_from_pulumi
from stack import build_stack

try:
    stack_config = load_from_pulumi()
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None

for output_name, value in build_stack(stack_config).items():
    pulumi.export(output_name, value)

"""coderig: read `coderig:` config, validate it, build the target's resources, export outputs."""

import pulumi

import stacks

for name, value in stacks.build().items():
    pulumi.export(name, value)

#!/usr/bin/env python3
"""Every role default is typed and described in meta/argument_specs.yml, and every
option there is either a default or required. Prints each disagreement; exits 1 on any."""

import sys
from pathlib import Path

import yaml

problems = []
for role in sorted(Path(__file__).resolve().parent.parent.glob("roles/*/")):
    defaults_file = role / "defaults/main.yml"
    defaults = set((yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {})
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    for name in sorted(defaults - set(specs)):
        problems.append(f"{role.name}: {name} has a default but no argument_specs entry")
    for name, spec in sorted(specs.items()):
        if name not in defaults and not spec.get("required"):
            problems.append(f"{role.name}: {name} is in argument_specs but has no default and is not required")
        if not spec.get("description"):
            problems.append(f"{role.name}: {name} has no description")
        if "type" not in spec:
            problems.append(f"{role.name}: {name} has no type")
print("\n".join(problems) or "role defaults and argument_specs agree")
sys.exit(1 if problems else 0)

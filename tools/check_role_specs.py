#!/usr/bin/env python
"""Every role default is typed, described and given the same default in
meta/argument_specs.yml (what ansible-doc shows), and every option there is either
a default or required. Prints each disagreement; exits 1 on any."""

import sys
from pathlib import Path

import yaml

problems = []
for role in sorted(Path(__file__).resolve().parent.parent.glob("roles/*/")):
    defaults_file = role / "defaults/main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    for name in sorted(set(defaults) - set(specs)):
        problems.append(f"{role.name}: {name} has a default but no argument_specs entry")
    for name, spec in sorted(specs.items()):
        if name in defaults:
            if "default" not in spec:
                problems.append(f"{role.name}: {name} has no default: key in argument_specs")
            elif spec["default"] != defaults[name]:
                problems.append(
                    f"{role.name}: {name} defaults to {defaults[name]!r} in defaults/main.yml"
                    f" but to {spec['default']!r} in argument_specs"
                )
        elif spec.get("required"):
            if "default" in spec:
                problems.append(f"{role.name}: {name} is required and has a default in argument_specs")
        else:
            problems.append(f"{role.name}: {name} is in argument_specs but has no default and is not required")
        if not spec.get("description"):
            problems.append(f"{role.name}: {name} has no description")
        if "type" not in spec:
            problems.append(f"{role.name}: {name} has no type")
print("\n".join(problems) or "role defaults and argument_specs agree")
sys.exit(1 if problems else 0)

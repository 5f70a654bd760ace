"""The README's example playbook is the file the layout scenario applies, word for word."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_readme_example_is_the_tested_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    after = readme.split("[`templates/examples/maintenance.yml`]", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", after, re.S).group(1)
    example = (ROOT / "templates/examples/maintenance.yml").read_text(encoding="utf-8")
    assert block == example[example.index("- name:") :]

"""What the controller-side entry points share (prune.py, buckets.py, run by
playbooks/offsite_prune.yml and offsite_buckets.yml): read the settings file
the playbook wrote, do the work, print one JSON object for the playbook
({"changed": bool, "lines": [the report]}) and exit 1 with the reason as the
last line when it failed, no secret in it."""

import json

from . import s3
from .log import redact

# What a failure of the work may raise, besides its own errors.
ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, s3.S3Error)


def run(argv, out, work, errors, secrets, failed):
    """WORK(settings) -> (changed, lines) on the settings file ARGV[0], its
    ERRORS (and ERRORS above) reported as FAILED ("prune failed") with every
    string of SECRETS(settings) redacted. Returns the exit code."""
    settings = {}
    try:
        with open(argv[0], encoding="utf-8") as f:
            settings = json.load(f)
        changed, lines = work(settings)
    except (*ERRORS, *errors) as exc:
        why = redact(str(exc), secrets(settings) if isinstance(settings, dict) else [])
        print(json.dumps({"changed": False, "lines": [f"{failed}: {why}"]}), file=out)
        return 1
    print(json.dumps({"changed": changed, "lines": lines}), file=out)
    return 0

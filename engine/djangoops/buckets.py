"""The set-up and check of one s3 repository's bucket, run on the controller by
playbooks/offsite_buckets.yml:

    python3 -I -c 'import sys; sys.path.insert(0, ENGINE); from djangoops import buckets; sys.exit(buckets.main())' \
        SETTINGS.json

SETTINGS (0600; the names of the files that hold the keys, never the keys):
    repository     its name, for the report
    url            restic's s3:... URL
    admin_keys     the bucket owner's AWS_ACCESS_KEY_ID=... / AWS_SECRET_ACCESS_KEY=... file
    server_keys    the server's, the same way
    check_only     look and report, change nothing (check mode)

With the owner's keys it creates the bucket when it is missing and turns its
versioning on (which no one turns off again without the owner's keys): every
object then keeps its first version, whatever a key writes over it, and that
version's time is when the object arrived (the record that fetches and prunes
trust, arrivals.py). With the server's keys it then proves the key append-only,
as a thief would try it: a canary object is written (it must be), deleted (it
must be refused), deleted by version (refused), and the bucket's versioning
suspended (refused); the owner's keys remove the canary. What the key may do
is the bucket owner's policy (README: an example for AWS IAM); this refuses to
call a bucket append-only until the server's key shows it.

Prints one JSON object: {"changed": bool, "lines": [the report]}; exits 1 when
the bucket is not append-only for the server's key or anything failed, the
reason as the last line.
"""

import secrets
import sys

from . import controller, s3

CANARY = "djangoops-check"


class BucketError(Exception):
    pass


def read_keys(path):
    """AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from PATH (KEY=VALUE lines, the
    values possibly shell-quoted)."""
    keys = {}
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines():
            key, _eq, value = line.partition("=")
            if key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                keys[key] = value[1:-1].replace("'\\''", "'") if value.startswith("'") else value
    return keys


def _refused(attempt):
    """True when ATTEMPT() is refused by the S3 server (AccessDenied or the like)."""
    try:
        attempt()
    except s3.S3Error as error:
        if error.status in (401, 403) or error.code in ("AccessDenied", "MethodNotAllowed"):
            return True
        raise
    return False


def set_up(settings, client=s3.Client, token=None):
    """The bucket of SETTINGS set up and checked: (changed, report lines)."""
    name = settings["repository"]
    check_only = str(settings.get("check_only")).lower() == "true"
    admin_keys = read_keys(settings["admin_keys"])
    server_keys = read_keys(settings["server_keys"])
    owner = client(settings["url"], admin_keys["AWS_ACCESS_KEY_ID"], admin_keys["AWS_SECRET_ACCESS_KEY"])
    server = client(settings["url"], server_keys["AWS_ACCESS_KEY_ID"], server_keys["AWS_SECRET_ACCESS_KEY"])
    lines, changed = [], False
    if owner.exists():
        status = owner.versioning()
    else:
        if check_only:
            return False, [f"{name}: bucket {owner.where.bucket} does not exist; it would be created, versioned"]
        owner.request("PUT")
        lines.append(f"{name}: created bucket {owner.where.bucket}")
        changed, status = True, ""
    if status != "Enabled":
        if check_only:
            return changed, [*lines, f"{name}: versioning is {status or 'off'}; it would be turned on"]
        owner.enable_versioning()
        if owner.versioning() != "Enabled":
            raise BucketError(f"{name}: the bucket's versioning could not be turned on")
        lines.append(f"{name}: versioning turned on")
        changed = True
    else:
        lines.append(f"{name}: versioning is on")
    if check_only:
        return changed, lines
    canary = f"{CANARY}-{token or secrets.token_hex(8)}"
    try:
        try:
            server.put(canary, b"djangoops append-only check\n")
        except s3.S3Error as error:
            raise BucketError(
                f"{name}: the server's key cannot write to the bucket ({error}): pushes would fail"
            ) from None
        versions = owner.versions(canary)
        problems = []
        if not _refused(lambda: server.delete(canary)):
            problems.append("delete an object")
        for version in versions:
            if not _refused(lambda version=version: server.delete(canary, version)):
                problems.append("delete an object's version")
                break
        if not _refused(lambda: server.request("PUT", query=[("versioning", "")], body=_suspend())):
            owner.enable_versioning()
            problems.append("suspend the bucket's versioning")
        if problems:
            raise BucketError(
                f"{name}: the server's key can {', and '.join(problems)} in bucket {owner.where.bucket}: it is "
                "not append-only (give it only the policy in the README: read, write, list, and delete under "
                "locks/)"
            )
        lines.append(
            f"{name}: the server's key is append-only (it wrote; deleting, deleting a version and suspending "
            "versioning were refused)"
        )
    finally:
        for version in owner.versions(canary):
            owner.delete(canary, version)
    return changed, lines


def _suspend():
    return (
        b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Status>Suspended</Status></VersioningConfiguration>"
    )


def _secrets(settings):
    found = []
    for field in ("admin_keys", "server_keys"):
        try:
            found.append(read_keys(settings[field]).get("AWS_SECRET_ACCESS_KEY", ""))
        except (OSError, KeyError, TypeError):
            pass
    return [secret for secret in found if secret]


def main(argv=None, client=s3.Client, out=None):
    return controller.run(
        sys.argv[1:] if argv is None else argv,
        out or sys.stdout,
        lambda settings: set_up(settings, client=client),
        (BucketError,),
        _secrets,
        "bucket set-up failed",
    )

"""The off-site prune of one repository, run on the controller by
playbooks/offsite_prune.yml with the credentials the servers never hold:

    python3 -I -c 'import sys; sys.path.insert(0, ENGINE); from djangoops import prune; sys.exit(prune.main())' \
        SETTINGS.json

SETTINGS (0600, written by the playbook; no secret in it, only the names of
the files that hold them):
    project        the project (the snapshots' host, the sets' prefix)
    repository     its name, for the report
    env            restic's environment: RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE, RESTIC_CACHE_DIR
    options        restic's options (the ssh command of an ssh repository)
    s3_keys        the file of an s3 repository's AWS_ACCESS_KEY_ID=... / AWS_SECRET_ACCESS_KEY=...
    arrivals       the command that reads the backup host's record of arrivals (an ssh repository's;
                   an s3 one's record is its bucket's versions, read with the owner's keys)
    keep           {"daily": N, "weekly": N, "monthly": N}
    dry_run        decide and report, forget nothing

With a record of arrivals, what is forgotten is decided by arrivals.judge and
arrivals.keep: the sets' genuine snapshots beyond the policy, counted back
from now by when they arrived. Nothing else is ever forgotten: not a
snapshot the record refuses (planted, or a second copy under a set's name: the
report names each, as evidence), not one the record lacks, not one that is no
set of the project. Without a record (a backup host set up before it, a
bucket without versioning) nothing is pruned, and the reason is given.

Prints one JSON object: {"changed": bool, "lines": [the report]}. Exits 1 when
anything failed, with the reason as the last line.
"""

import json
import os
import subprocess
import sys
import time

from . import arrivals, controller, manifest, s3
from .buckets import read_keys

# restic forget takes the ids on its command line: a bounded number per run.
IDS_PER_RUN = 200


class PruneError(Exception):
    pass


def _restic(settings, args, run, env):
    argv = ["restic", *settings.get("options", []), *args]
    done = run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
        raise PruneError(f"restic {args[0]} failed (exit {done.returncode}): {lines[-1] if lines else 'no message'}")
    return done.stdout


def _environment(settings):
    env = dict(os.environ)
    env.update(settings["env"])
    if settings.get("s3_keys"):
        env.update(read_keys(settings["s3_keys"]))
    return env


def _arrivals(settings, run, env, bucket):
    """The record of arrivals: the backup host's, through the admin key's
    forced command, or the bucket's oldest versions, read with the owner's
    keys. Raises PruneError when there is none."""
    if settings.get("s3_keys"):
        try:
            owner = bucket(
                env["RESTIC_REPOSITORY"], env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
            )
            if owner.versioning() != "Enabled":
                raise PruneError(
                    "its bucket's versioning is not enabled, so it keeps no record of when snapshots arrived: run "
                    "playbooks/offsite_buckets.yml, then prune (nothing is forgotten by what the snapshots claim)"
                )
            return owner.arrivals("snapshots")
        except s3.S3Error as error:
            raise PruneError(f"reading when the snapshots arrived failed: {error}") from None
    done = run(settings["arrivals"], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = [line for line in (done.stderr or "").splitlines() if line.strip()]
        raise PruneError(
            f"reading when the snapshots arrived failed (exit {done.returncode}): {why[-1] if why else 'no message'}"
        )
    found = arrivals.parse(done.stdout)
    if found is None:
        raise PruneError(
            "its backup host keeps no record of when snapshots arrived: apply the offsite_host role to it, "
            "then prune (nothing is forgotten by what the snapshots claim)"
        )
    return found


def prune(settings, run=subprocess.run, now=time.time, bucket=s3.Client):
    """Prune one repository as SETTINGS say; (changed, report lines)."""
    env = _environment(settings)
    name = settings["repository"]
    project = settings["project"]
    keep = {rule: int(settings["keep"][rule]) for rule in ("daily", "weekly", "monthly")}
    dry_run = str(settings.get("dry_run")).lower() == "true"
    lines = []
    # Only stale locks go: those of pushes that were killed and would block the prune.
    _restic(settings, ["unlock"], run, env)
    listing = json.loads(_restic(settings, ["snapshots", "--json", "--no-lock"], run, env) or "[]")
    # After the listing: whatever it names has arrived by now.
    found = _arrivals(settings, run, env, bucket)
    held = manifest.snapshots(listing, project)
    others = len(listing) - len(held)
    judged = arrivals.judge(held, found, project)
    kept = arrivals.keep(judged.genuine, found, now(), keep["daily"], keep["weekly"], keep["monthly"], project)
    forget = [s for s in judged.genuine if s.snapshot_id not in kept]
    for refusal in judged.refused:
        lines.append(f"{name}: kept, not trusted: {refusal.reason}")
    if others:
        lines.append(f"{name}: kept {others} snapshots that are no backup set of {project}")
    for snapshot in forget:
        lines.append(
            f"{name}: {'would forget' if dry_run else 'forget'} {snapshot.name} (snapshot "
            f"{snapshot.snapshot_id[:8]}, arrived {arrivals.utc(found[snapshot.snapshot_id])})"
        )
    lines.append(
        f"{name}: keep {len(kept)} sets, {'would remove' if dry_run else 'remove'} {len(forget)} "
        f"(by when they arrived: {keep['daily']} days, {keep['weekly']} weeks, {keep['monthly']} months)"
    )
    if forget and not dry_run:
        ids = [s.snapshot_id for s in forget]
        for start in range(0, len(ids), IDS_PER_RUN):
            _restic(settings, ["forget", *ids[start : start + IDS_PER_RUN]], run, env)
        _restic(settings, ["prune"], run, env)
    return bool(forget) and not dry_run, lines


def _secrets(settings):
    """What restic's words must never quote back: the password, the S3 secret."""
    found = []
    try:
        with open(settings["env"]["RESTIC_PASSWORD_FILE"], encoding="utf-8", errors="replace") as f:
            found.append(f.read().strip())
        found.append(_environment(settings).get("AWS_SECRET_ACCESS_KEY", "") if settings.get("s3_keys") else "")
    except (OSError, KeyError, TypeError):
        pass
    return [secret for secret in found if secret]


def main(argv=None, run=subprocess.run, now=time.time, out=None, bucket=s3.Client):
    return controller.run(
        sys.argv[1:] if argv is None else argv,
        out or sys.stdout,
        lambda settings: prune(settings, run=run, now=now, bucket=bucket),
        (PruneError,),
        _secrets,
        "prune failed",
    )

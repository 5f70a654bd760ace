"""What root runs, root owns: code planted, as the project user, everywhere that user can write
and the commands, or the previous layout's code, might run or source (a site running as that
user could do the same). Each plant appends its uid and its own path to PLANTED_LOG when
anything runs or sources it; a line with uid 0 means root ran the project user's code. The
operations scenario plants before backup.yml, verify.yml, restore.yml and a systemd unit, the
offsite scenario's disaster drill before recover.yml."""

from installed_code import DB_COMMANDS

PLANTED_LOG = "/home/shop/logs/planted.log"
PLANT_PLACES = (
    [f"/home/shop/commands/{name}.sh" for name in (*DB_COMMANDS, "clear_sessions")]
    + [
        f"/home/shop/commands/lib/{name}"
        for name in (
            "common.sh",
            "db.sh",
            "db.conf",
            "project.conf",
            "offsite.sh",
            "offsite.conf",
            "engine_postgresql.sh",
            "engine_mysql.sh",
            "jobs.sh",
            "jobs.conf",
            "db_command.sh",
        )
    ]
    + ["/home/shop/.bashrc", "/home/shop/.profile", "/home/shop/.bash_profile"]
)
SAVED = "/root/planted-saved.tar"
SAVED_PATHS = "home/shop/commands home/shop/.bashrc home/shop/.profile home/shop/.bash_profile"


def plant(server):
    """Plants in every place of PLANT_PLACES; what was there is kept in SAVED, for unplant."""
    server.run_expect([0], f"rm -f {PLANTED_LOG} && tar -C / -cpf {SAVED} --ignore-failed-read {SAVED_PATHS}")
    server.run_expect([0], "rm -f /home/shop/commands/*.sh")
    code = f'#!/bin/sh\necho "$(id -u) $0" >> {PLANTED_LOG}\n'
    for place in (PLANTED_LOG, *PLANT_PLACES):
        result = server.run(
            "runuser -u shop -- sh -c %s - %s %s",
            'mkdir -p "${1%/*}" && printf %s "$2" > "$1" && chmod 0755 "$1"',
            place,
            "" if place == PLANTED_LOG else code,
        )
        assert result.rc == 0, result.stderr


def unplant(server):
    server.run_expect([0], "rm -rf /home/shop/commands/* " + " ".join(PLANT_PLACES[-3:]))
    server.run_expect([0], f"tar -C / -xpf {SAVED} && rm -f {SAVED}")


def planted_by_root(log_text):
    """The lines of PLANTED_LOG written by root."""
    return [line for line in log_text.splitlines() if line.split()[0] == "0"]

"""The test site's project on a server, as prepare_django.yml deploys it for the role
scenarios (db_backup, schedule, django_logging, offsite): the project user shop's home,
its commands/ and logs/, root's entry points of the commands, and a value quoted for the
server's shell."""

HOME = "/home/shop"
COMMANDS = f"{HOME}/commands"
ENGINE_BIN = "/usr/local/lib/djangoops/shop/bin"
LOGS = f"{HOME}/logs"


def quote(value):
    return "'" + value.replace("'", "'\\''") + "'"

"""The test site's project on a server, as prepare_django.yml deploys it for the role
scenarios (db_backup, schedule, django_logging, offsite): the project user shop's home,
its commands/ and logs/, and a value quoted for the server's shell."""

HOME = "/home/shop"
COMMANDS = f"{HOME}/commands"
LOGS = f"{HOME}/logs"


def quote(value):
    return "'" + value.replace("'", "'\\''") + "'"

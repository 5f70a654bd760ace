"""Settings for the benchmark's peer row, django-dbbackup, run with django-admin in a
virtualenv of its own (Django 5.2; the cookbook's project runs on Debian's Django).
The database is the project's: the same settings file its scripts read, the same
local socket. Backups go to a directory on disk, and so do dbbackup's temporary
files (its default, /tmp, is a tmpfs in the benchmark's containers)."""

import json
import shutil

SECRET_KEY = "benchmark-only"
USE_TZ = True
INSTALLED_APPS = ["dbbackup"]

with open("/home/shop/.secrets/database.json", encoding="utf-8") as settings_file:
    DATABASES = {"default": json.load(settings_file)}

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "dbbackup": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": "/home/shop/dbbackup/backups"},
    },
}
DBBACKUP_TMP_DIR = "/home/shop/dbbackup/tmp"
DBBACKUP_SEND_EMAIL = False

# MariaDB 11 ships its clients as mariadb-dump and mariadb only.
if DATABASES["default"]["ENGINE"].endswith("mysql") and not shutil.which("mysqldump"):
    DBBACKUP_CONNECTORS = {"default": {"DUMP_CMD": "mariadb-dump", "RESTORE_CMD": "mariadb"}}

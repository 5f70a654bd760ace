#!/usr/bin/env bash
# The cookbook's MySQL restore, reproduced for the benchmark: the gzipped dump
# into `manage.py dbshell` over the existing database (the dump drops and
# recreates each table it holds).
SECONDS=0
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-shop.settings.production}
PROJECT_PATH=${PROJECT_PATH:-/home/shop}
REPOSITORY_PATH=${REPOSITORY_PATH:-$PROJECT_PATH/src/shop}
BACKUPS=${SEED_BACKUPS:-$PROJECT_PATH/seed_backups}
LATEST_BACKUP_PATH=$BACKUPS/latest.sql

cd "$PROJECT_PATH" || exit 1
# shellcheck source=/dev/null
source env/bin/activate
echo "=== Restoring DB from a Backup ==="
echo "- Fill the database with schema and data"
cd "$REPOSITORY_PATH" || exit 1
zcat "$LATEST_BACKUP_PATH.gz" | python manage.py dbshell
echo "took $SECONDS s"

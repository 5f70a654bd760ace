#!/usr/bin/env bash
# The cookbook's PostgreSQL restore, reproduced step for step for the benchmark:
# three `manage.py shell` start-ups for name, user and password, end the other
# sessions, dropdb, createdb, then the gzipped plain SQL into `manage.py dbshell`
# (psql without ON_ERROR_STOP: it carries on past errors).
SECONDS=0
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-shop.settings.production}
PROJECT_PATH=${PROJECT_PATH:-/home/shop}
REPOSITORY_PATH=${REPOSITORY_PATH:-$PROJECT_PATH/src/shop}
BACKUPS=${SEED_BACKUPS:-$PROJECT_PATH/seed_backups}
LATEST_BACKUP_PATH=$BACKUPS/latest.backup

cd "$PROJECT_PATH" || exit 1
# shellcheck source=/dev/null
source env/bin/activate
cd "$REPOSITORY_PATH" || exit 1

DATABASE=$(echo "from django.conf import settings; print(settings.DATABASES['default']['NAME'])" | python manage.py shell -i python)
USER=$(echo "from django.conf import settings; print(settings.DATABASES['default']['USER'])" | python manage.py shell -i python)
# The cookbook reads the password too, and never uses it.
PASSWORD=$(echo "from django.conf import settings; print(settings.DATABASES['default']['PASSWORD'])" | python manage.py shell -i python)
export PASSWORD

echo "=== Restoring DB from a Backup ==="
echo "- Recreate the database"
psql --dbname="$DATABASE" --command='SELECT pg_terminate_backend(pg_stat_activity.pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid();'
dropdb "$DATABASE"
createdb --username="$USER" "$DATABASE"
echo "- Fill the database with schema and data"
zcat "$LATEST_BACKUP_PATH.gz" | python manage.py dbshell
echo "took $SECONDS s"

#!/usr/bin/env bash
# The cookbook's PostgreSQL backup, reproduced step for step for the benchmark
# (not for use): one `manage.py shell` start-up for the database name, a plain
# pg_dump straight to the weekday file, gzip of the whole file afterwards, then
# `latest` re-pointed whatever happened. Quotes are added where the cookbook has
# none; with the benchmark's plain names the commands run are the same.
SECONDS=0
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-shop.settings.production}
PROJECT_PATH=${PROJECT_PATH:-/home/shop}
REPOSITORY_PATH=${REPOSITORY_PATH:-$PROJECT_PATH/src/shop}
BACKUPS=${SEED_BACKUPS:-$PROJECT_PATH/seed_backups}
LOG_FILE=$PROJECT_PATH/logs/seed_backup_postgresql_db.log
DAY_OF_THE_WEEK=$(LC_ALL=C.UTF-8 date +"%w-%A")
DAILY_BACKUP_PATH=$BACKUPS/$DAY_OF_THE_WEEK.backup
LATEST_BACKUP_PATH=$BACKUPS/latest.backup
error_counter=0

cd "$PROJECT_PATH" || exit 1
mkdir -p logs "$BACKUPS"
# shellcheck source=/dev/null
source env/bin/activate
cd "$REPOSITORY_PATH" || exit 1

DATABASE=$(echo "from django.conf import settings; print(settings.DATABASES['default']['NAME'])" | python manage.py shell -i python)

echo "=== Creating DB Backup ===" >"$LOG_FILE"
date >>"$LOG_FILE"
echo "- Dump database" >>"$LOG_FILE"
if ! pg_dump --format=p --file="$DAILY_BACKUP_PATH" "$DATABASE"; then
  echo "pg_dump failed" >>"$LOG_FILE"
  error_counter=$((error_counter + 1))
fi
echo "- Create a *.gz archive" >>"$LOG_FILE"
if ! gzip --force "$DAILY_BACKUP_PATH"; then
  echo "gzip failed" >>"$LOG_FILE"
  error_counter=$((error_counter + 1))
fi
echo "- Create a symlink latest.backup.gz" >>"$LOG_FILE"
[[ -e $LATEST_BACKUP_PATH.gz ]] && rm "$LATEST_BACKUP_PATH.gz"
ln -s "$DAILY_BACKUP_PATH.gz" "$LATEST_BACKUP_PATH.gz" || error_counter=$((error_counter + 1))
echo "took $SECONDS s" >>"$LOG_FILE"
exit $error_counter

#!/usr/bin/env bash
# The cookbook's MySQL backup, reproduced step for step for the benchmark: three
# `manage.py shell` start-ups for name, user and password, a structure-only
# mysqldump, a second full mysqldump (without --single-transaction, so with
# table locks) appended to the same weekday file, gzip of the whole file, then
# `latest` re-pointed whatever happened. The password is on the command line, as
# in the cookbook. The excluded tables are an array here (the cookbook builds a
# string and relies on word splitting); the arguments are the same.
SECONDS=0
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-shop.settings.production}
PROJECT_PATH=${PROJECT_PATH:-/home/shop}
REPOSITORY_PATH=${REPOSITORY_PATH:-$PROJECT_PATH/src/shop}
BACKUPS=${SEED_BACKUPS:-$PROJECT_PATH/seed_backups}
LOG_FILE=$PROJECT_PATH/logs/seed_backup_mysql_db.log
DAY_OF_THE_WEEK=$(LC_ALL=C.UTF-8 date +"%w-%A")
DAILY_BACKUP_PATH=$BACKUPS/$DAY_OF_THE_WEEK.sql
LATEST_BACKUP_PATH=$BACKUPS/latest.sql
error_counter=0
# Debian 13's MariaDB ships the old name only in mariadb-client-compat.
MYSQLDUMP=$(command -v mysqldump || command -v mariadb-dump)

cd "$PROJECT_PATH" || exit 1
mkdir -p logs "$BACKUPS"
# shellcheck source=/dev/null
source env/bin/activate
cd "$REPOSITORY_PATH" || exit 1

DATABASE=$(echo "from django.conf import settings; print(settings.DATABASES['default']['NAME'])" | python manage.py shell -i python)
USER=$(echo "from django.conf import settings; print(settings.DATABASES['default']['USER'])" | python manage.py shell -i python)
PASSWORD=$(echo "from django.conf import settings; print(settings.DATABASES['default']['PASSWORD'])" | python manage.py shell -i python)

EXCLUDED_TABLES=(django_session)
IGNORED_TABLES=()
for TABLE in "${EXCLUDED_TABLES[@]}"; do
  IGNORED_TABLES+=("--ignore-table=$DATABASE.$TABLE")
done

echo "=== Creating DB Backup ===" >"$LOG_FILE"
date >>"$LOG_FILE"
echo "- Dump structure" >>"$LOG_FILE"
if ! "$MYSQLDUMP" -u "$USER" -p"$PASSWORD" --single-transaction --no-data "$DATABASE" >"$DAILY_BACKUP_PATH" 2>>"$LOG_FILE"; then
  echo "mysqldump (structure) failed" >>"$LOG_FILE"
  error_counter=$((error_counter + 1))
fi
echo "- Dump content" >>"$LOG_FILE"
if ! "$MYSQLDUMP" -u "$USER" -p"$PASSWORD" "$DATABASE" "${IGNORED_TABLES[@]}" >>"$DAILY_BACKUP_PATH" 2>>"$LOG_FILE"; then
  echo "mysqldump (content) failed" >>"$LOG_FILE"
  error_counter=$((error_counter + 1))
fi
echo "- Create a *.gz archive" >>"$LOG_FILE"
if ! gzip --force "$DAILY_BACKUP_PATH"; then
  echo "gzip failed" >>"$LOG_FILE"
  error_counter=$((error_counter + 1))
fi
echo "- Create a symlink latest.sql.gz" >>"$LOG_FILE"
[[ -e $LATEST_BACKUP_PATH.gz ]] && rm "$LATEST_BACKUP_PATH.gz"
ln -s "$DAILY_BACKUP_PATH.gz" "$LATEST_BACKUP_PATH.gz" || error_counter=$((error_counter + 1))
echo "took $SECONDS s" >>"$LOG_FILE"
exit $error_counter

"""Rows the backup tests compare: text with quotes, tabs, newlines and backslashes, JSON, non-ASCII;
and sessions, live and expired. Run with `manage.py shell < seed_data.py`."""

from datetime import timedelta

from catalog.models import Item
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

now = timezone.now()
Item.objects.all().delete()
Item.objects.bulk_create(
    Item(
        name=f"Ärger 東京 №{i} 'quoted' \"double\"",
        body=f"line one\nline two\ttab \\ backslash ),( {i} ; DROP TABLE x; -- ünïcödé",
        data={"i": i, "tags": ["ä", "ß", "😀"], "nested": {"ok": i % 2 == 0, "none": None}},
        created=now - timedelta(minutes=i),
    )
    for i in range(500)
)
Session.objects.all().delete()
for n in range(5):
    live = SessionStore()
    live["n"] = n
    live.create()
    expired = SessionStore()
    expired["n"] = n
    expired.set_expiry(-3600)
    expired.create()
print("items", Item.objects.count(), "sessions", Session.objects.count())

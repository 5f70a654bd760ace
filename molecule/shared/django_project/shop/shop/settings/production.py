import json

from ._base import *  # noqa: F403 - the settings module extends the base
from ._base import PROJECT_HOME

# The database comes from a 0600 file only the project user reads, as many
# deployments keep it; nothing secret lives in the source tree.
with open(PROJECT_HOME / ".secrets" / "database.json", encoding="utf-8") as secrets:
    DATABASES = {"default": json.load(secrets)}

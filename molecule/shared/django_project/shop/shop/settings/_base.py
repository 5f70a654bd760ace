from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
PROJECT_HOME = BASE_DIR.parents[1]

SECRET_KEY = "test-only-not-secret"  # a throwaway test project
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "catalog",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "shop.urls"
SESSION_ENGINE = "django.contrib.sessions.backends.db"

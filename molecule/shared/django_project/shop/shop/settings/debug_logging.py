"""The production settings with DEBUG on, for the django_logging scenario's
"no error mail while DEBUG is True" test."""

from .production import *  # noqa: F403 - the same site, in debug mode

DEBUG = True

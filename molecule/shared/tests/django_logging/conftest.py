"""Fixtures of the django_logging tests."""

import uuid

import pytest


@pytest.fixture
def marker():
    return uuid.uuid4().hex[:12]

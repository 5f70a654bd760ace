"""Views the django_logging scenario requests over HTTP: one that logs through a
standard logger, two through structlog, a login, and one that raises. Only the
standard library and Django are imported at module level, so the backup
scenarios' Django (without structlog) loads the URLconf too."""

import logging

from django.contrib.auth import authenticate, login
from django.http import HttpResponse, HttpResponseForbidden
from django.urls import path

logger = logging.getLogger(__name__)


def hello(request):
    logger.info("hello viewed, marker %s", request.GET.get("marker", ""))
    # Building an absolute URL validates the Host header against ALLOWED_HOSTS.
    return HttpResponse(f"hello from {request.build_absolute_uri()}\n")


def structured(request):
    import structlog

    structlog.get_logger(__name__).info("structured_view", marker=request.GET.get("marker", ""))
    return HttpResponse("structured\n")


def structured_error(request):
    import structlog

    structlog.get_logger(__name__).error("structured_error", marker=request.GET.get("marker", ""))
    return HttpResponse("logged an error\n")


def sign_in(request):
    user = authenticate(request, username=request.POST.get("username"), password=request.POST.get("password"))
    if user is None:
        return HttpResponseForbidden("no\n")
    login(request, user)
    return HttpResponse("signed in\n")


def boom(request):
    logger.warning("about to fail, marker %s", request.GET.get("marker", ""))
    secret_in_a_local = "local-value-" + request.GET.get("marker", "")  # noqa: F841 - shown by the HTML report
    raise RuntimeError("boom " + request.GET.get("marker", ""))


urlpatterns = [
    path("hello/", hello),
    path("structured/", structured),
    path("structured-error/", structured_error),
    path("login/", sign_in),
    path("boom/", boom),
]
